// Linear: the weight of one linear layer as the Backend sees it, dense or INT4.
//
//   dense: Tensor [out_features, in_features] (nn.Linear layout; bf16 / f16 / f32)
//   int4:  Int4View in hllm's tile layout (layout/int4_tiles.hpp), repacked from GPTQ at load
//
// `owner` keeps whatever memory the views point into alive (the repacked host tiles, or a device
// copy made by Backend::upload_linear); dense views of an mmap'd checkpoint have no owner here:
// the Checkpoint (ModelFolder) keeps them alive.
#pragma once

#include <cstdint>
#include <memory>

#include "hllm/core/tensor.hpp"
#include "hllm/quant/int4.hpp"

namespace hllm {

struct Linear {
  Tensor dense;                 // [out, in] when !is_int4()
  Int4View int4;                // when is_int4()
  std::shared_ptr<void> owner;  // keeps the int4 memory alive; may be null

  Linear() = default;
  Linear(const Tensor& weight) : dense(weight) {}  // NOLINT: a dense weight is a Linear
  Linear(const Int4View& view, std::shared_ptr<void> memory)
      : int4(view), owner(std::move(memory)) {}

  bool is_int4() const { return int4.tiles != nullptr; }
  bool empty() const { return !is_int4() && dense.empty(); }
  int64_t in_features() const { return is_int4() ? int4.in : dense.dim(1); }
  int64_t out_features() const { return is_int4() ? int4.out : dense.dim(0); }
  Device device() const { return is_int4() ? int4.device : dense.device; }
  // Bytes a matmul reads for the weight (tiles with their scales, or the dense tensor).
  size_t nbytes() const { return is_int4() ? int4.nbytes() : dense.nbytes(); }
};

// Host INT4 weight that owns its tiles.
inline Linear make_int4_linear(Int4Matrix&& matrix) {
  auto owned = std::make_shared<Int4Matrix>(std::move(matrix));
  const Int4View view = owned->view();
  return Linear(view, std::move(owned));
}

}  // namespace hllm
