// CPU matmul against weights in GGUF's ggml blocks, read in place (cpu/ggml_matmul.hpp,
// matmul_ggml) for Q4_0, Q5_0, Q4_K, Q6_K and Q8_0; also with int8 activations, their default
// path (cpu/ggml_q8_matmul.hpp: BM_Matmul_Q4_0_a8, BM_Matmul_Q5_0_a8, BM_Matmul_Q8_0_a8, the last
// the Q8_0 lm_head's;
// on AVX2 and AVX-512 VNNI cpu/ggml_kq8_matmul.hpp: BM_Matmul_Q4_K_a8, BM_Matmul_Q6_K_a8); beside hllm's
// own INT4 tiles (cpu/int4_matmul.hpp) as the reference, on the
// Llama-3-8B and Llama-3.2-1B projection shapes: decode GEMV (tokens = 1, bound by reading the
// weights once), a small decode batch (tokens = 4) and one prefill token tile (tokens = 16).
// Reported: weight_GB/s (the blocks as stored, GgmlView::nbytes(); INT4: 272 B per 4 x 128
// weights) and % of this machine's read bandwidth, measured first by BM_MemoryReadBandwidth (a
// threaded streaming read of 512 MiB; measured on first use when a filter leaves it out);
// Gweights/s compares the formats in work done (what tokens/s follows), bits/w is the format's
// size per weight. Weights come from ggml_quantize_row on random fp32 rows (a pool of rows, tiled),
// and weight sets are rotated through at least 256 MiB so every call reads from DRAM, not cache.
// All hardware threads are used. Benchmarks are named BM_Matmul_<type>/tokens:N/in:I/out:O/...
// (type Q4_0, Q5_0, Q4_K, Q6_K, Q8_0, their _a8 forms where the machine has them, or int4) and run
// shape by shape, side by side.
//
//   ./build/bench/cpu_ggml_bench
//   ./build/bench/cpu_ggml_bench --benchmark_filter='tokens:1/'         decode only
//   ./build/bench/cpu_ggml_bench --benchmark_filter='Q4_K|int4'         one type beside INT4
//   ./build/bench/cpu_ggml_bench --benchmark_filter='in:4096/out:14336'  one shape (8B gate/up)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "cpu_bench_common.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/cpu/ggml_kq8_matmul.hpp"
#include "hllm/cpu/ggml_matmul.hpp"
#include "hllm/cpu/ggml_q8_matmul.hpp"
#include "hllm/cpu/int4_matmul.hpp"
#include "hllm/cpu/simd.hpp"
#include "hllm/layout/ggml_blocks.hpp"
#include "hllm/quant/ggml_quantize.hpp"
#include "hllm/quant/int4.hpp"

namespace {

BENCHMARK(BM_MemoryReadBandwidth)->Unit(benchmark::kMillisecond)->Iterations(10)->UseRealTime();

constexpr int64_t POOL_ROWS = 64;     // distinct quantized rows, tiled over every weight set
constexpr int64_t POOL_TILES = 1024;  // distinct INT4 tiles, likewise

// x [n, in] ~ N(0, 1) and y [n, out]; times `call(x, y, copy)` once per iteration, rotating
// through `copies` weight sets; returns the seconds spent inside the calls.
template <typename Call>
double time_calls(benchmark::State& state, int64_t n, int64_t in, int64_t out, size_t copies,
                  Call&& call) {
  std::mt19937 rng(2);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n * in)), y(static_cast<size_t>(n * out));
  for (float& v : x) v = dist(rng);
  const hllm::Tensor xt(x.data(), hllm::DType::f32, {n, in});
  const hllm::Tensor yt(y.data(), hllm::DType::f32, {n, out});
  size_t next = 0;
  double total_seconds = 0.0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    call(xt, yt, next);
    total_seconds += seconds_since(start);
    next = (next + 1) % copies;
    benchmark::DoNotOptimize(y.data());
  }
  return total_seconds;
}

// The weight sets of the benchmark now running. Google Benchmark calls a benchmark function
// several times while it settles the iteration count, and tokens = 1 and 16 of a shape run back to
// back, so the sets are built once per (type, shape) and kept until the next one is asked for.
struct GgmlWeights {
  hllm::GgmlType type{};
  int64_t in = 0, out = 0;
  size_t bytes = 0, copies = 0;  // bytes: one copy
  std::unique_ptr<uint8_t, void (*)(uint8_t*)> data{nullptr, [](uint8_t*) {}};

