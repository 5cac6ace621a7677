// INT4 GEMV for decode and small batches on bf16 tensor cores, with exact per-group dequantization:
//
//   y[b, o] = Σ_p W[o, p] · xp[b, p]      b < batch (1..8), p in packed input order
//   W[o, p] = scale · (code − zero)       (layout/int4_tiles.hpp: int4_dequant, one group per tile)
//
// Layouts in: W in hllm's INT4 tile layout (layout/int4_tiles.hpp: strips of 4 rows, tiles of
// 4 × 128, 272 bytes each, strip-major); xp [batch, packed_in] bf16 row-major (launch_gather_packed
// builds it from x [batch, in] for act-order weights; for identity packing xp = x). Out:
// y [batch, out], bf16 (launch_gemv_q4) or fp32 (launch_gemv_q4_f32, e.g. an int4 lm_head writing
// logits).
//
// Cost, Llama-3-8B gate/up (in 4096, out 14336), batch 1: 3584 strips × 32 tiles × 272 B =
// 31.2 MB of weights read once (+ 8 KB x, 28 KB y) and 2 · 4096 · 14336 = 117 MFLOP: 3.8 FLOP per
// byte, purely memory bound (~7.4 µs at an H200's 4.23 TB/s copy bandwidth).
//
// How (the fragment placement is in layout/int4_mma.hpp, emulated on the CPU by
// tests/int4_mma_layout_test.cpp):
// - A CUDA-core dequantization costs ~4 instructions per weight, more than the issue rate allows at
//   4 TB/s of int4 (~8.6e12 weights/s). Instead one mma.sync.m16n8k16 (bf16 in, fp32 accumulate)
//   takes 16 rows × 16 weights: A = the weight integers (code − zero), exact in bf16, made by one
//   LOP3 per 2 weights ((word >> s) & 0x000F000F | 0x43004300 = bf16 128 + code) and one bf16x2
//   FMA (− (128 + zero)); B = x for 8 batch columns (columns >= batch are zero); C fp32.
// - The 16 A rows are the 4 rows of 4 consecutive strips ("row group"). Each lane loads exactly one
//   16-byte code chunk of each of its two rows (4 lanes = 64 contiguous bytes): every weight byte
//   is loaded once, with 128-bit loads that do not allocate in L1 (weights are read once per call
//   and would only evict x from L1).
// - Per tile (= one quantization group) the 8 k-steps accumulate into a fresh fp32 fragment, then
//   total += scale[row] · tile_acc in fp32: the per-group scaling is exact, not folded into bf16.
// - Parallelism: one block per row group (16 outputs); its WARPS warps split the k-tiles
//   (in-block split-K: warp w takes tiles w, w + WARPS, ...) and reduce through shared memory, so
//   the output is written once, without atomics or a second launch. Each warp issues the loads of
//   TILES_PER_STEP tiles before doing the math of the first (memory-level parallelism: with ~2
//   blocks of 8 warps per SM that is ~70 KB of weight loads in flight per SM, above the ~32 KB
//   Little's law asks for at 4 TB/s × ~700 ns over 132 SMs).
// - Rows past `out` are padding tiles (scale 0, codes 0) and strips past strips() are not read
//   (zeros): any out works; any k_tiles works (warps past the end skip their tiles).
//
// CUDA-graph capturable: no allocation, synchronization or copies. Needs sm_80+ (bf16 mma).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/cuda/common.cuh"
#include "hllm/cuda/int4_fragments.cuh"
#include "hllm/cuda/ptx.cuh"
#include "hllm/layout/int4_mma.hpp"
#include "hllm/layout/int4_tiles.hpp"

