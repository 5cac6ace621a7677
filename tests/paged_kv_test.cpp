// The paged KV layout (layout/paged_kv.hpp), the split plan and online-softmax merge shared with
// the CUDA decode attention (cpu/attention_paged.hpp), and the CPU twin attention_paged against
// the contiguous cpu::attention_causal: on the identity block table (the contiguous cache is that
// special case) and on shuffled tables, with every split length.
#include "hllm/layout/paged_kv.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <span>
#include <type_traits>
#include <vector>

#include "hllm/core/tensor.hpp"
#include "hllm/cpu/attention.hpp"
#include "hllm/cpu/attention_paged.hpp"

namespace {

using hllm::DType;
using hllm::PagedKvView;
using hllm::Tensor;

// ---- Index helpers ------------------------------------------------------------------------------

TEST(PagedKv, RowAndOffsetByHand) {
  // Two sequences, block_size 16, 3 table entries each.
  const std::vector<int32_t> tables = {5, 2, 9, /* seq 1: */ 0, 7, 3};
  PagedKvView kv;
  kv.block_tables = tables.data();
  kv.max_blocks_per_seq = 3;
  kv.block_size = 16;
  kv.n_kv_heads = 8;
  kv.head_dim = 128;
  EXPECT_EQ(hllm::paged_kv_row(kv, 0, 0), 80);    // block 5, slot 0
  EXPECT_EQ(hllm::paged_kv_row(kv, 0, 15), 95);   // block 5, slot 15
  EXPECT_EQ(hllm::paged_kv_row(kv, 0, 16), 32);   // block 2, slot 0
  EXPECT_EQ(hllm::paged_kv_row(kv, 0, 33), 145);  // block 9, slot 1
  EXPECT_EQ(hllm::paged_kv_row(kv, 1, 0), 0);
  EXPECT_EQ(hllm::paged_kv_row(kv, 1, 47), 63);  // block 3, slot 15
  EXPECT_EQ(hllm::paged_kv_offset(kv, 0, 0), 0);
  EXPECT_EQ(hllm::paged_kv_offset(kv, 0, 3), 3 * 128);
  EXPECT_EQ(hllm::paged_kv_offset(kv, 145, 7), (145 * 8 + 7) * 128);
}

TEST(PagedKv, RowInTableMatchesPagedKvRowAndIsABijection) {
  std::mt19937 rng(7);
  for (const int32_t block_size : {1, 3, 16, 32}) {
    const int32_t n_seqs = 3, max_blocks = 11, n_blocks = n_seqs * max_blocks + 5;
    std::vector<int32_t> ids(n_blocks);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    std::vector<int32_t> tables(ids.begin(), ids.begin() + n_seqs * max_blocks);
    PagedKvView kv;
    kv.block_tables = tables.data();
    kv.max_blocks_per_seq = max_blocks;
    kv.block_size = block_size;
    kv.n_kv_heads = 2;
    kv.head_dim = 64;
    std::set<int64_t> rows;
    for (int32_t seq = 0; seq < n_seqs; ++seq) {
      for (int32_t pos = 0; pos < max_blocks * block_size; ++pos) {
        const int64_t row = hllm::paged_kv_row(kv, seq, pos);
        ASSERT_EQ(row,
                  hllm::paged_kv_row_in_table(tables.data() + seq * max_blocks, block_size, pos));
        ASSERT_GE(row, 0);
        ASSERT_LT(row, int64_t{n_blocks} * block_size);
        ASSERT_EQ(row / block_size, tables[seq * max_blocks + pos / block_size]);
        rows.insert(row);
      }
    }
    EXPECT_EQ(rows.size(), size_t(n_seqs) * max_blocks * block_size);  // no two positions collide
  }
}

TEST(AttnSplitPlan, Invariants) {
  for (const int64_t slots : {1, 7, 264, 396, 528, 2112}) {
    for (const int64_t pairs : {1, 3, 8, 37, 128, 512, 2048, 8192}) {
      for (const int32_t max_kv_len : {1, 2, 127, 128, 255, 256, 1000, 4097, 16384, 131072}) {
        const hllm::AttnSplitPlan plan = hllm::attn_split_plan(pairs, 1, max_kv_len, slots);
        ASSERT_GE(plan.n_splits, 1);
        ASSERT_LE(plan.n_splits, std::max(1, max_kv_len / hllm::ATTN_MIN_SPLIT_LEN));
        ASSERT_LT(int64_t{plan.n_splits - 1} * plan.split_len, max_kv_len);
        ASSERT_GE(int64_t{plan.n_splits} * plan.split_len, max_kv_len);
        if (plan.n_splits > 1) {
          ASSERT_GE(plan.split_len, hllm::ATTN_MIN_SPLIT_LEN);
        }
        // Same plan whichever way the pairs are counted.
        const hllm::AttnSplitPlan same = hllm::attn_split_plan(1, pairs, max_kv_len, slots);
        ASSERT_EQ(same.n_splits, plan.n_splits);
      }
    }
  }
}

TEST(AttnSplitPlan, Llama3_8bShapes) {
  const int64_t slots = 3 * 132;  // H100 SXM, 3 blocks of the GQA-4 kernel per SM
  // Batch 1 at 16k: 8 (query, KV head) pairs alone would use 2% of the GPU; splits fill a wave.
  const auto long_ctx = hllm::attn_split_plan(1, 8, 16384, slots);
  EXPECT_GE(hllm::attn_wave_efficiency(8 * long_ctx.n_splits, slots), 0.9);
  EXPECT_GE(long_ctx.split_len, 128);
  // Batch 64 at 2k: 512 pairs are 1.3 waves; 3 splits make 1536 blocks = 3.9 waves.
  const auto batch = hllm::attn_split_plan(64, 8, 2048, slots);
  EXPECT_EQ(batch.n_splits, 3);
  EXPECT_EQ(batch.split_len, 683);
  // Short contexts: no split below 128 positions.
  EXPECT_EQ(hllm::attn_split_plan(1, 8, 200, slots).n_splits, 1);
  EXPECT_EQ(hllm::attn_split_plan(1, 8, 4096, slots).n_splits, 32);
  // Enough pairs for many full waves: one split.
  EXPECT_EQ(hllm::attn_split_plan(256, 8, 4096, 132).n_splits, 1);
  EXPECT_THROW(hllm::attn_split_plan(0, 8, 100, slots), hllm::Error);
  EXPECT_THROW(hllm::attn_split_plan(1, 8, 0, slots), hllm::Error);
}

TEST(AttnSplitPlan, WorkspaceLayout) {
  EXPECT_EQ(hllm::attn_partial_index(0, 0, 0, 32, 5), 0);
  EXPECT_EQ(hllm::attn_partial_index(0, 0, 4, 32, 5), 4);
  EXPECT_EQ(hllm::attn_partial_index(0, 1, 0, 32, 5), 5);
  EXPECT_EQ(hllm::attn_partial_index(2, 3, 1, 32, 5), (2 * 32 + 3) * 5 + 1);
  EXPECT_EQ(hllm::attn_workspace_bytes_for(3, 32, 128, 1), 0u);
  EXPECT_EQ(hllm::attn_workspace_bytes_for(3, 32, 128, 5), size_t(3 * 32 * 5 * 130 * 4));
}

TEST(OnlineSoftmax, RescaleAndEmptyMerge) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(hllm::softmax_rescale(-inf, -inf), 0.0f);  // empty merged with empty: no NaN
  EXPECT_EQ(hllm::softmax_rescale(-inf, 3.0f), 0.0f);
  EXPECT_EQ(hllm::softmax_rescale(2.5f, 2.5f), 1.0f);
  EXPECT_FLOAT_EQ(hllm::softmax_rescale(1.0f, 3.0f), 0.25f);
  // Merging a state with the empty state returns it unchanged.
  const float m = 1.75f, d = 3.5f, acc = -0.625f;
  const float m_new = std::max(m, -inf);
  const float w = hllm::softmax_rescale(m, m_new), w_empty = hllm::softmax_rescale(-inf, m_new);
  EXPECT_EQ(d * w + 0.0f * w_empty, d);
  EXPECT_EQ(acc * w + 0.0f * w_empty, acc);
}

