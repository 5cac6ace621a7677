// The split-KV (flash-decoding) plan and online-softmax state of decode attention: the contract
// between kernels/hllm/cuda/attn_decode_paged.cuh and its CPU twin cpu/attention_paged.hpp, which
// run the same ranges and the same merge, so the CPU tests check the GPU's split math.
//
// Split-KV (flash-decoding) structure. The positions 0 .. max_kv_len - 1 are cut into n_splits
// contiguous ranges of split_len; each range yields an online-softmax state of one query head
//   m    running max of the scores (log2 units: score · log2 e, so exp2 does the softmax)
//   d    Σ exp2(s - m)            acc  Σ exp2(s - m) · v
// and states merge exactly (log-sum-exp): M = max(m1, m2), d = d1·2^(m1-M) + d2·2^(m2-M), same for
// acc; out = acc / d. A range holding no visible position is the empty state (m = -inf, d = 0,
// acc = 0), which merges as the identity: softmax_rescale maps m = -inf to the weight 0, so no
// -inf - -inf (NaN) is ever computed. The GPU runs one block per range; the CPU twin runs the same
// ranges one after another, so the CPU tests check the split and merge math.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "hllm/core/dtype.hpp"
#include "hllm/core/error.hpp"

namespace hllm {

// log2(e): scores are multiplied by scale · log2(e) so that exp(x) becomes exp2 (one MUFU.EX2).
inline constexpr float ATTN_LOG2E = 1.4426950408889634f;
inline constexpr float ATTN_NEG_INF = -std::numeric_limits<float>::infinity();

// Smallest range a split may cover: below ~128 positions (64 KB of K+V for one 8B KV head) the
// per-split fixed costs (q load, block combine, partial write and merge) outweigh the extra
// parallelism.
inline constexpr int32_t ATTN_MIN_SPLIT_LEN = 128;

// How the positions 0 .. max_kv_len - 1 are cut into ranges: split s covers
// [s · split_len, min((s + 1) · split_len, kv_len)).  Invariants (max_kv_len >= 1):
//   1 <= n_splits,  (n_splits - 1) · split_len < max_kv_len <= n_splits · split_len
struct AttnSplitPlan {
  int32_t n_splits = 1;   // ranges, = blocks per (query, KV head) on the GPU
  int32_t split_len = 0;  // positions per range (the last one may be shorter)
};

// A grid of `blocks` equal blocks on a GPU that holds `slots` blocks at once runs in
// ceil(blocks / slots) waves; this is the fraction of the slots those waves keep busy.
inline double attn_wave_efficiency(int64_t blocks, int64_t slots) {
  const int64_t waves = (blocks + slots - 1) / slots;
  return static_cast<double>(blocks) / static_cast<double>(waves * slots);
}

// A plan is good enough once its waves keep this fraction of the GPU busy; more splits would only
// add partial states to write and merge.
inline constexpr double ATTN_GOOD_WAVE_EFFICIENCY = 0.9;
// The grid's z dimension limit (CUDA C++ Programming Guide, "Compute Capabilities").
inline constexpr int32_t ATTN_MAX_SPLITS = 65535;

// The plan for n_queries × n_kv_heads (query, KV head) pairs on a GPU with `slots` resident
// blocks (SMs × blocks per SM): the fewest splits whose grid of pairs · n_splits blocks keeps
// >= 90% of the slots busy over its waves (fills one wave for batch 1, avoids a nearly empty last
// wave for batch 64), else the best such count, and never a range shorter than ATTN_MIN_SPLIT_LEN.
inline AttnSplitPlan attn_split_plan(int64_t n_queries, int64_t n_kv_heads, int32_t max_kv_len,
                                     int64_t slots) {
  if (n_queries < 1 || n_kv_heads < 1 || max_kv_len < 1 || slots < 1)
    fail("attn_split_plan: n_queries ", n_queries, ", n_kv_heads ", n_kv_heads, ", max_kv_len ",
         max_kv_len, ", slots ", slots, " must all be >= 1");
  const int64_t pairs = n_queries * n_kv_heads;
  const int32_t most = std::clamp<int32_t>(max_kv_len / ATTN_MIN_SPLIT_LEN, 1, ATTN_MAX_SPLITS);
  int32_t n = 1;
  double best = attn_wave_efficiency(pairs, slots);
  // Efficiency reaches 0.9 by 10 waves at the latest, so the loop runs at most ~10 · slots / pairs
  // times.
  for (int32_t candidate = 2; candidate <= most && best < ATTN_GOOD_WAVE_EFFICIENCY; ++candidate) {
    const double efficiency = attn_wave_efficiency(pairs * candidate, slots);
    if (efficiency > best) best = efficiency, n = candidate;
  }
  AttnSplitPlan plan;
  plan.split_len = (max_kv_len + n - 1) / n;
  plan.n_splits = (max_kv_len + plan.split_len - 1) / plan.split_len;  // <= n: no empty tail split
  return plan;
}

// Index of the partial state of (query, head, split) in the workspace of a split launch:
//   partial_acc [n_queries, n_heads, n_splits, head_dim] fp32, then
//   partial_md  [n_queries, n_heads, n_splits] (m, d) fp32 pairs
HLLM_HOST_DEVICE int64_t attn_partial_index(int32_t query, int32_t head, int32_t split,
                                            int32_t n_heads, int32_t n_splits) {
  return (static_cast<int64_t>(query) * n_heads + head) * n_splits + split;
}

// Bytes of that workspace; 0 with one split (the kernel then writes `out` directly).
inline size_t attn_workspace_bytes_for(int64_t n_queries, int64_t n_heads, int64_t head_dim,
                                       int32_t n_splits) {
  if (n_splits <= 1) return 0;
  return static_cast<size_t>(n_queries * n_heads * n_splits * (head_dim + 2)) * sizeof(float);
}

// exp2(m_old - m_new): the factor that moves a state kept relative to max m_old onto max
// m_new >= m_old. 0 for the empty state (m_old = -inf), whatever m_new is (also -inf). Also the
// softmax weight exp2(s - m) of one score s, with s = -inf for a masked position.
HLLM_HOST_DEVICE float softmax_rescale(float m_old, float m_new) {
  return m_old == ATTN_NEG_INF ? 0.0f : exp2f(m_old - m_new);
}

}  // namespace hllm
