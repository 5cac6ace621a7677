// The W4A8 INT4 matmul (cpu/int4_q8_matmul.hpp) and the ISA dispatch (cpu/isa.hpp):
//   - the int8 activation order is the nibble order of a 64-byte tile row;
//   - the activation rounding per 32-input chunk: |x − d·a| <= d/2, a in [−127, 127], Σ d·Σa;
//   - every vector path this CPU runs equals the portable path (same integer dots; fp32 sums
//     differ only in order), and the portable path is within the rounding bound of the exact fp32
//     product, Σ_k |w_k|·d_chunk/2, on odd shapes, act-order, padding rows, 1..33 tokens;
//   - weights sharing an input, run as one group, each get the bits of their own matmul.
#include "hllm/cpu/int4_q8_matmul.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <set>
#include <vector>

#include "hllm/core/threads.hpp"
#include "hllm/quant/int4.hpp"
#include "int4_random.hpp"

namespace {

using hllm::DType;
using hllm::Tensor;
using hllm::cpu::CpuIsa;

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const hllm::Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::vector<CpuIsa> runnable_isas() {
  std::vector<CpuIsa> isas;
  for (CpuIsa isa : {CpuIsa::scalar, CpuIsa::avx2, CpuIsa::avx512})
    if (isa <= hllm::cpu::cpu_isa_supported()) isas.push_back(isa);
  return isas;
}

TEST(Q8Activations, PositionsFollowTheNibblesOfA64ByteRow) {
  std::set<int> inputs;
  for (int p = 0; p < 128; ++p) {
    const int k = hllm::cpu::q8_position_input(p);
    inputs.insert(k);
    EXPECT_EQ(hllm::int4_code_byte(k), p % 64) << "position " << p;
    EXPECT_EQ(hllm::int4_code_shift(k), p < 64 ? 0 : 4) << "position " << p;
  }
  EXPECT_EQ(inputs.size(), 128u);  // a permutation
}

// Activations [3 tokens][4 tiles][128], normal, with an all-zero chunk (token 0, tile 1, chunk 2)
// and an outlier (token 0, tile 2, chunk 0).
constexpr int64_t Q8_TOKENS = 3, Q8_K_TILES = 4;
std::vector<float> q8_test_activations() {
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> x(static_cast<size_t>(Q8_TOKENS * Q8_K_TILES * 128));
  for (float& v : x) v = dist(rng);
  for (int k = 0; k < 32; ++k) x[128 + 64 + k] = 0.0f;
  x[256 + 5] = 1000.0f;  // coarsens its own chunk only
  return x;
}

TEST(Q8Activations, RoundingIsWithinHalfAStepOfEachChunk) {
  const int64_t n = Q8_TOKENS, k_tiles = Q8_K_TILES;
  const std::vector<float> x = q8_test_activations();
  hllm::ThreadPool pool(2);
  hllm::cpu::Q8Activations a;
  hllm::cpu::quantize_q8_activations(x.data(), n, k_tiles, a, pool);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t kt = 0; kt < k_tiles; ++kt) {
      const float* xt = x.data() + (t * k_tiles + kt) * 128;
      const int8_t* q = a.tile(t, kt);
      int sums[4] = {}, extreme[4] = {};
      for (int p = 0; p < 128; ++p) {
        const int k = hllm::cpu::q8_position_input(p), c = k / 32;
        const float d = a.chunk_scale(t, kt, c);
        ASSERT_GE(q[p], -127);
        ASSERT_LE(std::fabs(xt[k] - d * q[p]), d * 0.5f * (1 + 1e-6f)) << "t " << t << " p " << p;
        sums[c] += q[p];
        extreme[c] = std::max(extreme[c], std::abs(int{q[p]}));
      }
      float scaled_sum = 0.0f;
      for (int c = 0; c < 4; ++c) {
        for (int lane = 0; lane < 4; ++lane)
          EXPECT_EQ(a.lane_scales(t, kt)[4 * c + lane], a.chunk_scale(t, kt, c));
        scaled_sum += a.chunk_scale(t, kt, c) * static_cast<float>(sums[c]);
        const bool zero_chunk = t == 0 && kt == 1 && c == 2;
        EXPECT_EQ(extreme[c], zero_chunk ? 0 : 127) << "t " << t << " kt " << kt << " c " << c;
      }
      EXPECT_FLOAT_EQ(a.scaled_sum[t * k_tiles + kt], scaled_sum);
    }
  EXPECT_EQ(a.chunk_scale(0, 2, 0), 1000.0f / 127.0f);
  EXPECT_LT(a.chunk_scale(0, 2, 1), 20.0f / 127.0f);
}

