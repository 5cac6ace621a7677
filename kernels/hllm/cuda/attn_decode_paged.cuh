// Decode attention over the paged KV cache (flash-decoding), also used for naive causal prefill:
//
//   out[i, h, :] = softmax(scale · q[i, h, :] · K[seq, 0 .. kv_len - 1, kvh, :]ᵀ) · V[same rows]
//   seq = query_seq[i], kv_len = query_kv_len[i], kvh = h / (n_heads / n_kv_heads)
//
//   q     [n_queries, n_heads, head_dim]                   bf16
//   kv    pools [n_blocks, block_size, n_kv_heads, head_dim] bf16, block tables int32
//         (layout/paged_kv.hpp; one pool row = one position, all KV heads)
//   query_seq, query_kv_len  [n_queries] int32 in DEVICE memory (per-step values: a captured CUDA
//         graph replays with new lengths; the grid depends only on n_queries, n_kv_heads and the
//         host bound max_kv_len)
//   out   [n_queries, n_heads, head_dim]                   bf16
//   error_flag  nullable DEVICE int32 (common.cuh, "Device-side error flag"): a query_kv_len above
//         max_kv_len is clamped to it (the reads stay inside the block table) and sets
//         KERNEL_ERROR_KV_LEN_ABOVE_MAX; one below 1 gives zeros and sets
//         KERNEL_ERROR_KV_LEN_BELOW_ONE. Either way the output is not the attention asked for.
//
// Decode is one query per sequence; prefill of t tokens is t queries of one sequence with kv_len
// start + 1 .. start + t (the fast FlashAttention prefill is attn_prefill.cuh's job).
//
// Work split (layout/attn_split.hpp has the math and the split plan; cpu/attention_paged.hpp the
// CPU twin):
//
//   grid (n_queries, n_kv_heads, n_splits)   block: 4 warps
//   block (i, kvh, s) -> positions [s · split_len, min((s + 1) · split_len, kv_len)) of query i,
//                        ALL `group` query heads of KV head kvh: each K/V row is loaded once and
//                        used by the group's heads (GQA), so K/V bytes are read once per query.
//   warp  w          -> rows warp_base .. warp_base + ROWS_PER_STEP·UNROLL - 1 of every
//                        N_WARPS·ROWS_PER_STEP·UNROLL-row stripe of the range
//   lane             -> 8 consecutive dims (one 16-byte load) of one row; head_dim / 8 lanes
//                        (16 for head_dim 128) cover a row, so a warp reads 32 / 16 = 2 rows per
//                        load instruction and UNROLL of them are in flight per lane
//
//   Each lane keeps an fp32 online-softmax state (m, d, acc[8 dims]) per query head of its group
//   for the rows it sees; the row groups of a warp merge by shuffles, the warps of a block in
//   shared memory. With one split the block writes bf16 `out`; with several it writes its state to
//   the workspace and attn_decode_merge_kernel combines the splits (log-sum-exp). A split with no
//   visible position writes the empty state (m = -inf, d = 0), which the merge weighs 0.
//
// Bytes and FLOPs, Llama-3-8B (32 heads, 8 KV heads, head_dim 128), batch 1 at kv_len 16384:
//   K + V read   16384 · 8 · 128 · 2 tensors · 2 B = 64 MiB per layer (~20 µs at 3.35 TB/s)
//   FLOPs        16384 · 32 · 128 · 2 (q·k) · 2 (p·v) = 268 MFLOP: ~4 FLOP/byte, memory bound, so
//                the figure of merit is GB/s against the copy bandwidth.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "hllm/core/error.hpp"
#include "hllm/cuda/common.cuh"
#include "hllm/layout/attn_split.hpp"
#include "hllm/layout/paged_kv.hpp"

