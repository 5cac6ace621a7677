// Decode attention over the paged KV cache (kernels/hllm/cuda/attn_decode_paged.cuh) at Llama-3-8B
// shapes: 32 query heads, 8 KV heads, head_dim 128, block_size 16, random (shuffled) block tables.
// Bytes = the K and V rows read: batch · kv_len · 8 KV heads · 128 · 2 tensors · 2 B. Caches are
// rotated over >= 256 MB so L2 does not serve them; GB/s and % of the device copy bandwidth.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "gpu_bench_common.cuh"
#include "hllm/cuda/attn_decode_paged.cuh"

namespace {

using namespace hllm;
using namespace hllm::cuda;

constexpr int N_HEADS = 32, N_KV_HEADS = 8, HEAD_DIM = 128, BLOCK_SIZE = 16;

void fill(DeviceBuffer<bf16>& buffer, uint32_t seed) {
  bench::fill_random_bf16(buffer.data(), static_cast<int64_t>(buffer.size()), seed);
}

void BM_attn_decode_paged_llama3_8b(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  const int kv_len = static_cast<int>(state.range(1));
  const int blocks_per_seq = ceil_div(kv_len, BLOCK_SIZE);
  const size_t row_elems = size_t{N_KV_HEADS} * HEAD_DIM;
  const double bytes = double(batch) * kv_len * row_elems * 2 /* K and V */ * sizeof(bf16);
  // Each rotation set is its own batch of sequences in the pool, with its own block tables.
  const int sets = bench::rotation_count(static_cast<size_t>(bytes));
  const size_t blocks_per_set = size_t(batch) * blocks_per_seq;
  const size_t n_blocks = blocks_per_set * sets;

  DeviceBuffer<bf16> k(n_blocks * BLOCK_SIZE * row_elems), v(k.size());
  fill(k, 1);
  fill(v, 2);
  std::vector<int32_t> ids(n_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::mt19937 rng(3);
  std::shuffle(ids.begin(), ids.end(), rng);  // scattered over the whole pool
  DeviceBuffer<int32_t> tables(ids);  // set r: rows r·batch .. of [sets·batch, blocks_per_seq]
  std::vector<int32_t> seq(batch), len(batch, kv_len);
  std::iota(seq.begin(), seq.end(), 0);
  DeviceBuffer<int32_t> d_seq(seq), d_len(len);
  DeviceBuffer<bf16> q(size_t(batch) * N_HEADS * HEAD_DIM), out(q.size());
  fill(q, 4);
  const size_t ws_bytes = attn_decode_workspace_bytes(batch, N_HEADS, HEAD_DIM, kv_len);
  DeviceBuffer<float> workspace(ws_bytes / sizeof(float));
  const float scale = 1.0f / std::sqrt(float(HEAD_DIM));

  auto launch = [&](int set) {
    PagedKvView kv;
    kv.k = k.data();
    kv.v = v.data();
    kv.block_tables = tables.data() + size_t(set) * blocks_per_set;
    kv.max_blocks_per_seq = blocks_per_seq;
    kv.block_size = BLOCK_SIZE;
    kv.n_kv_heads = N_KV_HEADS;
    kv.head_dim = HEAD_DIM;
    launch_attn_decode_paged(reinterpret_cast<const __nv_bfloat16*>(q.data()), kv, d_seq.data(),
                             d_len.data(), batch, N_HEADS, kv_len, scale, workspace.data(),
                             ws_bytes, reinterpret_cast<__nv_bfloat16*>(out.data()), nullptr);
  };
  for (int s = 0; s < sets; ++s) launch(s);  // warm-up
  HLLM_CUDA_CHECK(cudaDeviceSynchronize());

  bench::EventTimer timer;
  std::vector<double> seconds;
  int set = 0;
  for (auto _ : state) {
    timer.start();
    launch(set);
    const double s = timer.stop_seconds();
    state.SetIterationTime(s);
    seconds.push_back(s);
    set = (set + 1) % sets;
  }
  bench::report_bandwidth(state, bytes);
  bench::report_percent_of_copy(state, bytes, bench::median(seconds));
  const AttnSplitPlan plan =
      cuda::detail::attn_decode_plan(batch, N_HEADS, N_KV_HEADS, HEAD_DIM, kv_len);
  state.counters["splits"] = plan.n_splits;
}

BENCHMARK(BM_attn_decode_paged_llama3_8b)
    ->ArgNames({"batch", "kv_len"})
    ->Args({1, 16384})
    ->Args({1, 4096})
    ->Args({64, 2048})
    ->Args({16, 512})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) { return hllm::bench::gpu_benchmark_main(argc, argv); }
