// CUDA INT4 matmuls on the Llama-3-8B linear layers:
// - gemv_q4 (kernels/hllm/cuda/gemv_q4.cuh, batch 1..8) against the device-to-device copy bandwidth
//   (the ceiling of a kernel that reads its weights once) and cuBLAS bf16 GEMV on the same shapes;
// - gemm_q4 (gemm_q4.cuh, 9+ tokens) beside cuBLAS bf16 GEMM on the same shape and beside what it
//   replaces, dequant_q4 + cuBLAS (the INT4 -> bf16 expansion of the whole layer, then the GEMM),
//   at 16 .. 4096 tokens: TFLOP/s (2 · tokens · in · out per call) and GB/s;
// - dequant_q4 alone.
//
// bytes per call = tiles (272 B per 4 × 128 weights: codes, scales, zeros) + x + y. Each timed
// iteration is LAUNCHES back-to-back launches (as a decode step's graph runs them) over weight sets
// rotated through > 256 MB, so every launch reads its weights from DRAM; time is per launch.
// Counters: GB/s, pct_copy (% of copy_GB/s, the measured device-to-device copy bandwidth).
//
//   ./build/bench/int4_matmul_bench --benchmark_min_time=0.05 --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>
#include <cublas_v2.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "gpu_bench_common.cuh"
#include "hllm/cuda/common.cuh"
#include "hllm/cuda/dequant_q4.cuh"
#include "hllm/cuda/gemm_q4.cuh"
#include "hllm/cuda/gemv_q4.cuh"
#include "hllm/quant/int4.hpp"

namespace {

using hllm::int4_tile;
using hllm::Int4View;
using hllm::cuda::DeviceBuffer;

constexpr int LAUNCHES = 20;  // launches per timed iteration: steady state, launch gaps hidden

// Tiles as 16-byte chunks: chunk 0 of a tile is its header (4 scales in [2^-8, 2^-7), 4 zeros
// 0..15 as fp16), chunks 1..16 random codes.
__global__ void fill_tiles_kernel(uint4* chunks, int64_t n_chunks, uint32_t seed) {
  constexpr int CHUNKS_PER_TILE = sizeof(int4_tile) / 16;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n_chunks;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint32_t h[4] = {hllm::bench::hash32(4 * i, seed), hllm::bench::hash32(4 * i + 1, seed),
                           hllm::bench::hash32(4 * i + 2, seed),
                           hllm::bench::hash32(4 * i + 3, seed)};
    if (i % CHUNKS_PER_TILE != 0) {
      chunks[i] = make_uint4(h[0], h[1], h[2], h[3]);
      continue;
    }
    uint32_t w[4];
    for (int j = 0; j < 2; ++j) {
      const uint32_t s0 = 0x1C00u | (h[j] & 0x3FFu), s1 = 0x1C00u | ((h[j] >> 10) & 0x3FFu);
      w[j] = s0 | (s1 << 16);
      const uint32_t z0 = __half_as_ushort(__float2half(static_cast<float>(h[j + 2] % 16)));
      const uint32_t z1 = __half_as_ushort(__float2half(static_cast<float>((h[j + 2] >> 8) % 16)));
      w[j + 2] = z0 | (z1 << 16);
    }
    chunks[i] = make_uint4(w[0], w[1], w[2], w[3]);
  }
}

void fill_tiles(DeviceBuffer<int4_tile>& tiles, uint32_t seed) {
  const int64_t n_chunks = static_cast<int64_t>(tiles.size_bytes() / 16);
  fill_tiles_kernel<<<1024, 256>>>(reinterpret_cast<uint4*>(tiles.data()), n_chunks, seed);
  HLLM_CUDA_CHECK_LAUNCH();
}

// R random copies of one [out, in] INT4 matrix (identity packing), R covering > 256 MB.
struct Int4Sets {
  Int4View view;  // shape; tiles of set i: sets[i]
  std::vector<DeviceBuffer<int4_tile>> sets;

  Int4Sets(int64_t in, int64_t out) {
    view.in = in;
    view.out = out;
    view.k_tiles = in / hllm::INT4_TILE_K;
    view.device = hllm::Device::cuda;
    const int count = hllm::bench::rotation_count(view.nbytes());
    for (int i = 0; i < count; ++i) {
      sets.emplace_back(static_cast<size_t>(view.n_tiles()));
      fill_tiles(sets.back(), 1234u + static_cast<uint32_t>(i));
    }
  }
  Int4View at(size_t i) const {
    Int4View v = view;
    v.tiles = sets[i % sets.size()].data();
    return v;
  }
};

