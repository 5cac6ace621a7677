// GPU test of kernels/hllm/cuda/common.cuh: the bf16/fp16 conversions on the device against the
// host helpers of core/dtype.hpp (every 16-bit pattern, ~2M fp32 inputs), warp and block
// reductions against a double-precision CPU sum, 16-byte vector loads/stores, the error macros.
//
// Without a GPU the whole binary prints one "skipped: no GPU (...)" line and exits 0
// (the main of tests/gpu_test_util.cuh).
#define HLLM_GPU_TEST_MAIN
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gpu_test_util.cuh"
#include "hllm/cuda/common.cuh"

namespace hllm::cuda {
namespace {

constexpr int THREADS = 256;  // launch width of the simple element-wise test kernels

int blocks_for(size_t n) { return static_cast<int>(ceil_div<size_t>(n, THREADS)); }

bool is_nan16(uint16_t bits, int mantissa_bits) {
  const uint16_t exponent_mask = static_cast<uint16_t>(0x7fffu & ~((1u << mantissa_bits) - 1));
  const uint16_t mantissa_mask = static_cast<uint16_t>((1u << mantissa_bits) - 1);
  return (bits & exponent_mask) == exponent_mask && (bits & mantissa_mask) != 0;
}

// ---- Conversions --------------------------------------------------------------------------------

// For every 16-bit pattern i: out[.][i] = fp32 bits of widening i as bf16 / fp16, once through the
// shared dtype.hpp helpers compiled for the device and once through the hardware converts.
__global__ void widen_all_kernel(uint32_t* bf16_shared, uint32_t* bf16_native, uint32_t* f16_shared,
                                 uint32_t* f16_native) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i > 0xffffu) return;
  const auto bits = static_cast<uint16_t>(i);
  bf16_shared[i] = f32_to_bits(bf16_to_f32(bf16{bits}));
  bf16_native[i] = f32_to_bits(to_f32(to_nv(bf16{bits})));  // __bfloat162float
  f16_shared[i] = f32_to_bits(f16_to_f32(f16{bits}));
  f16_native[i] = f32_to_bits(to_f32(f16{bits}));  // cvt.f32.f16 on the device
}

__global__ void narrow_kernel(const float* in, size_t n, uint16_t* bf16_shared,
                              uint16_t* bf16_native, uint16_t* f16_shared, uint16_t* f16_native) {
  const size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float x = in[i];
  bf16_shared[i] = f32_to_bf16(x).bits;
  bf16_native[i] = from_f32<bf16>(x).bits;  // cvt.rn.bf16.f32
  f16_shared[i] = f32_to_f16(x).bits;
  f16_native[i] = from_f32<f16>(x).bits;  // cvt.rn.f16.f32
}

TEST(CudaConversions, WidenEvery16BitPatternMatchesHost) {
  constexpr size_t N = 1u << 16;
  DeviceBuffer<uint32_t> bf16_shared(N), bf16_native(N), f16_shared(N), f16_native(N);
  for (auto* b : {&bf16_shared, &bf16_native, &f16_shared, &f16_native}) b->poison();
  widen_all_kernel<<<blocks_for(N), THREADS>>>(bf16_shared.data(), bf16_native.data(),
                                               f16_shared.data(), f16_native.data());
  HLLM_CUDA_CHECK_LAUNCH();
  const auto bs = bf16_shared.download(), bn = bf16_native.download();
  const auto hs = f16_shared.download(), hn = f16_native.download();

  int failures = 0;
  for (uint32_t i = 0; i < N && failures < 10; ++i) {
    const auto bits = static_cast<uint16_t>(i);
    const uint32_t want_bf16 = f32_to_bits(bf16_to_f32(bf16{bits}));
    const uint32_t want_f16 = f32_to_bits(f16_to_f32(f16{bits}));
    // The shared helpers: the same bits on both sides, NaN payloads included.
    if (bs[i] != want_bf16 || hs[i] != want_f16) {
      ++failures;
      ADD_FAILURE() << std::hex << "pattern 0x" << i << ": bf16 shared 0x" << bs[i] << " host 0x"
                    << want_bf16 << "; f16 shared 0x" << hs[i] << " host 0x" << want_f16;
    }
    // The CUDA intrinsics (cvt.f32.bf16 on sm_90, cvt.f32.f16): the same bits, except that a NaN
    // may come back as the canonical NaN.
    const bool ok_bf16 = is_nan16(bits, 7) ? std::isnan(bits_to_f32(bn[i])) : bn[i] == want_bf16;
    const bool ok_f16 = is_nan16(bits, 10) ? std::isnan(bits_to_f32(hn[i])) : hn[i] == want_f16;
    if (!ok_bf16 || !ok_f16) {
      ++failures;
      ADD_FAILURE() << std::hex << "pattern 0x" << i << ": __bfloat162float gave 0x" << bn[i]
                    << " (host 0x" << want_bf16 << "), __half2float gave 0x" << hn[i] << " (host 0x"
                    << want_f16 << ")";
    }
  }
}