  hllm::GgmlView view(size_t copy) const {
    return hllm::GgmlView{type, data.get() + copy * bytes, out, in};
  }
};

const GgmlWeights& ggml_weights(hllm::GgmlType type, int64_t in, int64_t out) {
  static GgmlWeights w;
  if (w.data && w.type == type && w.in == in && w.out == out) return w;
  w.data.reset();  // free the previous sets first
  w.type = type;
  w.in = in;
  w.out = out;
  const int64_t row_bytes = hllm::GgmlView{type, nullptr, out, in}.row_bytes();
  w.bytes = static_cast<size_t>(row_bytes * out);
  w.copies = std::max<size_t>(1, ROTATION_BYTES / w.bytes);
  const size_t total_bytes = w.copies * w.bytes;
  constexpr std::align_val_t ALIGNMENT{64};
  w.data = {static_cast<uint8_t*>(::operator new(total_bytes, ALIGNMENT)),
            [](uint8_t* p) { ::operator delete(p, ALIGNMENT); }};
  // POOL_ROWS random rows ~ N(0, 0.02) quantized, then tiled over all rows of all copies (the
  // kernels have no data-dependent branches, so the values only need to be plausible).
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  std::vector<float> row(static_cast<size_t>(in));
  std::vector<uint8_t> pool_rows(static_cast<size_t>(POOL_ROWS * row_bytes));
  for (int64_t r = 0; r < POOL_ROWS; ++r) {
    for (float& v : row) v = dist(rng);
    hllm::ggml_quantize_row(type, row.data(), in, pool_rows.data() + r * row_bytes);
  }
  const int64_t total_rows = static_cast<int64_t>(w.copies) * out;
  for (int64_t r = 0; r < total_rows; ++r)
    std::memcpy(w.data.get() + r * row_bytes, pool_rows.data() + (r % POOL_ROWS) * row_bytes,
                static_cast<size_t>(row_bytes));
  return w;
}

// args: tokens, in_features, out_features
// int8_activations: the same weights times int8 activations (rounded inside each call, as in
// decode: per 32 inputs for Q4_0 / Q5_0 / Q8_0, per 256 for Q4_K / Q6_K) instead of fp32 ones.
void BM_Matmul_ggml(benchmark::State& state, hllm::GgmlType type, bool int8_activations) {
  const int64_t n = state.range(0), in = state.range(1), out = state.range(2);
  const GgmlWeights& w = ggml_weights(type, in, out);
  hllm::cpu::Q8Blocks q8;
  hllm::cpu::Q8KBlocks q8k;
  const double total_seconds = time_calls(
      state, n, in, out, w.copies, [&](const hllm::Tensor& x, const hllm::Tensor& y, size_t copy) {
        if (int8_activations && hllm::cpu::ggml_q8_path_supports(type)) {
          hllm::cpu::matmul_ggml_q8(x, w.view(copy), y, pool(), q8);
        } else if (int8_activations) {
          hllm::cpu::matmul_ggml_kq8(x, w.view(copy), y, pool(), q8k);
        } else {
          hllm::cpu::matmul_ggml(x, w.view(copy), y, pool());
        }
      });
  report(state, total_seconds, w.bytes, n, in, out);
}

// INT4 tiles as cpu_int4_bench makes them (random codes, fp16 scales in 0.001..0.01, zeros 6..10,
// no act-order), POOL_TILES of them tiled over every copy.
struct Int4Weights {
  int64_t in = 0, out = 0;
  size_t bytes = 0;
  std::vector<hllm::Int4Matrix> copies;
};

