// RMSNorm on the GPU, plain and fused with the residual add that precedes it in every decoder
// block:
//
//   rmsnorm      out[r, :] = bf16(weight * x[r, :] / sqrt(mean(x[r, :]²) + eps))
//   add_rmsnorm  x[r, :]   = bf16(x[r, :] + y[r, :])                    (stored back: the residual)
//                out[r, :] = bf16(weight * x[r, :] / sqrt(mean(x[r, :]²) + eps)) from the ROUNDED x
//
// Layouts (row-major, bf16): x, y, out [rows, width]; weight [width]. fp32 math; the sum of squares
// is an fp32 block reduction. out may alias x (each element is read and then written by the same
// thread, after the reduction barrier).
//
//   block r ── thread t handles the 8-element packs t, t + BLOCK, t + 2·BLOCK, ... of row r
//              pass 1: (add, store x,) sum of squares → block_sum
//              pass 2: re-read its own packs (L1/L2 hits), scale, store out
//
// Preconditions (checked): width a multiple of 8 (one 16-byte pack) and at most 16384, pointers
// 16-byte aligned.
//
// Bytes for Llama-3-8B (width 4096), per row: rmsnorm reads x + weight and writes out = 3 · 8 KB =
// 24 KB (weight is shared by all rows, so 16 KB/row for large batches); add_rmsnorm reads x, y,
// weight and writes x, out = 5 · 8 KB = 40 KB. FLOPs ~4 per element: memory-bound.
#pragma once

#include <cstdint>

#include "hllm/cuda/common.cuh"

