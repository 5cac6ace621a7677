// CPU ops against straightforward double-precision references, on shapes the fixture model does not
// reach: vector tails (in % 8 != 0), row and token remainders of the 4×2 micro-kernel, every weight
// dtype, 1 to 3 threads, GQA groups 1/2/4 and cached prefixes in attention.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <random>
#include <vector>

#include "hllm/cpu/activation.hpp"
#include "hllm/cpu/attention.hpp"
#include "hllm/cpu/matmul.hpp"
#include "hllm/cpu/matmul_panels.hpp"
#include "hllm/cpu/norm.hpp"
#include "hllm/cpu/simd.hpp"
#include "hllm/layout/dense_panels.hpp"

namespace {

using hllm::DType;
using hllm::Tensor;

std::vector<float> random_floats(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Stores `values` in dtype `t` (rounding as the checkpoint would) and returns the raw storage plus
// the values actually represented, for the reference.
struct StoredWeights {
  std::vector<uint16_t> half;
  std::vector<float> full;
  std::vector<float> represented;
  Tensor view(DType t, int64_t rows, int64_t cols) {
    return Tensor(t == DType::f32 ? static_cast<void*>(full.data()) : half.data(), t, {rows, cols});
  }
};

StoredWeights store(const std::vector<float>& values, DType t) {
  StoredWeights w;
  w.full = values;
  for (float v : values) {
    if (t == DType::bf16) {
      const hllm::bf16 b = hllm::f32_to_bf16(v);
      w.half.push_back(b.bits);
      w.represented.push_back(hllm::bf16_to_f32(b));
    } else if (t == DType::f16) {
      const hllm::f16 h = hllm::f32_to_f16(v);
      w.half.push_back(h.bits);
      w.represented.push_back(hllm::f16_to_f32(h));
    } else {
      w.represented.push_back(v);
    }
  }
  return w;
}

struct MatmulCase {
  int64_t n, in, out;
  DType dtype;
  int threads;
};

class MatmulTest : public testing::TestWithParam<MatmulCase> {};

TEST_P(MatmulTest, MatchesDoubleReference) {
  const MatmulCase c = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(c.n * 7919 + c.in * 31 + c.out));
  const std::vector<float> x = random_floats(c.n * c.in, rng);
  StoredWeights w = store(random_floats(c.out * c.in, rng, 0.05f), c.dtype);
  std::vector<float> y(c.n * c.out, std::nanf(""));  // poisoned: every element must be written
  hllm::ThreadPool pool(c.threads);
  hllm::cpu::matmul(Tensor(const_cast<float*>(x.data()), DType::f32, {c.n, c.in}),
                    w.view(c.dtype, c.out, c.in), Tensor(y.data(), DType::f32, {c.n, c.out}), pool);
  for (int64_t t = 0; t < c.n; ++t) {
    for (int64_t r = 0; r < c.out; ++r) {
      double ref = 0.0, magnitude = 0.0;
      for (int64_t k = 0; k < c.in; ++k) {
        ref += static_cast<double>(x[t * c.in + k]) * w.represented[r * c.in + k];
        magnitude += std::fabs(static_cast<double>(x[t * c.in + k]) * w.represented[r * c.in + k]);
      }
      ASSERT_NEAR(y[t * c.out + r], ref, 1e-6 + 1e-5 * magnitude) << "token " << t << " row " << r;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, MatmulTest,
    testing::Values(MatmulCase{1, 512, 384, DType::bf16, 2}, MatmulCase{1, 37, 5, DType::bf16, 1},
                    MatmulCase{3, 17, 9, DType::f16, 3}, MatmulCase{2, 8, 4, DType::f32, 2},
                    MatmulCase{5, 131, 33, DType::bf16, 2}, MatmulCase{67, 96, 70, DType::f16, 3},
                    MatmulCase{130, 64, 17, DType::f32, 2}, MatmulCase{7, 1, 3, DType::bf16, 1},
                    // Long inputs with a tail of 7, rows past the last 4-row and 16-row blocks,
                    // odd and even token counts, many token tiles, and no inputs at all.
                    MatmulCase{29, 2055, 35, DType::bf16, 2}, MatmulCase{24, 3, 16, DType::f16, 1},
                    MatmulCase{26, 1024, 48, DType::bf16, 3}, MatmulCase{27, 9, 17, DType::f32, 1},
                    MatmulCase{28, 16, 40, DType::bf16, 1}, MatmulCase{25, 8, 16, DType::bf16, 1},
                    MatmulCase{1037, 40, 20, DType::bf16, 2}, MatmulCase{30, 0, 5, DType::f16, 2},
                    // Either side of the panel kernels' switch from decode to prompt, inputs over
                    // two PANEL_K blocks.
                    MatmulCase{15, 1030, 33, DType::bf16, 2},
                    MatmulCase{16, 1030, 33, DType::f16, 2},
                    MatmulCase{20, 8, 0, DType::bf16, 2}));  // no outputs

// The weights of StoredWeights in row panels (layout/dense_panels.hpp), the CPU backend's copy.
Tensor pack_panels(StoredWeights& w, DType t, int64_t out, int64_t in, std::vector<uint16_t>& half,
                   std::vector<float>& full) {
  const int64_t elements = hllm::dense_panels_elements(out, in);
  half.assign(static_cast<size_t>(elements), 0xFFFF);  // poisoned: the packer writes every element
  full.assign(static_cast<size_t>(elements), std::nanf(""));
  for (int64_t p = 0; p < hllm::dense_panel_count(out); p += 2) {  // two calls: ranges compose
    const int64_t end = std::min(p + 2, hllm::dense_panel_count(out));
    if (t == DType::f32)
      hllm::pack_dense_panels(w.full.data(), out, in, p, end, full.data());
    else
      hllm::pack_dense_panels(w.half.data(), out, in, p, end, half.data());
  }
  return Tensor(t == DType::f32 ? static_cast<void*>(full.data()) : half.data(), t, {elements});
}

// The panel kernels promise one fused multiply-add chain per output over k = 0 .. in-1 from +0,
// whatever the token count, kernel or ISA: each output must equal that chain bit for bit (and so
// the prompt's rows equal the same rows computed alone), and the double reference within rounding.
TEST_P(MatmulTest, PanelsEqualOneFmaChainPerOutput) {
  const MatmulCase c = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(c.n * 7919 + c.in * 31 + c.out));
  const std::vector<float> x = random_floats(c.n * c.in, rng);
  StoredWeights w = store(random_floats(c.out * c.in, rng, 0.05f), c.dtype);
  std::vector<uint16_t> half;
  std::vector<float> full;
  const Tensor panels = pack_panels(w, c.dtype, c.out, c.in, half, full);
  std::vector<float> y(c.n * c.out, std::nanf(""));
  hllm::ThreadPool pool(c.threads);
  std::vector<float> scratch;
  hllm::cpu::matmul_panels(Tensor(const_cast<float*>(x.data()), DType::f32, {c.n, c.in}), panels,
                           c.out, Tensor(y.data(), DType::f32, {c.n, c.out}), pool, scratch);
  for (int64_t t = 0; t < c.n; ++t) {
    for (int64_t r = 0; r < c.out; ++r) {
      float chain = 0.0f;
      double ref = 0.0, magnitude = 0.0;
      for (int64_t k = 0; k < c.in; ++k) {
        const float wk = w.represented[r * c.in + k], xk = x[t * c.in + k];
        chain = std::fma(wk, xk, chain);
        ref += static_cast<double>(xk) * wk;
        magnitude += std::fabs(static_cast<double>(xk) * wk);
      }
      ASSERT_EQ(std::bit_cast<uint32_t>(y[t * c.out + r]), std::bit_cast<uint32_t>(chain))
          << "token " << t << " row " << r << ": " << y[t * c.out + r] << " vs " << chain;
      ASSERT_NEAR(y[t * c.out + r], ref, 1e-6 + 1e-5 * magnitude) << "token " << t << " row " << r;
    }
  }
}

// Prompt-length inputs over several PANEL_K blocks and token tiles: the prompt kernel's rows equal
// the decode kernel's, computed one token at a time.
TEST(MatmulPanels, PromptRowsEqualTheTokensRunAlone) {
  const int64_t n = 600, in = 2055, out = 35;
  std::mt19937 rng(11);
  const std::vector<float> x = random_floats(n * in, rng);
  StoredWeights w = store(random_floats(out * in, rng, 0.05f), DType::bf16);
  std::vector<uint16_t> half;
  std::vector<float> full;
  const Tensor panels = pack_panels(w, DType::bf16, out, in, half, full);
  hllm::ThreadPool pool(2);
  std::vector<float> whole(n * out), alone(out), scratch;
  hllm::cpu::matmul_panels(Tensor(const_cast<float*>(x.data()), DType::f32, {n, in}), panels, out,
                           Tensor(whole.data(), DType::f32, {n, out}), pool, scratch);
  for (int64_t t = 0; t < n; t += 37) {
    hllm::cpu::matmul_panels(Tensor(const_cast<float*>(x.data()) + t * in, DType::f32, {1, in}),
                             panels, out, Tensor(alone.data(), DType::f32, {1, out}), pool,
                             scratch);
    for (int64_t r = 0; r < out; ++r)
      ASSERT_EQ(std::bit_cast<uint32_t>(whole[t * out + r]), std::bit_cast<uint32_t>(alone[r]))
          << "token " << t << " row " << r;
  }
}

#if defined(__x86_64__)
// The prompt kernels' token tiles: whole micro-kernel groups (12 tokens on AVX-512, 6 on AVX2), no
// more tiles than needed to keep every thread busy, and on AVX-512 a tile's x within the cache cap
// (PROMPT_TILE_X_BYTES) unless the tile is already at its floor.
TEST(MatmulPanels, PromptTokenTilesAreWholeGroupsWithinTheCacheCap) {
  using namespace hllm::cpu::detail;
  for (const bool avx512 : {false, true})
    for (const int64_t n : {16, 17, 100, 128, 600, 2048})
      for (const int64_t in : {64, 2048, 8192, 14336})
        for (const int64_t panels : {1, 4, 128, 1024}) {
          const int64_t tile = prompt_token_tile(n, in, panels, 2, avx512);
          const int64_t group = avx512 ? PROMPT_GROUP_TOKENS : PROMPT_AVX2_GROUP_TOKENS;
          SCOPED_TRACE(testing::Message() << "avx512 " << avx512 << " n " << n << " in " << in
                                          << " panels " << panels << " tile " << tile);
          EXPECT_EQ(tile % group, 0);
          EXPECT_GT(tile, 0);
          EXPECT_LT(tile, n + group);  // never a whole group past the prompt
          const int64_t cap = avx512 ? prompt_token_tile_avx512(in) : PROMPT_TOKEN_TILE;
          EXPECT_LT(tile, cap + group);  // the cap, rounded up to whole groups
          if (avx512 && tile > 4 * PROMPT_GROUP_TOKENS) {
            EXPECT_LE((tile - group) * in * 4, PROMPT_TILE_X_BYTES);
          }
        }
}
#endif

TEST(DensePanels, PackedWeightsSitWhereTheIndexSaysAndUnpackToTheRows) {
  const int64_t out = 37, in = 11;  // a last panel of 5 rows and 11 of padding
  std::vector<float> rows(out * in);
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<float>(i + 1);
  std::vector<float> panels(hllm::dense_panels_elements(out, in), std::nanf(""));
  ASSERT_EQ(panels.size(), 3u * 16u * 11u);
  hllm::pack_dense_panels(rows.data(), out, in, 0, hllm::dense_panel_count(out), panels.data());
  for (int64_t r = 0; r < out; ++r)
    for (int64_t k = 0; k < in; ++k)
      ASSERT_EQ(panels[hllm::dense_panel_index(r, k, in)], rows[r * in + k]) << r << ", " << k;
  for (int64_t r = out; r < 48; ++r)
    for (int64_t k = 0; k < in; ++k) ASSERT_EQ(panels[hllm::dense_panel_index(r, k, in)], 0.0f);
  // Input k of 16 consecutive rows is one contiguous run.
  EXPECT_EQ(hllm::dense_panel_index(17, 3, in), hllm::dense_panel_index(16, 3, in) + 1);
  EXPECT_EQ(hllm::dense_panel_index(16, 4, in), hllm::dense_panel_index(16, 3, in) + 16);
  std::vector<double> row(in);
  hllm::unpack_dense_panel_row(panels.data(), in, 33, row.data(),
                               [](float v) { return static_cast<double>(v); });
  for (int64_t k = 0; k < in; ++k) EXPECT_EQ(row[k], rows[33 * in + k]);
}

TEST(MatmulErrors, PanelsTooShortForTheShapeIsAnError) {
  std::vector<float> x(6), w(16 * 3 - 1), y(2);
  hllm::ThreadPool pool(1);
  std::vector<float> scratch;
  EXPECT_THROW(hllm::cpu::matmul_panels(Tensor(x.data(), DType::f32, {2, 3}),
                                        Tensor(w.data(), DType::f32, {16 * 3 - 1}), 1,
                                        Tensor(y.data(), DType::f32, {2, 1}), pool, scratch),
               hllm::Error);
}

TEST(MatmulErrors, ShapeMismatchIsAnError) {
  std::vector<float> x(6), w(6), y(4);
  hllm::ThreadPool pool(1);
  EXPECT_THROW(
      hllm::cpu::matmul(Tensor(x.data(), DType::f32, {2, 3}), Tensor(w.data(), DType::f32, {3, 2}),
                        Tensor(y.data(), DType::f32, {2, 2}), pool),
      hllm::Error);
}

TEST(RmsNorm, MatchesDoubleReference) {
  std::mt19937 rng(3);
  const int64_t n = 5, dim = 77;
  const std::vector<float> x = random_floats(n * dim, rng, 3.0f);
  StoredWeights w = store(random_floats(dim, rng), DType::bf16);
  std::vector<float> out(n * dim, std::nanf(""));
  hllm::ThreadPool pool(2);
  hllm::cpu::rmsnorm(Tensor(const_cast<float*>(x.data()), DType::f32, {n, dim}),
                     w.view(DType::bf16, 1, dim).reshape({dim}), 1e-5f,
                     Tensor(out.data(), DType::f32, {n, dim}), pool);
  for (int64_t t = 0; t < n; ++t) {
    double mean_square = 0.0;
    for (int64_t i = 0; i < dim; ++i)
      mean_square += static_cast<double>(x[t * dim + i]) * x[t * dim + i];
    const double inv_rms = 1.0 / std::sqrt(mean_square / dim + 1e-5);
    for (int64_t i = 0; i < dim; ++i)
      ASSERT_NEAR(out[t * dim + i], w.represented[i] * x[t * dim + i] * inv_rms, 1e-5);
  }
}

TEST(SwiGlu, MatchesDefinition) {
  std::mt19937 rng(4);
  const std::vector<float> gate = random_floats(3 * 11, rng, 4.0f), up = random_floats(3 * 11, rng);
  std::vector<float> out(33, std::nanf(""));
  hllm::ThreadPool pool(2);
  hllm::cpu::swiglu(Tensor(const_cast<float*>(gate.data()), DType::f32, {3, 11}),
                    Tensor(const_cast<float*>(up.data()), DType::f32, {3, 11}),
                    Tensor(out.data(), DType::f32, {3, 11}), pool);
  for (size_t i = 0; i < out.size(); ++i) {
    const double g = gate[i];
    ASSERT_NEAR(out[i], g / (1.0 + std::exp(-g)) * up[i], 1e-5 * (1.0 + std::fabs(g * up[i])));
  }
}

struct AttentionCase {
  int64_t n, start, n_heads, n_kv_heads, head_dim;
};

class AttentionTest : public testing::TestWithParam<AttentionCase> {};

TEST_P(AttentionTest, MatchesNaiveSoftmaxAttention) {
  const AttentionCase c = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(c.n * 13 + c.start));
  const int64_t kv_len = c.start + c.n, capacity = kv_len + 3;
  const std::vector<float> q = random_floats(c.n * c.n_heads * c.head_dim, rng);
  const std::vector<float> k = random_floats(capacity * c.n_kv_heads * c.head_dim, rng);
  const std::vector<float> v = random_floats(capacity * c.n_kv_heads * c.head_dim, rng);
  std::vector<float> out(q.size(), std::nanf(""));
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  hllm::ThreadPool pool(2);
  hllm::cpu::attention_causal(
      Tensor(const_cast<float*>(q.data()), DType::f32, {c.n, c.n_heads, c.head_dim}),
      Tensor(const_cast<float*>(k.data()), DType::f32, {capacity, c.n_kv_heads, c.head_dim}),
      Tensor(const_cast<float*>(v.data()), DType::f32, {capacity, c.n_kv_heads, c.head_dim}),
      c.start, scale, Tensor(out.data(), DType::f32, {c.n, c.n_heads, c.head_dim}), pool);
  const int64_t group = c.n_heads / c.n_kv_heads;
  for (int64_t t = 0; t < c.n; ++t) {
    for (int64_t h = 0; h < c.n_heads; ++h) {
      const int64_t kvh = h / group, visible = c.start + t + 1;
      std::vector<double> p(visible);
      double max_score = -1e300, sum = 0.0;
      for (int64_t j = 0; j < visible; ++j) {
        double s = 0.0;
        for (int64_t d = 0; d < c.head_dim; ++d)
          s += static_cast<double>(q[(t * c.n_heads + h) * c.head_dim + d]) *
               k[(j * c.n_kv_heads + kvh) * c.head_dim + d];
        p[j] = s * scale;
        max_score = std::max(max_score, p[j]);
      }
      for (double& x : p) sum += (x = std::exp(x - max_score));
      for (int64_t d = 0; d < c.head_dim; ++d) {
        double ref = 0.0;
        for (int64_t j = 0; j < visible; ++j)
          ref += p[j] / sum * v[(j * c.n_kv_heads + kvh) * c.head_dim + d];
        ASSERT_NEAR(out[(t * c.n_heads + h) * c.head_dim + d], ref, 2e-5)
            << "t " << t << " h " << h << " d " << d;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionTest,
                         testing::Values(AttentionCase{1, 0, 4, 1, 128},
                                         AttentionCase{17, 0, 4, 2, 64},
                                         AttentionCase{3, 29, 2, 2, 12},
                                         AttentionCase{1, 100, 8, 2, 128},
                                         AttentionCase{9, 5, 4, 4, 7}));

}  // namespace

// The softmax weights 2^(s − max): against std::exp2 in double, relative error < 3e-7 over the
// whole range a softmax meets (exponents 0 .. −126, then 0), sums included; on every path
// (HLLM_CPU_ISA picks the path: ctest runs this file again with =scalar and =avx2).
TEST(SoftmaxExp2, MatchesExp2AndSums) {
  std::vector<float> scores;
  for (float x = 0.0f; x >= -140.0f; x -= 0.0137f) scores.push_back(x + 3.5f);  // max 3.5
  std::vector<float> weights = scores;
  float max = 0.0f;
  const float sum =
      hllm::cpu::softmax_exp2(weights.data(), static_cast<int64_t>(weights.size()), &max);
  EXPECT_EQ(max, 3.5f);
  double expected_sum = 0.0;
  for (size_t j = 0; j < scores.size(); ++j) {
    const double exact = std::exp2(double{scores[j]} - 3.5);
    expected_sum += exact;
    if (scores[j] - 3.5f < -126.0f) {
      ASSERT_LE(weights[j], 1.2e-38f) << "x " << scores[j] - 3.5f;  // flushed (or tiny)
      continue;
    }
    ASSERT_NEAR(weights[j], exact, 3e-7 * exact) << "x " << scores[j] - 3.5f;
  }
  EXPECT_NEAR(sum, expected_sum, 1e-5 * expected_sum);
}

// store_f16 (the CPU's fp16 KV cache) gives f32_to_f16's bits on every path: ties to even at
// every exponent, subnormals, the overflow threshold (65520: inf), signs and odd lengths (the
// vector loop's scalar tail).
TEST(StoreF16, EqualsTheScalarConversionBitForBit) {
  std::vector<float> x;
  for (int e = -26; e <= 16; ++e)
    for (const float m :
         {1.0f, 1.00048828125f, 1.0009765625f, 1.00146484375f, 1.5f, 1.99951171875f})
      for (const float sign : {1.0f, -1.0f}) x.push_back(sign * std::ldexp(m, e));
  for (const float v : {0.0f, -0.0f, 65504.0f, 65519.99f, 65520.0f, 1e30f, -1e30f, 5.96e-8f,
                        2.98e-8f, 2.99e-8f, INFINITY, -INFINITY})
    x.push_back(v);
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.0f, 4.0f);
  for (int i = 0; i < 1001; ++i) x.push_back(dist(rng));
  std::vector<hllm::f16> got(x.size());
  hllm::cpu::store_f16(x.data(), got.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i)
    ASSERT_EQ(got[i].bits, hllm::f32_to_f16(x[i]).bits) << "x " << x[i] << " at " << i;
}

#if defined(__x86_64__)
// avx512::hsum16 puts Σ v[i] in lane i (the attention scores' order depends on it), and
// load16_f32 widens every storage dtype as the scalar conversions do. Integer values: exact sums.
TEST(Avx512Simd, Hsum16LaneIIsTheSumOfVectorIAndLoadsWiden) {
  if (hllm::cpu::cpu_isa() < hllm::cpu::CpuIsa::avx512) GTEST_SKIP() << "no AVX-512 here";
  [&]() __attribute__((target("avx512f,avx2,fma,f16c"))) {
    alignas(64) float lanes[16][16], sums[16];
    __m512 v[16];
    for (int i = 0; i < 16; ++i) {
      for (int l = 0; l < 16; ++l) lanes[i][l] = static_cast<float>(100 * i + l * (i + 1));
      v[i] = _mm512_load_ps(lanes[i]);
    }
    _mm512_store_ps(sums, hllm::cpu::avx512::hsum16(v));
    for (int i = 0; i < 16; ++i) EXPECT_EQ(sums[i], 1600.0f * i + 120.0f * (i + 1)) << "lane " << i;

    std::vector<hllm::bf16> b(16);
    std::vector<hllm::f16> h(16);
    for (int l = 0; l < 16; ++l) {
      b[l] = hllm::f32_to_bf16(0.3f * l - 2.0f);
      h[l] = hllm::f32_to_f16(0.3f * l - 2.0f);
    }
    alignas(64) float wide_b[16], wide_h[16];
    _mm512_store_ps(wide_b, hllm::cpu::avx512::load16_f32(b.data()));
    _mm512_store_ps(wide_h, hllm::cpu::avx512::load16_f32(h.data()));
    for (int l = 0; l < 16; ++l) {
      EXPECT_EQ(wide_b[l], hllm::bf16_to_f32(b[l])) << l;
      EXPECT_EQ(wide_h[l], hllm::f16_to_f32(h[l])) << l;
    }
  }
  ();
}
#endif
