// Element-wise kernels of the decoder block, and the embedding gather:
//
//   swiglu          out[i] = bf16(silu(gate[i]) · up[i]),  silu(g) = g / (1 + e^-g)   (out may
//                   alias gate or up)
//   add             x[i]   = bf16(x[i] + y[i])
//   convert_to_f32  out[i] = float(x[i])                  (bf16 logits -> fp32 for sampling)
//   embedding       out[t, :] = table[ids[t], :]          (zero row for an id outside [0, vocab))
//
// Layouts: flat bf16 arrays of n elements (any n); embedding: table [vocab, width], ids [n] int32,
// out [n, width]. fp32 math.
//
// Element-wise kernels: each thread handles one 8-element (16-byte) pack per grid-stride step; the
// last n % 8 elements go through a scalar tail. When a pointer is not 16-byte aligned (a caller's
// offset view) the launcher picks the scalar instantiation instead.
//
// Bytes for Llama-3-8B: swiglu over one token's FFN (intermediate 14336): 2 reads + 1 write of
// 28 KB = 86 KB, ~10 FLOPs per element; add over one token (4096): 24 KB; embedding: 8 KB per
// token; convert of one token's logits (vocab 128256): 256 KB in, 513 KB out. All memory-bound.
#pragma once

#include <cstdint>

#include "hllm/cuda/common.cuh"

namespace hllm::cuda {

// The element-wise kernels are grid-stride loops sized by common.cuh (grid_stride_blocks).
inline constexpr int ACT_BLOCK_THREADS = GRID_STRIDE_THREADS;

namespace detail {

struct SwigluOp {
  __device__ __forceinline__ float operator()(float gate, float up) const {
    return gate / (1.0f + expf(-gate)) * up;
  }
};
struct AddOp {
  __device__ __forceinline__ float operator()(float x, float y) const { return x + y; }
};

// out[i] = Op(a[i], b[i]) for i < n. VEC: 16-byte packs (all pointers 16-byte aligned) plus a
// scalar tail; otherwise scalar throughout.
template <typename Op, bool VEC>
__global__ void __launch_bounds__(ACT_BLOCK_THREADS)
    binary_bf16_kernel(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* out,
                       int64_t n) {
  constexpr int N = Pack16<__nv_bfloat16>::N;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * ACT_BLOCK_THREADS;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * ACT_BLOCK_THREADS + threadIdx.x;
  int64_t scalar_begin = 0;
  if constexpr (VEC) {
    const int64_t n_packs = n / N;
    for (int64_t p = first; p < n_packs; p += stride) {
      const Pack16<__nv_bfloat16> av = load_pack(a + p * N), bv = load_pack(b + p * N);
      Pack16<__nv_bfloat16> ov;
#pragma unroll
      for (int j = 0; j < N; ++j)
        ov.elem[j] = from_f32<__nv_bfloat16>(Op{}(to_f32(av.elem[j]), to_f32(bv.elem[j])));
      store_pack(out + p * N, ov);
    }
    scalar_begin = n_packs * N;
  }
  for (int64_t i = scalar_begin + first; i < n; i += stride)
    out[i] = from_f32<__nv_bfloat16>(Op{}(to_f32(a[i]), to_f32(b[i])));
}

template <bool VEC>
__global__ void __launch_bounds__(ACT_BLOCK_THREADS)
    convert_to_f32_kernel(const __nv_bfloat16* x, float* out, int64_t n) {
  constexpr int N = Pack16<__nv_bfloat16>::N;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * ACT_BLOCK_THREADS;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * ACT_BLOCK_THREADS + threadIdx.x;
  int64_t scalar_begin = 0;
  if constexpr (VEC) {
    const int64_t n_packs = n / N;
    for (int64_t p = first; p < n_packs; p += stride) {
      const Pack16<__nv_bfloat16> xv = load_pack(x + p * N);
      Pack16<float> lo, hi;  // 8 bf16 in -> 2 · 4 floats out
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        lo.elem[j] = to_f32(xv.elem[j]);
        hi.elem[j] = to_f32(xv.elem[j + 4]);
      }
      store_pack(out + p * N, lo);
      store_pack(out + p * N + 4, hi);
    }
    scalar_begin = n_packs * N;
  }
  for (int64_t i = scalar_begin + first; i < n; i += stride) out[i] = to_f32(x[i]);
}

// One block per token; width a multiple of 8 (checked by the launcher). A template only so that
// this header defines no non-inline symbol.
template <int BLOCK_THREADS>
__global__ void __launch_bounds__(BLOCK_THREADS)
    embedding_kernel(const __nv_bfloat16* table, const int32_t* ids, int width, int vocab,
                     __nv_bfloat16* out) {
  constexpr int N = Pack16<__nv_bfloat16>::N;
  const int32_t id = ids[blockIdx.x];
  const bool valid = id >= 0 && id < vocab;
  const __nv_bfloat16* src = table + static_cast<int64_t>(valid ? id : 0) * width;
  __nv_bfloat16* dst = out + static_cast<int64_t>(blockIdx.x) * width;
  for (int p = static_cast<int>(threadIdx.x); p < width / N; p += BLOCK_THREADS) {
    const uint4 bits = valid ? load16(src + p * N) : make_uint4(0, 0, 0, 0);  // 0x0000 = +0 bf16
    store16(dst + p * N, bits);
  }
}

inline bool act_aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % VEC_BYTES == 0; }

