// core/dtype.hpp against independent oracles.
//
// - Widening (bf16/fp16 -> fp32), all 65536 patterns of each: the value that the format's
//   definition gives (sign, biased exponent, mantissa; subnormals; inf; NaN), computed with ldexp.
// - Narrowing (fp32 -> bf16/fp16), millions of inputs: round_to_format below, which rounds in long
//   double arithmetic (nearbyintl: ties to even) instead of the bit tricks dtype.hpp uses; for fp16
//   also the compiler's own _Float16 conversion (GCC >= 12 on x86-64, where it is available).
// - dtype_size / dtype_name / dtype_from_name, including the error for an unknown name.
#include "hllm/core/dtype.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cfenv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace hllm {
namespace {

// ---- The oracles --------------------------------------------------------------------------------

// A binary floating-point format with a hidden leading bit, as IEEE 754 describes it.
struct Format {
  int mantissa_bits;  // stored fraction bits (bf16 7, fp16 10)
  int exponent_bits;  // (bf16 8, fp16 5)
  int bias() const { return (1 << (exponent_bits - 1)) - 1; }
  int min_exponent() const { return 1 - bias(); }  // of the smallest normal number
  long double max_finite() const {
    return std::ldexp(static_cast<long double>((2 << mantissa_bits) - 1),
                      bias() - mantissa_bits);  // (2 - 2^-m) * 2^bias
  }
};
constexpr Format BF16{7, 8};
constexpr Format FP16{10, 5};

// The value a 16-bit pattern denotes, from the format's definition. NaN for NaN patterns.
double decode(uint16_t bits, Format f) {
  const int sign = bits >> 15;
  const int exponent = (bits >> f.mantissa_bits) & ((1 << f.exponent_bits) - 1);
  const int mantissa = bits & ((1 << f.mantissa_bits) - 1);
  double magnitude;
  if (exponent == (1 << f.exponent_bits) - 1) {
    magnitude = mantissa == 0 ? std::numeric_limits<double>::infinity()
                              : std::numeric_limits<double>::quiet_NaN();
  } else if (exponent == 0) {  // subnormal: 0.m * 2^min_exponent
    magnitude = std::ldexp(static_cast<double>(mantissa), f.min_exponent() - f.mantissa_bits);
  } else {  // normal: 1.m * 2^(exponent - bias)
    magnitude = std::ldexp(static_cast<double>((1 << f.mantissa_bits) + mantissa),
                           exponent - f.bias() - f.mantissa_bits);
  }
  return sign ? -magnitude : magnitude;
}

// fp32 -> format, round to nearest, ties to even, overflow to inf, gradual underflow. Returns the
// rounded value (NaN for NaN). A float has 24 significant bits, so every intermediate here is exact
// in long double (64); the one rounding is nearbyintl's, in the default mode (nearest, ties even).
long double round_to_format(float x, Format f) {
  if (std::isnan(x) || std::isinf(x)) return x;
  if (x == 0.0f) return x;
  int e = 0;
  std::frexp(x, &e);  // |x| = m * 2^e with m in [0.5, 1): x's exponent as a normal number is e - 1
  // The spacing of the format's values near x: 2^(exponent - mantissa_bits), and below the
  // smallest normal exponent the subnormal spacing stays that of the smallest normal.
  const int exponent = std::max(e - 1, f.min_exponent());
  const int quantum = exponent - f.mantissa_bits;
  const long double units = std::ldexp(static_cast<long double>(std::fabs(x)), -quantum);
  const long double rounded = std::ldexp(std::nearbyint(units), quantum);
  const long double magnitude =
      rounded > f.max_finite() ? std::numeric_limits<long double>::infinity() : rounded;
  return std::signbit(x) ? -magnitude : magnitude;
}

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

bool is_nan16(uint16_t bits, Format f) { return std::isnan(decode(bits, f)); }

// ---- Inputs -------------------------------------------------------------------------------------

// Special values, every rounding tie of both formats (and the floats beside each), and random
// inputs over all bit patterns, the fp16 range and the fp16 subnormal range. Built once.
std::vector<float> make_narrowing_inputs() {
  std::vector<float> out;
  for (uint32_t u : {0x00000000u, 0x7f800000u, 0x7fc00000u, 0x7f800001u, 0x7fffffffu, 0x7f810000u,
                     0x7f80ffffu, 0x7f7fffffu, 0x7f7f7fffu, 0x7f7f8000u, 0x00800000u, 0x007fffffu,
                     0x00000001u, 0x3f800000u}) {
    out.push_back(float_of(u));
    out.push_back(float_of(u | 0x80000000u));
  }
  for (float f : {65504.0f, 65519.0f, std::nextafter(65520.0f, 0.0f), 65520.0f, 65536.0f, 1e10f,
                  0x1p-14f, std::nextafter(0x1p-14f, 0.0f), 0x1p-24f, 0x1p-25f,
                  std::nextafter(0x1p-25f, 1.0f), 0x3p-26f, 0x1p-26f, 1e-30f, 0.1f}) {
    out.push_back(f);
    out.push_back(-f);
  }
  for (uint32_t hi = 0; hi <= 0xffffu; ++hi) {  // bf16: the dropped 16 bits at and around the tie
    for (uint32_t lo : {0x0000u, 0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu}) {
      out.push_back(float_of(hi << 16 | lo));
    }
  }
  for (int h = 0; h < 0x7c00; ++h) {  // fp16: midpoints of neighbours (exact in fp32) and beside
    const double mid = (decode(static_cast<uint16_t>(h), FP16) +
                        (h + 1 == 0x7c00 ? 65536.0 : decode(static_cast<uint16_t>(h + 1), FP16))) /
                       2;
    const auto m = static_cast<float>(mid);
    EXPECT_EQ(static_cast<double>(m), mid);
    for (float f : {m, std::nextafter(m, 0.0f), std::nextafter(m, INFINITY)}) {
      out.push_back(f);
      out.push_back(-f);
    }
  }
  std::mt19937_64 rng(12345);
  std::uniform_int_distribution<uint32_t> any_bits;
  std::uniform_real_distribution<float> f16_range(-70000.0f, 70000.0f);
  std::uniform_real_distribution<float> f16_subnormal(-0x1p-13f, 0x1p-13f);
  for (int i = 0; i < (1 << 21); ++i) out.push_back(float_of(any_bits(rng)));
  for (int i = 0; i < (1 << 20); ++i) out.push_back(f16_range(rng));
  for (int i = 0; i < (1 << 20); ++i) out.push_back(f16_subnormal(rng));
  return out;
}

const std::vector<float>& narrowing_inputs() {
  static const std::vector<float> inputs = make_narrowing_inputs();
  return inputs;
}

// ---- Widening -----------------------------------------------------------------------------------

TEST(DType, Bf16ToF32IsExactForEveryPattern) {
  for (uint32_t i = 0; i <= 0xffffu; ++i) {
    const auto bits = static_cast<uint16_t>(i);
    const float got = bf16_to_f32(bf16{bits});
    const double want = decode(bits, BF16);
    ASSERT_EQ(bits_of(got), i << 16) << std::hex << "pattern 0x" << i;  // bf16 = top half of fp32
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << std::hex << "pattern 0x" << i;
    } else {
      ASSERT_EQ(static_cast<double>(got), want) << std::hex << "pattern 0x" << i;
      ASSERT_EQ(std::signbit(got), std::signbit(want)) << std::hex << "pattern 0x" << i;
    }
  }
}

