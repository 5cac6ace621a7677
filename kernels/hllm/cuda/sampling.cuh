// Token selection on the GPU: greedy argmax, and the temperature / top-k / top-p / min-p draw whose
// definition (and CPU twin, the GPU test's oracle) is include/hllm/layout/sample_rule.hpp.
//
// Layouts: logits fp32 [rows, vocab] row-major; params SampleRuleParams [rows] and uniforms fp32
// [rows] in [0, 1), both device memory (so a CUDA graph replays with fresh values); out_ids int32
// [rows]. One block of 1024 threads per row.
//
//   argmax   one pass: per-thread (value, index) best, then a block reduction (ties -> lower index)
//   sample   pass 1      max logit m (with the argmax; a greedy row stops here)
//            top_k       bisection over the 32-bit order key of the logits: the largest key K with
//                        count(key >= K) >= k is exactly the k-th largest logit (<= 32 passes)
//            top_p       bisection the same way on S(K) = Σ_{key >= K} w, against top_p · S(top-k
//                        threshold) (<= 32 passes + 1 for the mass)
//            draw        thread t owns the contiguous chunk [t·C, (t+1)·C), C = ceil(vocab/1024):
//                        chunk sums of kept w (double), a block scan, and the one thread whose
//                        [exclusive, inclusive) prefix holds u·W walks its chunk in index order
//   Bisection passes read the row from L2 (a 128k-vocab row is 513 KB): 66 passes at most.
//
// Preconditions (checked): 0 < vocab <= 262144, logits 16-byte aligned.
//
// Bytes for Llama-3-8B (vocab 128256), per row: argmax reads 513 KB once; sample reads it up to ~67
// times (from L2 after the first), ~128k expf per top_p pass. Both are latency-bound per row.
#pragma once

#include <cstdint>
#include <limits>

#include "hllm/cuda/common.cuh"
#include "hllm/layout/sample_rule.hpp"

namespace hllm::cuda {

// One block per row with the most threads a block may have: a row is read many times and the
// passes are reductions, so per-row parallelism is what counts.
inline constexpr int SAMPLE_BLOCK_THREADS = 1024;
inline constexpr int SAMPLE_MAX_VOCAB = 262144;

namespace detail {

// Calls f(index, logit) for this thread's share of the row, in increasing index order per thread.
// float4 loads when the row is whole 16-byte vectors (vocab % 4 == 0 and the base aligned).
template <int BLOCK_THREADS, typename F>
__device__ __forceinline__ void sample_for_each(const float* row, int vocab, F&& f) {
  if (vocab % 4 == 0) {
    const float4* row4 = reinterpret_cast<const float4*>(row);
    for (int q = static_cast<int>(threadIdx.x); q < vocab / 4; q += BLOCK_THREADS) {
      const float4 v = row4[q];
      f(4 * q, v.x);
      f(4 * q + 1, v.y);
      f(4 * q + 2, v.z);
      f(4 * q + 3, v.w);
    }
  } else {
    for (int i = static_cast<int>(threadIdx.x); i < vocab; i += BLOCK_THREADS) f(i, row[i]);
  }
}

// (value, index) ordering of argmax: larger value first, then the lower index.
__device__ __forceinline__ bool sample_better(float v, int32_t i, float best_v, int32_t best_i) {
  return v > best_v || (v == best_v && i < best_i);
}

struct SampleArgmax {
  float value;
  int32_t index;
};

// The largest sanitized logit of the row and its lowest index, returned to every thread.
template <int BLOCK_THREADS>
__device__ SampleArgmax sample_block_argmax(const float* row, int vocab) {
  constexpr int N_WARPS = BLOCK_THREADS / WARP_SIZE;
  __shared__ float warp_value[N_WARPS];
  __shared__ int32_t warp_index[N_WARPS];
  float best_v = -std::numeric_limits<float>::infinity();
  int32_t best_i = std::numeric_limits<int32_t>::max();
  sample_for_each<BLOCK_THREADS>(row, vocab, [&](int i, float l) {
    const float v = sample_logit(l);
    if (sample_better(v, i, best_v, best_i)) best_v = v, best_i = i;
  });
  const auto warp_argmax = [&]() {
#pragma unroll
    for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2) {
      const float v = __shfl_xor_sync(FULL_WARP_MASK, best_v, offset);
      const int32_t i = __shfl_xor_sync(FULL_WARP_MASK, best_i, offset);
      if (sample_better(v, i, best_v, best_i)) best_v = v, best_i = i;
    }
  };
  warp_argmax();
  const int lane = static_cast<int>(threadIdx.x) % WARP_SIZE;
  const int warp = static_cast<int>(threadIdx.x) / WARP_SIZE;
  __syncthreads();  // earlier readers of warp_value are done
  if (lane == 0) warp_value[warp] = best_v, warp_index[warp] = best_i;
  __syncthreads();
  best_v = lane < N_WARPS ? warp_value[lane] : -std::numeric_limits<float>::infinity();
  best_i = lane < N_WARPS ? warp_index[lane] : std::numeric_limits<int32_t>::max();
  warp_argmax();
  // best_i is always a real index: even a -inf element ties the start value and wins by index.
  return {best_v, best_i};
}

// Block-wide double sum, returned to every thread (all threads must call; safe back to back).
template <int BLOCK_THREADS>
__device__ double sample_block_sum(double v) {
  constexpr int N_WARPS = BLOCK_THREADS / WARP_SIZE;
  __shared__ double partial[N_WARPS];
  const int lane = static_cast<int>(threadIdx.x) % WARP_SIZE;
  const int warp = static_cast<int>(threadIdx.x) / WARP_SIZE;
#pragma unroll
  for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2)
    v += __shfl_xor_sync(FULL_WARP_MASK, v, offset);
  __syncthreads();  // earlier readers of partial are done
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < N_WARPS ? partial[lane] : 0.0;
#pragma unroll
  for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2)
    v += __shfl_xor_sync(FULL_WARP_MASK, v, offset);
  return v;
}