// ---- The CPU twin against the contiguous attention ----------------------------------------------

struct AttnShape {
  int n_heads, n_kv_heads, head_dim, block_size;
};

template <typename T>
T store(float x) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else if constexpr (std::is_same_v<T, hllm::f16>) {
    return hllm::f32_to_f16(x);
  } else {
    return hllm::f32_to_bf16(x);
  }
}

float load(float x) { return x; }
float load(hllm::bf16 x) { return hllm::bf16_to_f32(x); }
float load(hllm::f16 x) { return hllm::f16_to_f32(x); }

// Checks attention_paged (every split length) for `n` queries of sequences whose positions are
// cached in shuffled (or identity) blocks, against attention_causal on each sequence's contiguous
// copy: query t of sequence s sees start[s] + t + 1 positions. Queries and outputs are T, the
// pools KV (the reference reads the values KV holds).
template <typename T, typename KV = T>
void check_against_contiguous(const AttnShape& c, const std::vector<int>& seq_start, int n_new,
                              bool shuffled, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const int n_seqs = static_cast<int>(seq_start.size());
  const int row_elems = c.n_kv_heads * c.head_dim;
  int max_len = 0;
  for (int s : seq_start) max_len = std::max(max_len, s + n_new);
  const int max_blocks = (max_len + c.block_size - 1) / c.block_size;
  const int n_blocks = n_seqs * max_blocks + 2;  // two spare blocks no table names
  std::vector<int32_t> ids(n_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  if (shuffled) std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<int32_t> tables(ids.begin(), ids.begin() + n_seqs * max_blocks);

  // Contiguous per-sequence caches (values as T represents them) and the pools.
  std::vector<std::vector<float>> k_seq(n_seqs), v_seq(n_seqs);
  std::vector<KV> k_pool(size_t(n_blocks) * c.block_size * row_elems, store<KV>(NAN));
  std::vector<KV> v_pool(k_pool.size(), store<KV>(NAN));  // unused rows NaN: reading one shows
  PagedKvView kv;
  kv.k = k_pool.data();
  kv.v = v_pool.data();
  kv.block_tables = tables.data();
  kv.max_blocks_per_seq = max_blocks;
  kv.block_size = c.block_size;
  kv.n_kv_heads = c.n_kv_heads;
  kv.head_dim = c.head_dim;
  for (int s = 0; s < n_seqs; ++s) {
    const int len = seq_start[s] + n_new;
    k_seq[s].resize(size_t(len) * row_elems);
    v_seq[s].resize(size_t(len) * row_elems);
    for (int pos = 0; pos < len; ++pos) {
      const int64_t row = hllm::paged_kv_row(kv, s, pos);
      for (int e = 0; e < row_elems; ++e) {
        const KV kx = store<KV>(dist(rng)), vx = store<KV>(dist(rng));
        k_pool[row * row_elems + e] = kx;
        v_pool[row * row_elems + e] = vx;
        k_seq[s][size_t(pos) * row_elems + e] = load(kx);
        v_seq[s][size_t(pos) * row_elems + e] = load(vx);
      }
    }
  }
  // Queries: n_new per sequence, sequence-major.
  const int n_queries = n_seqs * n_new;
  const size_t q_elems = size_t(n_queries) * c.n_heads * c.head_dim;
  std::vector<T> q(q_elems);
  std::vector<float> q_f(q_elems);
  for (size_t i = 0; i < q_elems; ++i) q_f[i] = load(q[i] = store<T>(3.0f * dist(rng)));
  std::vector<int32_t> query_seq(n_queries), query_kv_len(n_queries);
  for (int s = 0; s < n_seqs; ++s) {
    for (int t = 0; t < n_new; ++t) {
      query_seq[s * n_new + t] = s;
      query_kv_len[s * n_new + t] = seq_start[s] + t + 1;
    }
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  hllm::ThreadPool pool(3);

  // Reference: attention_causal per sequence on its contiguous float cache.
  std::vector<float> ref(q_elems);
  for (int s = 0; s < n_seqs; ++s) {
    const int len = seq_start[s] + n_new;
    const size_t q_off = size_t(s) * n_new * c.n_heads * c.head_dim;
    hllm::cpu::attention_causal(
        Tensor(q_f.data() + q_off, DType::f32, {n_new, c.n_heads, c.head_dim}),
        Tensor(k_seq[s].data(), DType::f32, {len, c.n_kv_heads, c.head_dim}),
        Tensor(v_seq[s].data(), DType::f32, {len, c.n_kv_heads, c.head_dim}), seq_start[s], scale,
        Tensor(ref.data() + q_off, DType::f32, {n_new, c.n_heads, c.head_dim}), pool);
  }
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-2;  // bf16 output: 2^-8 relative
  for (const int32_t split_len : {1, 7, 16, 128, 1 << 30}) {
    std::vector<T> out(q_elems, store<T>(NAN));
    if (split_len == 1 << 30) {
      hllm::cpu::attention_paged<T, KV>(q.data(), kv, query_seq, query_kv_len, c.n_heads, scale,
                                        out.data(), pool);
    } else {
      hllm::cpu::attention_paged_split<T, KV>(q.data(), kv, query_seq, query_kv_len, c.n_heads,
                                              scale, split_len, out.data(), pool);
    }
    for (size_t i = 0; i < q_elems; ++i) {
      const double got = load(out[i]);
      ASSERT_LE(std::fabs(got - ref[i]), tol * (1.0 + std::fabs(ref[i])))
          << "element " << i << " split_len " << split_len << " got " << got << " ref " << ref[i];
    }
  }
}

TEST(AttentionPaged, IdentityTableMatchesContiguousFloat) {
  // The fixture shape (4 heads over 1 KV head), 8B's grouping and plain multi-head attention.
  check_against_contiguous<float>({4, 1, 128, 16}, {0}, 37, false, 1);
  check_against_contiguous<float>({4, 1, 128, 16}, {100}, 5, false, 2);
  check_against_contiguous<float>({32, 8, 128, 16}, {13}, 3, false, 3);
  check_against_contiguous<float>({8, 8, 64, 32}, {40}, 4, false, 4);
}

TEST(AttentionPaged, ShuffledTablesMatchContiguousFloat) {
  check_against_contiguous<float>({4, 1, 128, 16}, {0, 15, 16, 17, 300}, 1, true, 5);
  check_against_contiguous<float>({8, 2, 64, 32}, {31, 1, 200}, 3, true, 6);
  check_against_contiguous<float>({16, 2, 64, 3}, {10, 50}, 2, true, 7);  // GQA group 8
  // head_dim not a multiple of 64: the AVX2 V sums' 8-wide remainder loop (96 = 64 + 32, 32 alone)
  check_against_contiguous<float>({4, 2, 96, 16}, {70}, 3, true, 10);
  check_against_contiguous<float>({4, 1, 32, 16}, {0}, 20, true, 11);
}

// The CPU's fp16 cache (CpuKvCache::f16): fp32 queries over fp16 pools, the AVX2 loops and the
// portable ones (head_dim 36: not a multiple of 8).
TEST(AttentionPaged, ShuffledTablesMatchContiguousF16Pools) {
  check_against_contiguous<float, hllm::f16>({4, 1, 128, 16}, {0, 15, 16, 17, 300}, 1, true, 12);
  check_against_contiguous<float, hllm::f16>({32, 8, 64, 16}, {13}, 3, true, 13);
  check_against_contiguous<float, hllm::f16>({4, 2, 96, 16}, {70}, 3, true, 14);
  check_against_contiguous<float, hllm::f16>({4, 2, 36, 16}, {20}, 2, true, 15);
  // Groups of 3 (Llama-3.2-3B) and 6 (a chunk of 4 heads and one of 2 on AVX-512), odd lengths.
  check_against_contiguous<float, hllm::f16>({24, 8, 128, 16}, {41}, 2, true, 16);
  check_against_contiguous<float, hllm::f16>({12, 2, 64, 16}, {6}, 3, true, 17);
}

TEST(AttentionPaged, ShuffledTablesMatchContiguousBf16) {
  check_against_contiguous<hllm::bf16>({4, 1, 128, 16}, {0, 16, 250}, 2, true, 8);
  check_against_contiguous<hllm::bf16>({32, 8, 128, 32}, {64}, 3, true, 9);
}

TEST(AttentionPaged, RejectsBadArguments) {
  std::vector<float> q(4 * 128), out(4 * 128), k(16 * 128), v(16 * 128);
  std::vector<int32_t> table = {0};
  PagedKvView kv;
  kv.k = k.data();
  kv.v = v.data();
  kv.block_tables = table.data();
  kv.max_blocks_per_seq = 1;
  kv.block_size = 16;
  kv.n_kv_heads = 1;
  kv.head_dim = 128;
  hllm::ThreadPool pool(1);
  const std::vector<int32_t> seq = {0}, len = {5}, too_long = {17}, zero = {0}, two = {1, 2};
  auto run = [&](std::span<const int32_t> s, std::span<const int32_t> l, int n_heads,
                 const PagedKvView& view) {
    hllm::cpu::attention_paged<float>(q.data(), view, s, l, n_heads, 0.1f, out.data(), pool);
  };
  EXPECT_NO_THROW(run(seq, len, 4, kv));
  EXPECT_THROW(run(seq, too_long, 4, kv), hllm::Error);  // past block_size · max_blocks
  EXPECT_THROW(run(seq, zero, 4, kv), hllm::Error);      // nothing visible
  EXPECT_THROW(run(seq, two, 4, kv), hllm::Error);       // lengths do not match queries
  PagedKvView two_kv_heads = kv;
  two_kv_heads.n_kv_heads = 2;
  EXPECT_THROW(run(seq, len, 3, two_kv_heads), hllm::Error);  // 3 heads over 2 KV heads
  PagedKvView no_table = kv;
  no_table.block_tables = nullptr;
  EXPECT_THROW(run(seq, len, 4, no_table), hllm::Error);
}

}  // namespace
