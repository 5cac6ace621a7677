// INT4 GEMM for decode batches of 9+ tokens and prefill chunks, on bf16 tensor cores, without ever
// writing dequantized weights:
//
//   y[b, o] = Σ_p W[o, p] · xp[b, p]      b < n (any), p in packed input order
//   W[o, p] = scale · (code − zero)       (layout/int4_tiles.hpp, one group per tile)
//
// Layouts as gemv_q4.cuh: W in hllm's INT4 tiles, xp [n, packed_in] bf16 (launch_gather_packed for
// act-order weights), y [n, out] bf16 or fp32.
//
// How (the tiling, the shared-memory layout and the split are layout/int4_gemm.hpp, checked on the
// CPU by tests/int4_gemm_layout_test.cpp; the fragments are gemv_q4's, int4_fragments.cuh):
// - A block is 8 warps × 64 tokens × a slice of the k-tiles. Warp w owns row group
//   8·blockIdx.x + w (16 outputs). Per k-tile it decodes its rows' codes into the 8 k-steps' A
//   fragments once (32 registers) and runs them against every n-tile of 8 tokens that holds a token
//   (64 mma per k-tile at 64 tokens, 16 at 16): the weights are read once per 64 tokens.
// - Every k-tile is one cp.async stage, GEMM_Q4_STAGES in flight: the block's activations
//   (64 tokens × 128 inputs, 16 KiB, read by all 8 warps, swizzled: no bank conflicts; tokens past
//   n zero-filled) and each lane's own weight units (its two rows' header and code chunk, 64 bytes).
//   Staging the weights through shared memory keeps 3 tiles per warp in flight without registers
//   (the fragments and 8 n-tiles of fp32 totals take ~160): one block of 8 warps per SM, 96 KiB.
// - Per k-tile (= one quantization group) and n-tile, the 8 k-steps sum into a fresh fp32 fragment
//   and total += scale[row] · fragment in fp32: the group scaling is exact, as in gemv_q4.
// - Small grids (few rows × tokens) split the k-tiles over blockIdx.z: fp32 partial sums, then
//   gemm_q4_reduce_kernel adds them in slice order (deterministic).
// Cost at 64 tokens on Llama-3-8B gate/up (4096 -> 28672): 62 MB of tiles read once (15 µs at
// 4.2 TB/s) and 15 GFLOP of mma.sync (~25 µs at ~600 TFLOP/s): mma-bound from ~40 tokens up, where
// a wgmma kernel (sm_90a) is the next step. Activations: 224 row blocks × 512 KiB from L2.
//
// CUDA-graph capturable: no allocation or synchronization (the caller passes the workspace).
// Needs sm_80+ (bf16 mma, cp.async).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "hllm/core/error.hpp"
#include "hllm/cuda/common.cuh"
#include "hllm/cuda/int4_fragments.cuh"
#include "hllm/cuda/ptx.cuh"
#include "hllm/layout/int4_gemm.hpp"
#include "hllm/layout/int4_mma.hpp"
#include "hllm/layout/int4_tiles.hpp"

