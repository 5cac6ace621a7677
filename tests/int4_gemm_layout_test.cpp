// CPU test of layout/int4_gemm.hpp, the maps the CUDA INT4 GEMM (kernels/hllm/cuda/gemm_q4.cuh)
// uses, emulated on the host:
//   - the activation stage: the copy map and the swizzled unit map are bijections, every lane of
//     every n-tile reads back exactly the 32 activations gemv_q4 loads from global memory for the
//     same (token, chunk) — the words whose fragments tests/int4_mma_layout_test.cpp proves — and
//     tokens past n read as zeros;
//   - the 128-bit shared loads of a warp (8 lanes per phase) hit 8 different bank groups, for the
//     activations and for the lanes' weight units;
//   - the weight units of every (warp, unit, lane) are distinct and lie after the activations;
//   - the split plan cuts the k-tiles into non-empty slices that cover each tile once, splits only
//     when the row × token blocks leave SMs idle, and the workspace matches;
//   - the output map: every (row, token) of a block is written by exactly one (warp, lane, element).
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <vector>

#include "hllm/layout/int4_gemm.hpp"
#include "hllm/layout/int4_mma.hpp"
#include "hllm/layout/int4_tiles.hpp"

namespace hllm {
namespace {

constexpr int LANES = 32;
constexpr int BANK_GROUPS = 8;  // 128-byte bank row / 16-byte units

TEST(Int4GemmLayout, StageMapsAreBijections) {
  std::vector<int> seen(GEMM_Q4_STAGE_UNITS, 0);
  for (int col = 0; col < GEMM_Q4_BLOCK_N; ++col)
    for (int t = 0; t < GEMM_Q4_CHUNKS; ++t)
      for (int i = 0; i < GEMM_Q4_UNITS_PER_CHUNK; ++i) {
        const int unit = gemm_q4_x_unit(col, t, i);
        ASSERT_GE(unit, 0);
        ASSERT_LT(unit, GEMM_Q4_STAGE_UNITS);
        ++seen[unit];
      }
  for (int v : seen) EXPECT_EQ(v, 1);

  std::set<std::array<int, 3>> copies;
  for (int c = 0; c < GEMM_Q4_STAGE_UNITS; ++c)
    copies.insert({gemm_q4_copy_col(c), gemm_q4_copy_chunk(c), gemm_q4_copy_unit(c)});
  EXPECT_EQ(copies.size(), static_cast<size_t>(GEMM_Q4_STAGE_UNITS));
  // 16 consecutive copies read one token's 256 contiguous bytes, in order.
  for (int c = 0; c < GEMM_Q4_STAGE_UNITS; ++c) {
    const int byte = (gemm_q4_copy_chunk(c) * GEMM_Q4_UNITS_PER_CHUNK + gemm_q4_copy_unit(c)) * 16;
    EXPECT_EQ(gemm_q4_copy_col(c) * 256 + byte, c * 16);
  }

  std::vector<int> w_seen(GEMM_Q4_W_UNITS, 0);
  for (int warp = 0; warp < GEMM_Q4_WARPS; ++warp)
    for (int u = 0; u < GEMM_Q4_W_UNITS_PER_LANE; ++u)
      for (int lane = 0; lane < LANES; ++lane) {
        const int unit = gemm_q4_w_unit(warp, u, lane);
        ASSERT_GE(unit, GEMM_Q4_STAGE_UNITS);
        ASSERT_LT(unit, GEMM_Q4_STAGE_UNITS_TOTAL);
        ++w_seen[unit - GEMM_Q4_STAGE_UNITS];
      }
  for (int v : w_seen) EXPECT_EQ(v, 1);
  EXPECT_EQ(GEMM_Q4_SMEM_BYTES, size_t{GEMM_Q4_STAGES} * GEMM_Q4_STAGE_UNITS_TOTAL * 16);
}

TEST(Int4GemmLayout, WarpSharedLoadsAreConflictFree) {
  // A warp's 128-bit shared load is served in 4 phases of 8 consecutive lanes; a phase without
  // conflicts touches 8 different 16-byte bank groups.
  for (int j = 0; j < GEMM_Q4_N_TILES; ++j)
    for (int i = 0; i < GEMM_Q4_UNITS_PER_CHUNK; ++i)
      for (int phase = 0; phase < 4; ++phase) {
        std::set<int> groups;
        for (int lane = 8 * phase; lane < 8 * phase + 8; ++lane) {
          const int col = j * INT4_MMA_COLS + int4_mma_group(lane);
          groups.insert(gemm_q4_x_unit(col, int4_mma_thread(lane), i) % BANK_GROUPS);
        }
        EXPECT_EQ(groups.size(), 8u) << "n-tile " << j << " unit " << i << " phase " << phase;
      }
  for (int warp = 0; warp < GEMM_Q4_WARPS; ++warp)
    for (int u = 0; u < GEMM_Q4_W_UNITS_PER_LANE; ++u)
      for (int phase = 0; phase < 4; ++phase) {
        std::set<int> groups;
        for (int lane = 8 * phase; lane < 8 * phase + 8; ++lane)
          groups.insert(gemm_q4_w_unit(warp, u, lane) % BANK_GROUPS);
        EXPECT_EQ(groups.size(), 8u);
      }
}

// Emulates the block's copies of one k-tile into a stage and every lane's reads of it.
TEST(Int4GemmLayout, LanesReadTheActivationsGemvLoads) {
  constexpr int64_t K_TILES = 3, PACKED = K_TILES * INT4_TILE_K;
  for (const int64_t n : {int64_t{1}, int64_t{9}, int64_t{64}, int64_t{70}, int64_t{129}}) {
    SCOPED_TRACE("n " + std::to_string(n));
    std::mt19937 rng(static_cast<uint32_t>(n));
    std::vector<uint16_t> x(static_cast<size_t>(n * PACKED));  // bf16 bits, any values
    for (auto& v : x) v = static_cast<uint16_t>(rng() | 1u);   // never 0: zero-fill shows
    const int64_t col_blocks = (n + GEMM_Q4_BLOCK_N - 1) / GEMM_Q4_BLOCK_N;
    for (int64_t cb = 0; cb < col_blocks; ++cb)
      for (int64_t kt = 0; kt < K_TILES; ++kt) {
        const int64_t col0 = cb * GEMM_Q4_BLOCK_N;
        const int n_cols = static_cast<int>(std::min<int64_t>(GEMM_Q4_BLOCK_N, n - col0));
        // The copies (cp.async with src-size 0 past n: zeros).
        std::vector<std::array<uint16_t, 8>> stage(GEMM_Q4_STAGE_UNITS);
        for (int c = 0; c < GEMM_Q4_STAGE_UNITS; ++c) {
          const int col = gemm_q4_copy_col(c);
          std::array<uint16_t, 8> unit{};
          if (col < n_cols) {
            const int64_t src = (col0 + col) * PACKED + kt * INT4_TILE_K +
                                gemm_q4_copy_chunk(c) * INT4_CHUNK_K + gemm_q4_copy_unit(c) * 8;
            std::memcpy(unit.data(), &x[static_cast<size_t>(src)], 16);
          }
          stage[gemm_q4_x_unit(col, gemm_q4_copy_chunk(c), gemm_q4_copy_unit(c))] = unit;
        }
        // The reads: lane (g, t) of n-tile j, units 0..3 = token 8j + g, inputs 32t .. 32t + 31.
        for (int j = 0; j < GEMM_Q4_N_TILES; ++j)
          for (int lane = 0; lane < LANES; ++lane) {
            const int g = int4_mma_group(lane), t = int4_mma_thread(lane);
            const int col = j * INT4_MMA_COLS + g;
            for (int i = 0; i < GEMM_Q4_UNITS_PER_CHUNK; ++i)
              for (int e = 0; e < 8; ++e) {
                const uint16_t got = stage[gemm_q4_x_unit(col, t, i)][e];
                const uint16_t want =
                    col < n_cols ? x[static_cast<size_t>((col0 + col) * PACKED + kt * INT4_TILE_K +
                                                         t * INT4_CHUNK_K + 8 * i + e)]
                                 : uint16_t{0};
                ASSERT_EQ(got, want) << "block " << cb << " k-tile " << kt << " lane " << lane
                                     << " n-tile " << j << " unit " << i;
              }
          }
      }
  }
}

TEST(Int4GemmLayout, SplitPlanCoversEveryTileOnce) {
  struct Shape {
    int64_t in, out;
  };
  // Llama-3-8B's linears (qkv, o, gate_up, down, lm_head) and odd small ones.
  const Shape shapes[] = {{4096, 6144},   {4096, 4096}, {4096, 28672}, {14336, 4096},
                          {4096, 128256}, {128, 4},     {384, 20},     {2176, 1000}};
  for (const Shape& s : shapes)
    for (const int64_t n :
         {int64_t{9}, int64_t{16}, int64_t{33}, int64_t{64}, int64_t{512}, int64_t{4096}})
      for (const int sms : {1, 78, 132}) {
        const int64_t k_tiles = (s.in + INT4_TILE_K - 1) / INT4_TILE_K;
        const GemmQ4Plan p = plan_gemm_q4(s.out, k_tiles, n, sms);
        SCOPED_TRACE(std::to_string(s.in) + "x" + std::to_string(s.out) + " n " +
                     std::to_string(n) + " sms " + std::to_string(sms));
        EXPECT_EQ(p.row_blocks * GEMM_Q4_BLOCK_ROWS >= s.out, true);
        EXPECT_LT((p.row_blocks - 1) * GEMM_Q4_BLOCK_ROWS, s.out);
        EXPECT_EQ(p.col_blocks, (n + GEMM_Q4_BLOCK_N - 1) / GEMM_Q4_BLOCK_N);
        ASSERT_GE(p.splits, 1);
        EXPECT_LE(p.splits, GEMM_Q4_MAX_SPLITS);
        std::vector<int> covered(static_cast<size_t>(k_tiles), 0);
        for (int64_t z = 0; z < p.splits; ++z) {
          EXPECT_LT(p.split_begin(z), p.split_end(z, k_tiles)) << "empty slice " << z;
          for (int64_t kt = p.split_begin(z); kt < p.split_end(z, k_tiles); ++kt)
            ++covered[static_cast<size_t>(kt)];
        }
        for (int v : covered) EXPECT_EQ(v, 1);
        const int64_t base = p.row_blocks * p.col_blocks;
        if (base >= sms) {
          EXPECT_EQ(p.splits, 1) << "split though the SMs were busy";
        }
        if (p.splits > 1) {
          EXPECT_GE(p.tiles_per_split, GEMM_Q4_MIN_TILES_PER_SPLIT);
          EXPECT_EQ(p.workspace_floats(n, s.out), static_cast<size_t>(p.splits * n * s.out));
        } else {
          EXPECT_EQ(p.workspace_floats(n, s.out), 0u);
        }
      }
  // A decode batch on a small 8B matrix does split (o_proj: 32 row blocks on 132 SMs).
  EXPECT_GT(plan_gemm_q4(4096, 32, 16, 132).splits, 1);
}

TEST(Int4GemmLayout, EveryOutputOfABlockHasOneWriter) {
  // Output o = 16 · row_group + c_row, token = 8j + c_col (gemm_q4_kernel's epilogue).
  std::vector<int> seen(GEMM_Q4_BLOCK_ROWS * GEMM_Q4_BLOCK_N, 0);
  for (int warp = 0; warp < GEMM_Q4_WARPS; ++warp)
    for (int j = 0; j < GEMM_Q4_N_TILES; ++j)
      for (int lane = 0; lane < LANES; ++lane)
        for (int e = 0; e < 4; ++e) {
          const int o = warp * INT4_MMA_ROWS + int4_mma_c_row(lane, e);
          const int col = j * INT4_MMA_COLS + int4_mma_c_col(lane, e);
          ++seen[o * GEMM_Q4_BLOCK_N + col];
        }
  for (int v : seen) EXPECT_EQ(v, 1);
  // And row m of a warp's A fragment is output 16 · row_group + m: strip 4 · row_group + m / 4,
  // tile row m % 4 (int4_mma_row_strip / int4_mma_row_in_tile).
  for (int m = 0; m < INT4_MMA_ROWS; ++m)
    EXPECT_EQ(int4_mma_row_strip(m) * INT4_TILE_ROWS + int4_mma_row_in_tile(m), m);
}

}  // namespace
}  // namespace hllm
