// GPU test of kernels/hllm/cuda/attn_prefill.cuh (FlashAttention-2 causal prefill over the paged
// KV cache): chunks of 1 .. 4097 queries, cached prefixes (partial blocks), GQA 32/8, 4/1, 8/8,
// 8/4, 8/1, head_dim 128 and 64, shuffled non-contiguous block tables with NaN-filled unused
// blocks, position-localized inputs at 7k-15k positions (a missing or repeated 16-position block
// fails), a CUDA graph replayed with a new start, the device-side error flag for a chunk past
// max_kv_len, and argument validation. The reference is attention in double on the sequence's
// contiguous copy of the same bf16 values; out is poisoned with NaN first; every (query, head) row
// must be within relative L2 1e-2 of the reference and every element within atol 2e-3 + rtol
// 2e-2.
#define HLLM_GPU_TEST_MAIN
#include "gpu_test_util.cuh"
// (gpu_test_util.cuh first: it defines main for this binary.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "hllm/cuda/attn_prefill.cuh"
#include "hllm/layout/paged_kv.hpp"

namespace hllm::cuda {
namespace {

using test::all_close;
using test::rows_close_l2;
namespace localized = test::localized_attention;

struct Case {
  int n_heads, n_kv_heads, head_dim, block_size;
  int start;               // positions cached before the chunk
  int n;                   // queries in the chunk
  int capacity;            // positions the sequence's block table covers (>= start + n)
  bool localized = false;  // test::localized_attention inputs instead of uniform random
};

Case make(int n_heads, int n_kv_heads, int head_dim, int block_size, int start, int n) {
  return {n_heads, n_kv_heads, head_dim, block_size, start, n, start + n};
}

Case localized_case(Case c) {
  c.localized = true;
  return c;
}

struct Fixture {
  Case c;
  int max_blocks = 0, max_kv_len = 0;
  std::vector<bf16> q;
  std::vector<int32_t> tables;
  std::vector<float> k_seq, v_seq;  // [pos, n_kv_heads, head_dim], contiguous
  DeviceBuffer<bf16> d_q, d_k, d_v, d_out;
  DeviceBuffer<int32_t> d_tables, d_seq, d_len;
  float scale = 0.0f;

  Fixture(const Case& c_in, uint32_t seed) : c(c_in) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    max_kv_len = c.capacity;
    max_blocks = (c.capacity + c.block_size - 1) / c.block_size;
    const int n_blocks = 2 * max_blocks + 3;  // sequence 1 is ours; 0 and spares are NaN blocks
    std::vector<int32_t> ids(n_blocks);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    tables.assign(size_t(2) * max_blocks, ids[n_blocks - 1]);
    for (int b = 0; b < max_blocks; ++b) tables[max_blocks + b] = ids[b];
    const int row_elems = c.n_kv_heads * c.head_dim;
    const bf16 nan_bits{0xffff};
    std::vector<bf16> k_pool(size_t(n_blocks) * c.block_size * row_elems, nan_bits);
    std::vector<bf16> v_pool(k_pool.size(), nan_bits);
    PagedKvView host_view;
    host_view.block_tables = tables.data();
    host_view.max_blocks_per_seq = max_blocks;
    host_view.block_size = c.block_size;
    host_view.n_kv_heads = c.n_kv_heads;
    host_view.head_dim = c.head_dim;
    k_seq.resize(size_t(c.capacity) * row_elems);
    v_seq.resize(k_seq.size());
    for (int pos = 0; pos < c.capacity; ++pos) {
      const int64_t row = paged_kv_row(host_view, 1, pos);
      for (int e = 0; e < row_elems; ++e) {
        bf16 kx, vx;
        if (c.localized) {
          kx = from_f32<bf16>(localized::key(pos, c.capacity, e % c.head_dim));
          vx = from_f32<bf16>(localized::value(1, pos, e / c.head_dim, e % c.head_dim));
        } else {
          kx = from_f32<bf16>(dist(rng));
          vx = from_f32<bf16>(dist(rng));
        }
        k_pool[row * row_elems + e] = kx;
        v_pool[row * row_elems + e] = vx;
        k_seq[size_t(pos) * row_elems + e] = to_f32(kx);
        v_seq[size_t(pos) * row_elems + e] = to_f32(vx);
      }
    }
    q = test::random_values<bf16>(size_t(c.n) * c.n_heads * c.head_dim, rng, -4.0f, 4.0f);
    scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    if (c.localized) {
      for (int t = 0; t < c.n; ++t)
        for (int h = 0; h < c.n_heads; ++h) {
          const std::vector<float> qh =
              localized::query(h, c.n_heads, c.start + t + 1, c.capacity, c.head_dim, scale);
          for (int e = 0; e < c.head_dim; ++e)
            q[(size_t(t) * c.n_heads + h) * c.head_dim + e] = from_f32<bf16>(qh[e]);
        }
    }
    d_q = DeviceBuffer<bf16>(q);
    d_k = DeviceBuffer<bf16>(k_pool);
    d_v = DeviceBuffer<bf16>(v_pool);
    d_out = DeviceBuffer<bf16>(q.size());
    d_tables = DeviceBuffer<int32_t>(tables);
    d_seq = DeviceBuffer<int32_t>(std::vector<int32_t>(c.n, 1));
    set_start(c.start);
  }

