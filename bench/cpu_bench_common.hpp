// What the CPU benchmarks share: one thread pool, the machine's measured read bandwidth (the
// ceiling GEMV results are reported against) and the size weight sets are rotated through to defeat
// caches. Each benchmark file registers BM_MemoryReadBandwidth first, so the ceiling is known when
// the matmul benchmarks report "% of read bandwidth".
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "hllm/core/threads.hpp"
#include "hllm/cpu/matmul.hpp"
#include "hllm/cpu/matmul_panels.hpp"
#include "hllm/cpu/simd.hpp"
#include "hllm/layout/dense_panels.hpp"

namespace {

constexpr size_t ROTATION_BYTES = size_t{256} << 20;  // far beyond the 32 MiB L3 of the dev machine

hllm::ThreadPool& pool() {
  static hllm::ThreadPool instance(0);
  return instance;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Best read bandwidth seen so far (GB/s); BM_MemoryReadBandwidth sets it.
double& measured_read_gbps() {
  static double value = 0.0;
  return value;
}

// One threaded streaming pass over `data` (GB/s): an integer xor-reduction, which the compiler
// vectorizes and which does nothing but stream.
inline double read_pass_gbps(const std::vector<uint64_t>& data) {
  const int64_t chunks = 256;
  const size_t n = data.size();
  std::vector<uint64_t> partial(chunks);
  const auto start = std::chrono::steady_clock::now();
  pool().parallel_for(chunks, [&](int64_t c) {
    uint64_t acc = 0;
    for (size_t i = n / chunks * c, end = n / chunks * (c + 1); i < end; ++i) acc ^= data[i];
    partial[c] = acc;
  });
  benchmark::DoNotOptimize(partial.data());
  return n * sizeof(uint64_t) / seconds_since(start) / 1e9;
}

inline std::vector<uint64_t> read_bandwidth_data() {  // 512 MiB
  std::vector<uint64_t> data((size_t{512} << 20) / sizeof(uint64_t));
  std::iota(data.begin(), data.end(), uint64_t{0});
  return data;
}

void BM_MemoryReadBandwidth(benchmark::State& state) {
  const std::vector<uint64_t> data = read_bandwidth_data();
  double best = 0.0;
  for (auto _ : state) best = std::max(best, read_pass_gbps(data));
  measured_read_gbps() = std::max(measured_read_gbps(), best);
  state.counters["GB/s"] = best;
  state.counters["threads"] = pool().size();
}

// The ceiling "% of read bandwidth" is reported against: BM_MemoryReadBandwidth's, or, when a
// --benchmark_filter left that out, the best of 5 passes measured here on first use.
inline double read_bandwidth_ceiling() {
  if (measured_read_gbps() == 0.0) {
    const std::vector<uint64_t> data = read_bandwidth_data();
    for (int i = 0; i < 5; ++i)
      measured_read_gbps() = std::max(measured_read_gbps(), read_pass_gbps(data));
  }
  return measured_read_gbps();
}

// The counters of one weight-format matmul case: weight_GB/s (the bytes as stored) and its % of
// the read bandwidth, Gweights/s (work done, what tokens/s follows), GFLOP/s, stored bits per
// weight, and whether the SIMD path ran.
inline void report(benchmark::State& state, double total_seconds, size_t weight_bytes, int64_t n,
                   int64_t in, int64_t out) {
  const double per_call = total_seconds / static_cast<double>(state.iterations());
  const double gbps = static_cast<double>(weight_bytes) / per_call / 1e9;
  state.counters["weight_GB/s"] = gbps;
  state.counters["Gweights/s"] = static_cast<double>(in * out) / per_call / 1e9;
  state.counters["GFLOP/s"] = 2.0 * n * in * out / per_call / 1e9;
  state.counters["%_of_read_bw"] = 100.0 * gbps / read_bandwidth_ceiling();
  state.counters["bits/w"] =
      8.0 * static_cast<double>(weight_bytes) / static_cast<double>(in * out);
  state.counters["simd"] = hllm::cpu::cpu_has_avx2() ? 1 : 0;
}

// How the bf16 weights of time_bf16_matmul are laid out: as the checkpoint stores them
// (cpu::matmul) or in the CPU backend's row panels (cpu::matmul_panels, what the engine runs).
enum class DenseLayout { rows, panels };

// Times a bf16 matmul with weights [out, in] (random, rotated through ROTATION_BYTES) on n tokens
// for every benchmark iteration; returns the total seconds spent inside the calls.
inline double time_bf16_matmul(benchmark::State& state, int64_t n, int64_t in, int64_t out,
                               DenseLayout layout = DenseLayout::panels) {
  const int64_t elements =
      layout == DenseLayout::panels ? hllm::dense_panels_elements(out, in) : in * out;
  const size_t weight_bytes = static_cast<size_t>(elements) * sizeof(hllm::bf16);
  const size_t copies = std::max<size_t>(1, ROTATION_BYTES / weight_bytes);
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  std::vector<std::vector<hllm::bf16>> weights(
      copies, std::vector<hllm::bf16>(static_cast<size_t>(elements)));
  for (auto& w : weights)
    for (auto& v : w) v = hllm::f32_to_bf16(dist(rng));  // random either way: no packing needed
  std::vector<float> x(static_cast<size_t>(n * in)), y(static_cast<size_t>(n * out));
  for (float& v : x) v = dist(rng);
  std::vector<float> scratch;  // the prompt kernel's regrouped x, kept between calls
  size_t next = 0;
  double total_seconds = 0.0;
  for (auto _ : state) {
    const hllm::Tensor xt(x.data(), hllm::DType::f32, {n, in});
    const hllm::Tensor yt(y.data(), hllm::DType::f32, {n, out});
    const auto start = std::chrono::steady_clock::now();
    if (layout == DenseLayout::panels)
      hllm::cpu::matmul_panels(xt,
                               hllm::Tensor(weights[next].data(), hllm::DType::bf16, {elements}),
                               out, yt, pool(), scratch);
    else
      hllm::cpu::matmul(xt, hllm::Tensor(weights[next].data(), hllm::DType::bf16, {out, in}), yt,
                        pool());
    total_seconds += seconds_since(start);
    next = (next + 1) % copies;
    benchmark::DoNotOptimize(y.data());
  }
  return total_seconds;
}

}  // namespace
