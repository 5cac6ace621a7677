// Token selection on the GPU: greedy argmax, the penalties (layout/sample_penalty.hpp), and the
// temperature / top-k / top-p / min-p draw whose definition (and CPU twin, the GPU test's oracle)
// is include/hllm/layout/sample_rule.hpp.
//
// Layouts: logits fp32 [rows, vocab] row-major; params SampleRuleParams [rows] and uniforms fp32
// [rows] in [0, 1), both device memory (so a CUDA graph replays with fresh values); out_ids int32
// [rows]. One block of 1024 threads per row.
//
//   argmax   one pass: per-thread (value, index) best, then a block reduction (ties -> lower index)
//   sample   pass 1      max logit m (with the argmax; a greedy row stops here)
//            top_k       radix select (layout/sample_radix.hpp) of the k-th largest order key:
//                        4 passes, each a 256-bin count histogram of the keys under the prefix
//            top_p       radix select the same way with histograms of fixed-point weights, against
//                        top_p · (the top-k's mass, the first pass's total): 4 passes
//            draw        thread t owns the contiguous chunk [t·C, (t+1)·C), C = ceil(vocab/1024):
//                        chunk sums of kept w (double), a block scan, and the one thread whose
//                        [exclusive, inclusive) prefix holds u·W walks its chunk in index order
//   Passes after the first read the row from L2 (a 128k-vocab row is 513 KB): 11 at most (the
//   bisection this replaced made up to 67).
//
// Preconditions (checked): 0 < vocab <= 262144, logits 16-byte aligned.
//
// Bytes for Llama-3-8B (vocab 128256), per row: argmax reads 513 KB once; sample reads it up to 11
// times (from L2 after the first), ~128k expf per top_p pass. Both are latency-bound per row: one
// block (one SM) per row.
#pragma once

#include <cstdint>
#include <limits>

#include "hllm/cuda/common.cuh"
#include "hllm/layout/sample_penalty.hpp"
#include "hllm/layout/sample_radix.hpp"
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

// The radix select of layout/sample_radix.hpp over one row: the largest order key K with
// Σ_{key >= K, key >= floor} weigh(v) >= target_of(that sum over all keys >= floor). weigh(v) is
// the integer f of a sanitized logit v. Four levels; each builds a 256-bin histogram in
// SampleRadixShared::SUBHISTOGRAMS copies (warps spread over them: fewer threads add to one shared address), sums the
// copies, and thread 0 picks the digit. Integer sums: the same key on every run. All threads call
// it and get the key.
// The radix select's shared memory, declared once by the kernel (both selects use it in turn).
struct SampleRadixShared {
  static constexpr int SUBHISTOGRAMS = 8;
  unsigned long long hist[SUBHISTOGRAMS][SAMPLE_RADIX_BINS];
  uint64_t total_hist[SAMPLE_RADIX_BINS];
  uint32_t prefix;
  uint64_t above;
  double target;
};