namespace hllm::cuda {

namespace detail {

// Threads of the split kernel: 4 warps. With ~128 registers a thread, 4 such blocks (16 warps)
// fit an SM, enough 16-byte loads in flight to cover DRAM latency.
inline constexpr int ATTN_DECODE_WARPS = 4;
// Warps (one (query, head) pair each) per block of the merge kernel.
inline constexpr int ATTN_MERGE_WARPS = 4;

// HEAD_DIM  dims per head (128 for Llama-3): fixes the lanes per row and the register arrays.
// GROUP     query heads per KV head: every K/V row loaded is used GROUP times from registers.
// N_WARPS   warps per block; UNROLL rows per lane in flight (16-byte K and V loads each): 4 while
//           GROUP <= 4, 2 for GROUP 8, whose 2 · 64 fp32 q/acc registers leave less room.
template <int HEAD_DIM, int GROUP, int N_WARPS, int UNROLL>
__global__ void __launch_bounds__(N_WARPS* WARP_SIZE)
    attn_decode_paged_split_kernel(const __nv_bfloat16* __restrict__ q, PagedKvView kv,
                                   const int32_t* __restrict__ query_seq,
                                   const int32_t* __restrict__ query_kv_len, int32_t n_heads,
                                   int32_t max_kv_len, int32_t split_len, float q_scale,
                                   float* __restrict__ partial_acc, float2* __restrict__ partial_md,
                                   __nv_bfloat16* __restrict__ out, int32_t* error_flag) {
  constexpr int VEC = Pack16<__nv_bfloat16>::N;             // 8 dims per 16-byte load
  constexpr int LANES_PER_ROW = HEAD_DIM / VEC;             // 16 for head_dim 128
  constexpr int ROWS_PER_STEP = WARP_SIZE / LANES_PER_ROW;  // rows one load instruction covers
  constexpr int WARP_ROWS = ROWS_PER_STEP * UNROLL;         // rows of one warp per iteration
  constexpr int BLOCK_ROWS = WARP_ROWS * N_WARPS;           // rows of the block per iteration
  static_assert(HEAD_DIM % VEC == 0 && WARP_SIZE % LANES_PER_ROW == 0);

  const int lane = static_cast<int>(threadIdx.x) % WARP_SIZE;
  const int warp = static_cast<int>(threadIdx.x) / WARP_SIZE;
  const int row_in_step = lane / LANES_PER_ROW;   // which of the ROWS_PER_STEP rows
  const int dim0 = (lane % LANES_PER_ROW) * VEC;  // first of this lane's 8 dims
  const auto query = static_cast<int32_t>(blockIdx.x);
  const auto kv_head = static_cast<int32_t>(blockIdx.y);
  const auto split = static_cast<int32_t>(blockIdx.z);

  // Positions past max_kv_len are outside every split; clamping keeps a bad length from reading
  // past the block table (kv_len >= 1 is the caller's contract; 0 gives zeros, not NaN). A length
  // outside 1 .. max_kv_len is reported once per query, by thread 0 of its (kv head 0, split 0)
  // block.
  const int32_t seq = query_seq[query];
  const int32_t asked_kv_len = query_kv_len[query];
  if (kv_head == 0 && split == 0 && threadIdx.x == 0) {
    if (asked_kv_len > max_kv_len) raise_kernel_error(error_flag, KERNEL_ERROR_KV_LEN_ABOVE_MAX);
    if (asked_kv_len < 1) raise_kernel_error(error_flag, KERNEL_ERROR_KV_LEN_BELOW_ONE);
  }
  const int32_t kv_len = min(max(asked_kv_len, 0), max_kv_len);
  const int32_t begin = split * split_len;
  const int32_t end = min(begin + split_len, kv_len);  // begin >= end: empty split
  const int32_t* table = kv.block_tables + static_cast<int64_t>(seq) * kv.max_blocks_per_seq;
  const auto* k_pool = static_cast<const __nv_bfloat16*>(kv.k);
  const auto* v_pool = static_cast<const __nv_bfloat16*>(kv.v);

  // q of the group's heads, this lane's 8 dims, pre-multiplied by scale · log2 e.
  float qf[GROUP][VEC];
#pragma unroll
  for (int g = 0; g < GROUP; ++g) {
    const int64_t head = static_cast<int64_t>(kv_head) * GROUP + g;
    const auto qp = load_pack(q + (static_cast<int64_t>(query) * n_heads + head) * HEAD_DIM + dim0);
#pragma unroll
    for (int j = 0; j < VEC; ++j) qf[g][j] = to_f32(qp.elem[j]) * q_scale;
  }

  float m[GROUP], d[GROUP], acc[GROUP][VEC];
#pragma unroll
  for (int g = 0; g < GROUP; ++g) {
    m[g] = ATTN_NEG_INF;
    d[g] = 0.0f;
#pragma unroll
    for (int j = 0; j < VEC; ++j) acc[g][j] = 0.0f;
  }

  // Element offsets (of this lane's 8 dims) of the rows of one iteration; -1 = past the range.
  // Looked up one iteration ahead, so the block-table load overlaps the K/V loads in flight.
  int64_t offset[UNROLL];
  auto look_up = [&](int32_t warp_base) {
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int32_t pos = warp_base + u * ROWS_PER_STEP + row_in_step;
      offset[u] = pos < end ? paged_kv_offset(kv, paged_kv_row_in_table(table, kv.block_size, pos),
                                              kv_head) +
                                  dim0
                            : -1;
    }
  };
  int32_t warp_base = begin + warp * WARP_ROWS;  // warp-uniform: the loop never diverges in a warp
  look_up(warp_base);
  for (; warp_base < end; warp_base += BLOCK_ROWS) {
    // K and V of UNROLL rows: each row is read once from DRAM (L1 no-allocate; L2 keeps it for
    // the other queries of a prefill that see the same prefix). Past the range: zeros, no load.
    uint4 k_raw[UNROLL], v_raw[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      k_raw[u] = v_raw[u] = make_uint4(0, 0, 0, 0);
      if (offset[u] >= 0) {
        k_raw[u] = load16_no_allocate(k_pool + offset[u]);
        v_raw[u] = load16_no_allocate(v_pool + offset[u]);
      }
    }
    look_up(warp_base + BLOCK_ROWS);

    // Scores (log2 units) of each row for each head: 8-dim partial dot, summed over the row's
    // lanes. Rows past the range score -inf, which softmax_rescale weighs 0. Then turned into
    // weights p = exp2(s - m) in place.
    float s[UNROLL][GROUP];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const auto kp = bit_cast<Pack16<__nv_bfloat16>>(k_raw[u]);
      float kf[VEC];
#pragma unroll
      for (int j = 0; j < VEC; ++j) kf[j] = to_f32(kp.elem[j]);
      const bool valid = warp_base + u * ROWS_PER_STEP + row_in_step < end;
#pragma unroll
      for (int g = 0; g < GROUP; ++g) {
        float partial = 0.0f;
#pragma unroll
        for (int j = 0; j < VEC; ++j) partial = fmaf(qf[g][j], kf[j], partial);
        partial = warp_sum<LANES_PER_ROW>(partial);
        s[u][g] = valid ? partial : ATTN_NEG_INF;
      }
    }