// Times `launch(i)` LAUNCHES times per iteration (i counts launches); per-launch time.
template <typename Launch>
void run_timed(benchmark::State& state, double bytes, Launch&& launch) {
  for (int i = 0; i < 2 * LAUNCHES; ++i) launch(static_cast<size_t>(i));  // warm-up
  HLLM_CUDA_CHECK(cudaDeviceSynchronize());
  hllm::bench::EventTimer timer;
  std::vector<double> seconds;
  size_t count = 0;
  for (auto _ : state) {
    timer.start();
    for (int i = 0; i < LAUNCHES; ++i) launch(count++);
    const double s = timer.stop_seconds() / LAUNCHES;
    state.SetIterationTime(s);
    seconds.push_back(s);
  }
  hllm::bench::report_bandwidth(state, bytes);
  hllm::bench::report_percent_of_copy(state, bytes, hllm::bench::median(seconds));
}

// ---- gemv_q4 ------------------------------------------------------------------------------------

enum class Config { dispatch, w4u4, w8u2, w8u4, w16u2 };

template <typename OutT>
void launch_config(Config c, const Int4View& w, const __nv_bfloat16* x, int batch, OutT* y) {
  using namespace hllm::cuda::detail;
  switch (c) {
    case Config::dispatch:
      if constexpr (std::is_same_v<OutT, float>)
        return hllm::cuda::launch_gemv_q4_f32(w, x, batch, y, nullptr);
      else
        return hllm::cuda::launch_gemv_q4(w, x, batch, y, nullptr);
    case Config::w4u4:
      return gemv_q4_launch<4, 4>(w, x, batch, y, nullptr);
    case Config::w8u2:
      return gemv_q4_launch<8, 2>(w, x, batch, y, nullptr);
    case Config::w8u4:
      return gemv_q4_launch<8, 4>(w, x, batch, y, nullptr);
    case Config::w16u2:
      return gemv_q4_launch<16, 2>(w, x, batch, y, nullptr);
  }
}

template <typename OutT>
void BM_GemvQ4(benchmark::State& state, int64_t in, int64_t out, int batch, Config config) {
  const Int4Sets weights(in, out);
  DeviceBuffer<hllm::bf16> x(static_cast<size_t>(batch * in));
  DeviceBuffer<OutT> y(static_cast<size_t>(batch * out));
  auto* xp = reinterpret_cast<__nv_bfloat16*>(x.data());
  hllm::bench::fill_random_bf16(xp, batch * in, 7);
  const double bytes = static_cast<double>(weights.view.nbytes()) + 2.0 * batch * in +
                       static_cast<double>(sizeof(OutT)) * batch * out;
  run_timed(state, bytes,
            [&](size_t i) { launch_config(config, weights.at(i), xp, batch, y.data()); });
  state.counters["sets"] = static_cast<double>(weights.sets.size());
}

// ---- cuBLAS bf16 GEMV, the dense baseline -------------------------------------------------------

void BM_CublasGemvBf16(benchmark::State& state, int64_t in, int64_t out) {
  const size_t weights = static_cast<size_t>(in * out);
  const int count = hllm::bench::rotation_count(weights * 2);
  std::vector<DeviceBuffer<hllm::bf16>> sets;
  for (int i = 0; i < count; ++i) {
    sets.emplace_back(weights);
    hllm::bench::fill_random_bf16(reinterpret_cast<__nv_bfloat16*>(sets.back().data()),
                                  static_cast<int64_t>(weights), 99u + static_cast<uint32_t>(i));
  }
  DeviceBuffer<hllm::bf16> x(static_cast<size_t>(in)), y(static_cast<size_t>(out));
  hllm::bench::fill_random_bf16(reinterpret_cast<__nv_bfloat16*>(x.data()), in, 7);
  cublasHandle_t handle;
  HLLM_CUBLAS_CHECK(cublasCreate(&handle));
  const float alpha = 1.0f, beta = 0.0f;
  // Column-major view: W [out, in] row-major is [in, out] with lda = in; y = Wᵀᵀ x = op_T(W) x.
  run_timed(state, 2.0 * static_cast<double>(weights + in + out), [&](size_t i) {
    HLLM_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out), 1,
                                   static_cast<int>(in), &alpha, sets[i % sets.size()].data(),
                                   CUDA_R_16BF, static_cast<int>(in), x.data(), CUDA_R_16BF,
                                   static_cast<int>(in), &beta, y.data(), CUDA_R_16BF,
                                   static_cast<int>(out), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  });
  HLLM_CUBLAS_CHECK(cublasDestroy(handle));
}

// ---- gemm_q4 and its dense baselines, n tokens ----------------------------------------------------