namespace hllm::cuda {

// Batch columns of one mma (its N): the kernel serves batch 1..8; prefill takes the dense path.
inline constexpr int GEMV_Q4_MAX_BATCH = INT4_MMA_COLS;

namespace detail {

// Blocks per SM the register budget must allow (64K registers / (WARPS · 32 threads · 128)): at
// most 128 registers per thread, so 16 warps per SM keep their loads in flight.
constexpr int gemv_q4_min_blocks(int warps) { return warps >= 16 ? 1 : 16 / warps; }

// One block = one row group (16 outputs: strips 4·blockIdx.x .. +3) × all k-tiles.
//   WARPS           warps splitting the k-tiles of the row group (in-block split-K)
//   TILES_PER_STEP  tiles whose loads a warp issues before the math of the first
//   OutT            __nv_bfloat16 or float
template <int WARPS, int TILES_PER_STEP, typename OutT>
__global__ void __launch_bounds__(WARPS* WARP_SIZE, gemv_q4_min_blocks(WARPS))
    gemv_q4_kernel(const int4_tile* __restrict__ tiles, int64_t strips, int64_t k_tiles,
                   const __nv_bfloat16* __restrict__ xp, int batch, OutT* __restrict__ y,
                   int64_t out) {
  static_assert(WARPS * WARP_SIZE >= INT4_MMA_ROWS * INT4_MMA_COLS,
                "the reduction gives one thread per output of the 16 × 8 tile");
  constexpr int64_t TILE_BYTES = sizeof(int4_tile);
  const int lane = static_cast<int>(threadIdx.x) % WARP_SIZE;
  const int warp = static_cast<int>(threadIdx.x) / WARP_SIZE;
  const int g = int4_mma_group(lane);   // A rows g, g + 8; B column g
  const int t = int4_mma_thread(lane);  // code chunk t of the tile (inputs 32t .. 32t + 31)
  const int64_t row_group = blockIdx.x;

  // The lane's two A rows: h = 0 -> row g, h = 1 -> row g + 8. Both are tile row r of their strip.
  const char* row_tiles[2];  // tile (strip, 0) of the row's strip, as bytes
  bool row_valid[2];         // strip < strips: strips past the matrix read as zeros
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t strip = row_group * INT4_MMA_STRIPS + int4_mma_row_strip(g + 8 * h);
    row_valid[h] = strip < strips;
    row_tiles[h] = reinterpret_cast<const char*>(tiles + (row_valid[h] ? strip : 0) * k_tiles);
  }
  const int r = int4_mma_row_in_tile(g);
  const int code_offset = int4_frag::code_offset(lane);

  // The lane's activations: chunk t of batch column g (lanes of columns >= batch hold zeros).
  const bool x_valid = g < batch;
  const int64_t packed_in = k_tiles * INT4_TILE_K;
  const __nv_bfloat16* x_lane = xp + (x_valid ? g : 0) * packed_in + t * INT4_CHUNK_K;

  float total[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // C fragment: rows g, g + 8 × columns 2t, 2t + 1

  for (int64_t first = warp; first < k_tiles; first += WARPS * TILES_PER_STEP) {
    // 1. Issue the weight loads of TILES_PER_STEP tiles (header + one code chunk per row).
    uint4 header[TILES_PER_STEP][2], codes[TILES_PER_STEP][2];
#pragma unroll
    for (int u = 0; u < TILES_PER_STEP; ++u) {
      const int64_t kt = first + u * WARPS;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        header[u][h] = make_uint4(0, 0, 0, 0);
        codes[u][h] = make_uint4(0, 0, 0, 0);
        if (kt < k_tiles && row_valid[h]) {
          const char* tile = row_tiles[h] + kt * TILE_BYTES;
          header[u][h] = load16_no_allocate(tile);
          codes[u][h] = load16_no_allocate(tile + code_offset);
        }
      }
    }
    // 2. The math, tile by tile.
#pragma unroll
    for (int u = 0; u < TILES_PER_STEP; ++u) {
      const int64_t kt = first + u * WARPS;
      if (kt >= k_tiles) break;  // warp-uniform: the mma below needs the whole warp

      uint4 xv[4] = {};  // 32 bf16 = X[0..15], X[i] = (x[2i], x[2i + 1])
      if (x_valid) {
#pragma unroll
        for (int i = 0; i < 4; ++i) xv[i] = load16(x_lane + kt * INT4_TILE_K + 8 * i);
      }

      float scale[2];
      uint32_t neg_bias[2];  // bf16x2 −(128 + zero)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int4_frag::RowParams p =
            int4_frag::row_params(int4_frag::header_scale_word(header[u][h], r),
                                  int4_frag::header_zero_word(header[u][h], r), r);
        scale[h] = p.scale;
        neg_bias[h] = p.neg_bias;
      }

      float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int ks = 0; ks < INT4_MMA_KSTEPS; ++ks) {
        uint32_t a[4], b[2];
        int4_frag::a_fragment(codes[u], neg_bias, ks, a);
        int4_frag::b_fragment(xv, ks, b);
        ptx::mma_m16n8k16_bf16(acc, a, b[0], b[1]);
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) total[i] = fmaf(scale[i / 2], acc[i], total[i]);
    }
  }

  // 3. In-block split-K reduction: partial[warp][i][lane] (consecutive lanes, no bank conflicts),
  //    then one thread per (C element, lane) sums over the warps and writes its output.
  __shared__ float partial[WARPS][4][WARP_SIZE];
#pragma unroll
  for (int i = 0; i < 4; ++i) partial[warp][i][lane] = total[i];
  __syncthreads();
  if (threadIdx.x < 4 * WARP_SIZE) {
    const int i = static_cast<int>(threadIdx.x) / WARP_SIZE;
    const int l = static_cast<int>(threadIdx.x) % WARP_SIZE;
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) sum += partial[w][i][l];
    const int64_t o = row_group * INT4_MMA_ROWS + int4_mma_c_row(l, i);
    const int col = int4_mma_c_col(l, i);
    if (col < batch && o < out) y[col * out + o] = from_f32<OutT>(sum);
  }
}