// fp32 inputs that exercise every rounding decision of both 16-bit formats.
std::vector<float> narrowing_inputs() {
  std::vector<uint32_t> bits = {
      0x00000000u, 0x80000000u,                            // +-0
      0x7f800000u, 0xff800000u,                            // +-inf
      0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u,  // quiet / signalling NaN
      0x7fffffffu, 0xffffffffu, 0x7f810000u, 0x7f80ffffu,  // NaN that truncation would make inf
      0x7f7fffffu, 0xff7fffffu,  // +-FLT_MAX (rounds to inf in bf16: above max + half ulp)
      0x7f7f7fffu, 0x7f7f8000u,  // just below / exactly at the bf16 overflow tie
      0x00800000u, 0x007fffffu, 0x00000001u, 0x80000001u,  // FLT_MIN, largest / smallest subnormal
  };
  for (float f : {65504.0f, 65519.0f, std::nextafter(65520.0f, 0.0f), 65520.0f, 65536.0f, 1e10f,
                  0x1p-14f, std::nextafter(0x1p-14f, 0.0f), 0x1p-24f, 0x1p-25f,
                  std::nextafter(0x1p-25f, 1.0f), 0x3p-26f, 0x1p-26f, 1e-30f, 0.1f, 1.0f / 3.0f}) {
    bits.push_back(f32_to_bits(f));
    bits.push_back(f32_to_bits(-f));
  }
  // bf16: each of the 65536 upper halves with the dropped 16 bits at and around the tie.
  for (uint32_t hi = 0; hi <= 0xffffu; ++hi) {
    for (uint32_t lo : {0x0000u, 0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu}) {
      bits.push_back(hi << 16 | lo);
    }
  }
  std::vector<float> out(bits.size());
  std::transform(bits.begin(), bits.end(), out.begin(), bits_to_f32);
  // fp16: the midpoint between every pair of neighbouring finite values (exact in fp32: 12
  // significant bits) and the floats on either side of it, both signs.
  for (uint16_t h = 0; h < 0x7c00u; ++h) {
    const float lo = f16_to_f32(f16{h}), hi = f16_to_f32(f16{static_cast<uint16_t>(h + 1)});
    const float mid = h + 1 == 0x7c00u ? 65520.0f : (lo + hi) / 2;  // the inf "neighbour": 65520
    for (float f : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
      out.push_back(f);
      out.push_back(-f);
    }
  }
  std::mt19937 rng(20240601);
  std::uniform_int_distribution<uint32_t> any_bits;
  std::uniform_real_distribution<float> f16_range(-70000.0f, 70000.0f);
  std::uniform_real_distribution<float> f16_subnormal(-0x1p-13f, 0x1p-13f);
  for (int i = 0; i < (1 << 20); ++i) out.push_back(bits_to_f32(any_bits(rng)));
  for (int i = 0; i < (1 << 18); ++i) out.push_back(f16_range(rng));
  for (int i = 0; i < (1 << 18); ++i) out.push_back(f16_subnormal(rng));
  return out;
}

