// INT4 tiles -> dense bf16 weights, for the prefill path (cuBLAS GEMM on the result):
//
//   dense[o, p] = bf16(int4_weight(tile(o / 4, p / 128), o % 4, p % 128))   o < out, p < packed_in
//
// Layout in: hllm's INT4 tile layout (layout/int4_tiles.hpp). Out: dense [out, packed_in] bf16
// row-major (nn.Linear orientation in packed input order; rows past `out` in the last strip are not
// written). The value is int4_dequant (the one formula), rounded to nearest even: bit-identical to
// the host's f32_to_bf16(int4_weight(...)).
//
// Cost, Llama-3-8B gate/up (in 4096, out 14336): 31.2 MB of tiles read + 117 MB written (2 bytes
// per weight), no FLOPs to speak of: memory bound, ~35 µs at an H200's 4.23 TB/s copy bandwidth.
//
// One block per output row; each thread makes 8 consecutive packed inputs of the row at a time: an
// 8-byte load of codes (inputs k0 .. k0 + 7 with k0 % 8 == 0 are 8 consecutive bytes of one chunk,
// all low or all high nibbles: int4_code_byte / int4_code_shift) and one 16-byte store.
// Consecutive threads walk along the row, so the stores are fully coalesced.
#pragma once

#include <cstdint>

#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/cuda/common.cuh"
#include "hllm/layout/int4_tiles.hpp"

namespace hllm::cuda {
namespace detail {

inline constexpr int DEQUANT_Q4_PER_THREAD = 8;  // bf16 outputs per thread: one 16-byte store
static_assert(INT4_TILE_K % DEQUANT_Q4_PER_THREAD == 0 && 16 % DEQUANT_Q4_PER_THREAD == 0,
              "8 consecutive inputs stay inside one half of a chunk (same nibble)");

// One block per output row o (blockIdx.x); its threads walk the row's 8-input groups.
template <typename T>
__global__ void dequant_q4_kernel(const int4_tile* __restrict__ tiles, int64_t k_tiles,
                                  T* __restrict__ dense) {
  constexpr int GROUPS_PER_TILE = INT4_TILE_K / DEQUANT_Q4_PER_THREAD;  // 16 per tile row
  const int64_t o = blockIdx.x;
  const int row = static_cast<int>(o % INT4_TILE_ROWS);
  const int4_tile* strip_tiles = tiles + (o / INT4_TILE_ROWS) * k_tiles;
  T* dense_row = dense + o * (k_tiles * INT4_TILE_K);
  const int64_t groups_per_row = k_tiles * GROUPS_PER_TILE;
  for (int64_t group = threadIdx.x; group < groups_per_row; group += blockDim.x) {
    const int4_tile* tile = strip_tiles + group / GROUPS_PER_TILE;
    const int k0 = static_cast<int>(group % GROUPS_PER_TILE) * DEQUANT_Q4_PER_THREAD;
    const float scale = to_f32(tile->scale[row]);
    const float zero = to_f32(tile->zero[row]);
    // Inputs k0 .. k0 + 7: bytes int4_code_byte(k0) .. + 7, nibble int4_code_shift(k0).
    const uint2 bytes = *reinterpret_cast<const uint2*>(&tile->q[row][int4_code_byte(k0)]);
    const int shift = int4_code_shift(k0);
    Pack16<T> values;
#pragma unroll
    for (int e = 0; e < DEQUANT_Q4_PER_THREAD; ++e) {
      const uint32_t word = e < 4 ? bytes.x : bytes.y;
      const uint32_t code = (word >> (8 * (e % 4) + shift)) & 0xFu;
      values.elem[e] = from_f32<T>(int4_dequant(code, scale, zero));
    }
    store_pack(dense_row + group * DEQUANT_Q4_PER_THREAD, values);
  }
}

}  // namespace detail

// dense[o, p] = bf16(int4_weight(tile, row, k)) for o < w.out, p < w.packed_in(): row-major
// [w.out, packed_in] bf16, 16-byte aligned; w.tiles in device memory.
inline void launch_dequant_q4(const Int4View& w, __nv_bfloat16* dense, cudaStream_t stream) {
  if (w.device != Device::cuda || w.tiles == nullptr)
    fail("launch_dequant_q4: the weight's tiles must be in device memory (Int4View::device)");
  if (w.out <= 0 || w.k_tiles <= 0)
    fail("launch_dequant_q4: bad weight shape [", w.out, ", ", w.in, "] with ", w.k_tiles,
         " tiles");
  if (dense == nullptr || reinterpret_cast<uintptr_t>(dense) % VEC_BYTES != 0)
    fail("launch_dequant_q4: the output must be a non-null, 16-byte aligned device pointer");
  if (w.out > int64_t{0x7fffffff}) fail("launch_dequant_q4: ", w.out, " rows exceed the grid");
  constexpr int THREADS = 256;  // a 4096-input row is 512 groups of 8: two per thread
  detail::dequant_q4_kernel<__nv_bfloat16>
      <<<static_cast<unsigned>(w.out), THREADS, 0, stream>>>(w.tiles, w.k_tiles, dense);
  HLLM_CUDA_CHECK_LAUNCH();
}

}  // namespace hllm::cuda
