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

void BM_MemoryReadBandwidth(benchmark::State& state) {
  const size_t n = (size_t{512} << 20) / sizeof(uint64_t);
  std::vector<uint64_t> data(n);
  std::iota(data.begin(), data.end(), uint64_t{0});
  const int64_t chunks = 256;
  std::vector<uint64_t> partial(chunks);
  double best = 0.0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    pool().parallel_for(chunks, [&](int64_t c) {
      // An integer xor-reduction: the compiler vectorizes it, and it does nothing but stream.
      uint64_t acc = 0;
      for (size_t i = n / chunks * c, end = n / chunks * (c + 1); i < end; ++i) acc ^= data[i];
      partial[c] = acc;
    });
    benchmark::DoNotOptimize(partial.data());
    best = std::max(best, n * sizeof(uint64_t) / seconds_since(start) / 1e9);
  }
  measured_read_gbps() = std::max(measured_read_gbps(), best);
  state.counters["GB/s"] = best;
  state.counters["threads"] = pool().size();
}

// Times cpu::matmul with bf16 weights [out, in] (random, rotated through ROTATION_BYTES) on n
// tokens for every benchmark iteration; returns the total seconds spent inside the calls.
inline double time_bf16_matmul(benchmark::State& state, int64_t n, int64_t in, int64_t out) {
  const size_t weight_bytes = static_cast<size_t>(in * out) * sizeof(hllm::bf16);
  const size_t copies = std::max<size_t>(1, ROTATION_BYTES / weight_bytes);
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  std::vector<std::vector<hllm::bf16>> weights(
      copies, std::vector<hllm::bf16>(static_cast<size_t>(in * out)));
  for (auto& w : weights)
    for (auto& v : w) v = hllm::f32_to_bf16(dist(rng));
  std::vector<float> x(static_cast<size_t>(n * in)), y(static_cast<size_t>(n * out));
  for (float& v : x) v = dist(rng);
  size_t next = 0;
  double total_seconds = 0.0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    hllm::cpu::matmul(hllm::Tensor(x.data(), hllm::DType::f32, {n, in}),
                      hllm::Tensor(weights[next].data(), hllm::DType::bf16, {out, in}),
                      hllm::Tensor(y.data(), hllm::DType::f32, {n, out}), pool());
    total_seconds += seconds_since(start);
    next = (next + 1) % copies;
    benchmark::DoNotOptimize(y.data());
  }
  return total_seconds;
}

}  // namespace
