// CPU matmul benchmarks: decode GEMV (n = 1, bound by reading the weights once) and prefill GEMM on
// Llama-3 shapes with bf16 weights in the CPU backend's row panels (and in rows, for comparison), reported as GB/s of weight bytes and % of this machine's read
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
void matmul_bf16(benchmark::State& state, DenseLayout layout) {
  const int64_t n = state.range(0), in = state.range(1), out = state.range(2);
  const size_t weight_bytes = static_cast<size_t>(in * out) * sizeof(hllm::bf16);
  const double total_seconds = time_bf16_matmul(state, n, in, out, layout);
  const double per_call = total_seconds / static_cast<double>(state.iterations());
  const double gbps = weight_bytes / per_call / 1e9;
  state.counters["weight_GB/s"] = gbps;
  state.counters["GFLOP/s"] = 2.0 * n * in * out / per_call / 1e9;
  if (measured_read_gbps() > 0)
    state.counters["%_of_read_bw"] = 100.0 * gbps / measured_read_gbps();
  state.counters["simd"] = hllm::cpu::cpu_has_avx2() ? 1 : 0;
}

// The CPU backend's layout (row panels) and, for comparison, the checkpoint's rows.
void BM_Matmul_bf16(benchmark::State& state) { matmul_bf16(state, DenseLayout::panels); }
void BM_Matmul_bf16_rows(benchmark::State& state) { matmul_bf16(state, DenseLayout::rows); }

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
    ->Args({8, 4096, 4096})
    ->Args({16, 4096, 4096})
    ->Args({32, 4096, 4096})
    ->Args({64, 4096, 4096})
    ->Args({256, 2048, 8192})
    // Llama-3.2-1B prefill of a 128-token prompt: q/o, k/v, gate/up, down.
    ->Args({128, 2048, 2048})
    ->Args({128, 2048, 512})
    ->Args({128, 2048, 8192})
    ->Args({128, 8192, 2048})
    // ... and of a 512-token prompt (the activations outgrow L2): gate/up, down.
    ->Args({512, 2048, 8192})
    ->Args({512, 8192, 2048})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_Matmul_bf16_rows)
    ->ArgNames({"tokens", "in", "out"})
    ->Args({1, 4096, 4096})
    ->Args({1, 2048, 128256})
    ->Args({16, 4096, 4096})
    ->Args({128, 2048, 8192})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
