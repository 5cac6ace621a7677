// CPU matmul benchmarks: decode GEMV (n = 1, bound by reading the weights once) and prefill GEMM on
// Llama-3 shapes with bf16 weights, reported as GB/s of weight bytes and % of this machine's read
// bandwidth, measured first by BM_MemoryReadBandwidth (a threaded streaming sum over 512 MiB).
// Weight sets are rotated through at least 256 MiB so every GEMV reads from DRAM, not cache.
//
//   ./build/bench/cpu_matmul_bench                       (all threads)
//   ./build/bench/cpu_matmul_bench --benchmark_filter=Gemv
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <numeric>
#include <random>
#include <vector>

#include "cpu_bench_common.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/cpu/matmul.hpp"
#include "hllm/cpu/simd.hpp"

namespace {

BENCHMARK(BM_MemoryReadBandwidth)->Unit(benchmark::kMillisecond)->Iterations(10)->UseRealTime();

// args: tokens, in_features, out_features
void BM_Matmul_bf16(benchmark::State& state) {
  const int64_t n = state.range(0), in = state.range(1), out = state.range(2);
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
  const double per_call = total_seconds / static_cast<double>(state.iterations());
  const double gbps = weight_bytes / per_call / 1e9;
  state.counters["weight_GB/s"] = gbps;
  state.counters["GFLOP/s"] = 2.0 * n * in * out / per_call / 1e9;
  if (measured_read_gbps() > 0)
    state.counters["%_of_read_bw"] = 100.0 * gbps / measured_read_gbps();
  state.counters["simd"] = hllm::cpu::cpu_has_avx2() ? 1 : 0;
}

// Llama-3-8B: q/o (4096x4096), k/v (1024x4096), gate/up (14336x4096), down (4096x14336).
// Llama-3.2-1B: gate/up (8192x2048), lm_head (128256x2048).
BENCHMARK(BM_Matmul_bf16)
    ->ArgNames({"tokens", "in", "out"})
    ->Args({1, 4096, 4096})
    ->Args({1, 4096, 1024})
    ->Args({1, 4096, 14336})
    ->Args({1, 14336, 4096})
    ->Args({1, 2048, 8192})
    ->Args({1, 2048, 128256})
    ->Args({4, 4096, 4096})
    ->Args({64, 4096, 4096})
    ->Args({256, 2048, 8192})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