    // Online softmax update of each head's state with the UNROLL new rows.
#pragma unroll
    for (int g = 0; g < GROUP; ++g) {
      float m_new = m[g];
#pragma unroll
      for (int u = 0; u < UNROLL; ++u) m_new = fmaxf(m_new, s[u][g]);
      const float alpha = softmax_rescale(m[g], m_new);
      float p_sum = 0.0f;
#pragma unroll
      for (int u = 0; u < UNROLL; ++u) {
        s[u][g] = softmax_rescale(s[u][g], m_new);  // the score becomes its weight p
        p_sum += s[u][g];
      }
      d[g] = d[g] * alpha + p_sum;
      m[g] = m_new;
#pragma unroll
      for (int j = 0; j < VEC; ++j) acc[g][j] *= alpha;
    }
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const auto vp = bit_cast<Pack16<__nv_bfloat16>>(v_raw[u]);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const float vf = to_f32(vp.elem[j]);
#pragma unroll
        for (int g = 0; g < GROUP; ++g) acc[g][j] = fmaf(s[u][g], vf, acc[g][j]);
      }
    }
  }

  // Merge the ROWS_PER_STEP row groups of the warp: lanes lane ^ LANES_PER_ROW, ... hold the
  // same dims of other rows.
#pragma unroll
  for (int mask = LANES_PER_ROW; mask < WARP_SIZE; mask *= 2) {
#pragma unroll
    for (int g = 0; g < GROUP; ++g) {
      const float m_other = __shfl_xor_sync(FULL_WARP_MASK, m[g], mask);
      const float d_other = __shfl_xor_sync(FULL_WARP_MASK, d[g], mask);
      const float m_new = fmaxf(m[g], m_other);
      const float w_self = softmax_rescale(m[g], m_new);
      const float w_other = softmax_rescale(m_other, m_new);
      d[g] = d[g] * w_self + d_other * w_other;
      m[g] = m_new;
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const float acc_other = __shfl_xor_sync(FULL_WARP_MASK, acc[g][j], mask);
        acc[g][j] = acc[g][j] * w_self + acc_other * w_other;
      }
    }
  }

  // Merge the warps in shared memory: row group 0 of each warp publishes its state.
  __shared__ float warp_acc[N_WARPS][GROUP][HEAD_DIM];  // [warp, head of group, dim]
  __shared__ float warp_m[N_WARPS][GROUP], warp_d[N_WARPS][GROUP];
  if (row_in_step == 0) {
#pragma unroll
    for (int g = 0; g < GROUP; ++g) {
#pragma unroll
      for (int j = 0; j < VEC; ++j) warp_acc[warp][g][dim0 + j] = acc[g][j];
      if (lane == 0) {
        warp_m[warp][g] = m[g];
        warp_d[warp][g] = d[g];
      }
    }
  }
  __syncthreads();

  const bool single_split = gridDim.z == 1;
  for (int e = static_cast<int>(threadIdx.x); e < GROUP * HEAD_DIM; e += N_WARPS * WARP_SIZE) {
    const int g = e / HEAD_DIM, dim = e % HEAD_DIM;
    float m_block = ATTN_NEG_INF;
#pragma unroll
    for (int w = 0; w < N_WARPS; ++w) m_block = fmaxf(m_block, warp_m[w][g]);
    float d_block = 0.0f, acc_block = 0.0f;
#pragma unroll
    for (int w = 0; w < N_WARPS; ++w) {
      const float weight = softmax_rescale(warp_m[w][g], m_block);
      d_block += warp_d[w][g] * weight;
      acc_block += warp_acc[w][g][dim] * weight;
    }
    const int32_t head = kv_head * GROUP + g;
    if (single_split) {
      const float value = d_block > 0.0f ? acc_block / d_block : 0.0f;
      out[(static_cast<int64_t>(query) * n_heads + head) * HEAD_DIM + dim] =
          from_f32<__nv_bfloat16>(value);
    } else {
      const int64_t p = attn_partial_index(query, head, split, n_heads, gridDim.z);
      partial_acc[p * HEAD_DIM + dim] = acc_block;
      if (dim == 0) partial_md[p] = make_float2(m_block, d_block);
    }
  }
}

