// Linear: the weight of one linear layer (or the embedding table) as the Backend sees it: dense,
// INT4 or ggml blocks.
//
//   dense: Tensor [out_features, in_features] (nn.Linear layout; bf16 / f16 / f32); on the CPU
//          backend its memory is in row panels (dense_panels, layout/dense_panels.hpp) instead
//   int4:  Int4View in hllm's tile layout (layout/int4_tiles.hpp), repacked from GPTQ at load
//   ggml:  GgmlView of a GGUF file's quantized blocks (layout/ggml_blocks.hpp), rows as stored
//
// `owner` keeps whatever memory the views point into alive (the repacked host tiles, rows copied
// at load, or a device copy made by Backend::upload_linear); views of an mmap'd file have no
// owner here: the file (Checkpoint, GgufFile) keeps them alive.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "hllm/core/tensor.hpp"
#include "hllm/layout/ggml_blocks.hpp"
#include "hllm/quant/int4.hpp"

namespace hllm {

struct Linear {
  Tensor dense;                 // [out, in] when is_dense()
  Int4View int4;                // when is_int4()
  GgmlView ggml;                // when is_ggml()
  std::shared_ptr<void> owner;  // keeps the int4 / copied memory alive; may be null
  // dense's memory holds dense_panels_elements(out, in) weights in row panels, not [out, in] rows
  // (the CPU backend's copy, made by CpuBackend::upload_linear).
  bool dense_panels = false;

  Linear() = default;
  Linear(const Tensor& weight) : dense(weight) {}  // NOLINT: a dense weight is a Linear
  Linear(const Int4View& view, std::shared_ptr<void> memory)
      : int4(view), owner(std::move(memory)) {}
  Linear(const GgmlView& view, std::shared_ptr<void> memory)
      : ggml(view), owner(std::move(memory)) {}

  bool is_int4() const { return int4.tiles != nullptr; }
  bool is_ggml() const { return ggml.data != nullptr; }
  bool is_dense() const { return !is_int4() && !is_ggml(); }
  bool empty() const { return is_dense() && dense.empty(); }
  int64_t in_features() const { return is_int4() ? int4.in : is_ggml() ? ggml.in : dense.dim(1); }
  int64_t out_features() const {
    return is_int4() ? int4.out : is_ggml() ? ggml.out : dense.dim(0);
  }
  Device device() const { return is_int4() ? int4.device : is_ggml() ? ggml.device : dense.device; }
  // Bytes a matmul reads for the weight (tiles with their scales, blocks, or the dense tensor).
  size_t nbytes() const {
    return is_int4() ? int4.nbytes() : is_ggml() ? ggml.nbytes() : dense.nbytes();
  }
  // The first byte of the weight, whatever its kind (tells a tied lm_head from a copy).
  const void* data() const {
    return is_int4()   ? static_cast<const void*>(int4.tiles)
           : is_ggml() ? static_cast<const void*>(ggml.data)
                       : dense.data;
  }
  // "BF16", "INT4", "Q4_K": what the weight is stored as.
  std::string storage_name() const {
    if (is_int4()) return "INT4";
    if (is_ggml()) return std::string(ggml_type_info(ggml.type).name);
    return std::string(dtype_name(dense.dtype));
  }
};

// Host INT4 weight that owns its tiles.
inline Linear make_int4_linear(Int4Matrix&& matrix) {
  auto owned = std::make_shared<Int4Matrix>(std::move(matrix));
  const Int4View view = owned->view();
  return Linear(view, std::move(owned));
}

}  // namespace hllm
