// What every GPU test shares: a main that skips the whole binary on a machine without a GPU, fresh
// random inputs, the atol + rtol·|ref| check over every element, the relative L2 check of every
// row, and the position-localized attention inputs of the attention tests.
//
// A GPU test defines HLLM_GPU_TEST_MAIN in exactly one translation unit before including this file
// (each test is one .cu file, so: always) and gets `main` from here.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include "hllm/core/dtype.hpp"
#include "hllm/cuda/common.cuh"

namespace hllm::test {

// The fixtures folder: $HLLM_TEST_DATA when set (prebuilt test binaries run on another machine:
// tools/device/prebuilt.sh points it at that checkout's tests/data), else the build's.
inline std::filesystem::path test_data_dir() {
  const char* dir = std::getenv("HLLM_TEST_DATA");
  return dir != nullptr && *dir != '\0' ? std::filesystem::path(dir)
                                         : std::filesystem::path(HLLM_TEST_DATA);
}

// Uniform values in [lo, hi), never all zero; rounded to T (bf16 inputs are what kernels see).
template <typename T>
std::vector<T> random_values(size_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<T> values(n);
  for (T& v : values) v = cuda::from_f32<T>(dist(rng));
  return values;
}

template <typename T>
std::vector<float> to_float(const std::vector<T>& values) {
  std::vector<float> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = cuda::to_f32(values[i]);
  return out;
}

// Every element: |got - ref| <= atol + rtol·|ref|, NaN never passes. Reports the first few misses
// and the worst one; returns true when all pass.
inline ::testing::AssertionResult all_close(const std::vector<float>& got,
                                            const std::vector<double>& ref, double atol,
                                            double rtol) {
  if (got.size() != ref.size())
    return ::testing::AssertionFailure() << "size " << got.size() << " != " << ref.size();
  size_t misses = 0, worst = 0;
  double worst_excess = -1.0;
  std::string first;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - ref[i]);
    const double bound = atol + rtol * std::fabs(ref[i]);
    if (!(err <= bound)) {  // NaN fails here
      if (misses < 5)
        first += " [" + std::to_string(i) + "] got " + std::to_string(got[i]) + " ref " +
                 std::to_string(ref[i]) + ";";
      ++misses;
    }
    const double excess = std::isnan(err) ? INFINITY : err - bound;
    if (excess > worst_excess) worst_excess = excess, worst = i;
  }
  if (misses == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << misses << " of " << got.size() << " elements off (atol " << atol << ", rtol " << rtol
         << "):" << first << " worst [" << worst << "] got " << got[worst] << " ref " << ref[worst];
}

// Every row of row_len elements: ||got - ref||_2 <= rtol · ||ref||_2, NaN never passes. A row whose
// ||ref||_2 is below min_rms · sqrt(row_len) is held to rtol · that floor instead (an all-zero
// reference row would otherwise demand an exact zero). Reports how many rows miss and the worst
// three.
inline ::testing::AssertionResult rows_close_l2(const std::vector<float>& got,
                                                const std::vector<double>& ref, size_t row_len,
                                                double rtol, double min_rms = 1e-6) {
  if (got.size() != ref.size() || row_len == 0 || ref.size() % row_len != 0)
    return ::testing::AssertionFailure()
           << "size " << got.size() << " vs " << ref.size() << ", rows of " << row_len;
  const size_t n_rows = ref.size() / row_len;
  struct Row {
    size_t index;
    double error, ref_norm;  // error: relative (NaN -> inf)
  };
  std::vector<Row> misses;
  Row worst{0, -1.0, 0.0};
  for (size_t r = 0; r < n_rows; ++r) {
    double diff = 0.0, norm = 0.0;
    for (size_t i = r * row_len; i < (r + 1) * row_len; ++i) {
      const double d = static_cast<double>(got[i]) - ref[i];
      diff += d * d;
      norm += ref[i] * ref[i];
    }
    const double floor = min_rms * std::sqrt(static_cast<double>(row_len));
    double error = std::sqrt(diff) / std::max(std::sqrt(norm), floor);
    if (std::isnan(error)) error = INFINITY;
    const Row row{r, error, std::sqrt(norm)};
    if (!(error <= rtol)) misses.push_back(row);
    if (error > worst.error) worst = row;
  }
  if (misses.empty()) return ::testing::AssertionSuccess();
  std::sort(misses.begin(), misses.end(),
            [](const Row& a, const Row& b) { return a.error > b.error; });
  auto failure = ::testing::AssertionFailure();
  failure << misses.size() << " of " << n_rows << " rows of " << row_len
          << " off by more than relative L2 " << rtol << "; worst:";
  for (size_t k = 0; k < std::min<size_t>(3, misses.size()); ++k)
    failure << " row " << misses[k].index << " error " << misses[k].error << " (|ref| "
            << misses[k].ref_norm << ");";
  return failure;
}

