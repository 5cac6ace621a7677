// What the INT4 tensor-core kernels (gemv_q4.cuh, gemm_q4.cuh) do per lane and k-step to feed hllm
// INT4 tiles to mma.sync.m16n8k16 bf16: read a row's scale and zero from the tile header, decode
// code chunks into A fragments, pick activations into B fragments; and the operand checks both
// launchers make. The placement (which input sits
// in which k slot) is layout/int4_mma.hpp, emulated on the CPU by tests/int4_mma_layout_test.cpp.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>

#include "hllm/core/error.hpp"
#include "hllm/cuda/common.cuh"
#include "hllm/cuda/ptx.cuh"
#include "hllm/layout/int4_mma.hpp"
#include "hllm/layout/int4_tiles.hpp"

namespace hllm::cuda::int4_frag {

// The weight is a well-formed tile matrix in device memory, x_packed and y are given, and
// x_packed and the tiles are 16-byte aligned (the kernels' vector loads). `name` starts the error.
inline void check_operands(const char* name, const Int4View& w, const void* x_packed,
                           const void* y) {
  if (w.device != Device::cuda || w.tiles == nullptr)
    fail(name, ": the weight's tiles must be in device memory (Int4View::device == cuda)");
  if (w.out <= 0 || w.k_tiles <= 0 || w.packed_in() < w.in)
    fail(name, ": bad weight shape [", w.out, ", ", w.in, "] with ", w.k_tiles, " tiles");
  if (x_packed == nullptr || y == nullptr) fail(name, ": null activation or output pointer");
  if (reinterpret_cast<uintptr_t>(x_packed) % VEC_BYTES != 0 ||
      reinterpret_cast<uintptr_t>(w.tiles) % VEC_BYTES != 0)
    fail(name, ": x_packed and the tiles must be 16-byte aligned");
}

// Bytes from the start of a tile to its codes (the 4 scales and 4 zeros in front).
inline constexpr int HEADER_BYTES = static_cast<int>(offsetof(int4_tile, q));
static_assert(HEADER_BYTES == 16, "int4_tile: 16-byte header of 4 f16 scales, 4 f16 zeros");

__device__ __forceinline__ uint32_t word_of(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;  // i is a compile-time constant
}

// Byte offset, inside a tile, of the 16-byte code chunk lane (g, t) decodes: chunk t of tile row
// int4_mma_row_in_tile(g) (both of the lane's A rows are that tile row, in strips 2 apart).
__device__ __forceinline__ int code_offset(int lane) {
  return HEADER_BYTES + int4_mma_row_in_tile(int4_mma_group(lane)) * INT4_ROW_BYTES +
         int4_mma_thread(lane) * 16;
}

// The tile header (16 bytes: f16 scale[4] in words x, y; f16 zero[4] in words z, w): the words
// holding row r's scale and zero, in half r % 2.
__device__ __forceinline__ uint32_t header_scale_word(const uint4& header, int r) {
  return r < 2 ? header.x : header.y;
}
__device__ __forceinline__ uint32_t header_zero_word(const uint4& header, int r) {
  return r < 2 ? header.z : header.w;
}

// Row r's scale and bf16x2 −(128 + zero) from its header words.
struct RowParams {
  float scale;
  uint32_t neg_bias;
};
__device__ __forceinline__ RowParams row_params(uint32_t scale_word, uint32_t zero_word, int r) {
  const int shift = 16 * (r % 2);
  const float zero =
      __half2float(__ushort_as_half(static_cast<unsigned short>(zero_word >> shift)));
  return {__half2float(__ushort_as_half(static_cast<unsigned short>(scale_word >> shift))),
          int4_mma_zero_bias(static_cast<uint32_t>(zero)) ^ 0x80008000u};
}

// A fragment of k-step ks (code − zero, exact in bf16) from the code chunks of the lane's rows
// g (codes[0]) and g + 8 (codes[1]). A reg: row half reg % 2, slot pair reg / 2.
__device__ __forceinline__ void a_fragment(const uint4 (&codes)[2], const uint32_t (&neg_bias)[2],
                                           int ks, uint32_t (&a)[4]) {
#pragma unroll
  for (int reg = 0; reg < 4; ++reg) {
    const int q = int4_mma_reg_of(ks, reg / 2);
    const uint32_t word = word_of(codes[reg % 2], int4_mma_word(q));
    a[reg] = ptx::bf16x2_add(int4_mma_decode(word, int4_mma_shift(q)), neg_bias[reg % 2]);
  }
}

// B fragment of k-step ks from the lane's 32 activations of its chunk, xv = X[0..15] with
// X[i] = (x[2i], x[2i + 1]). B reg = slot pair.
__device__ __forceinline__ void b_fragment(const uint4 (&xv)[4], int ks, uint32_t (&b)[2]) {
#pragma unroll
  for (int reg = 0; reg < 2; ++reg) {
    const int q = int4_mma_reg_of(ks, reg);
    const int xw = int4_mma_x_word(q);
    b[reg] = __byte_perm(word_of(xv[xw / 4], xw % 4), word_of(xv[(xw + 1) / 4], (xw + 1) % 4),
                         int4_mma_x_selector(q));
  }
}

}  // namespace hllm::cuda::int4_frag