TEST(CudaConversions, NarrowMatchesHostRoundToNearestEven) {
  const std::vector<float> inputs = narrowing_inputs();
  const size_t n = inputs.size();
  DeviceBuffer<float> in(inputs);
  DeviceBuffer<uint16_t> bf16_shared(n), bf16_native(n), f16_shared(n), f16_native(n);
  for (auto* b : {&bf16_shared, &bf16_native, &f16_shared, &f16_native}) b->poison();
  narrow_kernel<<<blocks_for(n), THREADS>>>(in.data(), n, bf16_shared.data(), bf16_native.data(),
                                            f16_shared.data(), f16_native.data());
  HLLM_CUDA_CHECK_LAUNCH();
  const auto bs = bf16_shared.download(), bn = bf16_native.download();
  const auto hs = f16_shared.download(), hn = f16_native.download();

  int failures = 0;
  for (size_t i = 0; i < n && failures < 10; ++i) {
    const float x = inputs[i];
    const uint16_t want_bf16 = f32_to_bf16(x).bits, want_f16 = f32_to_f16(x).bits;
    const bool nan = std::isnan(x);
    const bool ok =
        bs[i] == want_bf16 && hs[i] == want_f16 &&
        (nan ? is_nan16(bn[i], 7) && is_nan16(hn[i], 10) : bn[i] == want_bf16 && hn[i] == want_f16);
    if (!ok) {
      ++failures;
      ADD_FAILURE() << std::hex << "input 0x" << f32_to_bits(x) << " (" << std::dec << x << std::hex
                    << "): bf16 shared 0x" << bs[i] << " native 0x" << bn[i] << " host 0x"
                    << want_bf16 << "; f16 shared 0x" << hs[i] << " native 0x" << hn[i]
                    << " host 0x" << want_f16;
    }
  }
}

// ---- Reductions ---------------------------------------------------------------------------------

// One warp-sized group per 32 threads: every lane writes what it received.
__global__ void warp_reduce_kernel(const float* x, float* sum32, float* max32, float* sum8) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const float v = x[i];
  sum32[i] = warp_sum(v);
  max32[i] = warp_max(v);
  sum8[i] = warp_sum<8>(v);
}

// One block per row of n elements. Every thread writes the block results it received; the second
// block_sum (of the per-thread element counts) checks that consecutive calls do not race.
template <int BLOCK>
__global__ void block_reduce_kernel(const float* x, int n, float* sums, float* maxes,
                                    float* counts) {
  const float* row = x + static_cast<size_t>(blockIdx.x) * n;
  float s = 0.0f, m = MaxOp::IDENTITY, c = 0.0f;
  for (int i = static_cast<int>(threadIdx.x); i < n; i += BLOCK) {
    s += row[i];
    m = fmaxf(m, row[i]);
    c += 1.0f;
  }
  s = block_sum<BLOCK>(s);
  m = block_max<BLOCK>(m);
  c = block_sum<BLOCK>(c);
  const size_t out = static_cast<size_t>(blockIdx.x) * BLOCK + threadIdx.x;
  sums[out] = s;
  maxes[out] = m;
  counts[out] = c;
}