inline void check_gemv_q4_args(const char* name, const Int4View& w, const void* x_packed, int batch,
                               const void* y) {
  int4_frag::check_operands(name, w, x_packed, y);
  if (batch < 1 || batch > GEMV_Q4_MAX_BATCH)
    fail(name, ": batch ", batch, " not supported (1..", GEMV_Q4_MAX_BATCH,
         "; larger batches dequantize and use a dense GEMM)");
  if (ceil_div<int64_t>(w.strips(), INT4_MMA_STRIPS) > int64_t{0x7fffffff})
    fail(name, ": ", w.out, " outputs exceed the grid");
}

// Launches one configuration (the benchmark compares them; launch_gemv_q4 picks one).
template <int WARPS, int TILES_PER_STEP, typename OutT>
void gemv_q4_launch(const Int4View& w, const __nv_bfloat16* x_packed, int batch, OutT* y,
                    cudaStream_t stream) {
  const int64_t row_groups = ceil_div<int64_t>(w.strips(), INT4_MMA_STRIPS);
  gemv_q4_kernel<WARPS, TILES_PER_STEP, OutT>
      <<<static_cast<unsigned>(row_groups), WARPS * WARP_SIZE, 0, stream>>>(
          w.tiles, w.strips(), w.k_tiles, x_packed, batch, y, w.out);
  HLLM_CUDA_CHECK_LAUNCH();
}

// 8 warps × 4 tiles in flight each cover the 32 tiles of a 4096-input row group in one step; fewer
// tiles (k_tiles <= 16, small test fixtures) do not need 8 warps.
template <typename OutT>
void gemv_q4_dispatch(const char* name, const Int4View& w, const __nv_bfloat16* x_packed, int batch,
                      OutT* y, cudaStream_t stream) {
  check_gemv_q4_args(name, w, x_packed, batch, y);
  if (w.k_tiles <= 16)
    gemv_q4_launch<4, 4>(w, x_packed, batch, y, stream);
  else
    gemv_q4_launch<8, 4>(w, x_packed, batch, y, stream);
}

// xp[b, p] = x[b, input_index[p]], 0 where input_index[p] < 0 (padding) — or out of range, which a
// valid packing never has.
template <typename T>
__global__ void gather_packed_kernel(const T* __restrict__ x, int64_t in,
                                     const int32_t* __restrict__ input_index, int64_t packed_in,
                                     int64_t total, T* __restrict__ xp) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const int64_t b = i / packed_in;
    const int32_t src = input_index[i - b * packed_in];
    xp[i] = (src >= 0 && src < in) ? x[b * in + src] : from_f32<T>(0.0f);
  }
}

}  // namespace detail

// y[b, o] = Σ_p W[o, p] · xp[b, p] for b < batch (1..8); bf16 in/out, fp32 accumulation.
// x_packed [batch, w.packed_in()], y [batch, w.out]; w.tiles in device memory.
inline void launch_gemv_q4(const Int4View& w, const __nv_bfloat16* x_packed, int batch,
                           __nv_bfloat16* y, cudaStream_t stream) {
  detail::gemv_q4_dispatch("launch_gemv_q4", w, x_packed, batch, y, stream);
}

// The same with fp32 output (an int4 lm_head writing fp32 logits).
inline void launch_gemv_q4_f32(const Int4View& w, const __nv_bfloat16* x_packed, int batch,
                               float* y, cudaStream_t stream) {
  detail::gemv_q4_dispatch("launch_gemv_q4_f32", w, x_packed, batch, y, stream);
}

// Act-order gather: xp[b, p] = input_index[p] < 0 ? 0 : x[b, input_index[p]].
// x [batch, in], input_index [packed_in] (device), xp [batch, packed_in]; any batch >= 1.
inline void launch_gather_packed(const __nv_bfloat16* x, int64_t in, const int32_t* input_index,
                                 int64_t packed_in, int batch, __nv_bfloat16* x_packed,
                                 cudaStream_t stream) {
  if (in <= 0 || packed_in <= 0 || batch < 1)
    fail("launch_gather_packed: bad sizes in ", in, ", packed_in ", packed_in, ", batch ", batch);
  if (x == nullptr || input_index == nullptr || x_packed == nullptr)
    fail("launch_gather_packed: null pointer");
  const int64_t total = packed_in * batch;
  detail::gather_packed_kernel<__nv_bfloat16>
      <<<grid_stride_blocks(total), GRID_STRIDE_THREADS, 0, stream>>>(x, in, input_index, packed_in,
                                                                      total, x_packed);
  HLLM_CUDA_CHECK_LAUNCH();
}

}  // namespace hllm::cuda