TEST(DType, F16ToF32IsExactForEveryPattern) {
  for (uint32_t i = 0; i <= 0xffffu; ++i) {
    const auto bits = static_cast<uint16_t>(i);
    const float got = f16_to_f32(f16{bits});
    const double want = decode(bits, FP16);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << std::hex << "pattern 0x" << i;
      ASSERT_EQ(std::signbit(got), (i & 0x8000u) != 0) << std::hex << "pattern 0x" << i;
    } else {
      ASSERT_EQ(static_cast<double>(got), want) << std::hex << "pattern 0x" << i;
      ASSERT_EQ(std::signbit(got), std::signbit(want)) << std::hex << "pattern 0x" << i;
    }
  }
}

// ---- Narrowing ----------------------------------------------------------------------------------

// Checks one narrowing result against round_to_format: the same value and sign, or NaN (with the
// input's sign) for a NaN input.
::testing::AssertionResult narrows_like_oracle(float x, uint16_t got, Format f) {
  const double got_value = decode(got, f);
  const long double want = round_to_format(x, f);
  const bool ok = std::isnan(x)
                      ? is_nan16(got, f) && std::signbit(got_value) == std::signbit(x)
                      : got_value == want && std::signbit(got_value) == std::signbit(want);
  if (ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << std::hex << "input 0x" << bits_of(x) << std::dec << " (" << x << ") gave 0x" << std::hex
         << got << std::dec << " = " << got_value << ", oracle " << static_cast<double>(want);
}

TEST(DType, OracleAgreesWithHandWorkedCases) {
  // Sanity of the oracle itself, so that a bug shared with dtype.hpp cannot hide.
  EXPECT_EQ(round_to_format(1.0f + 0x1p-8f, BF16), 1.0L);            // tie -> even (1.0)
  EXPECT_EQ(round_to_format(1.0f + 0x3p-8f, BF16), 1.0L + 0x1p-6L);  // tie -> even (odd + 1)
  EXPECT_EQ(round_to_format(65519.0f, FP16), 65504.0L);
  EXPECT_TRUE(std::isinf(round_to_format(65520.0f, FP16)));  // tie at the top goes to inf
  EXPECT_EQ(round_to_format(0x1p-25f, FP16), 0.0L);          // half the smallest subnormal: even
  EXPECT_EQ(round_to_format(0x3p-26f, FP16), 0x1p-24L);
  EXPECT_EQ(round_to_format(0x3p-25f, FP16), 0x1p-23L);  // 1.5 units -> 2 (even)
  EXPECT_EQ(BF16.max_finite(), 0x1.fep127L);
  EXPECT_EQ(FP16.max_finite(), 65504.0L);
  EXPECT_TRUE(std::isinf(round_to_format(std::numeric_limits<float>::max(), BF16)));
}

TEST(DType, F32ToBf16RoundsToNearestEven) {
  ASSERT_EQ(std::fegetround(), FE_TONEAREST);
  int failures = 0;
  for (float x : narrowing_inputs()) {
    const uint16_t got = f32_to_bf16(x).bits;
    const auto result = narrows_like_oracle(x, got, BF16);
    if (!result) {
      ADD_FAILURE() << "f32_to_bf16: " << result.message();
      if (++failures == 10) break;
    }
  }
}

TEST(DType, F32ToF16RoundsToNearestEven) {
  ASSERT_EQ(std::fegetround(), FE_TONEAREST);
  int failures = 0;
  for (float x : narrowing_inputs()) {
    const uint16_t got = f32_to_f16(x).bits;
    const auto result = narrows_like_oracle(x, got, FP16);
    if (!result) {
      ADD_FAILURE() << "f32_to_f16: " << result.message();
      if (++failures == 10) break;
    }
  }
}

#if defined(__FLT16_MANT_DIG__)  // the compiler has _Float16 (GCC >= 12 / Clang on x86-64)

uint16_t float16_bits(_Float16 h) {
  uint16_t u;
  std::memcpy(&u, &h, sizeof u);
  return u;
}

TEST(DType, F16MatchesCompilerFloat16OnEveryPattern) {
  for (uint32_t i = 0; i <= 0xffffu; ++i) {
    const auto bits = static_cast<uint16_t>(i);
    _Float16 h;
    std::memcpy(&h, &bits, sizeof h);
    const float want = static_cast<float>(h);
    const float got = f16_to_f32(f16{bits});
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << std::hex << "pattern 0x" << i;
    } else {
      ASSERT_EQ(bits_of(got), bits_of(want)) << std::hex << "pattern 0x" << i;
    }
  }
}

