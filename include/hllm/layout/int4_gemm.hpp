// How the CUDA INT4 GEMM (kernels/hllm/cuda/gemm_q4.cuh: decode batches of 9+ and prefill chunks)
// tiles its work, stages the activations in shared memory and splits the input axis, as host/device
// functions so the CPU test (tests/int4_gemm_layout_test.cpp) checks the maps the kernel uses.
//
// Block = GEMM_Q4_WARPS row groups (one warp each: 16 outputs = 4 strips, the gemv_q4 A fragment of
// layout/int4_mma.hpp) × GEMM_Q4_BLOCK_N tokens (8 mma n-tiles of 8) × one slice of the k-tiles.
// Each warp decodes a k-tile of its 16 rows into A fragments once and multiplies them with up to 8
// n-tiles of activations, so the weights are read once per 64 tokens, never written dequantized.
//
// Activation stage (one k-tile: 64 tokens × 128 packed inputs, bf16, 16 KiB) in 16-byte units.
// Lane (g, t) of n-tile j reads token 8j + g, chunk t (inputs 32t .. 32t + 31) as 4 units
// i = 0..3 — the same 32 activations gemv_q4 loads from global memory. Stored chunk-major with an
// XOR swizzle:
//
//   unit(col, t, i) = (t · 64 + col) · 4 + (i ^ t)
//
// A 128-bit shared load is served 8 lanes at a time (lanes 8p .. 8p + 7 = tokens 2p, 2p + 1 ×
// chunks 0..3): the token's parity picks a 64-byte half of the 128-byte bank row and i ^ t a
// different 16 bytes for each chunk, so the 8 lanes hit 8 different bank groups (no conflict).
// The copy into a stage: copy c (0 .. 1023) moves token c / 16, chunk (c % 16) / 4, unit c % 4, so
// 16 consecutive threads read one token's 256 contiguous bytes.
//
// Weights: each lane copies its own units of a k-tile (its rows' 16-byte header and 16-byte code
// chunk, gemv_q4's loads) into the stage too, lane-minor (gemm_q4_w_unit), so the tiles are
// pipelined like the activations without holding registers.
//
// Split-K: with few row blocks × token blocks (a decode batch on a small matrix), the k-tiles are
// cut into `splits` equal slices (z of the grid) so that every SM has blocks; each slice writes
// fp32 partial sums [splits][n][out] and a second kernel adds them in slice order (deterministic:
// no atomics).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "hllm/core/dtype.hpp"
#include "hllm/layout/int4_mma.hpp"
#include "hllm/layout/int4_tiles.hpp"