namespace hllm::cuda {

namespace detail {

// Grid (row_blocks, col_blocks, splits), GEMM_Q4_THREADS threads, GEMM_Q4_SMEM_BYTES of dynamic
// shared memory. partial == nullptr: write y; otherwise the slice's fp32 sums to
// partial[blockIdx.z][n][out].
template <typename OutT>
__global__ void __launch_bounds__(GEMM_Q4_THREADS, 1)
    gemm_q4_kernel(const int4_tile* __restrict__ tiles, int64_t strips, int64_t k_tiles,
                   int64_t tiles_per_split, const __nv_bfloat16* __restrict__ xp, int64_t n,
                   OutT* __restrict__ y, float* __restrict__ partial, int64_t out) {
  extern __shared__ uint4 gemm_q4_smem[];  // [stage]: activations, then the warps' weight units
  const int lane = static_cast<int>(threadIdx.x) % WARP_SIZE;
  const int warp = static_cast<int>(threadIdx.x) / WARP_SIZE;
  const int g = int4_mma_group(lane);
  const int t = int4_mma_thread(lane);
  const int r = int4_mma_row_in_tile(g);
  const int64_t row_group = static_cast<int64_t>(blockIdx.x) * GEMM_Q4_WARPS + warp;
  const bool warp_active = row_group * INT4_MMA_STRIPS < strips;  // warp-uniform

  const int64_t col0 = static_cast<int64_t>(blockIdx.y) * GEMM_Q4_BLOCK_N;
  const int n_cols = static_cast<int>(n - col0 < GEMM_Q4_BLOCK_N ? n - col0 : GEMM_Q4_BLOCK_N);
  const int64_t kt_begin = static_cast<int64_t>(blockIdx.z) * tiles_per_split;
  const int64_t kt_end =
      kt_begin + tiles_per_split < k_tiles ? kt_begin + tiles_per_split : k_tiles;
  const int n_k = static_cast<int>(kt_end - kt_begin);
  const int64_t packed_in = k_tiles * INT4_TILE_K;

  // The lane's two A rows (h = 0: row g, h = 1: row g + 8): tile (strip, 0) of their strips, as
  // bytes; rows of strips past the matrix are zero-filled (scale 0, codes 0: they add nothing).
  const char* row_tiles[2];
  bool row_valid[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t strip = row_group * INT4_MMA_STRIPS + int4_mma_row_strip(g + 8 * h);
    row_valid[h] = strip < strips;
    row_tiles[h] = reinterpret_cast<const char*>(tiles + (row_valid[h] ? strip : 0) * k_tiles);
  }
  const int code_offset = int4_frag::code_offset(lane);

  // Local k-tile i -> stage i % STAGES: the block's activations (all threads) and each lane's own
  // weight units. One commit group per call, possibly empty, so the wait counts stay uniform.
  auto load_stage = [&](int i) {
    if (i < n_k) {
      const int64_t kt = kt_begin + i;
      uint4* stage = gemm_q4_smem + (i % GEMM_Q4_STAGES) * GEMM_Q4_STAGE_UNITS_TOTAL;
#pragma unroll
      for (int c = static_cast<int>(threadIdx.x); c < GEMM_Q4_STAGE_UNITS; c += GEMM_Q4_THREADS) {
        const int col = gemm_q4_copy_col(c), chunk = gemm_q4_copy_chunk(c);
        const int unit = gemm_q4_copy_unit(c);
        const bool valid = col < n_cols;
        const __nv_bfloat16* src = xp + (col0 + (valid ? col : 0)) * packed_in + kt * INT4_TILE_K +
                                   chunk * INT4_CHUNK_K + unit * 8;
        ptx::cp_async16(ptx::smem_addr(stage + gemm_q4_x_unit(col, chunk, unit)), src,
                        valid ? VEC_BYTES : 0);
      }
      if (warp_active) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const char* tile = row_tiles[h] + kt * static_cast<int64_t>(sizeof(int4_tile));
          const int bytes = row_valid[h] ? VEC_BYTES : 0;
          ptx::cp_async16(ptx::smem_addr(stage + gemm_q4_w_unit(warp, 2 * h, lane)), tile, bytes);
          ptx::cp_async16(ptx::smem_addr(stage + gemm_q4_w_unit(warp, 2 * h + 1, lane)),
                          tile + code_offset, bytes);
        }
      }
    }
    ptx::cp_async_commit();
  };

#pragma unroll
  for (int i = 0; i < GEMM_Q4_STAGES - 1; ++i) load_stage(i);

  float total[GEMM_Q4_N_TILES][4] = {};  // C fragments: rows g, g + 8 × tokens 8j + 2t, + 1
  for (int i = 0; i < n_k; ++i) {
    ptx::cp_async_wait<GEMM_Q4_STAGES - 2>();  // stage i has landed (this thread's copies) ...
    __syncthreads();  // ... everyone's, and every warp is done with the stage refilled next
    load_stage(i + GEMM_Q4_STAGES - 1);
    if (!warp_active) continue;

    const uint4* stage = gemm_q4_smem + (i % GEMM_Q4_STAGES) * GEMM_Q4_STAGE_UNITS_TOTAL;
    float scale[2];
    uint32_t neg_bias[2];
    uint4 codes[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint4 header = stage[gemm_q4_w_unit(warp, 2 * h, lane)];
      codes[h] = stage[gemm_q4_w_unit(warp, 2 * h + 1, lane)];
      const int4_frag::RowParams p = int4_frag::row_params(
          int4_frag::header_scale_word(header, r), int4_frag::header_zero_word(header, r), r);
      scale[h] = p.scale;
      neg_bias[h] = p.neg_bias;
    }
    uint32_t a[INT4_MMA_KSTEPS][4];  // decoded once, used by every n-tile
#pragma unroll
    for (int ks = 0; ks < INT4_MMA_KSTEPS; ++ks) int4_frag::a_fragment(codes, neg_bias, ks, a[ks]);

#pragma unroll
    for (int j = 0; j < GEMM_Q4_N_TILES; ++j) {
      if (j * INT4_MMA_COLS >= n_cols) break;  // block-uniform
      // k-steps 0..3 take activation units 0 and 2 of the chunk, k-steps 4..7 units 1 and 3
      // (int4_mma_x_word): one pair at a time.
      float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        uint4 xv[GEMM_Q4_UNITS_PER_CHUNK] = {};
        xv[half] = stage[gemm_q4_x_unit(j * INT4_MMA_COLS + g, t, half)];
        xv[half + 2] = stage[gemm_q4_x_unit(j * INT4_MMA_COLS + g, t, half + 2)];
#pragma unroll
        for (int ks = 4 * half; ks < 4 * half + 4; ++ks) {
          uint32_t b[2];
          int4_frag::b_fragment(xv, ks, b);
          ptx::mma_m16n8k16_bf16(acc, a[ks], b[0], b[1]);
        }
      }
#pragma unroll
      for (int e = 0; e < 4; ++e) total[j][e] = fmaf(scale[e / 2], acc[e], total[j][e]);
    }
  }
  ptx::cp_async_wait<0>();  // no copy outlives the block (the trailing groups are empty)
  if (!warp_active) return;