// Combines the n_splits partial states of each (query, head): one warp per pair, lane owns
// HEAD_DIM / 32 dims. Pair index = query · n_heads + head, so the pair's states are the n_splits
// consecutive ones from attn_partial_index(query, head, 0, ...).
template <int HEAD_DIM, int N_WARPS>
__global__ void __launch_bounds__(N_WARPS* WARP_SIZE)
    attn_decode_merge_kernel(const float* __restrict__ partial_acc,
                             const float2* __restrict__ partial_md, int64_t n_pairs,
                             int32_t n_splits, __nv_bfloat16* __restrict__ out) {
  constexpr int DIMS_PER_LANE = HEAD_DIM / WARP_SIZE;
  static_assert(HEAD_DIM % WARP_SIZE == 0);
  const int lane = static_cast<int>(threadIdx.x) % WARP_SIZE;
  const int64_t pair =
      static_cast<int64_t>(blockIdx.x) * N_WARPS + static_cast<int>(threadIdx.x) / WARP_SIZE;
  if (pair >= n_pairs) return;  // a whole warp leaves: no shuffle is left half-populated

  const float2* md = partial_md + pair * n_splits;
  const float* acc_base = partial_acc + pair * n_splits * HEAD_DIM + lane * DIMS_PER_LANE;
  float m_all = ATTN_NEG_INF;
  for (int32_t s = lane; s < n_splits; s += WARP_SIZE) m_all = fmaxf(m_all, md[s].x);
  m_all = warp_max(m_all);

  float d_all = 0.0f, acc[DIMS_PER_LANE] = {};
#pragma unroll 4
  for (int32_t s = 0; s < n_splits; ++s) {
    const float2 state = md[s];
    const float weight = softmax_rescale(state.x, m_all);
    d_all += state.y * weight;
#pragma unroll
    for (int k = 0; k < DIMS_PER_LANE; ++k)
      acc[k] = fmaf(acc_base[static_cast<int64_t>(s) * HEAD_DIM + k], weight, acc[k]);
  }
  const float inv_d = d_all > 0.0f ? 1.0f / d_all : 0.0f;  // d = 0 only if nothing was visible
  __nv_bfloat16* o = out + pair * HEAD_DIM + lane * DIMS_PER_LANE;
#pragma unroll
  for (int k = 0; k < DIMS_PER_LANE; ++k) o[k] = from_f32<__nv_bfloat16>(acc[k] * inv_d);
}

