// The tile schedule and tensor-core fragment maps of the CUDA FlashAttention-2 prefill kernel
// (kernels/hllm/cuda/attn_prefill.cuh), as HLLM_HOST_DEVICE helpers the kernel calls;
// cpu/attn_prefill_emulate.hpp runs the kernel's algorithm lane by lane on the CPU over the same
// helpers.
//
// 1. Rows. A prefill chunk of n_queries queries of ONE sequence, query t at position start + t,
//    sees positions 0 .. kv_len(t) - 1 with kv_len(t) = min(start + t + 1, max_kv_len). Under GQA
//    the GROUP = n_heads / n_kv_heads query heads of one KV head read the same K/V rows, so a
//    block works on one KV head and treats (query, head in group) pairs as its rows:
//
//      row r (0 .. n_queries·GROUP - 1) = query r / GROUP, head kv_head·GROUP + r % GROUP
//
//    (q is [n_queries, n_heads, head_dim], so the GROUP rows of a query are contiguous in memory).
//    Block b takes rows 64b .. 64b + 63 (BLOCK_M), its warp w rows 64b + 16w .. + 15 (one mma
//    row tile); every K/V tile the block loads serves 64 rows, i.e. 64 / GROUP queries × GROUP
//    heads, so K/V bytes are read once per GROUP heads.
//
// 2. Causal schedule. K/V tile j holds positions 64j .. 64j + 63 (BLOCK_N). For rows whose
//    queries run first .. last:
//      tiles visited     j = 0 .. ceil(kv_len(last) / 64) - 1   (tiles past the diagonal skipped)
//      masked tiles      (j + 1)·64 > kv_len(first): some position of the tile lies past the
//                        first row's horizon, so per-element masking (pos >= kv_len(row) -> -inf)
//                        is applied; every other visited tile is fully visible and unmasked.
//    The block loads the tiles of its last query; a warp skips (warp-uniformly) the tiles past
//    its own last query. Positions >= kv_len(block's last query) are zero-filled in shared memory
//    (never read from the pool: the block table there may name no block).
//
// 3. Fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16", .bf16; lane = 4g + t, every 32-bit
//    register holds 2 bf16, the lower-indexed element in the low half):
//      A 16×16   reg r, elem e: row g + 8·(r % 2), col 2t + e + 8·(r / 2)
//      B 16×8    reg r, elem e: k = 2t + e + 8·r, column n = g
//      C 16×8    elem i:        row g + 8·(i / 2), col 2t + i % 2
//    ldmatrix.sync.aligned.m8n8.x4.b16 (PTX ISA, "ldmatrix"): lanes 8i .. 8i + 7 give the row
//    addresses of 8×8 matrix i; lane l receives in reg i the elements (row l/4, cols 2(l%4), +1)
//    of matrix i, or with .trans (rows 2(l%4), +1, col l/4).
//      Q (A of S = Q·Kᵀ):  lane l addresses row (l%8) + 8·((l/8)%2), col 8·(l/16) of the 16×16
//                          block -> regs a0..a3 directly.
//      K (B of S):         smem rows are positions: lane l addresses position (l%8) + 8·(l/16),
//                          dim 8·((l/8)%2) of a 16-position × 16-dim block -> regs
//                          b[n-tile 0][0], b[0][1], b[n-tile 1][0], b[1][1] (B(k, n) = K[n][k]).
//      V (B of O += P·V):  .trans, lane l addresses position (l%8) + 8·((l/8)%2), dim 8·(l/16)
//                          -> b[dim tile 0][0], b[0][1], b[dim tile 1][0], b[1][1].
//      P (A of P·V):       the S accumulators of n-tiles 2kk, 2kk + 1 are the A fragment of
//                          k-step kk: reg r = C elems 2(r%2), 2(r%2)+1 of n-tile 2kk + r/2,
//                          rounded to bf16 (no shuffles: the C and A layouts line up).
//
// 4. Online softmax, per row (a lane holds rows g and g + 8, a quad of 4 lanes shares a row):
//    s = (q·k)·scale·log2 e, m_new = max(m, max over the tile), m_ref = m_new (0 if -inf),
//    α = exp2(m - m_ref), l = α·l + Σ p, O = α·O + P_bf16·V with p = exp2(s - m_ref) in fp32 (l
//    sums the fp32 p, each lane its own columns; the quad sums them at the end), out = O / l.
#pragma once

#include <algorithm>
#include <cstdint>

#include "hllm/core/dtype.hpp"