void report_flops(benchmark::State& state, double flops) {
  state.counters["TFLOP/s"] =
      benchmark::Counter(flops * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_GemmQ4(benchmark::State& state, int64_t in, int64_t out, int64_t n) {
  const Int4Sets weights(in, out);
  DeviceBuffer<hllm::bf16> x(static_cast<size_t>(n * in)), y(static_cast<size_t>(n * out));
  auto* xp = reinterpret_cast<__nv_bfloat16*>(x.data());
  hllm::bench::fill_random_bf16(xp, n * in, 7);
  const size_t ws_floats = hllm::cuda::gemm_q4_workspace_floats(weights.view, n);
  DeviceBuffer<float> workspace(std::max<size_t>(ws_floats, 1));
  const double bytes = static_cast<double>(weights.view.nbytes()) + 2.0 * n * (in + out);
  run_timed(state, bytes, [&](size_t i) {
    hllm::cuda::launch_gemm_q4(weights.at(i), xp, n, reinterpret_cast<__nv_bfloat16*>(y.data()),
                               workspace.data(), ws_floats, nullptr);
  });
  report_flops(state, 2.0 * static_cast<double>(n * in * out));
  const hllm::GemmQ4Plan plan =
      hllm::plan_gemm_q4(out, weights.view.k_tiles, n, hllm::cuda::device_sm_count());
  state.counters["blocks"] = static_cast<double>(plan.blocks());
  state.counters["splits"] = static_cast<double>(plan.splits);
}

// y [n, out] = x [n, in] · Wᵀ with cuBLAS bf16 (column-major: W row-major [out, in] is [in, out]
// with lda = in; op_T(W) · x).
void cublas_gemm_bf16(cublasHandle_t handle, const void* w, const void* x, void* y, int64_t in,
                      int64_t out, int64_t n) {
  const float alpha = 1.0f, beta = 0.0f;
  HLLM_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out),
                                 static_cast<int>(n), static_cast<int>(in), &alpha, w, CUDA_R_16BF,
                                 static_cast<int>(in), x, CUDA_R_16BF, static_cast<int>(in), &beta,
                                 y, CUDA_R_16BF, static_cast<int>(out), CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT));
}

void BM_CublasGemmBf16(benchmark::State& state, int64_t in, int64_t out, int64_t n) {
  const size_t weights = static_cast<size_t>(in * out);
  const int count = hllm::bench::rotation_count(weights * 2);
  std::vector<DeviceBuffer<hllm::bf16>> sets;
  for (int i = 0; i < count; ++i) {
    sets.emplace_back(weights);
    hllm::bench::fill_random_bf16(sets.back().data(), static_cast<int64_t>(weights),
                                  99u + static_cast<uint32_t>(i));
  }
  DeviceBuffer<hllm::bf16> x(static_cast<size_t>(n * in)), y(static_cast<size_t>(n * out));
  hllm::bench::fill_random_bf16(x.data(), n * in, 7);
  cublasHandle_t handle;
  HLLM_CUBLAS_CHECK(cublasCreate(&handle));
  run_timed(state, 2.0 * static_cast<double>(weights + n * (in + out)), [&](size_t i) {
    cublas_gemm_bf16(handle, sets[i % sets.size()].data(), x.data(), y.data(), in, out, n);
  });
  report_flops(state, 2.0 * static_cast<double>(n * in * out));
  HLLM_CUBLAS_CHECK(cublasDestroy(handle));
}

// What the CUDA backend did for 9+ tokens before gemm_q4: dequantize the layer to bf16, then cuBLAS.
void BM_DequantCublas(benchmark::State& state, int64_t in, int64_t out, int64_t n) {
  const Int4Sets weights(in, out);
  DeviceBuffer<hllm::bf16> dense(static_cast<size_t>(out * weights.view.packed_in()));
  DeviceBuffer<hllm::bf16> x(static_cast<size_t>(n * in)), y(static_cast<size_t>(n * out));
  hllm::bench::fill_random_bf16(x.data(), n * in, 7);
  cublasHandle_t handle;
  HLLM_CUBLAS_CHECK(cublasCreate(&handle));
  const double bytes =
      static_cast<double>(weights.view.nbytes() + 2 * dense.size_bytes()) + 2.0 * n * (in + out);
  run_timed(state, bytes, [&](size_t i) {
    hllm::cuda::launch_dequant_q4(weights.at(i), reinterpret_cast<__nv_bfloat16*>(dense.data()),
                                  nullptr);
    cublas_gemm_bf16(handle, dense.data(), x.data(), y.data(), in, out, n);
  });
  report_flops(state, 2.0 * static_cast<double>(n * in * out));
  HLLM_CUBLAS_CHECK(cublasDestroy(handle));
}

// ---- dequant_q4 ---------------------------------------------------------------------------------