// Rows in flight per lane: 4 while GROUP <= 4; GROUP 8 keeps 2 · 64 fp32 q/acc registers per
// lane, so it takes 2 to stay clear of spills.
template <int GROUP>
inline constexpr int ATTN_DECODE_UNROLL = GROUP <= 4 ? 4 : 2;

// Blocks of the split kernel resident on the whole GPU at once (SMs × occupancy), read once per
// instantiation: the split plan fills whole waves of these.
template <int HEAD_DIM, int GROUP>
int64_t attn_decode_slots() {
  static const int64_t slots = [] {
    int per_sm = 0;
    HLLM_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &per_sm,
        attn_decode_paged_split_kernel<HEAD_DIM, GROUP, ATTN_DECODE_WARPS,
                                       ATTN_DECODE_UNROLL<GROUP>>,
        ATTN_DECODE_WARPS * WARP_SIZE, 0));
    return int64_t{per_sm > 0 ? per_sm : 1} * device_sm_count();
  }();
  return slots;
}

template <int HEAD_DIM>
int64_t attn_decode_slots_for_group(int group) {
  switch (group) {
    case 1:
      return attn_decode_slots<HEAD_DIM, 1>();
    case 2:
      return attn_decode_slots<HEAD_DIM, 2>();
    case 4:
      return attn_decode_slots<HEAD_DIM, 4>();
    case 8:
      return attn_decode_slots<HEAD_DIM, 8>();
    default:
      fail("attn_decode_paged: GQA group ", group, " (n_heads / n_kv_heads) is not supported ",
           "(supported: 1, 2, 4, 8)");
  }
}

inline int64_t attn_decode_slots(int head_dim, int group) {
  switch (head_dim) {
    case 128:
      return attn_decode_slots_for_group<128>(group);
    case 64:
      return attn_decode_slots_for_group<64>(group);
    default:
      fail("attn_decode_paged: head_dim ", head_dim, " is not supported (supported: 64, 128)");
  }
}

// The split plan of a launch (n_heads a multiple of n_kv_heads, checked by the caller).
inline AttnSplitPlan attn_decode_plan(int n_queries, int n_heads, int n_kv_heads, int head_dim,
                                      int max_kv_len) {
  return attn_split_plan(n_queries, n_kv_heads, max_kv_len,
                         attn_decode_slots(head_dim, n_heads / n_kv_heads));
}

template <int HEAD_DIM, int GROUP>
void attn_decode_paged_run(const __nv_bfloat16* q, const PagedKvView& kv, const int32_t* query_seq,
                           const int32_t* query_kv_len, int n_queries, int n_heads, int max_kv_len,
                           const AttnSplitPlan& plan, float scale, float* workspace,
                           __nv_bfloat16* out, cudaStream_t stream, int32_t* error_flag) {
  constexpr int UNROLL = ATTN_DECODE_UNROLL<GROUP>;
  float* partial_acc = nullptr;
  float2* partial_md = nullptr;
  if (plan.n_splits > 1) {
    partial_acc = workspace;
    partial_md = reinterpret_cast<float2*>(workspace + static_cast<int64_t>(n_queries) * n_heads *
                                                           plan.n_splits * HEAD_DIM);
  }
  const dim3 grid(static_cast<unsigned>(n_queries), static_cast<unsigned>(kv.n_kv_heads),
                  static_cast<unsigned>(plan.n_splits));
  attn_decode_paged_split_kernel<HEAD_DIM, GROUP, ATTN_DECODE_WARPS, UNROLL>
      <<<grid, ATTN_DECODE_WARPS * WARP_SIZE, 0, stream>>>(
          q, kv, query_seq, query_kv_len, n_heads, max_kv_len, plan.split_len, scale * ATTN_LOG2E,
          partial_acc, partial_md, out, error_flag);
  HLLM_CUDA_CHECK_LAUNCH();
  if (plan.n_splits > 1) {
    const int64_t n_pairs = static_cast<int64_t>(n_queries) * n_heads;
    const auto blocks = static_cast<unsigned>(ceil_div<int64_t>(n_pairs, ATTN_MERGE_WARPS));
    attn_decode_merge_kernel<HEAD_DIM, ATTN_MERGE_WARPS>
        <<<blocks, ATTN_MERGE_WARPS * WARP_SIZE, 0, stream>>>(partial_acc, partial_md, n_pairs,
                                                              plan.n_splits, out);
    HLLM_CUDA_CHECK_LAUNCH();
  }
}

