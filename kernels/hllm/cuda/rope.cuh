// RoPE on q and k, fused with the store of k and v into the paged KV cache.
//
// For every token t (position pos = token_pos[t], sequence seq = token_seq[t], both read from
// device memory so the launch can be replayed by a CUDA graph):
//
//   q[t, h, :]                     rotated in place                      h < n_heads
//   kv.k[paged_kv_row(seq, pos)]   = rotate(k[t, g, :])                  g < n_kv_heads
//   kv.v[paged_kv_row(seq, pos)]   = v[t, g, :]                          (copied as is)
//
// Rotation (HF "rotate half", model/rope.hpp; the pair rotation is layout/rope_rotate.hpp's):
// element i pairs with i + head_dim/2,
//   angle_i = rope_angle(pos, inv_freq[i]) = float(pos) · inv_freq[i]
//   c = cos(angle_i) · attention_factor, s = sin(angle_i) · attention_factor   (full-range sincosf:
//   positions reach 131072 radians, far outside __sinf's accurate range)
//   rope_rotate_pair(x[i], x[i + head_dim/2], c, s), fp32 math, bf16 out.
//
// Layouts: q [n_tokens, n_heads, head_dim], k, v [n_tokens, n_kv_heads, head_dim] bf16 row-major;
// the cache as layout/paged_kv.hpp draws it ([n_blocks, block_size, n_kv_heads, head_dim] bf16).
//
//   block t: threads 0 .. head_dim/2-1 compute c, s for token t into shared memory (once per token,
//   not once per head), then all threads sweep 8-element chunks: q pairs, k pairs, v packs.
//
// A token whose sequence or position is negative, or whose position lies past the block table
// (pos / block_size >= max_blocks_per_seq), is left untouched: padding, never an out-of-bounds
// access. Preconditions (checked): head_dim a multiple of 16 (so each half is whole 16-byte packs)
// up to 512, pointers 16-byte aligned.
//
// Bytes for Llama-3-8B (32 q heads, 8 kv heads, head_dim 128), per token: q read + written 2 · 8
// KB, k and v read 2 · 2 KB and written to the cache 2 · 2 KB = 24 KB. FLOPs: 6 per rotated pair
// plus 64 sincosf: memory-bound.
#pragma once

#include <cstdint>

#include "hllm/cuda/common.cuh"
#include "hllm/layout/paged_kv.hpp"
#include "hllm/layout/rope_rotate.hpp"

namespace hllm::cuda {

// 256 threads: a Llama-3-8B token has 256 q chunks + 64 k chunks + 128 v packs, ~2 per thread.
inline constexpr int ROPE_BLOCK_THREADS = 256;
inline constexpr int ROPE_MAX_HEAD_DIM = 512;

namespace detail {

// Rotates the chunk of 8 pairs (low[0..7], high[0..7]) by the 8 angles starting at pair index i0.
__device__ __forceinline__ void rope_rotate_chunk(Pack16<__nv_bfloat16>& low,
                                                  Pack16<__nv_bfloat16>& high, const float* cos_s,
                                                  const float* sin_s, int i0) {
#pragma unroll
  for (int j = 0; j < Pack16<__nv_bfloat16>::N; ++j) {
    float x_low = to_f32(low.elem[j]), x_high = to_f32(high.elem[j]);
    rope_rotate_pair(x_low, x_high, cos_s[i0 + j], sin_s[i0 + j]);
    low.elem[j] = from_f32<__nv_bfloat16>(x_low);
    high.elem[j] = from_f32<__nv_bfloat16>(x_high);
  }
}

template <int BLOCK_THREADS>
__global__ void __launch_bounds__(BLOCK_THREADS)
    rope_store_kv_kernel(__nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                         int n_heads, int n_kv_heads, int head_dim, const int32_t* token_seq,
                         const int32_t* token_pos, const float* inv_freq, float attention_factor,
                         PagedKvView kv) {
  constexpr int N = Pack16<__nv_bfloat16>::N;
  __shared__ float cos_s[ROPE_MAX_HEAD_DIM / 2];
  __shared__ float sin_s[ROPE_MAX_HEAD_DIM / 2];

  const int t = static_cast<int>(blockIdx.x);
  const int32_t seq = token_seq[t];
  const int32_t pos = token_pos[t];
  // Uniform over the block (one token per block), so the early return skips no barrier.
  if (seq < 0 || pos < 0 || pos / kv.block_size >= kv.max_blocks_per_seq) return;

  const int half = head_dim / 2;
  for (int i = static_cast<int>(threadIdx.x); i < half; i += BLOCK_THREADS) {
    float s, c;
    sincosf(rope_angle(pos, inv_freq[i]), &s, &c);
    cos_s[i] = c * attention_factor;
    sin_s[i] = s * attention_factor;
  }
  __syncthreads();

  const int chunks_per_head = half / N;  // 8-pair chunks in one head
  // q: in place.
  __nv_bfloat16* q_token = q + static_cast<int64_t>(t) * n_heads * head_dim;
  for (int c = static_cast<int>(threadIdx.x); c < n_heads * chunks_per_head; c += BLOCK_THREADS) {
    const int head = c / chunks_per_head;
    const int i0 = (c % chunks_per_head) * N;
    __nv_bfloat16* low_ptr = q_token + head * head_dim + i0;
    Pack16<__nv_bfloat16> low = load_pack(low_ptr), high = load_pack(low_ptr + half);
    rope_rotate_chunk(low, high, cos_s, sin_s, i0);
    store_pack(low_ptr, low);
    store_pack(low_ptr + half, high);
  }

  // k: rotated into the cache row of (seq, pos).
  const int64_t row = paged_kv_row(kv, seq, pos);
  const int64_t kv_token = static_cast<int64_t>(t) * n_kv_heads * head_dim;
  __nv_bfloat16* k_cache = static_cast<__nv_bfloat16*>(kv.k);
  __nv_bfloat16* v_cache = static_cast<__nv_bfloat16*>(kv.v);
  for (int c = static_cast<int>(threadIdx.x); c < n_kv_heads * chunks_per_head;
       c += BLOCK_THREADS) {
    const int head = c / chunks_per_head;
    const int i0 = (c % chunks_per_head) * N;
    const __nv_bfloat16* src = k + kv_token + head * head_dim + i0;
    Pack16<__nv_bfloat16> low = load_pack(src), high = load_pack(src + half);
    rope_rotate_chunk(low, high, cos_s, sin_s, i0);
    __nv_bfloat16* dst = k_cache + paged_kv_offset(kv, row, head) + i0;
    store_pack(dst, low);
    store_pack(dst + half, high);
  }

  // v: copied; a cache row holds all kv heads contiguously, exactly like one token of v.
  const int v_packs = n_kv_heads * head_dim / N;
  const __nv_bfloat16* v_src = v + kv_token;
  __nv_bfloat16* v_dst = v_cache + paged_kv_offset(kv, row, 0);
  for (int p = static_cast<int>(threadIdx.x); p < v_packs; p += BLOCK_THREADS) {
    store_pack(v_dst + p * N, load_pack(v_src + p * N));
  }
}

inline bool rope_aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % VEC_BYTES == 0;
}

}  // namespace detail