namespace hllm {

inline constexpr int ATTN_PREFILL_BLOCK_M = 64;  // rows of a block: 4 warps × one 16-row mma tile
inline constexpr int ATTN_PREFILL_BLOCK_N = 64;  // positions of a K/V tile
inline constexpr int ATTN_PREFILL_WARPS = 4;
inline constexpr int ATTN_PREFILL_WARP_M = 16;  // rows of a warp = M of mma.m16n8k16
// bf16 of padding per shared-memory row: a row stride of head_dim + 8 (272 B for 128) puts the 8
// rows one ldmatrix phase reads in 8 different 16-byte bank groups, so it is conflict-free.
inline constexpr int ATTN_PREFILL_SMEM_PAD = 8;
inline constexpr int ATTN_PREFILL_CHUNK = 8;  // bf16 per 16-byte cp.async

static_assert(ATTN_PREFILL_BLOCK_M == ATTN_PREFILL_WARPS * ATTN_PREFILL_WARP_M);

HLLM_HOST_DEVICE constexpr int attn_prefill_smem_stride(int head_dim) {
  return head_dim + ATTN_PREFILL_SMEM_PAD;
}
// Dynamic shared memory of a block: Q tile + double-buffered K and V tiles, bf16.
HLLM_HOST_DEVICE constexpr int attn_prefill_smem_bytes(int head_dim) {
  return (ATTN_PREFILL_BLOCK_M + 4 * ATTN_PREFILL_BLOCK_N) * attn_prefill_smem_stride(head_dim) * 2;
}

// ---- Rows and the causal schedule ---------------------------------------------------------------

HLLM_HOST_DEVICE constexpr int64_t attn_prefill_row_tiles(int64_t n_queries, int group) {
  return (n_queries * group + ATTN_PREFILL_BLOCK_M - 1) / ATTN_PREFILL_BLOCK_M;
}
// Query of row r, clamped to the last query for the padding rows of the last block (they compute
// like the last query and are never stored).
HLLM_HOST_DEVICE constexpr int32_t attn_prefill_row_query(int64_t row, int group,
                                                          int32_t n_queries) {
  return static_cast<int32_t>(std::min<int64_t>(row / group, n_queries - 1));
}
HLLM_HOST_DEVICE constexpr int32_t attn_prefill_kv_len(int32_t start, int32_t query,
                                                       int32_t max_kv_len) {
  return std::min(start + query + 1, max_kv_len);
}
// K/V tiles visited by rows whose last query sees kv_len_last positions.
HLLM_HOST_DEVICE constexpr int32_t attn_prefill_kv_tiles(int32_t kv_len_last) {
  return (kv_len_last + ATTN_PREFILL_BLOCK_N - 1) / ATTN_PREFILL_BLOCK_N;
}
// Whether tile j needs per-element masking for rows whose first query sees kv_len_first positions.
HLLM_HOST_DEVICE constexpr bool attn_prefill_tile_masked(int32_t tile, int32_t kv_len_first) {
  return (tile + 1) * ATTN_PREFILL_BLOCK_N > kv_len_first;
}
// The 16-byte chunk c (0 .. rows·head_dim/8 - 1) of a tile copy: its row and first column. Thread
// i of the block copies chunks i, i + 128, ...: 16 consecutive threads cover one 256-byte row.
HLLM_HOST_DEVICE constexpr int attn_prefill_chunk_row(int c, int head_dim) {
  return c / (head_dim / ATTN_PREFILL_CHUNK);
}
HLLM_HOST_DEVICE constexpr int attn_prefill_chunk_col(int c, int head_dim) {
  return c % (head_dim / ATTN_PREFILL_CHUNK) * ATTN_PREFILL_CHUNK;
}

// ---- mma.m16n8k16 fragments (lane = 4g + t) -----------------------------------------------------

HLLM_HOST_DEVICE constexpr int attn_mma_a_row(int lane, int reg) {
  return lane / 4 + 8 * (reg % 2);
}
HLLM_HOST_DEVICE constexpr int attn_mma_a_col(int lane, int reg, int e) {
  return 2 * (lane % 4) + e + 8 * (reg / 2);
}
HLLM_HOST_DEVICE constexpr int attn_mma_b_k(int lane, int reg, int e) {
  return 2 * (lane % 4) + e + 8 * reg;
}
HLLM_HOST_DEVICE constexpr int attn_mma_b_n(int lane) { return lane / 4; }
HLLM_HOST_DEVICE constexpr int attn_mma_c_row(int lane, int i) { return lane / 4 + 8 * (i / 2); }
HLLM_HOST_DEVICE constexpr int attn_mma_c_col(int lane, int i) { return 2 * (lane % 4) + i % 2; }

// P as an A fragment: reg r of k-step kk is C elements (attn_p_c_elem(r, 0), (r, 1)) of S n-tile
// 2kk + attn_p_ntile_offset(r).
HLLM_HOST_DEVICE constexpr int attn_p_ntile_offset(int reg) { return reg / 2; }
HLLM_HOST_DEVICE constexpr int attn_p_c_elem(int reg, int e) { return 2 * (reg % 2) + e; }

// ---- ldmatrix .x4 source addresses (row, col within the 16×16 block a lane addresses) ----------

// Q (A operand) and V (.trans, B operand): matrices
//   (rows 0-7, cols 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15).
HLLM_HOST_DEVICE constexpr int attn_ldm_a_row(int lane) { return lane % 8 + 8 * ((lane / 8) % 2); }
HLLM_HOST_DEVICE constexpr int attn_ldm_a_col(int lane) { return 8 * (lane / 16); }
// K (B operand, rows = positions = n): matrices
//   (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15).
HLLM_HOST_DEVICE constexpr int attn_ldm_k_row(int lane) { return lane % 8 + 8 * (lane / 16); }
HLLM_HOST_DEVICE constexpr int attn_ldm_k_col(int lane) { return 8 * ((lane / 8) % 2); }
// V (.trans): the same addresses as Q.
HLLM_HOST_DEVICE constexpr int attn_ldm_v_row(int lane) { return attn_ldm_a_row(lane); }
HLLM_HOST_DEVICE constexpr int attn_ldm_v_col(int lane) { return attn_ldm_a_col(lane); }

}  // namespace hllm
