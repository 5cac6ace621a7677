// CPU INT4 matmul benchmarks (cpu/int4_matmul.hpp, W4A32; cpu/int4_q8_matmul.hpp, W4A8 per ISA)
// beside the bf16 matmul on the same Llama-3-8B shapes: decode GEMV (n = 1, bound by reading the weights once) and small batches.
// Reported: weight_GB/s (tile bytes incl. scales and zeros: 272 B per 4 x 128 weights) and % of
// this machine's read bandwidth, measured first by BM_MemoryReadBandwidth (a threaded streaming
// sum over 512 MiB); Gweights/s compares the two formats in work done (what tokens/s follows).
// Several tokens per call (a batched decode, a prefill) are bound by int8 compute instead: the
// W4A8 cases on AVX-512 also report %_of_int8_peak, against BM_Int8DotPeak (vpdpbusd on every
// thread).
// Weight sets are rotated through at least 256 MiB so every call reads from DRAM, not cache.
//
//   ./build/bench/cpu_int4_bench
//   ./build/bench/cpu_int4_bench --benchmark_filter='tokens:1/' --benchmark_repetitions=5
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <numeric>
#include <random>
#include <vector>

#include "cpu_bench_common.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/cpu/int4_matmul.hpp"
#include "hllm/cpu/int4_q8_matmul.hpp"
#include "hllm/cpu/matmul.hpp"
#include "hllm/cpu/simd.hpp"
#include "hllm/quant/int4.hpp"

namespace {

BENCHMARK(BM_MemoryReadBandwidth)->Unit(benchmark::kMillisecond)->Iterations(10)->UseRealTime();

#if defined(__x86_64__)
// Independent chains of vpdpbusd (64 int8 multiply-adds each), `rounds` times; returns a sum so
// the work cannot be dropped. 24 chains: with 12 the loop was bound by vpdpbusd's latency on Zen 5
// (225 vs 257 GMAC/s on one thread), and a 64-token W4A8 matmul then ran at "116%" of that peak.
constexpr int PEAK_CHAINS = 24;
[[gnu::target("avx512f,avx512bw,avx512vnni")]] int32_t vpdpbusd_chains(int64_t rounds,
                                                                       int8_t seed) {
  __m512i acc[PEAK_CHAINS];
  for (int i = 0; i < PEAK_CHAINS; ++i) acc[i] = _mm512_set1_epi32(i);
  const __m512i a = _mm512_set1_epi8(seed), b = _mm512_set1_epi8(static_cast<int8_t>(seed + 2));
  for (int64_t r = 0; r < rounds; ++r)
#pragma GCC unroll 24
    for (__m512i& v : acc) {
      v = _mm512_dpbusd_epi32(v, a, b);
      asm volatile("" : "+v"(v));  // one vpdpbusd per chain and round, nothing hoisted
    }
  __m512i sum = acc[0];
  for (int i = 1; i < PEAK_CHAINS; ++i) sum = _mm512_add_epi32(sum, acc[i]);
  alignas(64) uint32_t lanes[16];  // (through memory: GCC 12 warns falsely on the reduce intrinsic)
  _mm512_store_si512(lanes, sum);
  uint32_t total = 0;  // wraps (unsigned): only kept so the work cannot be dropped
  for (const uint32_t lane : lanes) total += lane;
  return static_cast<int32_t>(total);
}
#endif

// The int8 compute ceiling of the W4A8 kernels: G multiply-adds per second of vpdpbusd on every
// pool thread (AVX-512 VNNI; 0 where the CPU lacks it), the best of 3 runs of ~0.1 s, measured on
// first use. A batched decode or a prefill is bound by this, not by the read bandwidth.
double int8_peak_gmacs() {
  static const double peak = [] {
    double best = 0.0;
#if defined(__x86_64__)
    if (hllm::cpu::cpu_isa_supported() < hllm::cpu::CpuIsa::avx512) return best;
    constexpr int64_t ROUNDS = 12'500'000;
    const int64_t threads = pool().size();
    std::vector<int32_t> sums(static_cast<size_t>(threads));
    for (int run = 0; run < 3; ++run) {
      const auto start = std::chrono::steady_clock::now();
      pool().parallel_for(threads, [&](int64_t t) {
        sums[t] = vpdpbusd_chains(ROUNDS, static_cast<int8_t>(t + 1));
      });
      benchmark::DoNotOptimize(sums.data());
      best = std::max(best, PEAK_CHAINS * 64.0 * ROUNDS * threads / seconds_since(start) / 1e9);
    }
#endif
    return best;
  }();
  return peak;
}

void BM_Int8DotPeak(benchmark::State& state) {
  if (int8_peak_gmacs() == 0.0) return state.SkipWithError("no AVX-512 VNNI");
  for (auto _ : state) benchmark::DoNotOptimize(int8_peak_gmacs());
  state.counters["GMAC/s"] = int8_peak_gmacs();
  state.counters["threads"] = pool().size();
}
BENCHMARK(BM_Int8DotPeak)->Iterations(1);

// The share of int8_peak_gmacs a W4A8 call ran at (n tokens × in × out multiply-adds).
void report_int8_peak(benchmark::State& state, double total_seconds, int64_t n, int64_t in,
                      int64_t out) {
  if (int8_peak_gmacs() == 0.0) return;
  const double per_call = total_seconds / static_cast<double>(state.iterations());
  state.counters["%_of_int8_peak"] =
      100.0 * static_cast<double>(n * in * out) / per_call / 1e9 / int8_peak_gmacs();
}

// Random tiles (codes, fp16 scales, zeros); act_order adds a packed-input permutation so the
// per-call activation gather is included.
hllm::Int4Matrix random_int4(int64_t in, int64_t out, bool act_order, std::mt19937& rng) {
  std::vector<int32_t> index;
  if (act_order) {
    index.resize(static_cast<size_t>(in));
    std::iota(index.begin(), index.end(), 0);
    std::shuffle(index.begin(), index.end(), rng);
  }
  hllm::Int4Matrix m(in, out, in / hllm::INT4_TILE_K, std::move(index));
  std::uniform_int_distribution<int> byte(0, 255), zero(6, 10);
  std::uniform_real_distribution<float> scale(0.001f, 0.01f);
  for (int64_t t = 0; t < m.view().n_tiles(); ++t) {
    hllm::int4_tile& tile = m.tiles()[t];
    for (int r = 0; r < hllm::INT4_TILE_ROWS; ++r) {
      tile.scale[r] = hllm::f32_to_f16(scale(rng));
      tile.zero[r] = hllm::f32_to_f16(static_cast<float>(zero(rng)));
      for (auto& b : tile.q[r]) b = static_cast<uint8_t>(byte(rng));
    }
  }
  return m;
}

// Times `multiply(x, w, y)` over weight copies rotated through ROTATION_BYTES, then reports;
// returns the seconds spent in the calls.
// args: tokens, in_features, out_features, act_order.
template <typename Multiply>
double time_int4(benchmark::State& state, Multiply multiply) {
  const int64_t n = state.range(0), in = state.range(1), out = state.range(2);
  const bool act_order = state.range(3) != 0;
  std::mt19937 rng(1);
  const size_t weight_bytes = static_cast<size_t>((out + 3) / 4 * (in / 128)) * 272;
  const size_t copies = std::max<size_t>(1, ROTATION_BYTES / weight_bytes);
  std::vector<hllm::Int4Matrix> weights;
  for (size_t c = 0; c < copies; ++c) weights.push_back(random_int4(in, out, act_order, rng));
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n * in)), y(static_cast<size_t>(n * out));
  for (float& v : x) v = dist(rng);
  const hllm::Tensor xt(x.data(), hllm::DType::f32, {n, in}),
      yt(y.data(), hllm::DType::f32, {n, out});
  size_t next = 0;
  double total_seconds = 0.0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    multiply(xt, weights[next].view(), yt);
    total_seconds += seconds_since(start);
    next = (next + 1) % copies;
    benchmark::DoNotOptimize(y.data());
  }
  report(state, total_seconds, weight_bytes, n, in, out);
  return total_seconds;
}