TEST(DType, F32ToF16MatchesCompilerFloat16) {
  int failures = 0;
  for (float x : narrowing_inputs()) {
    const uint16_t got = f32_to_f16(x).bits;
    const uint16_t want = float16_bits(static_cast<_Float16>(x));
    const bool ok = std::isnan(x) ? is_nan16(got, FP16) && is_nan16(want, FP16) : got == want;
    if (!ok) {
      ADD_FAILURE() << std::hex << "input 0x" << bits_of(x) << ": got 0x" << got << ", _Float16 0x"
                    << want;
      if (++failures == 10) break;
    }
  }
}

#endif

TEST(DType, RoundTripsEveryNonNanPattern) {
  for (uint32_t i = 0; i <= 0xffffu; ++i) {
    const auto bits = static_cast<uint16_t>(i);
    if (!is_nan16(bits, BF16)) {
      ASSERT_EQ(f32_to_bf16(bf16_to_f32(bf16{bits})).bits, bits) << std::hex << "bf16 0x" << i;
    }
    if (!is_nan16(bits, FP16)) {
      ASSERT_EQ(f32_to_f16(f16_to_f32(f16{bits})).bits, bits) << std::hex << "f16 0x" << i;
    }
  }
}

// ---- DType names and sizes ----------------------------------------------------------------------

TEST(DType, SizesAndSafetensorsNames) {
  static_assert(dtype_size(DType::f32) == 4 && dtype_size(DType::f16) == 2 &&
                dtype_size(DType::bf16) == 2 && dtype_size(DType::i32) == 4 &&
                dtype_size(DType::i64) == 8);
  const std::pair<DType, const char*> all[] = {
      {DType::f32, "F32"}, {DType::f16, "F16"}, {DType::bf16, "BF16"},
      {DType::i32, "I32"}, {DType::i64, "I64"},
  };
  for (const auto& [type, name] : all) {
    EXPECT_EQ(dtype_name(type), name);
    EXPECT_EQ(dtype_from_name(name), type);
  }
}

TEST(DType, UnknownNameThrowsAndSaysWhatIsSupported) {
  for (const char* name : {"F64", "bf16", "BOOL", "F8_E4M3", "", "F32 "}) {
    try {
      dtype_from_name(name);
      ADD_FAILURE() << "no error for \"" << name << "\"";
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(std::string("\"") + name + "\""), std::string::npos) << message;
      EXPECT_NE(message.find("BF16"), std::string::npos) << message;
    }
  }
}

}  // namespace
}  // namespace hllm
