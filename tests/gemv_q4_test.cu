// GPU test of kernels/hllm/cuda/gemv_q4.cuh (tensor-core INT4 GEMV, act-order gather) and
// kernels/hllm/cuda/dequant_q4.cuh against a double-precision CPU reference built from int4_weight
// (layout/int4_tiles.hpp), on random tiles (codes, fp16 scales, integer zeros), random bf16
// activations, batch 1, 2, 3 and 8, odd shapes (out = 4, 20, 1000; k_tiles 1, 3, 17, 112) and
// act-order packing (random group assignment: permuted inputs, padded tiles). Outputs are poisoned
// with NaN, with a poisoned tail past the end that must stay untouched; every element is checked.
//
// Without a GPU the whole binary prints one "skipped: no GPU (...)" line and exits 0.
#define HLLM_GPU_TEST_MAIN
#include "gpu_test_util.cuh"
// (gpu_test_util.cuh first: it defines main.)
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "hllm/core/dtype.hpp"
#include "hllm/cuda/common.cuh"
#include "hllm/cuda/dequant_q4.cuh"
#include "hllm/cuda/gemv_q4.cuh"
#include "hllm/quant/int4.hpp"
#include "int4_device.cuh"

namespace hllm::cuda {
namespace {

constexpr size_t TAIL = 64;  // poisoned elements past every output, checked untouched

class GemvQ4 : public testing::TestWithParam<Shape> {};

TEST_P(GemvQ4, MatchesDoubleReferenceForEveryBatch) {
  const Shape s = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(s.in * 131 + s.out * 7 + s.act_order));
  const Int4Matrix m = random_int4(s, rng);
  const Int4View& host = m.view();
  ASSERT_EQ(host.input_index != nullptr, s.act_order);
  const DeviceInt4 dev(host);
  const std::vector<float> dense = dequantize_int4(host);  // [out, in] via int4_weight

  for (const int batch : {1, 2, 3, 8}) {
    SCOPED_TRACE("batch " + std::to_string(batch));
    const std::vector<bf16> x = test::random_values<bf16>(static_cast<size_t>(batch * s.in), rng);
    std::vector<double> ref(static_cast<size_t>(batch * s.out));
    double max_ref = 0.0;
    for (int b = 0; b < batch; ++b)
      for (int64_t o = 0; o < s.out; ++o) {
        double sum = 0.0;
        for (int64_t i = 0; i < s.in; ++i)
          sum += double{dense[o * s.in + i]} * bf16_to_f32(x[b * s.in + i]);
        ref[b * s.out + o] = sum;
        max_ref = std::max(max_ref, std::fabs(sum));
      }

    DeviceBuffer<bf16> x_dev(x);
    DeviceBuffer<bf16> xp_dev;
    const __nv_bfloat16* xp = packed_activations(dev.view, x_dev, batch, xp_dev);

    const size_t n_out = static_cast<size_t>(batch * s.out);
    DeviceBuffer<bf16> y(n_out + TAIL);
    DeviceBuffer<float> y32(n_out + TAIL);
    y.poison();
    y32.poison();
    launch_gemv_q4(dev.view, xp, batch, nv(y), nullptr);
    launch_gemv_q4_f32(dev.view, xp, batch, y32.data(), nullptr);
    HLLM_CUDA_CHECK(cudaDeviceSynchronize());

    const std::vector<bf16> got16 = y.download();
    const std::vector<float> got32 = y32.download();
    std::vector<float> got(n_out), got_f32(got32.begin(), got32.begin() + n_out);
    for (size_t i = 0; i < n_out; ++i) got[i] = bf16_to_f32(got16[i]);
    for (size_t i = n_out; i < n_out + TAIL; ++i) {
      ASSERT_EQ(got16[i].bits, 0xffffu) << "bf16 output written past its end at " << i;
      ASSERT_TRUE(std::isnan(got32[i])) << "f32 output written past its end at " << i;
    }
    const double sqrt_in = std::sqrt(static_cast<double>(s.in));
    EXPECT_TRUE(test::all_close(got, ref, 1e-3 * sqrt_in, 1e-2)) << "bf16 output";
    // The dequantization is exact: only the fp32 summation order differs from the reference.
    EXPECT_TRUE(test::all_close(got_f32, ref, 1e-5 * sqrt_in * max_ref, 0.0)) << "f32 output";
  }
}

TEST_P(GemvQ4, DequantIsBitExact) {
  const Shape s = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(s.in * 17 + s.out));
  const Int4Matrix m = random_int4(s, rng);
  const Int4View& host = m.view();
  const DeviceInt4 dev(host);
  const int64_t packed = host.packed_in();
  const size_t n = static_cast<size_t>(s.out * packed);
  DeviceBuffer<bf16> dense(n + TAIL);
  dense.poison();
  launch_dequant_q4(dev.view, nv(dense), nullptr);
  const std::vector<bf16> got = dense.download();
  for (int64_t o = 0; o < s.out; ++o)
    for (int64_t p = 0; p < packed; ++p) {
      const uint16_t want = f32_to_bf16(int4_weight(host.tile(o / INT4_TILE_ROWS, p / INT4_TILE_K),
                                                    static_cast<int>(o % INT4_TILE_ROWS),
                                                    static_cast<int>(p % INT4_TILE_K)))
                                .bits;
      ASSERT_EQ(got[o * packed + p].bits, want) << "o " << o << " p " << p;
    }
  for (size_t i = n; i < n + TAIL; ++i) ASSERT_EQ(got[i].bits, 0xffffu) << "written past the end";
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GemvQ4,
    testing::Values(Shape{128, 4, 1, false, false},   // one strip, one tile: 3 strips missing
                    Shape{384, 20, 3, false, false},  // k_tiles 3, 5 strips (second group half)
                    Shape{14336, 1000, 112, false, true},  // down-like: k_tiles 112, sym zeros
                    Shape{2176, 36, 17, false, false},     // k_tiles 17: 8 warps, partial step
                    Shape{512, 512, 4, false, false},      // the fixtures' shapes, identity packing
                    Shape{512, 128, 4, true, false},       // ... and act-order (permuted, padded)
                    Shape{512, 768, 4, true, true},        //
                    Shape{768, 512, 6, true, false},       //
                    Shape{1000, 20, 8, true, false},       // in % 128 != 0: padding inputs
                    Shape{4096, 52, 32, false, false}),    // 4096 inputs: one full step per warp
    [](const testing::TestParamInfo<Shape>& info) { return name_of(info.param); });

