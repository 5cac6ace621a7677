// GPU test of kernels/hllm/cuda/gemm_q4.cuh (tensor-core INT4 GEMM for 9+ tokens) against the CPU
// INT4 matmul (cpu/int4_matmul.hpp, fp32, on the logical input order: the act-order gather is
// checked on the way), on random INT4 matrices of every Llama-3-8B linear shape (qkv 4096 -> 6144,
// o 4096 -> 4096, gate_up 4096 -> 28672, down 14336 -> 4096; identity and act-order packing, sym
// and asym zeros) and odd small ones, token counts 9, 16, 33, 64 and 512 (4096 on o and down): the
// split-K plans and the single-slice ones, partial token blocks, padding rows. Outputs are poisoned with NaN, a
// poisoned tail past the end must stay untouched. Every row (token) within relative L2 1e-3 in
// fp32 output, 5e-3 in bf16 (its rounding); every fp32 element within 1e-5·sqrt(in)·max|ref|.
//
// Without a GPU the whole binary prints one "skipped: no GPU (...)" line and exits 0.
#define HLLM_GPU_TEST_MAIN
#include "gpu_test_util.cuh"
// (gpu_test_util.cuh first: it defines main.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "hllm/core/dtype.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/cpu/int4_matmul.hpp"
#include "hllm/cuda/common.cuh"
#include "hllm/cuda/gemm_q4.cuh"
#include "hllm/cuda/gemv_q4.cuh"
#include "hllm/quant/int4.hpp"
#include "int4_device.cuh"

