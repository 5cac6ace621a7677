// CPU test of layout/int4_mma.hpp: the placement of hllm INT4 tiles into the fragments of
// mma.sync.m16n8k16 bf16 that the CUDA gemv_q4 kernel uses, emulated lane by lane on the host:
//   - every (row, input) of a 4-strip row group and every (input, column) of the activations lands
//     in exactly one (k-step, k slot) of A and B, and A and B agree on which physical input a slot
//     holds (the condition for the mma's k-sum to be the dot product);
//   - the LOP3 decode ((word >> shift) & 0x000F000F) | 0x43004300 and the bf16 subtraction of
//     (128 + zero) give exactly code − zero, for every code and zero;
//   - the byte_perm selectors pick the activations of the same inputs;
//   - a whole-matrix emulation of the kernel (per lane: loads, decode, per-k-step mma sum,
//     per-tile fp32 scaling) matches a double reference built from int4_weight and the CPU
//     matmul_int4, on random tiles, odd row counts and act-order packing.
// This is the kernel's correctness argument on a machine without a GPU.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "hllm/core/dtype.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/cpu/int4_matmul.hpp"
#include "hllm/layout/int4_mma.hpp"
#include "hllm/quant/int4.hpp"

namespace hllm {
namespace {

constexpr int LANES = 32;

// The lane's 4 code words of chunk t of one tile row (little-endian, as a 16-byte load gives).
std::array<uint32_t, 4> chunk_words(const int4_tile& tile, int row, int t) {
  std::array<uint32_t, 4> w{};
  std::memcpy(w.data(), tile.q[row] + 16 * t, 16);
  return w;
}

float bf16_lo(uint32_t pair) { return bf16_to_f32(bf16{static_cast<uint16_t>(pair & 0xFFFFu)}); }
float bf16_hi(uint32_t pair) { return bf16_to_f32(bf16{static_cast<uint16_t>(pair >> 16)}); }

// bf16x2 a − b as the hardware does it (round to nearest even per half).
uint32_t bf16x2_sub(uint32_t a, uint32_t b) {
  const uint16_t lo = f32_to_bf16(bf16_lo(a) - bf16_lo(b)).bits;
  const uint16_t hi = f32_to_bf16(bf16_hi(a) - bf16_hi(b)).bits;
  return uint32_t{lo} | (uint32_t{hi} << 16);
}

TEST(Int4MmaLayout, FragmentMapsCoverEveryElementOnce) {
  std::array<int, 16 * 16> a_seen{};
  std::array<int, 16 * 8> b_seen{}, c_seen{};
  for (int lane = 0; lane < LANES; ++lane) {
    for (int reg = 0; reg < 4; ++reg)
      for (int e = 0; e < 2; ++e)
        ++a_seen[int4_mma_a_row(lane, reg) * 16 + int4_mma_a_k(lane, reg, e)];
    for (int reg = 0; reg < 2; ++reg)
      for (int e = 0; e < 2; ++e) ++b_seen[int4_mma_b_k(lane, reg, e) * 8 + int4_mma_group(lane)];
    for (int i = 0; i < 4; ++i) ++c_seen[int4_mma_c_row(lane, i) * 8 + int4_mma_c_col(lane, i)];
  }
  for (int v : a_seen) EXPECT_EQ(v, 1);
  for (int v : b_seen) EXPECT_EQ(v, 1);
  for (int v : c_seen) EXPECT_EQ(v, 1);
  // A rows of a lane are g and g + 8, C rows too: the lane's scales serve its accumulators.
  for (int lane = 0; lane < LANES; ++lane) {
    EXPECT_EQ(int4_mma_a_row(lane, 0), int4_mma_c_row(lane, 0));
    EXPECT_EQ(int4_mma_a_row(lane, 1), int4_mma_c_row(lane, 2));
    EXPECT_EQ(int4_mma_a_row(lane, 2), int4_mma_c_row(lane, 1));
    EXPECT_EQ(int4_mma_a_row(lane, 3), int4_mma_c_row(lane, 3));
    // Rows g and g + 8: the same tile row, strips 2 apart.
    EXPECT_EQ(int4_mma_row_in_tile(lane / 4), int4_mma_row_in_tile(lane / 4 + 8));
    EXPECT_EQ(int4_mma_row_strip(lane / 4) + 2, int4_mma_row_strip(lane / 4 + 8));
  }
}

TEST(Int4MmaLayout, DecodedRegistersHoldTheirInputs) {
  // Register q of chunk-owner t: element e is the code of int4_mma_tile_input(t, q, e), checked
  // against int4_code_byte / int4_code_shift (the layout's own definition) on random codes.
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> byte(0, 255);
  for (int trial = 0; trial < 50; ++trial) {
    int4_tile tile{};
    for (auto& row : tile.q)
      for (auto& b : row) b = static_cast<uint8_t>(byte(rng));
    for (int row = 0; row < 4; ++row)
      for (int t = 0; t < 4; ++t) {
        const auto words = chunk_words(tile, row, t);
        for (int q = 0; q < INT4_MMA_REGS_PER_ROW; ++q) {
          const uint32_t pair = int4_mma_decode(words[int4_mma_word(q)], int4_mma_shift(q));
          for (int e = 0; e < 2; ++e) {
            const uint32_t half = e == 0 ? pair & 0xFFFFu : pair >> 16;
            const int k = int4_mma_tile_input(t, q, e);
            ASSERT_EQ(half, 0x4300u + int4_code(tile, row, k)) << "q " << q << " e " << e;
            ASSERT_EQ(e == 0 ? bf16_lo(pair) : bf16_hi(pair),
                      128.0f + static_cast<float>(int4_code(tile, row, k)));
          }
        }
      }
  }
  // Each lane's 16 registers hold its chunk's 32 inputs once; k-step and slot pair are a
  // bijection with q.
  std::array<int, 32> seen{};
  for (int q = 0; q < 16; ++q) {
    for (int e = 0; e < 2; ++e) ++seen[int4_mma_chunk_input(q, e)];
    EXPECT_EQ(int4_mma_reg_of(int4_mma_kstep(q), int4_mma_slot_pair(q)), q);
  }
  for (int v : seen) EXPECT_EQ(v, 1);
}

TEST(Int4MmaLayout, ZeroBiasSubtractionIsExact) {
  for (uint32_t z = 0; z <= 16; ++z) {
    const uint32_t bias = int4_mma_zero_bias(z);
    EXPECT_EQ(bias & 0xFFFFu, f32_to_bf16(128.0f + static_cast<float>(z)).bits);
    EXPECT_EQ(bias >> 16, f32_to_bf16(128.0f + static_cast<float>(z)).bits);
    for (uint32_t c_lo = 0; c_lo < 16; ++c_lo)
      for (uint32_t c_hi = 0; c_hi < 16; ++c_hi) {
        const uint32_t word = c_lo | (c_hi << 16);
        const uint32_t diff = bf16x2_sub(int4_mma_decode(word, 0), bias);
        ASSERT_EQ(bf16_lo(diff), static_cast<float>(c_lo) - static_cast<float>(z));
        ASSERT_EQ(bf16_hi(diff), static_cast<float>(c_hi) - static_cast<float>(z));
      }
  }
}

TEST(Int4MmaLayout, BytePermPicksTheSameInputsAsTheCodes) {
  EXPECT_EQ(int4_mma_byte_perm_host(0x33221100u, 0x77665544u, 0x5410u), 0x55441100u);
  EXPECT_EQ(int4_mma_byte_perm_host(0x33221100u, 0x77665544u, 0x7632u), 0x77663322u);
  // Activations x[k] = k + 1 (bf16 exact): the B register of q must hold the inputs of A's q.
  std::array<uint32_t, 16> X{};
  for (int i = 0; i < 16; ++i)
    X[i] = uint32_t{f32_to_bf16(static_cast<float>(2 * i + 1)).bits} |
           (uint32_t{f32_to_bf16(static_cast<float>(2 * i + 2)).bits} << 16);
  for (int q = 0; q < 16; ++q) {
    const int w = int4_mma_x_word(q);
    ASSERT_LE(w + 1, 15);
    const uint32_t b = int4_mma_byte_perm_host(X[w], X[w + 1], int4_mma_x_selector(q));
    EXPECT_EQ(bf16_lo(b), static_cast<float>(int4_mma_chunk_input(q, 0) + 1)) << "q " << q;
    EXPECT_EQ(bf16_hi(b), static_cast<float>(int4_mma_chunk_input(q, 1) + 1)) << "q " << q;
  }
}

// Which physical tile input every (k-step, k slot) of A and of B holds, from the lane maps: one
// input per slot whatever the row or column, each of the tile's 128 inputs once.
TEST(Int4MmaLayout, AAndBAgreeOnEverySlot) {
  std::array<int, INT4_MMA_KSTEPS * 16> a_input, b_input;
  a_input.fill(-1);
  b_input.fill(-1);
  for (int ks = 0; ks < INT4_MMA_KSTEPS; ++ks)
    for (int lane = 0; lane < LANES; ++lane) {
      const int t = int4_mma_thread(lane);
      for (int reg = 0; reg < 4; ++reg)
        for (int e = 0; e < 2; ++e) {
          const int q = int4_mma_reg_of(ks, reg / 2);
          const int input = int4_mma_tile_input(t, q, e);
          int& slot = a_input[ks * 16 + int4_mma_a_k(lane, reg, e)];
          ASSERT_TRUE(slot == -1 || slot == input) << "A slot depends on the row";
          slot = input;
        }
      for (int reg = 0; reg < 2; ++reg)
        for (int e = 0; e < 2; ++e) {
          const int q = int4_mma_reg_of(ks, reg);
          const int input = int4_mma_tile_input(t, q, e);
          int& slot = b_input[ks * 16 + int4_mma_b_k(lane, reg, e)];
          ASSERT_TRUE(slot == -1 || slot == input) << "B slot depends on the column";
          slot = input;
        }
    }
  EXPECT_EQ(a_input, b_input);
  std::array<int, INT4_TILE_K> seen{};
  for (int input : a_input) ++seen[input];
  for (int v : seen) EXPECT_EQ(v, 1);
}

// ---- The whole kernel, emulated ---------------------------------------------------------------

// y[b, o] for b < batch, as gemv_q4 computes it: per row group of 4 strips, per tile, per lane:
// loads (zeros past the last strip), decode, bf16 subtract, one mma per k-step (fp32 sums), then
// total += scale · tile_acc. xp: bf16 activations [batch, packed_in].
std::vector<float> emulate_gemv_q4(const Int4View& w, const std::vector<bf16>& xp, int batch) {
  const int64_t row_groups = (w.strips() + INT4_MMA_STRIPS - 1) / INT4_MMA_STRIPS;
  const int64_t packed = w.packed_in();
  std::vector<float> y(static_cast<size_t>(batch * w.out), NAN);
  const int4_tile zero_tile{};
  for (int64_t rg = 0; rg < row_groups; ++rg) {
    std::array<std::array<float, 4>, LANES> total{};
    for (int64_t kt = 0; kt < w.k_tiles; ++kt) {
      // Per lane: the decoded A registers (after the subtraction) and the B registers.
      std::array<std::array<std::array<uint32_t, 16>, 2>, LANES> a_regs{};
      std::array<std::array<uint32_t, 16>, LANES> b_regs{};
      std::array<std::array<float, 2>, LANES> scale{};
      for (int lane = 0; lane < LANES; ++lane) {
        const int g = int4_mma_group(lane), t = int4_mma_thread(lane);
        for (int h = 0; h < 2; ++h) {
          const int m = g + 8 * h;
          const int64_t strip = rg * INT4_MMA_STRIPS + int4_mma_row_strip(m);
          const int4_tile& tile = strip < w.strips() ? w.tile(strip, kt) : zero_tile;
          const int r = int4_mma_row_in_tile(m);
          scale[lane][h] = f16_to_f32(tile.scale[r]);
          const uint32_t bias = int4_mma_zero_bias(static_cast<uint32_t>(f16_to_f32(tile.zero[r])));
          const auto words = chunk_words(tile, r, t);
          for (int q = 0; q < 16; ++q)
            a_regs[lane][h][q] =
                bf16x2_sub(int4_mma_decode(words[int4_mma_word(q)], int4_mma_shift(q)), bias);
        }
        std::array<uint32_t, 16> X{};
        if (g < batch)
          for (int i = 0; i < 16; ++i) {
            const size_t at = static_cast<size_t>(g * packed + kt * INT4_TILE_K + 32 * t + 2 * i);
            X[i] = uint32_t{xp[at].bits} | (uint32_t{xp[at + 1].bits} << 16);
          }
        for (int q = 0; q < 16; ++q) {
          const int xw = int4_mma_x_word(q);
          b_regs[lane][q] = int4_mma_byte_perm_host(X[xw], X[xw + 1], int4_mma_x_selector(q));
        }
      }
      // The 8 mma k-steps: assemble A (16 × 16) and B (16 × 8) from the fragments, D = A·B + C.
      float acc[16][8] = {};
      for (int ks = 0; ks < INT4_MMA_KSTEPS; ++ks) {
        float a[16][16], b[16][8];
        for (int lane = 0; lane < LANES; ++lane) {
          for (int reg = 0; reg < 4; ++reg) {
            const uint32_t pair = a_regs[lane][reg % 2][int4_mma_reg_of(ks, reg / 2)];
            for (int e = 0; e < 2; ++e)
              a[int4_mma_a_row(lane, reg)][int4_mma_a_k(lane, reg, e)] =
                  e == 0 ? bf16_lo(pair) : bf16_hi(pair);
          }
          for (int reg = 0; reg < 2; ++reg) {
            const uint32_t pair = b_regs[lane][int4_mma_reg_of(ks, reg)];
            for (int e = 0; e < 2; ++e)
              b[int4_mma_b_k(lane, reg, e)][int4_mma_group(lane)] =
                  e == 0 ? bf16_lo(pair) : bf16_hi(pair);
          }
        }
        for (int m = 0; m < 16; ++m)
          for (int n = 0; n < 8; ++n) {
            float s = acc[m][n];
            for (int k = 0; k < 16; ++k) s += a[m][k] * b[k][n];
            acc[m][n] = s;
          }
      }
      for (int lane = 0; lane < LANES; ++lane)
        for (int i = 0; i < 4; ++i)
          total[lane][i] +=
              scale[lane][i / 2] * acc[int4_mma_c_row(lane, i)][int4_mma_c_col(lane, i)];
    }
    for (int lane = 0; lane < LANES; ++lane)
      for (int i = 0; i < 4; ++i) {
        const int64_t o = rg * INT4_MMA_ROWS + int4_mma_c_row(lane, i);
        const int col = int4_mma_c_col(lane, i);
        if (o < w.out && col < batch) y[static_cast<size_t>(col * w.out + o)] = total[lane][i];
      }
  }
  return y;
}

struct Case {
  int64_t in, out, n_groups;
  bool act_order;
  int batch;
};

class Int4MmaEmulation : public testing::TestWithParam<Case> {};

TEST_P(Int4MmaEmulation, MatchesInt4WeightAndCpuMatmul) {
  const Case c = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(c.in * 31 + c.out * 7 + c.batch));
  std::vector<int32_t> group_of(static_cast<size_t>(c.in));
  if (c.act_order) {
    std::uniform_int_distribution<int32_t> group(0, static_cast<int32_t>(c.n_groups - 1));
    for (auto& g : group_of) g = group(rng);
  } else {
    for (int64_t i = 0; i < c.in; ++i) group_of[i] = static_cast<int32_t>(i * c.n_groups / c.in);
  }
  std::uniform_int_distribution<int> code(0, 15), zero(0, 16);
  std::uniform_real_distribution<float> scale(0.001f, 0.02f);
  std::vector<uint8_t> codes(static_cast<size_t>(c.in * c.out));
  for (auto& v : codes) v = static_cast<uint8_t>(code(rng));
  std::vector<f16> scales(static_cast<size_t>(c.n_groups * c.out));
  std::vector<int> zeros(scales.size());
  for (auto& s : scales) s = f32_to_f16(scale(rng));
  for (auto& z : zeros) z = zero(rng);
  const Int4Matrix m = build_int4_matrix(
      c.in, c.out, group_of, c.n_groups, [&](int64_t i, int64_t o) { return codes[i * c.out + o]; },
      [&](int64_t g, int64_t o) { return scales[g * c.out + o]; },
      [&](int64_t g, int64_t o) { return zeros[g * c.out + o]; });
  const Int4View& w = m.view();
  ASSERT_EQ(w.input_index != nullptr, c.act_order);

