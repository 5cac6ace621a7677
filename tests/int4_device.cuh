// Random INT4 matrices (identity or act-order packing, sym or asym zeros), their copy in device
// memory and the activations as the kernels read them, for the GPU tests of the INT4 kernels
// (gemv_q4_test.cu, gemm_q4_test.cu).
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "gpu_test_util.cuh"
#include "hllm/core/dtype.hpp"
#include "hllm/cuda/common.cuh"
#include "hllm/cuda/gemv_q4.cuh"
#include "hllm/quant/int4.hpp"

namespace hllm::cuda {
namespace {

struct Shape {
  int64_t in, out, n_groups;
  bool act_order;  // random group per input (permuted, padded tiles) vs contiguous groups
  bool sym;        // every zero point 8 (GPTQ sym) vs random integer zeros 0..16
};

std::string name_of(const Shape& s) {
  return std::to_string(s.in) + "x" + std::to_string(s.out) + (s.act_order ? "_act" : "") +
         (s.sym ? "_sym" : "");
}

// A random [out, in] INT4 matrix through the one tile writer (build_int4_matrix).
Int4Matrix random_int4(const Shape& s, std::mt19937& rng) {
  std::vector<int32_t> group_of(static_cast<size_t>(s.in));
  if (s.act_order) {
    std::uniform_int_distribution<int32_t> group(0, static_cast<int32_t>(s.n_groups - 1));
    for (auto& g : group_of) g = group(rng);
    for (int64_t g = 0; g < s.n_groups; ++g) group_of[g] = static_cast<int32_t>(g);  // none empty
  } else {
    for (int64_t i = 0; i < s.in; ++i) group_of[i] = static_cast<int32_t>(i * s.n_groups / s.in);
  }
  std::uniform_int_distribution<int> code(0, 15), zero(0, 16);
  std::uniform_real_distribution<float> scale(0.001f, 0.02f);
  std::vector<uint8_t> codes(static_cast<size_t>(s.in * s.out));
  for (auto& c : codes) c = static_cast<uint8_t>(code(rng));
  std::vector<f16> scales(static_cast<size_t>(s.n_groups * s.out));
  std::vector<int> zeros(scales.size());
  for (auto& v : scales) v = f32_to_f16(scale(rng));
  for (auto& z : zeros) z = s.sym ? 8 : zero(rng);
  return build_int4_matrix(
      s.in, s.out, group_of, s.n_groups, [&](int64_t i, int64_t o) { return codes[i * s.out + o]; },
      [&](int64_t g, int64_t o) { return scales[g * s.out + o]; },
      [&](int64_t g, int64_t o) { return zeros[g * s.out + o]; });
}

// The matrix in device memory and a device view of it.
struct DeviceInt4 {
  DeviceBuffer<int4_tile> tiles;
  DeviceBuffer<int32_t> input_index;
  Int4View view;

  explicit DeviceInt4(const Int4View& host)
      : tiles(std::span<const int4_tile>(host.tiles, static_cast<size_t>(host.n_tiles()))) {
    view = host;
    view.tiles = tiles.data();
    view.device = Device::cuda;
    if (host.input_index != nullptr) {
      input_index = DeviceBuffer<int32_t>(
          std::span<const int32_t>(host.input_index, static_cast<size_t>(host.packed_in())));
      view.input_index = input_index.data();
    }
  }
};

__nv_bfloat16* nv(DeviceBuffer<bf16>& b) { return reinterpret_cast<__nv_bfloat16*>(b.data()); }

// x [n, in] in the weight's packed input order: x itself, or with act-order gathered into
// `gathered` (poisoned first, so a slot the gather missed shows).
const __nv_bfloat16* packed_activations(const Int4View& w, DeviceBuffer<bf16>& x, int64_t n,
                                        DeviceBuffer<bf16>& gathered) {
  if (w.input_index == nullptr) return nv(x);
  gathered = DeviceBuffer<bf16>(static_cast<size_t>(n * w.packed_in()));
  gathered.poison();
  launch_gather_packed(nv(x), w.in, w.input_index, w.packed_in(), static_cast<int>(n),
                       nv(gathered), nullptr);
  return nv(gathered);
}

}  // namespace
}  // namespace hllm::cuda
