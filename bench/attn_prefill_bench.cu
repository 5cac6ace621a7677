// Causal prefill attention over the paged KV cache (kernels/hllm/cuda/attn_prefill.cuh) at
// Llama-3-8B shapes: 32 query heads, 8 KV heads, head_dim 128, block_size 16, a shuffled block
// table. FLOPs = 4 · head_dim · n_heads · Σ_t kv_len(t) (q·k and p·v, 2 FLOPs a multiply-add),
// = 4 · S² · head_dim · n_heads / 2 for a whole prompt of S tokens (start 0; the diagonal's extra
// S/2 positions are ignored, the usual causal convention). Compute bound: reports TFLOP/s.
// Inputs are not rotated: each K/V row is re-read by many blocks, so L2 residency is part of
// the kernel's design, and q / out (S · 8 KiB each) pass through once.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "gpu_bench_common.cuh"
#include "hllm/cuda/attn_prefill.cuh"

namespace {

using namespace hllm;
using namespace hllm::cuda;

constexpr int N_HEADS = 32, N_KV_HEADS = 8, HEAD_DIM = 128, BLOCK_SIZE = 16;

void fill(DeviceBuffer<bf16>& buffer, uint32_t seed) {
  bench::fill_random_bf16(buffer.data(), static_cast<int64_t>(buffer.size()), seed);
}

void BM_attn_prefill_llama3_8b(benchmark::State& state) {
  const int start = static_cast<int>(state.range(0));
  const int n = static_cast<int>(state.range(1));
  const int total = start + n;
  const int blocks = ceil_div(total, BLOCK_SIZE);
  const size_t row_elems = size_t{N_KV_HEADS} * HEAD_DIM;
  DeviceBuffer<bf16> k(size_t(blocks) * BLOCK_SIZE * row_elems), v(k.size());
  fill(k, 1);
  fill(v, 2);
  std::vector<int32_t> ids(blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::mt19937 rng(3);
  std::shuffle(ids.begin(), ids.end(), rng);
  DeviceBuffer<int32_t> table(ids);
  std::vector<int32_t> lens(n);
  for (int t = 0; t < n; ++t) lens[t] = start + t + 1;
  DeviceBuffer<int32_t> d_seq(std::vector<int32_t>(n, 0)), d_len(lens);
  DeviceBuffer<bf16> q(size_t(n) * N_HEADS * HEAD_DIM), out(q.size());
  fill(q, 4);
  const PagedKvView kv{.k = k.data(),
                       .v = v.data(),
                       .block_tables = table.data(),
                       .max_blocks_per_seq = blocks,
                       .block_size = BLOCK_SIZE,
                       .n_kv_heads = N_KV_HEADS,
                       .head_dim = HEAD_DIM};
  const float scale = 1.0f / std::sqrt(float(HEAD_DIM));
  auto launch = [&] {
    launch_attn_prefill(reinterpret_cast<const __nv_bfloat16*>(q.data()), kv, d_seq.data(),
                        d_len.data(), n, N_HEADS, total, scale, nullptr, 0,
                        reinterpret_cast<__nv_bfloat16*>(out.data()), nullptr);
  };
  launch();  // warm-up (and the shared-memory opt-in)
  HLLM_CUDA_CHECK(cudaDeviceSynchronize());

  // Σ_t kv_len(t) minus the diagonal's n/2 extra: S²/2 for a whole prompt.
  const double pairs = (double(start) + 0.5 * n) * n;
  const double flops = 4.0 * HEAD_DIM * N_HEADS * pairs;
  bench::EventTimer timer;
  std::vector<double> seconds;
  for (auto _ : state) {
    timer.start();
    launch();
    const double s = timer.stop_seconds();
    state.SetIterationTime(s);
    seconds.push_back(s);
  }
  state.counters["TFLOP/s"] =
      benchmark::Counter(flops * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["median_TFLOP/s"] = flops * 1e-12 / bench::median(seconds);
  state.counters["GFLOP"] = flops * 1e-9;
}

BENCHMARK(BM_attn_prefill_llama3_8b)
    ->ArgNames({"start", "n"})
    ->Args({0, 2048})
    ->Args({0, 8192})
    ->Args({0, 16384})
    ->Args({14336, 2048})  // a chunk of 2048 after 14336 cached tokens
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) { return hllm::bench::gpu_benchmark_main(argc, argv); }