std::vector<float> random_floats(size_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

TEST(CudaReductions, WarpSumAndMaxGiveEveryLaneTheGroupResult) {
  constexpr int N = 32 * 64;
  std::mt19937 rng(7);
  const std::vector<float> x = random_floats(N, rng, -1.0f, 2.0f);
  DeviceBuffer<float> dx(x), sum32(N), max32(N), sum8(N);
  for (auto* b : {&sum32, &max32, &sum8}) b->poison();
  warp_reduce_kernel<<<N / THREADS, THREADS>>>(dx.data(), sum32.data(), max32.data(), sum8.data());
  HLLM_CUDA_CHECK_LAUNCH();
  const auto s32 = sum32.download(), m32 = max32.download(), s8 = sum8.download();
  for (int i = 0; i < N; ++i) {
    for (int width : {32, 8}) {
      const int group = i / width * width;
      double sum = 0, sum_abs = 0;
      float max = -INFINITY;
      for (int j = group; j < group + width; ++j) {
        sum += x[j];
        sum_abs += std::abs(x[j]);
        max = std::max(max, x[j]);
      }
      const double tol = 1e-6 + 1e-6 * sum_abs;  // 5 fp32 adds: ~5 * 6e-8 relative
      const float got = width == 32 ? s32[i] : s8[i];
      ASSERT_NEAR(got, sum, tol) << "lane " << i << " width " << width;
      if (width == 32) ASSERT_EQ(m32[i], max) << "lane " << i;
    }
  }
}

template <int BLOCK>
void check_block_reduce(int n, int rows, std::mt19937& rng) {
  SCOPED_TRACE(testing::Message() << "BLOCK=" << BLOCK << " n=" << n);
  const std::vector<float> x = random_floats(static_cast<size_t>(n) * rows, rng, -1.0f, 2.0f);
  const size_t n_out = static_cast<size_t>(rows) * BLOCK;
  DeviceBuffer<float> dx(x), sums(n_out), maxes(n_out), counts(n_out);
  for (auto* b : {&sums, &maxes, &counts}) b->poison();
  block_reduce_kernel<BLOCK>
      <<<rows, BLOCK>>>(dx.data(), n, sums.data(), maxes.data(), counts.data());
  HLLM_CUDA_CHECK_LAUNCH();
  const auto s = sums.download(), m = maxes.download(), c = counts.download();
  for (int r = 0; r < rows; ++r) {
    double sum = 0, sum_abs = 0;
    float max = -INFINITY;
    for (int i = 0; i < n; ++i) {
      const float v = x[static_cast<size_t>(r) * n + i];
      sum += v;
      sum_abs += std::abs(v);
      max = std::max(max, v);
    }
    // fp32: ceil(n / BLOCK) sequential adds per thread, then log2(BLOCK) tree levels.
    const double tol = 1e-5 + 1e-5 * sum_abs;
    for (int t = 0; t < BLOCK; ++t) {
      const size_t o = static_cast<size_t>(r) * BLOCK + t;
      ASSERT_NEAR(s[o], sum, tol) << "row " << r << " thread " << t;
      ASSERT_EQ(m[o], max) << "row " << r << " thread " << t;
      ASSERT_EQ(c[o], static_cast<float>(n)) << "row " << r << " thread " << t;
    }
  }
}

TEST(CudaReductions, BlockSumAndMaxOverOddSizes) {
  std::mt19937 rng(11);
  for (int n : {1, 31, 33, 97, 1000, 4097, 12345}) {
    check_block_reduce<96>(n, 5, rng);    // 3 warps: fewer partials than lanes
    check_block_reduce<1024>(n, 3, rng);  // 32 warps: every lane holds a partial
  }
}

// ---- Vector loads and stores --------------------------------------------------------------------

enum class Access : int { plain, stream, no_allocate };

__global__ void copy16_kernel(const uint4* in, uint4* out, int n, Access access) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  switch (access) {
    case Access::plain:
      store16(out + i, load16(in + i));
      break;
    case Access::stream:
      store16_stream(out + i, load16_stream(in + i));
      break;
    case Access::no_allocate:
      store16(out + i, load16_no_allocate(in + i));
      break;
  }
}

// Widens 8 bf16 per thread through Pack16: one 16-byte load in, two 16-byte stores out.
__global__ void widen_pack_kernel(const bf16* in, float* out, int n_packs) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n_packs) return;
  const Pack16<bf16> p = load_pack_stream(in + i * Pack16<bf16>::N);
  Pack16<float> lo, hi;
#pragma unroll
  for (int j = 0; j < Pack16<float>::N; ++j) {
    lo.elem[j] = to_f32(p.elem[j]);
    hi.elem[j] = to_f32(p.elem[j + Pack16<float>::N]);
  }
  store_pack(out + i * Pack16<bf16>::N, lo);
  store_pack(out + i * Pack16<bf16>::N + Pack16<float>::N, hi);
}

TEST(CudaVectorAccess, LoadsAndStoresRoundTripEveryByte) {
  constexpr int N = 100003;  // 16-byte vectors; odd, so the last block is partial
  std::mt19937 rng(3);
  std::uniform_int_distribution<uint32_t> any;
  std::vector<uint4> host(N);
  for (uint4& v : host) v = uint4{any(rng), any(rng), any(rng), any(rng)};
  DeviceBuffer<uint4> in(host);
  for (Access access : {Access::plain, Access::stream, Access::no_allocate}) {
    DeviceBuffer<uint4> out(N);
    out.poison();
    copy16_kernel<<<blocks_for(N), THREADS>>>(in.data(), out.data(), N, access);
    HLLM_CUDA_CHECK_LAUNCH();
    const auto got = out.download();
    for (int i = 0; i < N; ++i) {
      ASSERT_TRUE(got[i].x == host[i].x && got[i].y == host[i].y && got[i].z == host[i].z &&
                  got[i].w == host[i].w)
          << "vector " << i << " access " << static_cast<int>(access);
    }
  }
}