  // Activations: bf16, logical order, then gathered into packed order (zeros at padding).
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  std::vector<bf16> x(static_cast<size_t>(c.batch * c.in));
  for (auto& v : x) v = f32_to_bf16(value(rng));
  const int64_t packed = w.packed_in();
  std::vector<bf16> xp(static_cast<size_t>(c.batch * packed), bf16{0});
  for (int b = 0; b < c.batch; ++b)
    for (int64_t p = 0; p < packed; ++p) {
      const int64_t i = w.input_index ? w.input_index[p] : p;
      if (i >= 0) xp[b * packed + p] = x[b * c.in + i];
    }

  const std::vector<float> got = emulate_gemv_q4(w, xp, c.batch);

  const std::vector<float> dense = dequantize_int4(w);  // int4_weight, logical order
  std::vector<float> xf(x.size());
  for (size_t i = 0; i < x.size(); ++i) xf[i] = bf16_to_f32(x[i]);
  std::vector<float> cpu(static_cast<size_t>(c.batch * c.out), NAN);
  ThreadPool pool(2);
  std::vector<float> scratch;
  cpu::matmul_int4(Tensor(xf.data(), DType::f32, {c.batch, c.in}), w,
                   Tensor(cpu.data(), DType::f32, {c.batch, c.out}), pool, scratch);
  for (int b = 0; b < c.batch; ++b)
    for (int64_t o = 0; o < c.out; ++o) {
      double ref = 0, mag = 0;
      for (int64_t i = 0; i < c.in; ++i) {
        ref += double{xf[b * c.in + i]} * dense[o * c.in + i];
        mag += std::fabs(double{xf[b * c.in + i]} * dense[o * c.in + i]);
      }
      const size_t at = static_cast<size_t>(b * c.out + o);
      ASSERT_NEAR(got[at], ref, 1e-6 * mag + 1e-30) << "b " << b << " o " << o;
      ASSERT_NEAR(got[at], cpu[at], 2e-6 * mag + 1e-30) << "b " << b << " o " << o;
    }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, Int4MmaEmulation,
    testing::Values(Case{128, 16, 1, false, 1},  // one row group, one tile
                    Case{128, 4, 1, false, 8},   // one strip: 3 strips of the group missing
                    Case{384, 20, 3, false, 3},  // 5 strips: the second group half empty
                    Case{512, 37, 4, false, 2},  // odd rows: a padded strip
                    Case{512, 64, 4, true, 8},   // act-order, random groups, padded tiles
                    Case{768, 50, 6, true, 5},   // act-order, odd rows, odd batch
                    Case{1024, 33, 8, false, 1}));

}  // namespace
}  // namespace hllm