// Inclusive block scan of one double per thread into scan[0 .. BLOCK_THREADS) (shared memory);
// ends with a barrier, so every thread may read any entry afterwards.
template <int BLOCK_THREADS>
__device__ void sample_block_scan(double v, double* scan) {
  constexpr int N_WARPS = BLOCK_THREADS / WARP_SIZE;
  static_assert(N_WARPS <= WARP_SIZE, "one warp scans the warp totals");
  __shared__ double warp_total[N_WARPS];
  const int lane = static_cast<int>(threadIdx.x) % WARP_SIZE;
  const int warp = static_cast<int>(threadIdx.x) / WARP_SIZE;
#pragma unroll
  for (int offset = 1; offset < WARP_SIZE; offset *= 2) {
    const double up = __shfl_up_sync(FULL_WARP_MASK, v, offset);
    if (lane >= offset) v += up;
  }
  if (lane == WARP_SIZE - 1) warp_total[warp] = v;
  __syncthreads();
  if (warp == 0) {
    double t = lane < N_WARPS ? warp_total[lane] : 0.0;
#pragma unroll
    for (int offset = 1; offset < WARP_SIZE; offset *= 2) {
      const double up = __shfl_up_sync(FULL_WARP_MASK, t, offset);
      if (lane >= offset) t += up;
    }
    if (lane < N_WARPS) warp_total[lane] = t;
  }
  __syncthreads();
  if (warp > 0) v += warp_total[warp - 1];
  scan[threadIdx.x] = v;
  __syncthreads();
}

template <int BLOCK_THREADS>
__global__ void __launch_bounds__(BLOCK_THREADS)
    argmax_kernel(const float* logits, int vocab, int32_t* out_ids) {
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  const SampleArgmax best = sample_block_argmax<BLOCK_THREADS>(row, vocab);
  if (threadIdx.x == 0) out_ids[blockIdx.x] = best.index;
}