#pragma unroll
  for (int j = 0; j < GEMM_Q4_N_TILES; ++j) {
    if (j * INT4_MMA_COLS >= n_cols) break;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t o = row_group * INT4_MMA_ROWS + int4_mma_c_row(lane, e);
      const int col = j * INT4_MMA_COLS + int4_mma_c_col(lane, e);
      if (col >= n_cols || o >= out) continue;
      const int64_t b = col0 + col;
      if (partial != nullptr)
        partial[(static_cast<int64_t>(blockIdx.z) * n + b) * out + o] = total[j][e];
      else
        y[b * out + o] = from_f32<OutT>(total[j][e]);
    }
  }
}

// y[i] = Σ_s partial[s][i] in slice order, i < count = n · out.
template <typename OutT>
__global__ void gemm_q4_reduce_kernel(const float* __restrict__ partial, int64_t splits,
                                      int64_t count, OutT* __restrict__ y) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += stride) {
    float sum = 0.0f;
    for (int64_t s = 0; s < splits; ++s) sum += partial[s * count + i];
    y[i] = from_f32<OutT>(sum);
  }
}

template <typename OutT>
void gemm_q4_dispatch(const char* name, const Int4View& w, const __nv_bfloat16* x_packed, int64_t n,
                      OutT* y, float* workspace, size_t workspace_floats, cudaStream_t stream) {
  int4_frag::check_operands(name, w, x_packed, y);
  if (n < 1) fail(name, ": ", n, " tokens");
  const GemmQ4Plan plan = plan_gemm_q4(w.out, w.k_tiles, n, device_sm_count());
  if (plan.row_blocks > int64_t{0x7fffffff} || plan.col_blocks > 65535)
    fail(name, ": ", w.out, " outputs × ", n, " tokens exceed the grid");
  const size_t need = plan.workspace_floats(n, w.out);
  if (need > workspace_floats || (need > 0 && workspace == nullptr))
    fail(name, ": the split needs a workspace of ", need, " floats, got ", workspace_floats,
         " (gemm_q4_workspace_floats)");
  const dim3 grid(static_cast<unsigned>(plan.row_blocks), static_cast<unsigned>(plan.col_blocks),
                  static_cast<unsigned>(plan.splits));
  // Above 48 KiB of dynamic shared memory a kernel must opt in: once per kernel (one GPU per
  // process).
  static const bool opted_in = [] {
    HLLM_CUDA_CHECK(cudaFuncSetAttribute(gemm_q4_kernel<OutT>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(GEMM_Q4_SMEM_BYTES)));
    return true;
  }();
  (void)opted_in;
  gemm_q4_kernel<OutT><<<grid, GEMM_Q4_THREADS, GEMM_Q4_SMEM_BYTES, stream>>>(
      w.tiles, w.strips(), w.k_tiles, plan.tiles_per_split, x_packed, n, y,
      plan.splits > 1 ? workspace : nullptr, w.out);
  HLLM_CUDA_CHECK_LAUNCH();
  if (plan.splits > 1) {
    const int64_t count = n * w.out;
    gemm_q4_reduce_kernel<OutT><<<grid_stride_blocks(count), GRID_STRIDE_THREADS, 0, stream>>>(
        workspace, plan.splits, count, y);
    HLLM_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace detail

// fp32 workspace floats launch_gemm_q4 needs for this weight and token count on this GPU (0 when
// the plan does not split the k-tiles).
inline size_t gemm_q4_workspace_floats(const Int4View& w, int64_t n) {
  return plan_gemm_q4(w.out, w.k_tiles, n, device_sm_count()).workspace_floats(n, w.out);
}

// y[b, o] = Σ_p W[o, p] · xp[b, p] for b < n (any n >= 1; meant for n > GEMV_Q4_MAX_BATCH);
// bf16 in/out, fp32 accumulation. x_packed [n, w.packed_in()], y [n, w.out]; w.tiles in device
// memory; workspace: gemm_q4_workspace_floats(w, n) floats (may be null when that is 0).
inline void launch_gemm_q4(const Int4View& w, const __nv_bfloat16* x_packed, int64_t n,
                           __nv_bfloat16* y, float* workspace, size_t workspace_floats,
                           cudaStream_t stream) {
  detail::gemm_q4_dispatch("launch_gemm_q4", w, x_packed, n, y, workspace, workspace_floats,
                           stream);
}

// The same with fp32 output (an int4 lm_head writing fp32 logits).
inline void launch_gemm_q4_f32(const Int4View& w, const __nv_bfloat16* x_packed, int64_t n,
                               float* y, float* workspace, size_t workspace_floats,
                               cudaStream_t stream) {
  detail::gemm_q4_dispatch("launch_gemm_q4_f32", w, x_packed, n, y, workspace, workspace_floats,
                           stream);
}

}  // namespace hllm::cuda