template <int HEAD_DIM>
void attn_decode_paged_dispatch_group(int group, const __nv_bfloat16* q, const PagedKvView& kv,
                                      const int32_t* query_seq, const int32_t* query_kv_len,
                                      int n_queries, int n_heads, int max_kv_len,
                                      const AttnSplitPlan& plan, float scale, float* workspace,
                                      __nv_bfloat16* out, cudaStream_t stream,
                                      int32_t* error_flag) {
  switch (group) {
    case 1:
      return attn_decode_paged_run<HEAD_DIM, 1>(q, kv, query_seq, query_kv_len, n_queries, n_heads,
                                                max_kv_len, plan, scale, workspace, out, stream,
                                                error_flag);
    case 2:
      return attn_decode_paged_run<HEAD_DIM, 2>(q, kv, query_seq, query_kv_len, n_queries, n_heads,
                                                max_kv_len, plan, scale, workspace, out, stream,
                                                error_flag);
    case 4:
      return attn_decode_paged_run<HEAD_DIM, 4>(q, kv, query_seq, query_kv_len, n_queries, n_heads,
                                                max_kv_len, plan, scale, workspace, out, stream,
                                                error_flag);
    case 8:
      return attn_decode_paged_run<HEAD_DIM, 8>(q, kv, query_seq, query_kv_len, n_queries, n_heads,
                                                max_kv_len, plan, scale, workspace, out, stream,
                                                error_flag);
    default:
      fail("attn_decode_paged: ", n_heads, " query heads over ", kv.n_kv_heads,
           " KV heads is a GQA group of ", group, "; supported groups: 1, 2, 4, 8");
  }
}

}  // namespace detail

// Bytes of fp32 workspace launch_attn_decode_paged needs for these sizes (0 when it runs as one
// split). An upper bound over every n_kv_heads: the plan for one KV head has the most splits.
inline size_t attn_decode_workspace_bytes(int n_queries, int n_heads, int head_dim,
                                          int max_kv_len) {
  if (n_queries < 0 || n_heads < 1 || head_dim < 1 || max_kv_len < 1)
    fail("attn_decode_workspace_bytes: n_queries ", n_queries, ", n_heads ", n_heads, ", head_dim ",
         head_dim, ", max_kv_len ", max_kv_len, " (need n_queries >= 0, the others >= 1)");
  if (n_queries == 0) return 0;
  // n_kv_heads is not known here: the most any supported GQA group (1, 2, 4, 8) needs.
  size_t bytes = 0;
  for (const int group : {1, 2, 4, 8}) {
    if (n_heads % group != 0) continue;
    const AttnSplitPlan plan =
        detail::attn_decode_plan(n_queries, n_heads, n_heads / group, head_dim, max_kv_len);
    bytes = std::max(bytes, attn_workspace_bytes_for(n_queries, n_heads, head_dim, plan.n_splits));
  }
  return bytes;
}