void BM_DequantQ4(benchmark::State& state, int64_t in, int64_t out) {
  const Int4Sets weights(in, out);
  DeviceBuffer<hllm::bf16> dense(static_cast<size_t>(out * weights.view.packed_in()));
  auto* d = reinterpret_cast<__nv_bfloat16*>(dense.data());
  run_timed(state, static_cast<double>(weights.view.nbytes() + dense.size_bytes()),
            [&](size_t i) { hllm::cuda::launch_dequant_q4(weights.at(i), d, nullptr); });
}

struct Layer {
  const char* name;
  int64_t in, out;
};

// Llama-3-8B linear layers (in × out); o_proj has q_proj's shape.
constexpr Layer LAYERS[] = {
    {"q_o", 4096, 4096},
    {"k_v", 4096, 1024},
    {"qkv", 4096, 6144},
    {"gate_up", 4096, 14336},
    {"gate_up_fused", 4096, 28672},
    {"down", 14336, 4096},
    {"lm_head", 4096, 128256},
};

void register_all() {
  const auto reg = [](const std::string& name, auto&& fn) {
    benchmark::RegisterBenchmark(name.c_str(), fn)->UseManualTime()->Unit(benchmark::kMicrosecond);
  };
  for (const Layer& l : LAYERS) {
    const std::string shape =
        std::string(l.name) + "/" + std::to_string(l.in) + "x" + std::to_string(l.out);
    reg("gemv_q4/" + shape + "/batch:1", [l](benchmark::State& s) {
      BM_GemvQ4<__nv_bfloat16>(s, l.in, l.out, 1, Config::dispatch);
    });
  }
  reg("gemv_q4_f32/lm_head/4096x128256/batch:1",
      [](benchmark::State& s) { BM_GemvQ4<float>(s, 4096, 128256, 1, Config::dispatch); });
  for (const Layer& l : {Layer{"qkv", 4096, 6144}, Layer{"down", 14336, 4096}}) {
    reg("gemv_q4/" + std::string(l.name) + "/" + std::to_string(l.in) + "x" +
            std::to_string(l.out) + "/batch:8",
        [l](benchmark::State& s) {
          BM_GemvQ4<__nv_bfloat16>(s, l.in, l.out, 8, Config::dispatch);
        });
  }
  // Configuration sweep (warps per block × tiles in flight per warp) for tuning the dispatch.
  const std::pair<const char*, Config> configs[] = {{"w4u4", Config::w4u4},
                                                    {"w8u2", Config::w8u2},
                                                    {"w8u4", Config::w8u4},
                                                    {"w16u2", Config::w16u2}};
  for (const auto& [cname, config] : configs)
    for (const Layer& l : {Layer{"gate_up", 4096, 14336}, Layer{"down", 14336, 4096}}) {
      reg("gemv_q4_config/" + std::string(cname) + "/" + l.name + "/batch:1",
          [l, config](benchmark::State& s) {
            BM_GemvQ4<__nv_bfloat16>(s, l.in, l.out, 1, config);
          });
    }
  reg("cublas_gemv_bf16/gate_up/4096x14336/batch:1",
      [](benchmark::State& s) { BM_CublasGemvBf16(s, 4096, 14336); });
  reg("cublas_gemv_bf16/lm_head/4096x128256/batch:1",
      [](benchmark::State& s) { BM_CublasGemvBf16(s, 4096, 128256); });
  reg("dequant_q4/gate_up/4096x14336", [](benchmark::State& s) { BM_DequantQ4(s, 4096, 14336); });

  // gemm_q4 beside cuBLAS bf16 and dequant + cuBLAS, decode batches to prefill chunks.
  for (const Layer& l :
       {Layer{"qkv", 4096, 6144}, Layer{"gate_up_fused", 4096, 28672}, Layer{"down", 14336, 4096}})
    for (const int64_t n : {16, 32, 64, 128, 512, 1024, 4096}) {
      const std::string shape = std::string(l.name) + "/" + std::to_string(l.in) + "x" +
                                std::to_string(l.out) + "/tokens:" + std::to_string(n);
      reg("gemm_q4/" + shape, [l, n](benchmark::State& s) { BM_GemmQ4(s, l.in, l.out, n); });
      reg("cublas_gemm_bf16/" + shape,
          [l, n](benchmark::State& s) { BM_CublasGemmBf16(s, l.in, l.out, n); });
      reg("dequant_cublas/" + shape,
          [l, n](benchmark::State& s) { BM_DequantCublas(s, l.in, l.out, n); });
    }
}

}  // namespace

int main(int argc, char** argv) {
  return hllm::bench::gpu_benchmark_main(argc, argv, register_all);
}
