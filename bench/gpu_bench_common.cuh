// What the CUDA benchmarks share: device-event timing of one launch per benchmark iteration, the
// measured copy bandwidth that every memory-bound kernel is compared with (the roofline ceiling),
// and rotation over several input sets so repeated runs are not served from the 50-60 MB L2.
//
// Use in a benchmark:
//   EventTimer timer;                       // once, before the loop
//   for (auto _ : state) {
//     timer.start(); launch(...); state.SetIterationTime(timer.stop_seconds());
//   }
//   report_bandwidth(state, bytes_per_launch);   // GB/s and % of copy_bandwidth_gbps()
// and register it with ->UseManualTime().
#pragma once

#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "hllm/cuda/common.cuh"

namespace hllm::bench {

// Device events around a region of the default stream (or `stream`).
class EventTimer {
 public:
  EventTimer() {
    HLLM_CUDA_CHECK(cudaEventCreate(&start_));
    HLLM_CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~EventTimer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;

  void start(cudaStream_t stream = nullptr) { HLLM_CUDA_CHECK(cudaEventRecord(start_, stream)); }
  double stop_seconds(cudaStream_t stream = nullptr) {
    HLLM_CUDA_CHECK(cudaEventRecord(stop_, stream));
    HLLM_CUDA_CHECK(cudaEventSynchronize(stop_));
    float ms = 0.0f;
    HLLM_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    return static_cast<double>(ms) * 1e-3;
  }

 private:
  cudaEvent_t start_{}, stop_{};
};

// Input sets of `bytes_each` rotated so that one set's bytes have left L2 before it is read again:
// enough sets to cover `min_total` bytes (default 4× a 60 MB L2).
inline int rotation_count(size_t bytes_each, size_t min_total = size_t{256} << 20) {
  return static_cast<int>(
      std::clamp<size_t>(min_total / std::max<size_t>(bytes_each, 1) + 1, 1, 64));
}

// Device-to-device copy bandwidth in GB/s (bytes read + bytes written per second), the median of
// 15 copies of 1 GiB after a warm-up; measured once per process. This is the ceiling memory-bound
// kernels are reported against ("% of copy").
inline double copy_bandwidth_gbps() {
  static const double measured = [] {
    constexpr size_t BYTES = size_t{1} << 30;
    cuda::DeviceBuffer<uint8_t> src(BYTES), dst(BYTES);
    HLLM_CUDA_CHECK(cudaMemset(src.data(), 1, BYTES));
    EventTimer timer;
    std::vector<double> seconds;
    for (int i = 0; i < 17; ++i) {
      timer.start();
      HLLM_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), BYTES, cudaMemcpyDeviceToDevice));
      const double s = timer.stop_seconds();
      if (i >= 2) seconds.push_back(s);
    }
    std::sort(seconds.begin(), seconds.end());
    return 2.0 * static_cast<double>(BYTES) / seconds[seconds.size() / 2] * 1e-9;
  }();
  return measured;
}

// Adds GB/s and % of the copy bandwidth for `bytes` moved per iteration.
inline void report_bandwidth(benchmark::State& state, double bytes) {
  state.counters["GB/s"] =
      benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["copy_GB/s"] = copy_bandwidth_gbps();
  state.counters["bytes"] = bytes;
}

// % of copy bandwidth is derived from the per-iteration time Google Benchmark measured; call after
// the loop, with that median-friendly manual time: pct = bytes / time / copy.
inline void report_percent_of_copy(benchmark::State& state, double bytes, double seconds) {
  state.counters["pct_copy"] = 100.0 * bytes / seconds * 1e-9 / copy_bandwidth_gbps();
}

// ---- Device-side random inputs (hundreds of MB: filling on the host would dominate the run) ----

// A 32-bit hash of (index, seed): cheap per-element randomness on the device.
__device__ inline uint32_t hash32(uint64_t i, uint32_t seed) {
  uint32_t h = static_cast<uint32_t>(i) * 0x9E3779B1u ^ static_cast<uint32_t>(i >> 32) ^ seed;
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return h;
}

template <typename Unused = void>
__global__ void fill_random_bf16_kernel(__nv_bfloat16* x, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] = __float2bfloat16(static_cast<float>(hash32(i, seed) & 0xFFFFu) / 32768.0f - 1.0f);
}

// n bf16 values in [-1, 1) (timing inputs: never zeros, which can run faster than real data).
inline void fill_random_bf16(void* x, int64_t n, uint32_t seed) {
  fill_random_bf16_kernel<<<1024, 256>>>(static_cast<__nv_bfloat16*>(x), n, seed);
  HLLM_CUDA_CHECK_LAUNCH();
}

// Median of a vector of per-launch times (seconds).
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// main() of a GPU benchmark binary: on a machine without a GPU one "skipped: no GPU" line and exit
// 0 (as the GPU tests do); otherwise `register_benchmarks` (for shapes registered at run time) and
// Google Benchmark's usual run.
inline int gpu_benchmark_main(int argc, char** argv, void (*register_benchmarks)() = nullptr) {
  cudaError_t why = cudaSuccess;
  if (cuda::device_count(&why) == 0) {
    std::printf("skipped: no GPU (%s: %s)\n", cudaGetErrorName(why), cudaGetErrorString(why));
    return 0;
  }
  if (register_benchmarks != nullptr) register_benchmarks();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace hllm::bench