// q: [n_tokens, n_heads, head_dim] bf16, rotated in place; k, v: [n_tokens, n_kv_heads, head_dim]
// bf16; token_seq, token_pos: [n_tokens] int32; inv_freq: [head_dim / 2] fp32 (rope_table()).
// All device pointers; kv's pools and block tables too.
inline void launch_rope_store_kv(__nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                                 int n_tokens, int n_heads, int n_kv_heads, int head_dim,
                                 const int32_t* token_seq, const int32_t* token_pos,
                                 const float* inv_freq, float attention_factor,
                                 const PagedKvView& kv, cudaStream_t stream) {
  const char* what = "launch_rope_store_kv";
  if (n_tokens < 0) fail(what, ": n_tokens must be >= 0 (got ", n_tokens, ")");
  if (n_heads <= 0 || n_kv_heads <= 0 || n_heads % n_kv_heads != 0)
    fail(what, ": n_heads (", n_heads, ") must be a positive multiple of n_kv_heads (", n_kv_heads,
         ")");
  if (head_dim <= 0 || head_dim % 16 != 0 || head_dim > ROPE_MAX_HEAD_DIM)
    fail(what, ": head_dim must be a positive multiple of 16 up to ", ROPE_MAX_HEAD_DIM, " (got ",
         head_dim, ")");
  if (kv.head_dim != head_dim || kv.n_kv_heads != n_kv_heads)
    fail(what, ": the KV cache has n_kv_heads ", kv.n_kv_heads, ", head_dim ", kv.head_dim,
         " but the tokens have n_kv_heads ", n_kv_heads, ", head_dim ", head_dim);
  if (kv.block_size <= 0 || kv.max_blocks_per_seq <= 0)
    fail(what, ": the KV cache needs block_size > 0 and max_blocks_per_seq > 0 (got ",
         kv.block_size, ", ", kv.max_blocks_per_seq, ")");
  if (q == nullptr || k == nullptr || v == nullptr || token_seq == nullptr ||
      token_pos == nullptr || inv_freq == nullptr || kv.k == nullptr || kv.v == nullptr ||
      kv.block_tables == nullptr)
    fail(what, ": null pointer argument");
  if (!detail::rope_aligned16(q) || !detail::rope_aligned16(k) || !detail::rope_aligned16(v) ||
      !detail::rope_aligned16(kv.k) || !detail::rope_aligned16(kv.v))
    fail(what, ": q, k, v and the cache pools must be 16-byte aligned");
  if (n_tokens == 0) return;
  detail::rope_store_kv_kernel<ROPE_BLOCK_THREADS><<<n_tokens, ROPE_BLOCK_THREADS, 0, stream>>>(
      q, k, v, n_heads, n_kv_heads, head_dim, token_seq, token_pos, inv_freq, attention_factor, kv);
  HLLM_CUDA_CHECK_LAUNCH();
}

}  // namespace hllm::cuda