namespace hllm::cuda {
namespace {

constexpr size_t TAIL = 64;  // poisoned elements past every output, checked untouched

struct Case {
  Shape shape;
  std::vector<int64_t> tokens;
};

std::string case_name(const testing::TestParamInfo<Case>& info) {
  return name_of(info.param.shape);
}

ThreadPool& cpu_pool() {
  static ThreadPool pool(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  return pool;
}

class GemmQ4 : public testing::TestWithParam<Case> {};

TEST_P(GemmQ4, MatchesCpuInt4Matmul) {
  const Case& c = GetParam();
  const Shape& s = c.shape;
  std::mt19937 rng(static_cast<uint32_t>(s.in * 31 + s.out * 3 + s.act_order + 2 * s.sym));
  const Int4Matrix m = random_int4(s, rng);
  const Int4View& host = m.view();
  const DeviceInt4 dev(host);
  std::vector<float> scratch;

  for (const int64_t n : c.tokens) {
    SCOPED_TRACE("tokens " + std::to_string(n));
    const std::vector<bf16> x = test::random_values<bf16>(static_cast<size_t>(n * s.in), rng);
    std::vector<float> xf(x.size()), ref(static_cast<size_t>(n * s.out));
    for (size_t i = 0; i < x.size(); ++i) xf[i] = bf16_to_f32(x[i]);
    cpu::matmul_int4(Tensor(xf.data(), DType::f32, {n, s.in}), host,
                     Tensor(ref.data(), DType::f32, {n, s.out}), cpu_pool(), scratch);
    const std::vector<double> ref_d(ref.begin(), ref.end());

    DeviceBuffer<bf16> x_dev(x);
    DeviceBuffer<bf16> xp_dev;
    const __nv_bfloat16* xp = packed_activations(dev.view, x_dev, n, xp_dev);
    const size_t n_out = static_cast<size_t>(n * s.out);
    const size_t ws_floats = gemm_q4_workspace_floats(dev.view, n);
    DeviceBuffer<float> workspace(std::max<size_t>(ws_floats, 1));
    workspace.poison();  // every partial the reduction reads must have been written
    DeviceBuffer<bf16> y(n_out + TAIL);
    DeviceBuffer<float> y32(n_out + TAIL);
    y.poison();
    y32.poison();
    launch_gemm_q4(dev.view, xp, n, nv(y), workspace.data(), ws_floats, nullptr);
    launch_gemm_q4_f32(dev.view, xp, n, y32.data(), workspace.data(), ws_floats, nullptr);
    HLLM_CUDA_CHECK(cudaDeviceSynchronize());

    const std::vector<bf16> got16 = y.download();
    const std::vector<float> got32 = y32.download();
    for (size_t i = n_out; i < n_out + TAIL; ++i) {
      ASSERT_EQ(got16[i].bits, 0xffffu) << "bf16 output written past its end at " << i;
      ASSERT_TRUE(std::isnan(got32[i])) << "f32 output written past its end at " << i;
    }
    std::vector<float> got(n_out), got_f32(got32.begin(), got32.begin() + n_out);
    for (size_t i = 0; i < n_out; ++i) got[i] = bf16_to_f32(got16[i]);
    EXPECT_TRUE(test::rows_close_l2(got_f32, ref_d, static_cast<size_t>(s.out), 1e-3)) << "f32";
    EXPECT_TRUE(test::rows_close_l2(got, ref_d, static_cast<size_t>(s.out), 5e-3)) << "bf16";
    // Per element too: a wrong group or row block is a small part of a row's L2 norm. The
    // dequantization is exact, so only the fp32 summation order differs from the reference.
    double max_ref = 0.0;
    for (const double r : ref_d) max_ref = std::max(max_ref, std::fabs(r));
    EXPECT_TRUE(test::all_close(got_f32, ref_d, 1e-5 * std::sqrt(double(s.in)) * max_ref, 0.0))
        << "f32, per element";
  }
}

// The GEMM and the GEMV agree where both apply (8 tokens), so the backend's switch between them
// at 8 -> 9 tokens changes nothing but rounding.
TEST(GemmQ4Consistency, EqualsGemvAtEightTokens) {
  std::mt19937 rng(3);
  const Shape s{4096, 4096, 32, true, false};
  const Int4Matrix m = random_int4(s, rng);
  const DeviceInt4 dev(m.view());
  const std::vector<bf16> x = test::random_values<bf16>(static_cast<size_t>(8 * s.in), rng);
  DeviceBuffer<bf16> x_dev(x), gathered;
  const __nv_bfloat16* xp = packed_activations(dev.view, x_dev, 8, gathered);
  const size_t ws_floats = gemm_q4_workspace_floats(dev.view, 8);
  DeviceBuffer<float> workspace(std::max<size_t>(ws_floats, 1)), gemm(8 * s.out), gemv(8 * s.out);
  launch_gemm_q4_f32(dev.view, xp, 8, gemm.data(), workspace.data(), ws_floats, nullptr);
  launch_gemv_q4_f32(dev.view, xp, 8, gemv.data(), nullptr);
  HLLM_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> a = gemm.download(), b = gemv.download();
  const std::vector<double> b_d(b.begin(), b.end());
  EXPECT_TRUE(test::rows_close_l2(a, b_d, static_cast<size_t>(s.out), 1e-5));
}

TEST(GemmQ4Arguments, AreValidated) {
  std::mt19937 rng(9);
  const Int4Matrix m = random_int4(Shape{4096, 256, 32, false, false}, rng);
  const DeviceInt4 dev(m.view());
  DeviceBuffer<bf16> x(64 * 4096), y(64 * 256);
  const size_t need = gemm_q4_workspace_floats(dev.view, 64);
  ASSERT_GT(need, 0u) << "a 256-output matrix at 64 tokens splits its k-tiles";
  DeviceBuffer<float> workspace(need);
  EXPECT_THROW(launch_gemm_q4(dev.view, nv(x), 0, nv(y), workspace.data(), need, nullptr), Error);
  EXPECT_THROW(launch_gemm_q4(m.view(), nv(x), 64, nv(y), workspace.data(), need, nullptr),
               Error);  // host tiles
  EXPECT_THROW(launch_gemm_q4(dev.view, nullptr, 64, nv(y), workspace.data(), need, nullptr),
               Error);
  EXPECT_THROW(launch_gemm_q4(dev.view, nv(x) + 1, 64, nv(y), workspace.data(), need, nullptr),
               Error);  // misaligned
  EXPECT_THROW(launch_gemm_q4(dev.view, nv(x), 64, nv(y), workspace.data(), need - 1, nullptr),
               Error);  // workspace too small
  EXPECT_THROW(launch_gemm_q4(dev.view, nv(x), 64, nv(y), nullptr, need, nullptr), Error);
  // Valid calls after the failed ones still work and leave no sticky error.
  launch_gemm_q4(dev.view, nv(x), 64, nv(y), workspace.data(), need, nullptr);
  HLLM_CUDA_CHECK(cudaDeviceSynchronize());
}

const std::vector<int64_t> DECODE_AND_CHUNK = {9, 16, 33, 64, 512};
const std::vector<int64_t> WITH_LONG_CHUNK = {9, 16, 33, 64, 512, 4096};

INSTANTIATE_TEST_SUITE_P(
    Llama3_8B, GemmQ4,
    testing::Values(Case{{4096, 6144, 32, false, false}, DECODE_AND_CHUNK},    // qkv
                    Case{{4096, 6144, 32, true, true}, DECODE_AND_CHUNK},      // qkv, act-order
                    Case{{4096, 4096, 32, false, true}, WITH_LONG_CHUNK},      // o
                    Case{{4096, 4096, 32, true, false}, DECODE_AND_CHUNK},     // o, act-order
                    Case{{4096, 28672, 32, false, false}, DECODE_AND_CHUNK},   // gate_up
                    Case{{4096, 28672, 32, true, true}, DECODE_AND_CHUNK},     // gate_up, act
                    Case{{14336, 4096, 112, false, true}, WITH_LONG_CHUNK},    // down
                    Case{{14336, 4096, 112, true, false}, DECODE_AND_CHUNK}),  // down, act
    case_name);

INSTANTIATE_TEST_SUITE_P(
    Odd, GemmQ4,
    testing::Values(Case{{128, 4, 1, false, false}, {9, 65}},         // one strip, 7 warps idle
                    Case{{384, 20, 3, false, false}, {13, 130}},      // k_tiles 3: never split
                    Case{{1000, 20, 8, true, false}, {9, 64}},        // padding inputs
                    Case{{640, 22, 5, true, true}, {9, 33}},          // padding rows in a strip
                    Case{{2176, 1000, 17, false, false}, {9, 200}}),  // 17 tiles, partial row block
    case_name);

}  // namespace
}  // namespace hllm::cuda