  void set_start(int start) {
    c.start = start;
    std::vector<int32_t> lens(c.n);
    for (int t = 0; t < c.n; ++t) lens[t] = start + t + 1;
    d_len = DeviceBuffer<int32_t>(lens);
  }

  PagedKvView view() {
    PagedKvView kv;
    kv.k = d_k.data();
    kv.v = d_v.data();
    kv.block_tables = d_tables.data();
    kv.max_blocks_per_seq = max_blocks;
    kv.block_size = c.block_size;
    kv.n_kv_heads = c.n_kv_heads;
    kv.head_dim = c.head_dim;
    return kv;
  }

  void launch(cudaStream_t stream = nullptr, int32_t* error_flag = nullptr) {
    launch_attn_prefill(reinterpret_cast<const __nv_bfloat16*>(d_q.data()), view(), d_seq.data(),
                        d_len.data(), c.n, c.n_heads, max_kv_len, scale, nullptr, 0,
                        reinterpret_cast<__nv_bfloat16*>(d_out.data()), stream, error_flag);
  }

  // Causal attention in double, queries spread over the host threads.
  std::vector<double> reference() const {
    const int group = c.n_heads / c.n_kv_heads, hd = c.head_dim;
    std::vector<double> ref(size_t(c.n) * c.n_heads * hd, 0.0);
    auto one_query = [&](int t) {
      const int len = c.start + t + 1;
      std::vector<double> p(len);
      for (int h = 0; h < c.n_heads; ++h) {
        const int kvh = h / group;
        const bf16* qh = q.data() + (size_t(t) * c.n_heads + h) * hd;
        double max_score = -INFINITY, sum = 0.0;
        for (int j = 0; j < len; ++j) {
          const float* kr = k_seq.data() + (size_t(j) * c.n_kv_heads + kvh) * hd;
          double dot = 0.0;
          for (int e = 0; e < hd; ++e) dot += double(to_f32(qh[e])) * kr[e];
          p[j] = dot * scale;
          max_score = std::max(max_score, p[j]);
        }
        for (double& x : p) sum += (x = std::exp(x - max_score));
        double* o = ref.data() + (size_t(t) * c.n_heads + h) * hd;
        for (int j = 0; j < len; ++j) {
          const float* vr = v_seq.data() + (size_t(j) * c.n_kv_heads + kvh) * hd;
          for (int e = 0; e < hd; ++e) o[e] += p[j] / sum * vr[e];
        }
      }
    };
    const int n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    std::vector<std::thread> threads;
    for (int w = 0; w < n_threads; ++w)
      threads.emplace_back([&, w] {
        for (int t = w; t < c.n; t += n_threads) one_query(t);
      });
    for (auto& th : threads) th.join();
    return ref;
  }