// ---- Position-localized attention inputs ----------------------------------------------------
//
// Random K, V and q make every query spread its attention thinly over the whole context, so one
// missing 16-position block moves a long row's output by only ~4/sqrt(kv_len) of its norm. These
// inputs make each (query, head) row attend to its own window instead, so every block is a large
// share of some row:
//
//   K[pos, :]   dims (2f, 2f+1) = cos, sin(2π f pos / P), P = 2 · the sequence's length (no
//               wrap-around inside it): Fourier features of the position, alike for every KV head
//   q[row, :]   the same features at the row's focus t, weighted by w_f = exp(-f² / 2τ²), scaled
//               so that scale · q·k = BETA · Σ w_f cos(2π f (pos - t) / P) / Σ w_f: a periodic
//               Gaussian bump of height BETA around t, so softmax weights ~ exp(-(pos-t)²/2σ²)
//   foci        head h of a query seeing kv_len positions: t = h · (kv_len - 1) / (n_heads - 1),
//               both ends included; σ = WIDTH · the spacing of the foci (τ from it)
//   V[pos, kvh, d]  a hash of (seq, pos, kvh, d), uniform in [-1, 1): every position's row is its
//               own code, so a block's share of a row's output does not average away (a smooth V
//               does: a window's output is then close to the V of any one of its blocks)
namespace localized_attention {

inline constexpr double BETA = 16.0;  // score at a row's focus above the far background
inline constexpr double WIDTH = 0.5;  // σ of a row's window / spacing of the foci

inline float key(int64_t pos, int64_t seq_len, int dim) {
  const double angle = 2.0 * std::numbers::pi * (dim / 2) * static_cast<double>(pos) /
                       (2.0 * static_cast<double>(seq_len));
  return static_cast<float>(dim % 2 == 0 ? std::cos(angle) : std::sin(angle));
}

// q of head h (of n_heads) of a query that sees kv_len positions of a sequence of seq_len, for a
// kernel that multiplies q·k by `scale`: head_dim values.
inline std::vector<float> query(int h, int n_heads, int64_t kv_len, int64_t seq_len, int head_dim,
                                double scale) {
  const double span = static_cast<double>(std::max<int64_t>(kv_len - 1, 1));
  const double t = n_heads > 1 ? h * span / (n_heads - 1) : span / 2;
  const double spacing = n_heads > 1 ? span / (n_heads - 1) : span;
  const double period = 2.0 * static_cast<double>(seq_len);
  const int n_freq = head_dim / 2;
  // Softmax of BETA·(1 - x²τ²/2) near the focus (x = 2π (pos - t) / P) has σ = P / (2π τ √BETA).
  const double tau = std::min(period / (2.0 * std::numbers::pi * std::sqrt(BETA) * WIDTH * spacing),
                              n_freq / 3.0);  // the bump needs frequencies up to ~3τ
  std::vector<double> w(n_freq);
  double w_sum = 0.0;
  for (int f = 0; f < n_freq; ++f) w_sum += w[f] = std::exp(-0.5 * f * f / (tau * tau));
  std::vector<float> q(head_dim);
  for (int f = 0; f < n_freq; ++f) {
    const double angle = 2.0 * std::numbers::pi * f * t / period;
    const double a = BETA / (scale * w_sum) * w[f];
    q[2 * f] = static_cast<float>(a * std::cos(angle));
    q[2 * f + 1] = static_cast<float>(a * std::sin(angle));
  }
  return q;
}

inline float value(int64_t seq, int64_t pos, int kv_head, int dim) {
  uint64_t x = ((static_cast<uint64_t>(seq) << 40) ^ (static_cast<uint64_t>(pos) << 16) ^
                (static_cast<uint64_t>(kv_head) << 8) ^ static_cast<uint64_t>(dim)) +
               1;
  x *= 0x9e3779b97f4a7c15ull;  // splitmix64's finalizer
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return static_cast<float>(static_cast<double>(x >> 11) * 0x1.0p-52 - 1.0);
}

}  // namespace localized_attention

}  // namespace hllm::test

#ifdef HLLM_GPU_TEST_MAIN
// A machine without a GPU gets exactly one line for the whole binary instead of one skip per test.
int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  cudaError_t why = cudaSuccess;
  if (hllm::cuda::device_count(&why) == 0) {
    std::printf("skipped: no GPU (%s: %s)\n", cudaGetErrorName(why), cudaGetErrorString(why));
    return 0;
  }
  return RUN_ALL_TESTS();
}
#endif