// W4A32 (cpu/int4_matmul.hpp).
void BM_Matmul_int4(benchmark::State& state) {
  std::vector<float> scratch;
  time_int4(state, [&](const hllm::Tensor& x, const hllm::Int4View& w, const hllm::Tensor& y) {
    hllm::cpu::matmul_int4(x, w, y, pool(), scratch);
  });
}

// W4A8 (cpu/int4_q8_matmul.hpp) on each instruction set this CPU runs; args end with the ISA.
void BM_Matmul_int4_q8(benchmark::State& state) {
  const auto isa = static_cast<hllm::cpu::CpuIsa>(state.range(4));
  if (isa > hllm::cpu::cpu_isa_supported()) return state.SkipWithError("ISA not supported");
  std::vector<float> scratch;
  hllm::cpu::Q8Activations q8;
  const double seconds =
      time_int4(state, [&](const hllm::Tensor& x, const hllm::Int4View& w, const hllm::Tensor& y) {
        hllm::cpu::matmul_int4_q8(x, w, y, pool(), scratch, q8, isa);
      });
  if (isa == hllm::cpu::CpuIsa::avx512)
    report_int8_peak(state, seconds, state.range(0), state.range(1), state.range(2));
}

// A decode step's weights that read one input, on Llama-3.2-1B's shapes (in 2048), for batches of
// 1 to 16 sequences: q/k/v (out 2048, 512, 512) or gate/up (8192, 8192). grouped = 1 runs them as
// one matmul_int4_q8_group (what the CPU backend does), 0 one matmul_int4_q8 after another.
// args: tokens, sublayer (0 = q/k/v, 1 = gate/up), grouped.
void BM_Matmul_int4_q8_shared_input(benchmark::State& state) {
  const int64_t n = state.range(0), in = 2048;
  const bool grouped = state.range(2) != 0;
  const std::vector<int64_t> outs =
      state.range(1) == 0 ? std::vector<int64_t>{2048, 512, 512} : std::vector<int64_t>{8192, 8192};
  std::mt19937 rng(1);
  size_t set_bytes = 0;
  int64_t total_out = 0;
  for (const int64_t out : outs) {
    set_bytes += static_cast<size_t>(out / 4 * (in / 128)) * sizeof(hllm::int4_tile);
    total_out += out;
  }
  const size_t copies = std::max<size_t>(1, ROTATION_BYTES / set_bytes);
  std::vector<std::vector<hllm::Int4Matrix>> sets(copies);
  for (auto& set : sets)
    for (const int64_t out : outs) set.push_back(random_int4(in, out, false, rng));
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n * in));
  for (float& v : x) v = dist(rng);
  std::vector<std::vector<float>> y;
  std::vector<hllm::Tensor> ys;
  for (const int64_t out : outs) {
    y.emplace_back(static_cast<size_t>(n * out));
    ys.emplace_back(y.back().data(), hllm::DType::f32, hllm::Shape{n, out});
  }
  const hllm::Tensor xt(x.data(), hllm::DType::f32, {n, in});
  std::vector<float> scratch;
  hllm::cpu::Q8Activations q8;
  size_t next = 0;
  double total_seconds = 0.0;
  for (auto _ : state) {
    std::vector<hllm::Int4View> views;
    for (const hllm::Int4Matrix& m : sets[next]) views.push_back(m.view());
    std::vector<const hllm::Int4View*> weights;
    for (const hllm::Int4View& v : views) weights.push_back(&v);
    const auto start = std::chrono::steady_clock::now();
    if (grouped)
      hllm::cpu::matmul_int4_q8_group(xt, weights, ys, pool(), scratch, q8);
    else
      for (size_t i = 0; i < weights.size(); ++i)
        hllm::cpu::matmul_int4_q8(xt, *weights[i], ys[i], pool(), scratch, q8);
    total_seconds += seconds_since(start);
    next = (next + 1) % copies;
    for (auto& v : y) benchmark::DoNotOptimize(v.data());
  }
  report(state, total_seconds, set_bytes, n, in, total_out);
  if (hllm::cpu::cpu_isa() == hllm::cpu::CpuIsa::avx512)
    report_int8_peak(state, total_seconds, n, in, total_out);
}