TEST(Q8Activations, EveryIsaRoundsToTheSameBits) {
  const int64_t n = Q8_TOKENS, k_tiles = Q8_K_TILES;
  const std::vector<float> x = q8_test_activations();
  hllm::ThreadPool pool(2);
  hllm::cpu::Q8Activations portable;
  hllm::cpu::quantize_q8_activations(x.data(), n, k_tiles, portable, pool, CpuIsa::scalar);
  for (CpuIsa isa : runnable_isas()) {
    hllm::cpu::Q8Activations a;
    hllm::cpu::quantize_q8_activations(x.data(), n, k_tiles, a, pool, isa);
    SCOPED_TRACE(hllm::cpu::isa_name(isa));
    EXPECT_EQ(a.q, portable.q);
    EXPECT_EQ(0, std::memcmp(a.lane_scale.data(), portable.lane_scale.data(),
                             portable.lane_scale.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(a.scaled_sum.data(), portable.scaled_sum.data(),
                             portable.scaled_sum.size() * sizeof(float)));
  }
}

struct Shape {
  int64_t out, in, n_groups;
  bool shuffle;
};

class Int4Q8Matmul : public testing::TestWithParam<Shape> {};

TEST_P(Int4Q8Matmul, VectorPathsEqualThePortableOneWithinTheRoundingBound) {
  const Shape s = GetParam();
  const hllm::Int4Matrix packed = random_matrix(s.out, s.in, s.n_groups, s.shuffle, 11).to_int4();
  const hllm::Int4View& w = packed.view();
  const std::vector<float> dense = hllm::dequantize_int4(w);  // [out, in]
  hllm::ThreadPool pool(2);
  std::vector<float> scratch;
  hllm::cpu::Q8Activations q8;
  std::mt19937 rng(9);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  // AVX-512 runs passes of 16 tokens over a task's 16 rows, the rest strip by strip: 16 alone,
  // 20 = 16 + 4, 23 = 16 + 4 + 2 + 1, 33 = 16 + 16 and 1 (token tiles of 32 and 1).
  for (const int64_t n : {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{4}, int64_t{6}, int64_t{7},
                          int64_t{16}, int64_t{20}, int64_t{23}, int64_t{33}}) {
    std::vector<float> x(static_cast<size_t>(n * s.in));
    for (float& v : x) v = dist(rng);
    const Tensor xt(x.data(), DType::f32, {n, s.in});
    std::vector<std::vector<float>> results;
    for (CpuIsa isa : runnable_isas()) {
      // 16 floats past the output: a 16-row store of the last rows must not reach them.
      constexpr float SENTINEL = -1234.5f;
      std::vector<float> y(static_cast<size_t>(n * s.out), NAN);
      y.resize(y.size() + 16, SENTINEL);
      hllm::cpu::matmul_int4_q8(xt, w, Tensor(y.data(), DType::f32, {n, s.out}), pool, scratch, q8,
                                isa);
      for (size_t i = static_cast<size_t>(n * s.out); i < y.size(); ++i)
        ASSERT_EQ(y[i], SENTINEL) << hllm::cpu::isa_name(isa) << " n " << n << " wrote past y";
      y.resize(static_cast<size_t>(n * s.out));
      results.push_back(std::move(y));
    }
    const hllm::cpu::Q8Activations rounded = q8;  // for the bound against the exact product
    for (int64_t t = 0; t < n; ++t)
      for (int64_t o = 0; o < s.out; ++o) {
        double exact = 0, magnitude = 0, bound = 0;
        for (int64_t p = 0; p < w.packed_in(); ++p) {
          const int64_t i = w.input_index ? w.input_index[p] : p;
          if (i < 0) continue;
          const double wi = dense[o * s.in + i], xi = x[t * s.in + i];
          exact += wi * xi;
          magnitude += std::fabs(wi * xi);
          bound += std::fabs(wi) * rounded.chunk_scale(t, p / 128, (p % 128) / 32) * 0.5;
        }
        const float portable = results[0][t * s.out + o];
        ASSERT_NEAR(portable, exact, bound * 1.001 + 1e-5 * magnitude)
            << "n " << n << " t " << t << " o " << o;
        for (size_t k = 1; k < results.size(); ++k)
          ASSERT_NEAR(results[k][t * s.out + o], portable, 1e-5 * magnitude + 1e-30)
              << hllm::cpu::isa_name(runnable_isas()[k]) << " n " << n << " t " << t << " o " << o;
      }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, Int4Q8Matmul,
                         testing::Values(Shape{13, 200, 1, false},  // odd everything, per channel
                                         Shape{13, 200, 4,
                                               true},  // random groups of 50 (padded tiles)
                                         Shape{40, 384, 3, false},  // identity packing, group 128
                                         Shape{40, 384, 3, true},   // act-order, group 128
                                         Shape{70, 1024, 8, false}));  // several strip tasks

TEST(Int4Q8Matmul, RefusesAnInstructionSetTheCpuLacksAndBadShapes) {
  const hllm::Int4Matrix packed = random_matrix(8, 128, 1, false, 1).to_int4();
  hllm::ThreadPool pool(1);
  std::vector<float> scratch, x(128), y(8);
  hllm::cpu::Q8Activations q8;
  const Tensor xt(x.data(), DType::f32, {1, 128}), yt(y.data(), DType::f32, {1, 8});
  if (hllm::cpu::cpu_isa_supported() < CpuIsa::avx512) {
    EXPECT_NE(error_of([&] {
                hllm::cpu::matmul_int4_q8(xt, packed.view(), yt, pool, scratch, q8, CpuIsa::avx512);
              }).find("not supported by this CPU"),
              std::string::npos);
  }
  EXPECT_NE(error_of([&] {
              hllm::cpu::matmul_int4_q8(Tensor(x.data(), DType::f32, {1, 64}), packed.view(), yt,
                                        pool, scratch, q8);
            }).find("matmul_int4_q8"),
            std::string::npos);
}

// Weights that read one input (a layer's q/k/v) run as one group: each output has exactly the bits
// of its own matmul_int4_q8, on every ISA, for 1, 4 and 33 tokens; the same act-order matrix twice
// shares its input order; different input orders are refused.
TEST(Int4Q8Matmul, SharedInputGroupGivesEachWeightItsOwnBits) {
  const int64_t in = 384;
  std::vector<hllm::Int4Matrix> matrices;
  for (const int64_t out : {40, 13, 70})
    matrices.push_back(random_matrix(out, in, 3, false, static_cast<uint32_t>(out)).to_int4());
  const hllm::Int4Matrix act_order = random_matrix(24, in, 3, true, 5).to_int4();
  const hllm::Int4Matrix other_order = random_matrix(24, in, 3, true, 6).to_int4();
  hllm::ThreadPool pool(2);
  std::vector<float> scratch;
  hllm::cpu::Q8Activations q8;
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (const std::vector<const hllm::Int4View*>& weights :
       {std::vector<const hllm::Int4View*>{&matrices[0].view(), &matrices[1].view(),
                                           &matrices[2].view()},
        std::vector<const hllm::Int4View*>{&act_order.view(), &act_order.view()}}) {
    ASSERT_TRUE(hllm::cpu::int4_q8_share_input(weights));
    for (const int64_t n : {int64_t{1}, int64_t{4}, int64_t{33}}) {
      std::vector<float> x(static_cast<size_t>(n * in));
      for (float& v : x) v = dist(rng);
      const Tensor xt(x.data(), DType::f32, {n, in});
      for (CpuIsa isa : runnable_isas()) {
        std::vector<std::vector<float>> grouped, alone;
        std::vector<Tensor> outs;
        for (const hllm::Int4View* w : weights) {
          grouped.emplace_back(static_cast<size_t>(n * w->out), NAN);
          alone.emplace_back(static_cast<size_t>(n * w->out), NAN);
          outs.emplace_back(grouped.back().data(), DType::f32, hllm::Shape{n, w->out});
        }
        hllm::cpu::matmul_int4_q8_group(xt, weights, outs, pool, scratch, q8, isa);
        for (size_t i = 0; i < weights.size(); ++i) {
          hllm::cpu::matmul_int4_q8(xt, *weights[i],
                                    Tensor(alone[i].data(), DType::f32, {n, weights[i]->out}), pool,
                                    scratch, q8, isa);
          ASSERT_EQ(
              0, std::memcmp(grouped[i].data(), alone[i].data(), grouped[i].size() * sizeof(float)))
              << hllm::cpu::isa_name(isa) << " n " << n << " weight " << i;
        }
      }
    }
  }
  const hllm::Int4View* mixed[] = {&act_order.view(), &other_order.view()};
  EXPECT_FALSE(hllm::cpu::int4_q8_share_input(mixed));
  std::vector<float> x(in), y0(24), y1(24);
  const Tensor outs[] = {Tensor(y0.data(), DType::f32, {1, 24}),
                         Tensor(y1.data(), DType::f32, {1, 24})};
  EXPECT_NE(error_of([&] {
              hllm::cpu::matmul_int4_q8_group(Tensor(x.data(), DType::f32, {1, in}), mixed, outs,
                                              pool, scratch, q8);
            }).find("different input widths or input orders"),
            std::string::npos);
}

TEST(CpuIsa, EnvironmentNamesAreCheckedAndCannotRaiseTheLevel) {
  EXPECT_EQ(hllm::cpu::parse_cpu_isa("scalar"), CpuIsa::scalar);
  EXPECT_EQ(hllm::cpu::parse_cpu_isa(""), hllm::cpu::cpu_isa_supported());
  EXPECT_NE(error_of([] { hllm::cpu::parse_cpu_isa("sse9"); }).find("expected scalar, avx2"),
            std::string::npos);
  if (hllm::cpu::cpu_isa_supported() < CpuIsa::avx512) {
    EXPECT_NE(error_of([] { hllm::cpu::parse_cpu_isa("avx512"); }).find("supports up to"),
              std::string::npos);
  }
}

}  // namespace