namespace hllm::cuda {

// 256 threads · 8 elements = 2048 elements per sweep: a 4096-wide row is 2 packs per thread, the
// widest supported row (16384) is 8. One block per row keeps the reduction inside the block.
inline constexpr int NORM_BLOCK_THREADS = 256;
inline constexpr int NORM_MAX_WIDTH = 16384;

namespace detail {

template <int BLOCK_THREADS>
__device__ __forceinline__ void rmsnorm_scale_row(const __nv_bfloat16* x_row,
                                                  const __nv_bfloat16* weight, float inv_rms,
                                                  __nv_bfloat16* out_row, int n_packs) {
  constexpr int N = Pack16<__nv_bfloat16>::N;
  for (int p = static_cast<int>(threadIdx.x); p < n_packs; p += BLOCK_THREADS) {
    const Pack16<__nv_bfloat16> xv = load_pack(x_row + p * N);
    const Pack16<__nv_bfloat16> wv = load_pack(weight + p * N);
    Pack16<__nv_bfloat16> ov;
#pragma unroll
    for (int j = 0; j < N; ++j) {
      ov.elem[j] = from_f32<__nv_bfloat16>(to_f32(wv.elem[j]) * (to_f32(xv.elem[j]) * inv_rms));
    }
    store_pack(out_row + p * N, ov);
  }
}

template <int BLOCK_THREADS>
__global__ void __launch_bounds__(BLOCK_THREADS)
    rmsnorm_kernel(const __nv_bfloat16* x, const __nv_bfloat16* weight, float eps,
                   __nv_bfloat16* out, int width) {
  constexpr int N = Pack16<__nv_bfloat16>::N;
  const int n_packs = width / N;
  const int64_t row_offset = static_cast<int64_t>(blockIdx.x) * width;
  const __nv_bfloat16* x_row = x + row_offset;

  float sum_squares = 0.0f;
  for (int p = static_cast<int>(threadIdx.x); p < n_packs; p += BLOCK_THREADS) {
    const Pack16<__nv_bfloat16> xv = load_pack(x_row + p * N);
#pragma unroll
    for (int j = 0; j < N; ++j) {
      const float v = to_f32(xv.elem[j]);
      sum_squares += v * v;
    }
  }
  sum_squares = block_sum<BLOCK_THREADS>(sum_squares);
  const float inv_rms = 1.0f / sqrtf(sum_squares / static_cast<float>(width) + eps);
  rmsnorm_scale_row<BLOCK_THREADS>(x_row, weight, inv_rms, out + row_offset, n_packs);
}

template <int BLOCK_THREADS>
__global__ void __launch_bounds__(BLOCK_THREADS)
    add_rmsnorm_kernel(__nv_bfloat16* x, const __nv_bfloat16* y, const __nv_bfloat16* weight,
                       float eps, __nv_bfloat16* out, int width) {
  constexpr int N = Pack16<__nv_bfloat16>::N;
  const int n_packs = width / N;
  const int64_t row_offset = static_cast<int64_t>(blockIdx.x) * width;
  __nv_bfloat16* x_row = x + row_offset;
  const __nv_bfloat16* y_row = y + row_offset;

  float sum_squares = 0.0f;
  for (int p = static_cast<int>(threadIdx.x); p < n_packs; p += BLOCK_THREADS) {
    const Pack16<__nv_bfloat16> xv = load_pack(x_row + p * N);
    const Pack16<__nv_bfloat16> yv = load_pack(y_row + p * N);
    Pack16<__nv_bfloat16> sv;
#pragma unroll
    for (int j = 0; j < N; ++j) {
      sv.elem[j] = from_f32<__nv_bfloat16>(to_f32(xv.elem[j]) + to_f32(yv.elem[j]));
      const float v = to_f32(sv.elem[j]);  // the rounded residual is what the norm sees
      sum_squares += v * v;
    }
    store_pack(x_row + p * N, sv);
  }
  sum_squares = block_sum<BLOCK_THREADS>(sum_squares);
  const float inv_rms = 1.0f / sqrtf(sum_squares / static_cast<float>(width) + eps);
  // Pass 2 re-reads the packs this same thread stored in pass 1 (same index mapping), so its own
  // writes are visible without a fence.
  rmsnorm_scale_row<BLOCK_THREADS>(x_row, weight, inv_rms, out + row_offset, n_packs);
}

inline bool norm_aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % VEC_BYTES == 0;
}

inline void check_norm_args(const char* what, const void* x, const void* y, const void* weight,
                            const void* out, int rows, int width) {
  if (rows < 0) fail(what, ": rows must be >= 0 (got ", rows, ")");
  if (width <= 0 || width % 8 != 0 || width > NORM_MAX_WIDTH)
    fail(what, ": width must be a positive multiple of 8 up to ", NORM_MAX_WIDTH, " (got ", width,
         ")");
  if (x == nullptr || y == nullptr || weight == nullptr || out == nullptr)
    fail(what, ": null pointer argument");
  if (!norm_aligned16(x) || !norm_aligned16(y) || !norm_aligned16(weight) || !norm_aligned16(out))
    fail(what, ": pointers must be 16-byte aligned");
}

}  // namespace detail

// x, out: [rows, width] bf16 (out may alias x); weight: [width] bf16. Device pointers.
inline void launch_rmsnorm(const __nv_bfloat16* x, const __nv_bfloat16* weight, float eps,
                           __nv_bfloat16* out, int rows, int width, cudaStream_t stream) {
  detail::check_norm_args("launch_rmsnorm", x, x, weight, out, rows, width);
  if (rows == 0) return;
  detail::rmsnorm_kernel<NORM_BLOCK_THREADS>
      <<<rows, NORM_BLOCK_THREADS, 0, stream>>>(x, weight, eps, out, width);
  HLLM_CUDA_CHECK_LAUNCH();
}

// x (in/out), y, out: [rows, width] bf16; weight: [width] bf16. x = bf16(x + y); out = norm(x).
inline void launch_add_rmsnorm(__nv_bfloat16* x, const __nv_bfloat16* y,
                               const __nv_bfloat16* weight, float eps, __nv_bfloat16* out, int rows,
                               int width, cudaStream_t stream) {
  detail::check_norm_args("launch_add_rmsnorm", x, y, weight, out, rows, width);
  if (rows == 0) return;
  detail::add_rmsnorm_kernel<NORM_BLOCK_THREADS>
      <<<rows, NORM_BLOCK_THREADS, 0, stream>>>(x, y, weight, eps, out, width);
  HLLM_CUDA_CHECK_LAUNCH();
}

}  // namespace hllm::cuda