template <int BLOCK_THREADS, typename Weigh, typename TargetOf>
__device__ uint32_t sample_radix_select(SampleRadixShared& shared, const float* row, int vocab,
                                        uint32_t floor, Weigh&& weigh, TargetOf&& target_of) {
  constexpr int SUBHISTOGRAMS = SampleRadixShared::SUBHISTOGRAMS;
  auto& hist = shared.hist;
  auto& total_hist = shared.total_hist;
  unsigned long long* mine = hist[(threadIdx.x / WARP_SIZE) % SUBHISTOGRAMS];
  uint32_t prefix = 0;
  for (int shift = SAMPLE_RADIX_TOP_SHIFT; shift >= 0; shift -= SAMPLE_RADIX_BITS) {
    for (int i = static_cast<int>(threadIdx.x); i < SUBHISTOGRAMS * SAMPLE_RADIX_BINS;
         i += BLOCK_THREADS)
      hist[i / SAMPLE_RADIX_BINS][i % SAMPLE_RADIX_BINS] = 0;
    __syncthreads();
    sample_for_each<BLOCK_THREADS>(row, vocab, [&](int, float l) {
      const float v = sample_logit(l);
      const uint32_t key = sample_order_key(v);
      if (key >= floor && sample_radix_matches(key, prefix, shift)) {
        const uint64_t f = weigh(v);
        if (f > 0) atomicAdd(&mine[sample_radix_digit(key, shift)], f);
      }
    });
    __syncthreads();
    for (int b = static_cast<int>(threadIdx.x); b < SAMPLE_RADIX_BINS; b += BLOCK_THREADS) {
      uint64_t sum = 0;
#pragma unroll
      for (int c = 0; c < SUBHISTOGRAMS; ++c) sum += hist[c][b];
      total_hist[b] = sum;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      if (shift == SAMPLE_RADIX_TOP_SHIFT) {
        uint64_t total = 0;
        for (int b = 0; b < SAMPLE_RADIX_BINS; ++b) total += total_hist[b];
        shared.target = target_of(total);
        shared.above = 0;
      }
      const SampleRadixPick pick = sample_radix_pick(total_hist, shared.above, shared.target);
      shared.prefix = prefix | (pick.digit << shift);
      shared.above = pick.above;
    }
    __syncthreads();
    prefix = shared.prefix;
  }
  return prefix;
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
  __shared__ SampleRadixShared radix;
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

  // Step 3, top_k: the k-th largest key (count with multiplicity).
  uint32_t threshold = 0;  // keep key >= threshold; 0 keeps everything
  if (p.top_k > 0 && p.top_k < vocab) {
    threshold = sample_radix_select<BLOCK_THREADS>(
        radix, row, vocab, 0u, [](float) { return uint64_t{1}; },
        [&](uint64_t) { return static_cast<double>(p.top_k); });
  }

  // Step 4, top_p: the largest key whose mass from the top (among the top-k) reaches top_p of the
  // top-k's mass; at least one unit, so top_p <= 0 keeps the largest logit alone.
  if (p.top_p < 1.0f) {
    threshold = sample_radix_select<BLOCK_THREADS>(
        radix, row, vocab, threshold,
        [&](float v) { return sample_mass_units(sample_weight(v, m, inv_t)); },
        [&](uint64_t total) {
          return fmax(static_cast<double>(p.top_p) * static_cast<double>(total), 1.0);
        });
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

// One thread per penalty list entry: grid (ceil(longest list / block), rows). Entries of a row
// name distinct ids, so no two threads write the same logit.
__global__ void apply_penalties_kernel(float* logits, int vocab, const SamplePenalties* penalties,
                                       const int32_t* offsets, const SamplePenaltyToken* tokens) {
  const int row = static_cast<int>(blockIdx.y);
  const int32_t entry = offsets[row] + static_cast<int32_t>(blockIdx.x * blockDim.x + threadIdx.x);
  if (entry >= offsets[row + 1]) return;
  const SamplePenaltyToken t = tokens[entry];
  if (t.id < 0 || t.id >= vocab) return;  // the host list holds none; a stray id is not written
  float& logit = logits[static_cast<int64_t>(row) * vocab + t.id];
  logit = penalized_logit(logit, penalties[row], t.generated);
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

// Penalties (layout/sample_penalty.hpp) on logits [rows, vocab] fp32, in place: row r's entries are
// tokens[offsets[r] .. offsets[r + 1]), penalties[r] its parameters. max_entries: the longest
// row's entry count (sizes the grid). Device pointers.
inline void launch_apply_penalties(float* logits, int rows, int vocab,
                                   const SamplePenalties* penalties, const int32_t* offsets,
                                   const SamplePenaltyToken* tokens, int max_entries,
                                   cudaStream_t stream) {
  detail::check_sample_args("launch_apply_penalties", logits, rows, vocab, offsets);
  if (penalties == nullptr || tokens == nullptr)
    fail("launch_apply_penalties: null penalties or tokens pointer");
  if (rows == 0 || max_entries <= 0) return;
  constexpr int THREADS = 256;
  const dim3 grid(static_cast<unsigned>(ceil_div(max_entries, THREADS)),
                  static_cast<unsigned>(rows));
  detail::apply_penalties_kernel<<<grid, THREADS, 0, stream>>>(logits, vocab, penalties, offsets,
                                                               tokens);
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