// The same shapes with bf16 weights (cpu/matmul.hpp), for the side-by-side comparison.
void BM_Matmul_bf16(benchmark::State& state) {
  const int64_t n = state.range(0), in = state.range(1), out = state.range(2);
  const size_t weight_bytes = static_cast<size_t>(in * out) * sizeof(hllm::bf16);
  const double total_seconds = time_bf16_matmul(state, n, in, out);
  report(state, total_seconds, weight_bytes, n, in, out);
}

// Llama-3-8B per layer: qkv fused 4096 -> 6144, o 4096 -> 4096, gate_up fused 4096 -> 28672,
// down 14336 -> 4096. isas: none = no ISA argument; else every shape once per ISA (a 5th argument).
void llama3_8b_shapes(benchmark::internal::Benchmark* b, bool with_act_order,
                      const std::vector<hllm::cpu::CpuIsa>& isas = {}) {
  std::vector<std::string> names = {"tokens", "in", "out", "act_order"};
  if (!isas.empty()) names.push_back("isa");
  b->ArgNames(names);
  const auto shape_args = [&](std::vector<int64_t> args) {
    if (isas.empty()) return b->Args(args), void();
    for (const hllm::cpu::CpuIsa isa : isas) {
      std::vector<int64_t> with_isa = args;
      with_isa.push_back(static_cast<int64_t>(isa));
      b->Args(with_isa);
    }
  };
  for (const int64_t tokens : {1, 4, 64})
    for (const auto& [in, out] : std::vector<std::pair<int64_t, int64_t>>{
             {4096, 6144}, {4096, 4096}, {4096, 28672}, {14336, 4096}}) {
      if (tokens == 64 && out == 28672) continue;  // keeps the run short on 2 cores
      shape_args({tokens, in, out, 0});
      if (with_act_order && tokens == 1) shape_args({tokens, in, out, 1});
    }
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_Matmul_int4)->Apply([](auto* b) { llama3_8b_shapes(b, true); });
BENCHMARK(BM_Matmul_int4_q8)->Apply([](auto* b) {
  llama3_8b_shapes(b, false, {hllm::cpu::CpuIsa::avx2, hllm::cpu::CpuIsa::avx512});
});
BENCHMARK(BM_Matmul_int4_q8_shared_input)
    ->ArgNames({"tokens", "sublayer", "grouped"})
    ->ArgsProduct({{1, 4, 8, 16}, {0, 1}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_Matmul_bf16)->Apply([](auto* b) { llama3_8b_shapes(b, false); });

}  // namespace

BENCHMARK_MAIN();