inline unsigned act_blocks(int64_t n) {
  return grid_stride_blocks(ceil_div<int64_t>(n, Pack16<__nv_bfloat16>::N));  // a pack per thread
}

template <typename Op>
void launch_binary_bf16(const char* what, const __nv_bfloat16* a, const __nv_bfloat16* b,
                        __nv_bfloat16* out, int64_t n, cudaStream_t stream) {
  if (n < 0) fail(what, ": n must be >= 0 (got ", n, ")");
  if (n == 0) return;
  if (a == nullptr || b == nullptr || out == nullptr) fail(what, ": null pointer argument");
  const unsigned blocks = act_blocks(n);
  if (act_aligned16(a) && act_aligned16(b) && act_aligned16(out))
    binary_bf16_kernel<Op, true><<<blocks, ACT_BLOCK_THREADS, 0, stream>>>(a, b, out, n);
  else
    binary_bf16_kernel<Op, false><<<blocks, ACT_BLOCK_THREADS, 0, stream>>>(a, b, out, n);
  HLLM_CUDA_CHECK_LAUNCH();
}

}  // namespace detail

// gate, up, out: [n] bf16 device pointers; out may alias gate or up.
inline void launch_swiglu(const __nv_bfloat16* gate, const __nv_bfloat16* up, __nv_bfloat16* out,
                          int64_t n, cudaStream_t stream) {
  detail::launch_binary_bf16<detail::SwigluOp>("launch_swiglu", gate, up, out, n, stream);
}

// x (in/out), y: [n] bf16 device pointers. x = bf16(x + y).
inline void launch_add(__nv_bfloat16* x, const __nv_bfloat16* y, int64_t n, cudaStream_t stream) {
  detail::launch_binary_bf16<detail::AddOp>("launch_add", x, y, x, n, stream);
}

// table: [vocab, width] bf16; ids: [n] int32; out: [n, width] bf16. Device pointers. width a
// multiple of 8; an id outside [0, vocab) gives a zero row.
inline void launch_embedding(const __nv_bfloat16* table, const int32_t* ids, int n, int width,
                             int vocab, __nv_bfloat16* out, cudaStream_t stream) {
  const char* what = "launch_embedding";
  if (n < 0) fail(what, ": n must be >= 0 (got ", n, ")");
  if (width <= 0 || width % 8 != 0)
    fail(what, ": width must be a positive multiple of 8 (got ", width, ")");
  if (vocab <= 0) fail(what, ": vocab must be > 0 (got ", vocab, ")");
  if (table == nullptr || ids == nullptr || out == nullptr) fail(what, ": null pointer argument");
  if (!detail::act_aligned16(table) || !detail::act_aligned16(out))
    fail(what, ": table and out must be 16-byte aligned");
  if (n == 0) return;
  detail::embedding_kernel<ACT_BLOCK_THREADS>
      <<<n, ACT_BLOCK_THREADS, 0, stream>>>(table, ids, width, vocab, out);
  HLLM_CUDA_CHECK_LAUNCH();
}

// x: [n] bf16; out: [n] fp32. Device pointers.
inline void launch_convert_to_f32(const __nv_bfloat16* x, float* out, int64_t n,
                                  cudaStream_t stream) {
  const char* what = "launch_convert_to_f32";
  if (n < 0) fail(what, ": n must be >= 0 (got ", n, ")");
  if (n == 0) return;
  if (x == nullptr || out == nullptr) fail(what, ": null pointer argument");
  const unsigned blocks = detail::act_blocks(n);
  if (detail::act_aligned16(x) && detail::act_aligned16(out))
    detail::convert_to_f32_kernel<true><<<blocks, ACT_BLOCK_THREADS, 0, stream>>>(x, out, n);
  else
    detail::convert_to_f32_kernel<false><<<blocks, ACT_BLOCK_THREADS, 0, stream>>>(x, out, n);
  HLLM_CUDA_CHECK_LAUNCH();
}

}  // namespace hllm::cuda
