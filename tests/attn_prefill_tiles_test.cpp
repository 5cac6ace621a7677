// CPU test of cpu/attn_prefill_emulate.hpp, the schedule and fragment maps of the CUDA
// FlashAttention-2 prefill kernel (kernels/hllm/cuda/attn_prefill.cuh) and its lane-by-lane
// emulation:
//   - the causal tile schedule (row tiles × warps × visited K/V tiles, masking only on the
//     flagged tiles) visits every (query, head, visible position) exactly once and nothing else;
//   - the mma.m16n8k16 A / B / C maps equal the PTX ISA fragment layouts and are bijections;
//   - the ldmatrix .x4 (.trans) source addresses deliver exactly the A / B fragments the mma wants
//     (Q, K, V), and the S accumulators line up with the A fragment of P;
//   - the emulated kernel equals cpu::attention_paged within bf16 tolerance on random inputs:
//     chunks of 1 .. 1000 queries, cached prefixes (partial blocks), GQA 1, 2, 4, shuffled blocks.
// This is the kernel's correctness argument on a machine without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "hllm/core/threads.hpp"
#include "hllm/cpu/attention_paged.hpp"
#include "hllm/cpu/attn_prefill_emulate.hpp"

namespace hllm {
namespace {

constexpr int LANES = 32;

// ---- Schedule -----------------------------------------------------------------------------------

// Visits of (query, head-in-group, position) by the kernel's schedule, for one KV head.
void check_schedule(int32_t n_queries, int group, int32_t start, int32_t max_kv_len) {
  const int64_t n_rows = int64_t{n_queries} * group;
  std::vector<int> visits(size_t(n_rows) * max_kv_len, 0);
  int masked_tiles = 0;
  for (int64_t b = 0; b < attn_prefill_row_tiles(n_queries, group); ++b) {
    const int64_t row0 = b * ATTN_PREFILL_BLOCK_M;
    const int32_t block_kv =
        attn_prefill_kv_len(start, attn_prefill_row_query(row0 + 63, group, n_queries), max_kv_len);
    for (int w = 0; w < ATTN_PREFILL_WARPS; ++w) {
      const int64_t wrow0 = row0 + w * ATTN_PREFILL_WARP_M;
      const int32_t first =
          attn_prefill_kv_len(start, attn_prefill_row_query(wrow0, group, n_queries), max_kv_len);
      const int32_t last = attn_prefill_kv_len(
          start, attn_prefill_row_query(wrow0 + 15, group, n_queries), max_kv_len);
      ASSERT_LE(attn_prefill_kv_tiles(last), attn_prefill_kv_tiles(block_kv));
      for (int32_t j = 0; j < attn_prefill_kv_tiles(last); ++j) {
        const bool masked = attn_prefill_tile_masked(j, first);
        masked_tiles += masked;
        for (int r = 0; r < ATTN_PREFILL_WARP_M; ++r) {
          const int64_t row = wrow0 + r;
          const int32_t lim =
              attn_prefill_kv_len(start, attn_prefill_row_query(row, group, n_queries), max_kv_len);
          for (int c = 0; c < ATTN_PREFILL_BLOCK_N; ++c) {
            const int32_t pos = j * ATTN_PREFILL_BLOCK_N + c;
            if (masked && pos >= lim) continue;
            // Unmasked: every position must be visible to this row (and loaded, not zero-filled).
            ASSERT_LT(pos, lim) << "unmasked tile " << j << " row " << row;
            ASSERT_LT(pos, block_kv);
            if (row < n_rows) ++visits[size_t(row) * max_kv_len + pos];
          }
        }
      }
    }
  }
  for (int64_t row = 0; row < n_rows; ++row) {
    const int32_t t = static_cast<int32_t>(row / group);
    const int32_t lim = std::min(start + t + 1, max_kv_len);
    for (int32_t pos = 0; pos < max_kv_len; ++pos)
      ASSERT_EQ(visits[size_t(row) * max_kv_len + pos], pos < lim ? 1 : 0)
          << "query " << t << " head " << row % group << " pos " << pos;
  }
  // Masking is confined to the diagonal: at most 2 masked tiles per warp (64-wide tiles, a warp's
  // positions span <= 16 queries), so most tiles of a long chunk run unmasked.
  EXPECT_LE(masked_tiles, 2 * ATTN_PREFILL_WARPS * attn_prefill_row_tiles(n_queries, group));
}

TEST(AttnPrefillTiles, ScheduleVisitsEveryVisiblePairOnce) {
  for (const int group : {1, 2, 4, 8})
    for (const int32_t n : {1, 3, 16, 17, 63, 64, 65, 129, 300})
      for (const int32_t start : {0, 5, 64, 130}) check_schedule(n, group, start, start + n);
  // max_kv_len below start + n clamps the horizon of the late queries.
  check_schedule(100, 4, 30, 90);
}

TEST(AttnPrefillTiles, RowsMapToQueryAndHead) {
  EXPECT_EQ(attn_prefill_row_tiles(1, 1), 1);
  EXPECT_EQ(attn_prefill_row_tiles(16, 4), 1);
  EXPECT_EQ(attn_prefill_row_tiles(17, 4), 2);
  EXPECT_EQ(attn_prefill_row_query(0, 4, 10), 0);
  EXPECT_EQ(attn_prefill_row_query(7, 4, 10), 1);
  EXPECT_EQ(attn_prefill_row_query(63, 4, 10), 9);  // padding row -> last query
  EXPECT_EQ(attn_prefill_kv_len(5, 0, 100), 6);
  EXPECT_EQ(attn_prefill_kv_len(5, 200, 100), 100);
  EXPECT_EQ(attn_prefill_kv_tiles(64), 1);
  EXPECT_EQ(attn_prefill_kv_tiles(65), 2);
  EXPECT_FALSE(attn_prefill_tile_masked(0, 64));
  EXPECT_TRUE(attn_prefill_tile_masked(0, 63));
  EXPECT_EQ(attn_prefill_smem_stride(128) * 2, 272);
  EXPECT_EQ(attn_prefill_smem_bytes(128), 87040);
  // Chunk mapping: a bijection onto (row, 8-column chunk) of a 64 × head_dim tile.
  for (const int hd : {64, 128}) {
    std::vector<int> seen(size_t(64) * hd / 8, 0);
    for (int c = 0; c < 64 * hd / 8; ++c) {
      const int r = attn_prefill_chunk_row(c, hd), col = attn_prefill_chunk_col(c, hd);
      ASSERT_EQ(col % 8, 0);
      ++seen[size_t(r) * (hd / 8) + col / 8];
    }
    for (int v : seen) EXPECT_EQ(v, 1);
  }
}

// ---- Fragments ----------------------------------------------------------------------------------

// The PTX ISA figures for mma.m16n8k16 .bf16, written out independently of the header:
// A: a0 (g, 2t..2t+1), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..); B: b0 (k 2t.., n g),
// b1 (k 2t+8.., n g); C: c0,c1 (g, 2t..), c2,c3 (g+8, 2t..).
TEST(AttnPrefillTiles, MmaMapsMatchThePtxLayoutsAndAreBijections) {
  static constexpr int A_ROW_OFF[4] = {0, 8, 0, 8}, A_COL_OFF[4] = {0, 0, 8, 8};
  std::vector<int> a_seen(256, 0), b_seen(128, 0), c_seen(128, 0);
  for (int lane = 0; lane < LANES; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    for (int r = 0; r < 4; ++r)
      for (int e = 0; e < 2; ++e) {
        EXPECT_EQ(attn_mma_a_row(lane, r), g + A_ROW_OFF[r]);
        EXPECT_EQ(attn_mma_a_col(lane, r, e), 2 * t + e + A_COL_OFF[r]);
        ++a_seen[attn_mma_a_row(lane, r) * 16 + attn_mma_a_col(lane, r, e)];
      }
    for (int r = 0; r < 2; ++r)
      for (int e = 0; e < 2; ++e) {
        EXPECT_EQ(attn_mma_b_k(lane, r, e), 2 * t + e + (r ? 8 : 0));
        ++b_seen[attn_mma_b_k(lane, r, e) * 8 + attn_mma_b_n(lane)];
      }
    EXPECT_EQ(attn_mma_b_n(lane), g);
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(attn_mma_c_row(lane, i), g + (i >= 2 ? 8 : 0));
      EXPECT_EQ(attn_mma_c_col(lane, i), 2 * t + (i & 1));
      ++c_seen[attn_mma_c_row(lane, i) * 8 + attn_mma_c_col(lane, i)];
    }
  }
  for (int v : a_seen) EXPECT_EQ(v, 1);
  for (int v : b_seen) EXPECT_EQ(v, 1);
  for (int v : c_seen) EXPECT_EQ(v, 1);
}

// Spot values from the ISA figures: lane 5 (g 1, t 1).
TEST(AttnPrefillTiles, MmaMapsByHand) {
  EXPECT_EQ(attn_mma_a_row(5, 0), 1);
  EXPECT_EQ(attn_mma_a_col(5, 0, 0), 2);
  EXPECT_EQ(attn_mma_a_row(5, 3), 9);
  EXPECT_EQ(attn_mma_a_col(5, 3, 1), 11);
  EXPECT_EQ(attn_mma_b_k(5, 1, 0), 10);
  EXPECT_EQ(attn_mma_c_row(5, 2), 9);
  EXPECT_EQ(attn_mma_c_col(5, 3), 3);
}

// Shared-memory images holding each element's row (and, separately, column) index, read by the
// emulated ldmatrix: every lane register element must be the operand element the mma maps assign.
TEST(AttnPrefillTiles, LdmatrixAddressesDeliverTheMmaFragments) {
  // bf16 holds integers exactly only up to 256, so encode rows and columns in two passes.
  constexpr int STRIDE = 24;
  std::vector<bf16> rows(16 * STRIDE), cols(16 * STRIDE);
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < STRIDE; ++c) {
      rows[r * STRIDE + c] = f32_to_bf16(float(r));
      cols[r * STRIDE + c] = f32_to_bf16(float(c));
    }
  auto load = [&](const std::vector<bf16>& img, int(&row)[LANES], int(&col)[LANES], bool trans,
                  uint32_t(&out)[LANES][4]) {
    cpu::prefill_detail::ldmatrix_x4(img.data(), STRIDE, row, col, trans, out);
  };
  auto value = [](uint32_t pair, int e) {
    return static_cast<int>(cpu::prefill_detail::bf16x2_elem(pair, e));
  };
  int row[LANES], col[LANES];
  uint32_t r_of[LANES][4], c_of[LANES][4];
  // Q: smem (row = query row, col = dim) -> A (row, k = dim).
  for (int l = 0; l < LANES; ++l) row[l] = attn_ldm_a_row(l), col[l] = attn_ldm_a_col(l);
  load(rows, row, col, false, r_of);
  load(cols, row, col, false, c_of);
  for (int l = 0; l < LANES; ++l)
    for (int r = 0; r < 4; ++r)
      for (int e = 0; e < 2; ++e) {
        EXPECT_EQ(value(r_of[l][r], e), attn_mma_a_row(l, r)) << "Q lane " << l << " reg " << r;
        EXPECT_EQ(value(c_of[l][r], e), attn_mma_a_col(l, r, e)) << "Q lane " << l << " reg " << r;
      }
  // K: smem (row = position n, col = dim k) -> B of n-tile i / 2, reg i % 2: (k, n).
  for (int l = 0; l < LANES; ++l) row[l] = attn_ldm_k_row(l), col[l] = attn_ldm_k_col(l);
  load(rows, row, col, false, r_of);
  load(cols, row, col, false, c_of);
  for (int l = 0; l < LANES; ++l)
    for (int i = 0; i < 4; ++i)
      for (int e = 0; e < 2; ++e) {
        EXPECT_EQ(value(r_of[l][i], e), 8 * (i / 2) + attn_mma_b_n(l)) << "K lane " << l;
        EXPECT_EQ(value(c_of[l][i], e), attn_mma_b_k(l, i % 2, e)) << "K lane " << l;
      }
  // V (.trans): smem (row = position k, col = dim n) -> B of dim tile i / 2, reg i % 2.
  for (int l = 0; l < LANES; ++l) row[l] = attn_ldm_v_row(l), col[l] = attn_ldm_v_col(l);
  load(rows, row, col, true, r_of);
  load(cols, row, col, true, c_of);
  for (int l = 0; l < LANES; ++l)
    for (int i = 0; i < 4; ++i)
      for (int e = 0; e < 2; ++e) {
        EXPECT_EQ(value(r_of[l][i], e), attn_mma_b_k(l, i % 2, e)) << "V lane " << l;
        EXPECT_EQ(value(c_of[l][i], e), 8 * (i / 2) + attn_mma_b_n(l)) << "V lane " << l;
      }
  // Each 8-lane address group names 8 distinct rows of one 8-column block (one ldmatrix matrix).
  for (int m = 0; m < 4; ++m) {
    std::vector<int> a_rows, k_rows;
    for (int l = 8 * m; l < 8 * m + 8; ++l) {
      a_rows.push_back(attn_ldm_a_row(l));
      k_rows.push_back(attn_ldm_k_row(l));
      EXPECT_EQ(attn_ldm_a_col(l), attn_ldm_a_col(8 * m));
      EXPECT_EQ(attn_ldm_k_col(l), attn_ldm_k_col(8 * m));
    }
    std::sort(a_rows.begin(), a_rows.end());
    std::sort(k_rows.begin(), k_rows.end());
    EXPECT_EQ(std::adjacent_find(a_rows.begin(), a_rows.end()), a_rows.end());
    EXPECT_EQ(std::adjacent_find(k_rows.begin(), k_rows.end()), k_rows.end());
  }
}