TEST(GatherPacked, MatchesHostGatherForAnyBatch) {
  std::mt19937 rng(5);
  const Shape s{1000, 8, 8, true, false};
  const Int4Matrix m = random_int4(s, rng);
  const Int4View& host = m.view();
  ASSERT_NE(host.input_index, nullptr);
  const DeviceInt4 dev(host);
  const int64_t packed = host.packed_in();
  for (const int batch : {1, 3, 11}) {
    const std::vector<bf16> x = test::random_values<bf16>(static_cast<size_t>(batch * s.in), rng);
    DeviceBuffer<bf16> x_dev(x), xp(static_cast<size_t>(batch * packed) + TAIL);
    xp.poison();
    launch_gather_packed(nv(x_dev), s.in, dev.view.input_index, packed, batch, nv(xp), nullptr);
    const std::vector<bf16> got = xp.download();
    for (int b = 0; b < batch; ++b)
      for (int64_t p = 0; p < packed; ++p) {
        const int32_t i = host.input_index[p];
        const uint16_t want = i < 0 ? 0 : x[b * s.in + i].bits;
        ASSERT_EQ(got[b * packed + p].bits, want) << "batch " << batch << " b " << b << " p " << p;
      }
    for (size_t i = static_cast<size_t>(batch * packed); i < got.size(); ++i)
      ASSERT_EQ(got[i].bits, 0xffffu) << "written past the end";
  }
}

TEST(GemvQ4Arguments, AreValidated) {
  std::mt19937 rng(9);
  const Int4Matrix m = random_int4(Shape{256, 8, 2, false, false}, rng);
  const DeviceInt4 dev(m.view());
  DeviceBuffer<bf16> x(16 * 256), y(16 * 8);
  DeviceBuffer<float> y32(16 * 8);
  EXPECT_THROW(launch_gemv_q4(dev.view, nv(x), 9, nv(y), nullptr), Error);  // batch > 8
  EXPECT_THROW(launch_gemv_q4_f32(dev.view, nv(x), 9, y32.data(), nullptr), Error);
  EXPECT_THROW(launch_gemv_q4(dev.view, nv(x), 0, nv(y), nullptr), Error);
  EXPECT_THROW(launch_gemv_q4(m.view(), nv(x), 1, nv(y), nullptr), Error);  // host tiles
  EXPECT_THROW(launch_gemv_q4(dev.view, nullptr, 1, nv(y), nullptr), Error);
  EXPECT_THROW(launch_gemv_q4(dev.view, nv(x), 1, nullptr, nullptr), Error);
  EXPECT_THROW(launch_gemv_q4(dev.view, nv(x) + 1, 1, nv(y), nullptr), Error);  // misaligned
  EXPECT_THROW(launch_dequant_q4(m.view(), nv(y), nullptr), Error);
  EXPECT_THROW(launch_dequant_q4(dev.view, nullptr, nullptr), Error);
  EXPECT_THROW(launch_gather_packed(nv(x), 256, nullptr, 256, 1, nv(y), nullptr), Error);
  EXPECT_THROW(launch_gather_packed(nv(x), 0, nullptr, 256, 1, nv(y), nullptr), Error);
  // Valid calls after the failed ones still work and leave no sticky error.
  launch_gemv_q4(dev.view, nv(x), 8, nv(y), nullptr);
  HLLM_CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace
}  // namespace hllm::cuda
