// The paged KV cache layout: what the CUDA attention kernels read and write, and what the server's
// scheduler hands out. Index math only (HLLM_HOST_DEVICE), so the CPU tests check the layout that
// the kernels use.
//
// One layer's keys (and, separately, values) live in a pool of fixed-size blocks:
//
//   pool [n_blocks, block_size, n_kv_heads, head_dim]        element type: the activation dtype
//
//   block b: ┌ row 0: [kv head 0: head_dim][kv head 1] ... ┐   one row = one position of one
//            │ row 1                                        │   sequence, all KV heads
//            └ row block_size - 1                           ┘
//
// A sequence owns a list of blocks, its block table: logical block i (positions
// i*block_size .. (i+1)*block_size - 1) is physical block block_table[i]. Block tables of all
// sequences in a batch sit in one int32 matrix [n_seqs, max_blocks_per_seq]. Blocks need not be
// contiguous or ordered, and the last one is usually partly filled.
//
// A contiguous cache of `capacity` rows (model/kv_cache.hpp) is the special case of one sequence
// whose block table is 0, 1, 2, ... (capacity a multiple of block_size).
#pragma once

#include <cstdint>

#include "hllm/core/dtype.hpp"

namespace hllm {

// A non-owning view of one layer of a paged cache, passed to kernels by value.
struct PagedKvView {
  void* k = nullptr;                      // [n_blocks, block_size, n_kv_heads, head_dim]
  void* v = nullptr;                      // same shape as k
  const int32_t* block_tables = nullptr;  // [n_seqs, max_blocks_per_seq] physical block ids
  int32_t max_blocks_per_seq = 0;         // row stride of block_tables
  int32_t block_size = 0;                 // positions per block
  int32_t n_kv_heads = 0;
  int32_t head_dim = 0;
};

// Physical row (0 .. n_blocks * block_size - 1) holding position `pos` of sequence `seq`.
HLLM_HOST_DEVICE int64_t paged_kv_row(const PagedKvView& kv, int32_t seq, int64_t pos) {
  const int32_t* table = kv.block_tables + static_cast<int64_t>(seq) * kv.max_blocks_per_seq;
  return static_cast<int64_t>(table[pos / kv.block_size]) * kv.block_size + pos % kv.block_size;
}

// Element offset of (row, kv_head, dim 0) in the pool: rows are n_kv_heads * head_dim apart.
HLLM_HOST_DEVICE int64_t paged_kv_offset(const PagedKvView& kv, int64_t row, int32_t kv_head) {
  return (row * kv.n_kv_heads + kv_head) * kv.head_dim;
}

// The physical pool row of position `pos` given the sequence's block-table row: paged_kv_row in
// 32-bit arithmetic (a 64-bit division costs the GPU a ~70-instruction subroutine per row).
// paged_kv_test checks it equals paged_kv_row.
HLLM_HOST_DEVICE int64_t paged_kv_row_in_table(const int32_t* table, int32_t block_size,
                                               int32_t pos) {
  return static_cast<int64_t>(table[pos / block_size]) * block_size + pos % block_size;
}

}  // namespace hllm