TEST(CudaVectorAccess, PackOfBf16WidensLikeTheHost) {
  constexpr int N_PACKS = 4099;
  constexpr int N = N_PACKS * Pack16<bf16>::N;
  std::mt19937 rng(5);
  std::uniform_int_distribution<uint32_t> any(0, 0xffff);
  std::vector<bf16> host(N);
  for (bf16& b : host) b = bf16{static_cast<uint16_t>(any(rng))};
  DeviceBuffer<bf16> in(host);
  DeviceBuffer<float> out(N);
  out.poison();
  widen_pack_kernel<<<blocks_for(N_PACKS), THREADS>>>(in.data(), out.data(), N_PACKS);
  HLLM_CUDA_CHECK_LAUNCH();
  const auto got = out.download();
  for (int i = 0; i < N; ++i) {
    ASSERT_EQ(f32_to_bits(got[i]), f32_to_bits(bf16_to_f32(host[i]))) << "element " << i;
  }
}

// ---- Errors and DeviceBuffer --------------------------------------------------------------------

__global__ void empty_kernel() {}

template <typename F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no hllm::Error thrown)";
}

TEST(CudaErrors, CheckThrowsWithExpressionFileAndReason) {
  const std::string message = error_message([] { HLLM_CUDA_CHECK(cudaSetDevice(-1)); });
  EXPECT_NE(message.find("cudaSetDevice(-1)"), std::string::npos) << message;
  EXPECT_NE(message.find("cuda_common_test.cu:"), std::string::npos) << message;
  EXPECT_NE(message.find("cudaErrorInvalidDevice"), std::string::npos) << message;
  HLLM_CUDA_CHECK(cudaDeviceSynchronize());  // the context is still usable
}

TEST(CudaErrors, LaunchCheckCatchesABadConfigurationAndClearsIt) {
  empty_kernel<<<1, 2 * MAX_BLOCK_THREADS>>>();  // more threads per block than any GPU allows
  const std::string message = error_message([] { HLLM_CUDA_CHECK_LAUNCH(); });
  EXPECT_NE(message.find("kernel launch"), std::string::npos) << message;
  EXPECT_NE(message.find("cudaErrorInvalidConfiguration"), std::string::npos) << message;
  empty_kernel<<<1, 32>>>();
  EXPECT_NO_THROW(HLLM_CUDA_CHECK_LAUNCH());
  EXPECT_NO_THROW(HLLM_CUDA_CHECK(cudaDeviceSynchronize()));
}

TEST(CudaErrors, CublasCheckThrowsOnAnInvalidCall) {
  cublasHandle_t handle = nullptr;
  HLLM_CUBLAS_CHECK(cublasCreate(&handle));
  const float one = 1.0f;
  const std::string message = error_message([&] {
    // m = -1 is invalid; cuBLAS checks the arguments before touching any pointer.
    HLLM_CUBLAS_CHECK(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, -1, 1, 1, &one, nullptr, 1,
                                  nullptr, 1, &one, nullptr, 1));
  });
  HLLM_CUBLAS_CHECK(cublasDestroy(handle));
  EXPECT_NE(message.find("CUBLAS_STATUS_INVALID_VALUE"), std::string::npos) << message;
  EXPECT_NE(message.find("cublasSgemm"), std::string::npos) << message;
}

TEST(CudaDeviceBuffer, MoveUploadDownloadAndErrors) {
  const std::vector<float> values = {1.5f, -2.0f, 3.25f};
  DeviceBuffer<float> a(values);
  const float* p = a.data();
  DeviceBuffer<float> b(std::move(a));
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(b.download(), values);
  DeviceBuffer<float> c;
  c = std::move(b);
  EXPECT_EQ(c.size(), 3u);
  EXPECT_EQ(c.size_bytes(), 12u);
  EXPECT_EQ(c.download(), values);

  EXPECT_THROW(c.upload(std::vector<float>(4)), Error);  // size mismatch
  std::vector<float> too_small(2);
  EXPECT_THROW(c.download(std::span<float>(too_small)), Error);
  EXPECT_THROW(DeviceBuffer<float>(size_t{1} << 60), Error);  // 4 EiB: no GPU has that
  HLLM_CUDA_CHECK(cudaDeviceSynchronize());  // the failed allocation left no sticky error

  DeviceBuffer<float> empty(0);
  EXPECT_TRUE(empty.download().empty());
  empty.poison();
}

}  // namespace
}  // namespace hllm::cuda