// out[i, h, :] = softmax(scale · q[i,h,:] · K[seq, 0..kv_len[i]-1, kvh, :]ᵀ) · V[...],
// kvh = h / (n_heads / kv.n_kv_heads); see the top of the file. max_kv_len is a host bound on
// every query_kv_len (and picks the split count); workspace holds at least
// attn_decode_workspace_bytes(n_queries, n_heads, kv.head_dim, max_kv_len) bytes, 8-byte aligned
// (may be null when that is 0). error_flag (nullable, device int32): where a query_kv_len outside
// 1 .. max_kv_len is reported (KERNEL_ERROR_KV_LEN_*). No allocation, no sync: capturable into a
// CUDA graph.
inline void launch_attn_decode_paged(const __nv_bfloat16* q, const PagedKvView& kv,
                                     const int32_t* query_seq, const int32_t* query_kv_len,
                                     int n_queries, int n_heads, int max_kv_len, float scale,
                                     float* workspace, size_t workspace_bytes, __nv_bfloat16* out,
                                     cudaStream_t stream, int32_t* error_flag = nullptr) {
  if (n_queries < 0 || n_heads < 1 || kv.n_kv_heads < 1 || n_heads % kv.n_kv_heads != 0)
    fail("attn_decode_paged: n_queries ", n_queries, ", n_heads ", n_heads, ", n_kv_heads ",
         kv.n_kv_heads, " (need n_queries >= 0, n_heads a positive multiple of n_kv_heads)");
  if (kv.head_dim != 128 && kv.head_dim != 64)
    fail("attn_decode_paged: head_dim ", kv.head_dim, " is not supported (supported: 64, 128)");
  if (kv.n_kv_heads > 65535)
    fail("attn_decode_paged: n_kv_heads ", kv.n_kv_heads, " exceeds the grid limit 65535");
  if (kv.block_size < 1 || kv.max_blocks_per_seq < 1)
    fail("attn_decode_paged: block_size ", kv.block_size, " and max_blocks_per_seq ",
         kv.max_blocks_per_seq, " must be >= 1");
  const int64_t capacity = int64_t{kv.block_size} * kv.max_blocks_per_seq;
  if (max_kv_len < 1 || max_kv_len > capacity || max_kv_len > (1 << 30))
    fail("attn_decode_paged: max_kv_len ", max_kv_len, " must be in 1 .. ",
         capacity < (1 << 30) ? capacity : (1 << 30),
         " (block_size · max_blocks_per_seq, and < 2^30)");
  if (!std::isfinite(scale)) fail("attn_decode_paged: scale ", scale, " is not finite");
  if (n_queries == 0) return;
  if (q == nullptr || out == nullptr || query_seq == nullptr || query_kv_len == nullptr ||
      kv.k == nullptr || kv.v == nullptr || kv.block_tables == nullptr)
    fail("attn_decode_paged: null q, out, query_seq, query_kv_len, kv pool or block table");
  for (const void* p : {static_cast<const void*>(q), static_cast<const void*>(out),
                        static_cast<const void*>(kv.k), static_cast<const void*>(kv.v)}) {
    if (reinterpret_cast<uintptr_t>(p) % VEC_BYTES != 0)
      fail("attn_decode_paged: q, out and the KV pools must be 16-byte aligned");
  }
  if (reinterpret_cast<uintptr_t>(error_flag) % alignof(int32_t) != 0)
    fail("attn_decode_paged: error_flag must be 4-byte aligned");
  const AttnSplitPlan plan =
      detail::attn_decode_plan(n_queries, n_heads, kv.n_kv_heads, kv.head_dim, max_kv_len);
  const size_t needed = attn_workspace_bytes_for(n_queries, n_heads, kv.head_dim, plan.n_splits);
  if (needed > 0 && (workspace == nullptr || workspace_bytes < needed ||
                     reinterpret_cast<uintptr_t>(workspace) % alignof(float2) != 0))
    fail("attn_decode_paged: workspace of ", workspace_bytes, " bytes at ",
         static_cast<const void*>(workspace), " but ", n_queries, " queries × ", n_heads,
         " heads × ", plan.n_splits, " splits need ", needed,
         " bytes, 8-byte aligned (attn_decode_workspace_bytes)");
  const int group = n_heads / kv.n_kv_heads;
  if (kv.head_dim == 128) {
    detail::attn_decode_paged_dispatch_group<128>(group, q, kv, query_seq, query_kv_len, n_queries,
                                                  n_heads, max_kv_len, plan, scale, workspace, out,
                                                  stream, error_flag);
  } else {
    detail::attn_decode_paged_dispatch_group<64>(group, q, kv, query_seq, query_kv_len, n_queries,
                                                 n_heads, max_kv_len, plan, scale, workspace, out,
                                                 stream, error_flag);
  }
}

}  // namespace hllm::cuda