  // Relative L2 of each (query, head) row is the test that scales with the context (a long row's
  // RMS is a few 1e-3 with random inputs, below what atol 2e-3 resolves); the per-element bound
  // stays for what a row's L2 dilutes: one wrong element of a short row.
  ::testing::AssertionResult check() {
    const std::vector<float> got = test::to_float(d_out.download());
    const std::vector<double> ref = reference();
    ::testing::AssertionResult rows = rows_close_l2(got, ref, c.head_dim, 1e-2);
    if (!rows) return rows;
    return all_close(got, ref, 2e-3, 2e-2);
  }
};

void run_case(const Case& c, uint32_t seed) {
  Fixture f(c, seed);
  f.d_out.poison();
  f.launch();
  HLLM_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_TRUE(f.check()) << "heads " << c.n_heads << "/" << c.n_kv_heads << " head_dim "
                         << c.head_dim << " block_size " << c.block_size << " start " << c.start
                         << " n " << c.n;
}

TEST(AttnPrefill, FixtureHeadsAllLengthsAndPrefixes) {
  uint32_t seed = 1;
  for (const int n : {1, 3, 17, 129, 1000})
    for (const int start : {0, 5, 130}) run_case(make(4, 1, 128, 16, start, n), seed++);
  run_case(make(4, 1, 128, 16, 0, 4097), seed++);
  run_case(make(4, 1, 128, 16, 130, 4097), seed++);
}

TEST(AttnPrefill, Llama3_8bHeads) {
  uint32_t seed = 100;
  for (const int n : {1, 17, 129, 1000})
    for (const int start : {0, 5, 130}) run_case(make(32, 8, 128, 16, start, n), seed++);
  run_case(make(32, 8, 128, 16, 5, 4097), seed++);
}

TEST(AttnPrefill, OtherGroupsBlockSizesAndHeadDim64) {
  run_case(make(8, 8, 128, 16, 5, 200), 200);    // group 1
  run_case(make(8, 4, 128, 32, 130, 129), 201);  // group 2, block_size 32
  run_case(make(8, 1, 128, 16, 3, 300), 202);    // group 8
  run_case(make(4, 1, 128, 7, 9, 100), 203);     // block_size 7: blocks straddle tiles
  run_case(make(8, 2, 64, 16, 130, 1000), 204);  // head_dim 64, group 4
  run_case(make(4, 4, 64, 16, 0, 65), 205);      // head_dim 64, group 1
}

TEST(AttnPrefill, MaxKvLenAboveTheChunk) {
  // A cache with room for more positions than the chunk reaches (they hold other values).
  Case c = make(32, 8, 128, 16, 130, 77);
  c.capacity = 1024;
  run_case(c, 300);
}

// Each (query, head) row attends to its own window (test::localized_attention), so every
// 16-position block is a large share of some row. A CPU experiment on these exact inputs (the
// double reference with one block dropped or counted twice, for every query; per block its
// most-moved row; the weakest block) found relative L2 0.093 (start 7000) and 0.057 (start 15000)
// for a dropped block, 0.092 and 0.057 for a doubled one, against <= 0.0028 from a correct
// kernel's rounding (bf16 P and bf16 output).
TEST(AttnPrefill, LocalizedInputsCatchAMissingBlock) {
  run_case(localized_case(make(32, 8, 128, 16, 7000, 129)), 600);
  run_case(localized_case(make(32, 8, 128, 16, 15000, 64)), 601);
}

int32_t read_flag(const DeviceBuffer<int32_t>& flag) { return flag.download()[0]; }

bool all_finite(const std::vector<float>& values) {
  return std::all_of(values.begin(), values.end(), [](float x) { return std::isfinite(x); });
}

// A chunk whose last query would see more than max_kv_len positions is clamped (finite output) and
// raises KERNEL_ERROR_KV_LEN_ABOVE_MAX; query_kv_len[0] < 1 raises KERNEL_ERROR_KV_LEN_BELOW_ONE;
// a chunk in range leaves the flag 0.
TEST(AttnPrefill, KvLenOutsideTheBoundRaisesTheErrorFlag) {
  Case c = make(32, 8, 128, 16, 0, 100);
  c.capacity = 160;  // max_kv_len 160: starts 0 .. 60 fit
  Fixture f(c, 700);
  DeviceBuffer<int32_t> flag(std::vector<int32_t>{0});
  for (const int start : {0, 60}) {
    f.set_start(start);
    f.d_out.poison();
    f.launch(nullptr, flag.data());
    HLLM_CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_EQ(read_flag(flag), 0) << "start " << start;
    EXPECT_TRUE(f.check()) << "start " << start;
  }
  f.set_start(61);  // the last query would see 161 > 160 positions
  f.d_out.poison();
  f.launch(nullptr, flag.data());
  HLLM_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(read_flag(flag), KERNEL_ERROR_KV_LEN_ABOVE_MAX);
  EXPECT_TRUE(all_finite(test::to_float(f.d_out.download())));

  flag.upload(std::vector<int32_t>{0});
  f.d_len.upload(std::vector<int32_t>(c.n, 0));  // query_kv_len[0] = 0: start -1
  f.d_out.poison();
  f.launch(nullptr, flag.data());
  HLLM_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(read_flag(flag), KERNEL_ERROR_KV_LEN_BELOW_ONE);
  EXPECT_TRUE(all_finite(test::to_float(f.d_out.download())));
}

TEST(AttnPrefill, GraphReplaysWithANewStart) {
  Case c = make(32, 8, 128, 16, 0, 300);
  c.capacity = 2000;
  Fixture f(c, 400);
  cudaStream_t stream;
  HLLM_CUDA_CHECK(cudaStreamCreate(&stream));
  f.launch(stream);  // the eager first call configures the kernel's shared memory
  HLLM_CUDA_CHECK(cudaStreamSynchronize(stream));
  DeviceBuffer<int32_t> flag(std::vector<int32_t>{0});
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  HLLM_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  f.launch(stream, flag.data());
  HLLM_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  HLLM_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (const int start : {0, 1, 999, 1700}) {
    std::vector<int32_t> lens(c.n);
    for (int t = 0; t < c.n; ++t) lens[t] = start + t + 1;
    f.c.start = start;
    f.d_len.upload(lens);  // same buffer the graph reads
    f.d_out.poison();
    HLLM_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    HLLM_CUDA_CHECK(cudaStreamSynchronize(stream));
    EXPECT_TRUE(f.check()) << "start " << start;
  }
  EXPECT_EQ(read_flag(flag), 0);
  // The recorded launch reports into the same flag: a start whose chunk ends past max_kv_len 2000.
  std::vector<int32_t> past(c.n);
  for (int t = 0; t < c.n; ++t) past[t] = 1701 + t + 1;
  f.d_len.upload(past);
  HLLM_CUDA_CHECK(cudaGraphLaunch(exec, stream));
  HLLM_CUDA_CHECK(cudaStreamSynchronize(stream));
  EXPECT_EQ(read_flag(flag), KERNEL_ERROR_KV_LEN_ABOVE_MAX);
  HLLM_CUDA_CHECK(cudaGraphExecDestroy(exec));
  HLLM_CUDA_CHECK(cudaGraphDestroy(graph));
  HLLM_CUDA_CHECK(cudaStreamDestroy(stream));
}

TEST(AttnPrefill, RejectsBadArguments) {
  Fixture f(make(4, 1, 128, 16, 0, 8), 500);
  auto launch = [&](int n_heads, int head_dim, int max_kv_len) {
    PagedKvView kv = f.view();
    kv.head_dim = head_dim;
    launch_attn_prefill(reinterpret_cast<const __nv_bfloat16*>(f.d_q.data()), kv, f.d_seq.data(),
                        f.d_len.data(), 8, n_heads, max_kv_len, f.scale, nullptr, 0,
                        reinterpret_cast<__nv_bfloat16*>(f.d_out.data()), nullptr);
  };
  EXPECT_THROW(launch(3, 128, 8), Error);    // 3 heads over 1 KV head: group 3
  EXPECT_THROW(launch(4, 96, 8), Error);     // head_dim 96
  EXPECT_THROW(launch(4, 128, 0), Error);    // max_kv_len 0
  EXPECT_THROW(launch(4, 128, 999), Error);  // beyond the block table
  EXPECT_EQ(attn_prefill_workspace_bytes(8, 4, 128), 0u);
}

}  // namespace
}  // namespace hllm::cuda