// The S accumulators of n-tiles 2kk, 2kk + 1 are the A fragment of P for k-step kk: the element
// a lane holds as C (row, 8·ntile + col) is the one A wants at (row, 16·kk + col).
TEST(AttnPrefillTiles, ScoreAccumulatorsAreTheAFragmentOfP) {
  for (int lane = 0; lane < LANES; ++lane)
    for (int kk = 0; kk < 4; ++kk)
      for (int r = 0; r < 4; ++r)
        for (int e = 0; e < 2; ++e) {
          const int nt = 2 * kk + attn_p_ntile_offset(r), i = attn_p_c_elem(r, e);
          EXPECT_EQ(attn_mma_c_row(lane, i), attn_mma_a_row(lane, r));
          EXPECT_EQ(8 * nt + attn_mma_c_col(lane, i), 16 * kk + attn_mma_a_col(lane, r, e));
        }
}

// Bank conflicts: the 8 row addresses of one ldmatrix phase, at the padded stride, fall in 8
// distinct 16-byte groups of the 128-byte bank window.
TEST(AttnPrefillTiles, PaddedRowsAreConflictFree) {
  for (const int hd : {64, 128}) {
    const int stride_bytes = attn_prefill_smem_stride(hd) * 2;
    for (int m = 0; m < 4; ++m) {
      std::vector<int> groups;
      for (int l = 8 * m; l < 8 * m + 8; ++l)
        groups.push_back((attn_ldm_k_row(l) * stride_bytes + attn_ldm_k_col(l) * 2) / 16 % 8);
      std::sort(groups.begin(), groups.end());
      EXPECT_EQ(std::adjacent_find(groups.begin(), groups.end()), groups.end()) << hd;
    }
  }
}