const Int4Weights& int4_weights(int64_t in, int64_t out) {
  static Int4Weights w;
  if (!w.copies.empty() && w.in == in && w.out == out) return w;
  w.copies.clear();
  w.in = in;
  w.out = out;
  w.bytes = static_cast<size_t>((out + 3) / 4 * (in / hllm::INT4_TILE_K)) * sizeof(hllm::int4_tile);
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> byte(0, 255), zero(6, 10);
  std::uniform_real_distribution<float> scale(0.001f, 0.01f);
  std::vector<hllm::int4_tile> tiles(POOL_TILES);
  for (hllm::int4_tile& tile : tiles)
    for (int r = 0; r < hllm::INT4_TILE_ROWS; ++r) {
      tile.scale[r] = hllm::f32_to_f16(scale(rng));
      tile.zero[r] = hllm::f32_to_f16(static_cast<float>(zero(rng)));
      for (auto& b : tile.q[r]) b = static_cast<uint8_t>(byte(rng));
    }
  const size_t copies = std::max<size_t>(1, ROTATION_BYTES / w.bytes);
  for (size_t c = 0; c < copies; ++c) {
    hllm::Int4Matrix m(in, out, in / hllm::INT4_TILE_K, {});
    for (int64_t t = 0; t < m.view().n_tiles(); ++t) m.tiles()[t] = tiles[t % POOL_TILES];
    w.copies.push_back(std::move(m));
  }
  return w;
}

// args: tokens, in_features, out_features
void BM_Matmul_int4(benchmark::State& state) {
  const int64_t n = state.range(0), in = state.range(1), out = state.range(2);
  const Int4Weights& w = int4_weights(in, out);
  std::vector<float> scratch;
  const double total_seconds =
      time_calls(state, n, in, out, w.copies.size(),
                 [&](const hllm::Tensor& x, const hllm::Tensor& y, size_t copy) {
                   hllm::cpu::matmul_int4(x, w.copies[copy].view(), y, pool(), scratch);
                 });
  report(state, total_seconds, w.bytes, n, in, out);
}

// (in, out) of every projection, unfused as GGUF stores them. Llama-3-8B: q/o 4096 -> 4096, k/v
// 4096 -> 1024, gate/up 4096 -> 14336, down 14336 -> 4096. Llama-3.2-1B: q/o 2048 -> 2048, k/v
// 2048 -> 512, gate/up 2048 -> 8192, down 8192 -> 2048, lm_head 2048 -> 128256 (tied embedding).
constexpr std::pair<int64_t, int64_t> SHAPES[] = {{4096, 4096},  {4096, 1024}, {4096, 14336},
                                                  {14336, 4096}, {2048, 2048}, {2048, 512},
                                                  {2048, 8192},  {8192, 2048}, {2048, 128256}};

// Shape by shape, Q4_0 / Q5_0 / Q4_K / Q6_K / Q8_0, their _a8 forms, INT4, tokens 1, 4 and 16 (same
// weight sets).
// MinTime 0.3 s: the whole default run takes a few minutes on a 2-core VM (a decode call reads
// 1-280 MB; a 16-token call of the 1B lm_head is 8.4 GFLOP, ~0.1 s there).
[[maybe_unused]] const bool registered = [] {
  constexpr std::pair<hllm::GgmlType, const char*> TYPES[] = {{hllm::GgmlType::Q4_0, "Q4_0"},
                                                              {hllm::GgmlType::Q5_0, "Q5_0"},
                                                              {hllm::GgmlType::Q4_K, "Q4_K"},
                                                              {hllm::GgmlType::Q6_K, "Q6_K"},
                                                              {hllm::GgmlType::Q8_0, "Q8_0"}};
  const auto configure = [](benchmark::internal::Benchmark* b, int64_t in, int64_t out) {
    b->ArgNames({"tokens", "in", "out"});
    for (const int64_t tokens : {1, 4, 16}) b->Args({tokens, in, out});
    b->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.3);
  };
  for (const auto& [in, out] : SHAPES) {
    for (const auto& [type, name] : TYPES)
      configure(benchmark::RegisterBenchmark(("BM_Matmul_" + std::string(name)).c_str(),
                                             BM_Matmul_ggml, type, false),
                in, out);
    for (const auto& [type, name] : TYPES)
      if (hllm::cpu::ggml_q8_path_supports(type) || hllm::cpu::ggml_kq8_path_supports(type))
        configure(benchmark::RegisterBenchmark(("BM_Matmul_" + std::string(name) + "_a8").c_str(),
                                               BM_Matmul_ggml, type, true),
                  in, out);
    configure(benchmark::RegisterBenchmark("BM_Matmul_int4", BM_Matmul_int4), in, out);
  }
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