namespace hllm {

inline constexpr int GEMM_Q4_WARPS = 8;  // row groups per block
inline constexpr int GEMM_Q4_THREADS = GEMM_Q4_WARPS * 32;
inline constexpr int GEMM_Q4_BLOCK_ROWS = GEMM_Q4_WARPS * INT4_MMA_ROWS;  // 128 outputs
inline constexpr int GEMM_Q4_N_TILES = 8;                                 // mma n-tiles per block
inline constexpr int GEMM_Q4_BLOCK_N = GEMM_Q4_N_TILES * INT4_MMA_COLS;   // 64 tokens
inline constexpr int GEMM_Q4_STAGES = 3;  // activation stages in flight
inline constexpr int GEMM_Q4_UNITS_PER_CHUNK = INT4_CHUNK_K * 2 / 16;  // 4 units of 16 bytes
inline constexpr int GEMM_Q4_CHUNKS = INT4_TILE_K / INT4_CHUNK_K;      // 4 per k-tile
inline constexpr int GEMM_Q4_STAGE_UNITS =
    GEMM_Q4_BLOCK_N * GEMM_Q4_CHUNKS * GEMM_Q4_UNITS_PER_CHUNK;  // 1024 = 16 KiB
// Each lane's own weight units of a k-tile: the headers and code chunks of its rows g and g + 8.
inline constexpr int GEMM_Q4_W_UNITS_PER_LANE = 4;  // header g, codes g, header g + 8, codes g + 8
inline constexpr int GEMM_Q4_W_UNITS = GEMM_Q4_WARPS * GEMM_Q4_W_UNITS_PER_LANE * 32;  // 16 KiB
inline constexpr int GEMM_Q4_STAGE_UNITS_TOTAL = GEMM_Q4_STAGE_UNITS + GEMM_Q4_W_UNITS;
inline constexpr size_t GEMM_Q4_SMEM_BYTES =
    size_t{GEMM_Q4_STAGES} * GEMM_Q4_STAGE_UNITS_TOTAL * 16;
inline constexpr int GEMM_Q4_MIN_TILES_PER_SPLIT = 4;
inline constexpr int GEMM_Q4_MAX_SPLITS = 16;

static_assert(GEMM_Q4_STAGE_UNITS % GEMM_Q4_THREADS == 0, "every thread copies as many units");
static_assert(GEMM_Q4_SMEM_BYTES <= 99 * 1024, "fits one block per SM on every sm_80+ GPU");

// The 16-byte unit of a stage holding unit i (0..3) of chunk t (0..3) of token col (0..63).
HLLM_HOST_DEVICE constexpr int gemm_q4_x_unit(int col, int t, int i) {
  return (t * GEMM_Q4_BLOCK_N + col) * GEMM_Q4_UNITS_PER_CHUNK + (i ^ t);
}

// The 16-byte unit of a stage's weight area holding unit u (0..3) of `lane` of `warp`
// (lane-minor: a warp's 128-bit loads of one unit are conflict-free).
HLLM_HOST_DEVICE constexpr int gemm_q4_w_unit(int warp, int u, int lane) {
  return GEMM_Q4_STAGE_UNITS + (warp * GEMM_Q4_W_UNITS_PER_LANE + u) * 32 + lane;
}

// What copy c (0 .. GEMM_Q4_STAGE_UNITS - 1) of a stage moves: token, chunk, unit.
HLLM_HOST_DEVICE constexpr int gemm_q4_copy_col(int c) { return c / 16; }
HLLM_HOST_DEVICE constexpr int gemm_q4_copy_chunk(int c) { return (c % 16) / 4; }
HLLM_HOST_DEVICE constexpr int gemm_q4_copy_unit(int c) { return c % 4; }

// The grid and the k-slices of one call y[n, out] = xp[n, packed_in] · Wᵀ.
struct GemmQ4Plan {
  int64_t row_blocks = 0;       // grid x: GEMM_Q4_BLOCK_ROWS outputs each
  int64_t col_blocks = 0;       // grid y: GEMM_Q4_BLOCK_N tokens each
  int64_t splits = 1;           // grid z: k-slices
  int64_t tiles_per_split = 0;  // k-tiles of every slice but the last (which has >= 1)

  int64_t blocks() const { return row_blocks * col_blocks * splits; }
  // fp32 partial sums [splits][n][out] the split needs (0 when not split).
  size_t workspace_floats(int64_t n, int64_t out) const {
    return splits > 1 ? static_cast<size_t>(splits * n * out) : 0;
  }
  int64_t split_begin(int64_t s) const { return s * tiles_per_split; }
  int64_t split_end(int64_t s, int64_t k_tiles) const {
    return std::min(k_tiles, (s + 1) * tiles_per_split);
  }
};

// Split the k-tiles only when the row × token blocks leave SMs idle: aim at one wave (one block
// fits an SM: ~160 registers × 256 threads), keep >= GEMM_Q4_MIN_TILES_PER_SPLIT tiles per slice,
// at most GEMM_Q4_MAX_SPLITS slices, none empty.
inline GemmQ4Plan plan_gemm_q4(int64_t out, int64_t k_tiles, int64_t n, int sm_count) {
  GemmQ4Plan plan;
  plan.row_blocks = (out + GEMM_Q4_BLOCK_ROWS - 1) / GEMM_Q4_BLOCK_ROWS;
  plan.col_blocks = (n + GEMM_Q4_BLOCK_N - 1) / GEMM_Q4_BLOCK_N;
  const int64_t base = plan.row_blocks * plan.col_blocks;
  const int64_t target = std::max(sm_count, 1);
  int64_t splits = base >= target ? 1 : (target + base - 1) / base;
  splits = std::clamp<int64_t>(std::min<int64_t>(splits, k_tiles / GEMM_Q4_MIN_TILES_PER_SPLIT), 1,
                               GEMM_Q4_MAX_SPLITS);
  plan.tiles_per_split = (k_tiles + splits - 1) / splits;
  plan.splits = (k_tiles + plan.tiles_per_split - 1) / plan.tiles_per_split;
  return plan;
}

}  // namespace hllm