// ---- Emulation against cpu::attention_paged -----------------------------------------------------

struct Case {
  int n_heads, n_kv_heads, head_dim, block_size, start, n;
};

void check_emulation(const Case& c, uint32_t seed, ThreadPool& pool) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const int total = c.start + c.n;
  const int max_blocks = (total + c.block_size - 1) / c.block_size;
  const int n_blocks = max_blocks + 2;
  std::vector<int32_t> ids(n_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  // Row 1 of the table is the sequence (seq = 1); row 0 names other blocks.
  std::vector<int32_t> tables(size_t(2) * max_blocks);
  for (int b = 0; b < max_blocks; ++b) {
    tables[max_blocks + b] = ids[b];
    tables[b] = ids[(b + 1) % n_blocks];
  }
  const size_t row_elems = size_t(c.n_kv_heads) * c.head_dim;
  const size_t pool_elems = size_t(n_blocks) * c.block_size * row_elems;
  std::vector<bf16> k(pool_elems), v(pool_elems);
  std::vector<float> kf(pool_elems), vf(pool_elems);
  for (size_t i = 0; i < pool_elems; ++i) {
    k[i] = f32_to_bf16(dist(rng));
    v[i] = f32_to_bf16(dist(rng));
    kf[i] = bf16_to_f32(k[i]);
    vf[i] = bf16_to_f32(v[i]);
  }
  const size_t q_elems = size_t(c.n) * c.n_heads * c.head_dim;
  std::vector<bf16> q(q_elems), out(q_elems, bf16{0xffff});
  std::vector<float> qf(q_elems), ref(q_elems);
  for (size_t i = 0; i < q_elems; ++i) {
    q[i] = f32_to_bf16(4.0f * dist(rng));  // scores spread over a few units
    qf[i] = bf16_to_f32(q[i]);
  }
  PagedKvView kv;
  kv.block_tables = tables.data();
  kv.max_blocks_per_seq = max_blocks;
  kv.block_size = c.block_size;
  kv.n_kv_heads = c.n_kv_heads;
  kv.head_dim = c.head_dim;
  const float scale = 1.0f / std::sqrt(float(c.head_dim));
  kv.k = k.data();
  kv.v = v.data();
  cpu::attn_prefill_emulate(q.data(), kv, 1, c.start, c.n, c.n_heads, total, scale, out.data(),
                            pool);
  std::vector<int32_t> seqs(c.n, 1), lens(c.n);
  for (int t = 0; t < c.n; ++t) lens[t] = c.start + t + 1;
  PagedKvView kvf = kv;
  kvf.k = kf.data();
  kvf.v = vf.data();
  cpu::attention_paged<float>(qf.data(), kvf, seqs, lens, c.n_heads, scale, ref.data(), pool);
  size_t misses = 0;
  double worst = 0;
  for (size_t i = 0; i < q_elems; ++i) {
    const double got = bf16_to_f32(out[i]), err = std::fabs(got - ref[i]);
    const double bound = 2e-3 + 2e-2 * std::fabs(ref[i]);
    if (!(err <= bound)) {
      if (misses < 5) ADD_FAILURE() << "element " << i << " got " << got << " ref " << ref[i];
      ++misses;
    }
    worst = std::max(worst, err);
  }
  EXPECT_EQ(misses, 0u) << "heads " << c.n_heads << "/" << c.n_kv_heads << " start " << c.start
                        << " n " << c.n << " worst abs err " << worst;
}

TEST(AttnPrefillTiles, EmulationMatchesAttentionPaged) {
  ThreadPool pool;
  uint32_t seed = 1;
  // The fixture's 4/1 heads: the sequence lengths of the issue, with and without a cached prefix.
  for (const int n : {1, 3, 17, 129, 1000})
    for (const int start : {0, 5, 130}) check_emulation({4, 1, 128, 16, start, n}, seed++, pool);
  // Llama-3-8B's 32/8 (group 4), and groups 1 and 2; head_dim 64; odd block sizes.
  for (const int n : {1, 17, 129})
    for (const int start : {0, 130}) check_emulation({32, 8, 128, 16, start, n}, seed++, pool);
  check_emulation({8, 8, 128, 16, 5, 70}, seed++, pool);
  check_emulation({8, 4, 128, 16, 130, 129}, seed++, pool);
  check_emulation({8, 1, 128, 16, 3, 40}, seed++, pool);  // group 8
  check_emulation({4, 2, 64, 16, 5, 129}, seed++, pool);
  check_emulation({4, 1, 128, 7, 9, 100}, seed++, pool);  // block_size 7: blocks straddle tiles
}

}  // namespace
}  // namespace hllm