// Min 1 block per SM: without it ptxas budgets 32 registers (as if two 1024-thread blocks shared
// an SM) and spills; with it, one block per SM may use 64.
template <int BLOCK_THREADS>
__global__ void __launch_bounds__(BLOCK_THREADS, 1)
    sample_kernel(const float* logits, int vocab, const SampleRuleParams* params,
                  const float* uniforms, int32_t* out_ids) {
  __shared__ double scan[BLOCK_THREADS];
  __shared__ int32_t last_kept, choice;
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  const SampleRuleParams p = params[blockIdx.x];

  // Step 1: max and greedy (the condition is the same in every thread: no barrier is skipped).
  const SampleArgmax best = sample_block_argmax<BLOCK_THREADS>(row, vocab);
  const float m = best.value;
  if (sample_is_greedy(p, m)) {
    if (threadIdx.x == 0) out_ids[blockIdx.x] = best.index;
    return;
  }
  const float inv_t = 1.0f / p.temperature;
  const uint64_t key_past_max = uint64_t{sample_order_key(m)} + 1;  // no logit has this key

  // Step 3, top_k: invariant count(key >= lo) >= k > count(key >= hi).
  uint32_t threshold = 0;  // keep key >= threshold; 0 keeps everything
  if (p.top_k > 0 && p.top_k < vocab) {
    uint64_t lo = 0, hi = key_past_max;
    while (hi - lo > 1) {
      const uint64_t mid = lo + (hi - lo) / 2;
      float count = 0.0f;  // at most 256 per thread: exact
      sample_for_each<BLOCK_THREADS>(row, vocab, [&](int, float l) {
        count += sample_order_key(sample_logit(l)) >= mid ? 1.0f : 0.0f;
      });
      const double total = sample_block_sum<BLOCK_THREADS>(count);
      if (total >= static_cast<double>(p.top_k)) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    threshold = static_cast<uint32_t>(lo);
  }

  // Step 4, top_p: invariant S(lo) >= target > S(hi), S(K) = Σ_{key >= K} w.
  const auto mass_from = [&](uint64_t key) {
    float s = 0.0f;  // fp32 per thread (~128 terms), double across threads
    sample_for_each<BLOCK_THREADS>(row, vocab, [&](int, float l) {
      const float v = sample_logit(l);
      if (sample_order_key(v) >= key) s += sample_weight(v, m, inv_t);
    });
    return sample_block_sum<BLOCK_THREADS>(s);
  };
  if (p.top_p < 1.0f) {
    const double target = static_cast<double>(p.top_p) * mass_from(threshold);
    uint64_t lo = threshold, hi = key_past_max;
    while (hi - lo > 1) {
      const uint64_t mid = lo + (hi - lo) / 2;
      if (mass_from(mid) >= target) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    threshold = static_cast<uint32_t>(lo);
  }

  // Steps 5 and 6: kept = key >= threshold and w >= min weight; draw over this thread's chunk.
  const float min_weight = sample_min_weight(p.min_p);
  const int chunk = ceil_div(vocab, BLOCK_THREADS);
  const int begin = static_cast<int>(threadIdx.x) * chunk;
  const int end = min(begin + chunk, vocab);
  double chunk_sum = 0.0;
  int32_t chunk_last = -1;
  for (int i = begin; i < end; ++i) {
    const float v = sample_logit(row[i]);
    const float w = sample_weight(v, m, inv_t);
    if (sample_order_key(v) >= threshold && sample_weight_kept(w, min_weight))
      chunk_sum += w, chunk_last = i;
  }
  if (threadIdx.x == 0) last_kept = -1, choice = std::numeric_limits<int32_t>::max();
  __syncthreads();
  if (chunk_last >= 0) atomicMax(&last_kept, chunk_last);
  sample_block_scan<BLOCK_THREADS>(chunk_sum, scan);  // ends with a barrier

  const double inclusive = scan[threadIdx.x];
  const double exclusive = threadIdx.x == 0 ? 0.0 : scan[threadIdx.x - 1];
  const double target =
      static_cast<double>(fmaxf(uniforms[blockIdx.x], 0.0f)) * scan[BLOCK_THREADS - 1];
  if (exclusive <= target && target < inclusive) {
    double cumulative = exclusive;
    int32_t pick = chunk_last;  // rounding ran past the chunk: its last kept token
    for (int i = begin; i < end; ++i) {
      const float v = sample_logit(row[i]);
      const float w = sample_weight(v, m, inv_t);
      if (sample_order_key(v) >= threshold && sample_weight_kept(w, min_weight)) {
        cumulative += w;
        if (cumulative > target) {
          pick = i;
          break;
        }
      }
    }
    // Scan rounding could make two neighbouring intervals overlap: the lower index wins.
    atomicMin(&choice, pick);
  }
  __syncthreads();
  if (threadIdx.x == 0)
    out_ids[blockIdx.x] = choice != std::numeric_limits<int32_t>::max() ? choice : last_kept;
}

inline void check_sample_args(const char* what, const float* logits, int rows, int vocab,
                              const int32_t* out_ids) {
  if (rows < 0) fail(what, ": rows must be >= 0 (got ", rows, ")");
  if (vocab <= 0 || vocab > SAMPLE_MAX_VOCAB)
    fail(what, ": vocab must be in [1, ", SAMPLE_MAX_VOCAB, "] (got ", vocab, ")");
  if (logits == nullptr || out_ids == nullptr) fail(what, ": null pointer argument");
  if (reinterpret_cast<uintptr_t>(logits) % VEC_BYTES != 0)
    fail(what, ": logits must be 16-byte aligned");
}

}  // namespace detail

// logits: [rows, vocab] fp32; out_ids: [rows] int32. Device pointers. Lowest index on ties; NaN
// logits are ignored (count as -inf).
inline void launch_argmax(const float* logits, int rows, int vocab, int32_t* out_ids,
                          cudaStream_t stream) {
  detail::check_sample_args("launch_argmax", logits, rows, vocab, out_ids);
  if (rows == 0) return;
  detail::argmax_kernel<SAMPLE_BLOCK_THREADS>
      <<<rows, SAMPLE_BLOCK_THREADS, 0, stream>>>(logits, vocab, out_ids);
  HLLM_CUDA_CHECK_LAUNCH();
}

// logits: [rows, vocab] fp32; params: [rows] SampleRuleParams; uniforms: [rows] fp32 in [0, 1);
// out_ids: [rows] int32. Device pointers. Picks by sample_rule.hpp's rule.
inline void launch_sample(const float* logits, int rows, int vocab, const SampleRuleParams* params,
                          const float* uniforms, int32_t* out_ids, cudaStream_t stream) {
  detail::check_sample_args("launch_sample", logits, rows, vocab, out_ids);
  if (params == nullptr || uniforms == nullptr)
    fail("launch_sample: null params or uniforms pointer");
  if (rows == 0) return;
  detail::sample_kernel<SAMPLE_BLOCK_THREADS>
      <<<rows, SAMPLE_BLOCK_THREADS, 0, stream>>>(logits, vocab, params, uniforms, out_ids);
  HLLM_CUDA_CHECK_LAUNCH();
}

}  // namespace hllm::cuda
