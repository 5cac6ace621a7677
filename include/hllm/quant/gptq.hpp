// GPTQ checkpoint tensors <-> hllm's INT4 tile layout (layout/int4_tiles.hpp).
//
// AutoGPTQ / GPTQModel / optimum store each quantized nn.Linear(in, out) `X` as
//
//   X.qweight  int32 [in / 8, out]       word (r, o) holds codes of W[o, 8r + j] in bits 4j..4j+3
//   X.qzeros   int32 [groups, out / 8]   word (g, c) holds zeros of columns 8c + j in bits 4j..4j+3
//   X.scales   fp16  [groups, out]
//   X.g_idx    int32 [in]                group of each input (i / group_size unless act-order)
//
//   W[o, i] = scales[g, o] * (code(i, o) - zero(g, o)),  g = g_idx[i]
//   checkpoint_format "gptq" (v1): stored zero = zero - 1 (sym 4-bit stores 7); "gptq_v2": zero.
//
// repack_gptq validates every tensor (dtype, shape, g_idx range, zeros of sym checkpoints) with an
// error naming the tensor, then builds the tile layout; act-order inputs are sorted by group there
// (build_int4_matrix). pack_gptq_v1 is the inverse used by `hllm quantize` to write checkpoints.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/io/safetensors.hpp"
#include "hllm/quant/gptq_config.hpp"
#include "hllm/quant/int4.hpp"

namespace hllm {

struct GptqTensors {
  Tensor qweight;  // int32 [in / 8, out]
  Tensor qzeros;   // int32 [groups, out / 8]
  Tensor scales;   // fp16 [groups, out]
  Tensor g_idx;    // int32 [in]; empty = i / group_size (old checkpoints without it)
};

// True when the checkpoint stores projection `prefix` (e.g. "model.layers.0.mlp.up_proj") as GPTQ.
inline bool has_gptq_tensors(const Checkpoint& checkpoint, const std::string& prefix) {
  for (const char* suffix : {".qweight", ".qzeros", ".scales"})
    if (checkpoint.contains(prefix + suffix)) return true;
  return false;
}

inline GptqTensors find_gptq_tensors(const Checkpoint& checkpoint, const std::string& prefix) {
  const auto get = [&](const char* suffix) {
    const std::string name = prefix + suffix;
    if (!checkpoint.contains(name))
      fail(checkpoint.dir().string(), ": GPTQ tensor \"", name,
           "\" is missing (a GPTQ projection has qweight, qzeros, scales and g_idx)");
    return checkpoint.tensor(name);
  };
  GptqTensors t{get(".qweight"), get(".qzeros"), get(".scales"), {}};
  if (checkpoint.contains(prefix + ".g_idx")) t.g_idx = checkpoint.tensor(prefix + ".g_idx");
  return t;
}

namespace detail {

inline void check_gptq_tensor(const Tensor& t, const std::string& where, const char* what,
                              DType dtype, Shape shape) {
  if (t.dtype != dtype)
    fail(where, ".", what, ": dtype ", dtype_name(t.dtype), ", expected ", dtype_name(dtype));
  if (!(t.shape == shape))
    fail(where, ".", what, ": shape ", t.shape.str(), ", expected ", shape.str());
}

inline uint32_t nibble(int32_t word, int64_t j) {
  return (static_cast<uint32_t>(word) >> (4 * j)) & 0xFu;
}

}  // namespace detail

// Repacks one GPTQ projection of nn.Linear(in, out); `where` names it ("dir: model.layers.0...").
inline Int4Matrix repack_gptq(const GptqTensors& t, int64_t in, int64_t out, const QuantConfig& q,
                              const std::string& where) {
  if (q.bits != 4) fail(where, ": GPTQ bits ", q.bits, " is not supported (supported: 4)");
  if (in % 8 != 0 || out % 8 != 0)
    fail(where, ": shape [", out, ", ", in, "] cannot be GPTQ-packed (in and out must be ",
         "multiples of 8)");
  const int64_t n_groups = q.group_size > 0 ? (in + q.group_size - 1) / q.group_size : int64_t{1};
  detail::check_gptq_tensor(t.qweight, where, "qweight", DType::i32, {in / 8, out});
  detail::check_gptq_tensor(t.scales, where, "scales", DType::f16, {n_groups, out});
  detail::check_gptq_tensor(t.qzeros, where, "qzeros", DType::i32, {n_groups, out / 8});

  std::vector<int32_t> group_of(static_cast<size_t>(in));
  if (t.g_idx.empty()) {
    if (q.desc_act) fail(where, ".g_idx: missing, but desc_act (act-order) needs it");
    for (int64_t i = 0; i < in; ++i)
      group_of[i] = q.group_size > 0 ? static_cast<int32_t>(i / q.group_size) : 0;
  } else {
    detail::check_gptq_tensor(t.g_idx, where, "g_idx", DType::i32, {in});
    const int32_t* g_idx = t.g_idx.as<int32_t>();
    for (int64_t i = 0; i < in; ++i) {
      if (g_idx[i] < 0 || g_idx[i] >= n_groups)
        fail(where, ".g_idx[", i, "] = ", g_idx[i], " is outside [0, ", n_groups,
             ") (groups in scales)");
      group_of[i] = g_idx[i];
    }
  }

  const int32_t* qweight = t.qweight.as<int32_t>();
  const int32_t* qzeros = t.qzeros.as<int32_t>();
  const f16* scales = t.scales.as<f16>();
  const int32_t zero_offset = q.zeros_minus_one ? 1 : 0;
  std::vector<uint8_t> zeros(static_cast<size_t>(n_groups * out));  // true zero points, 0..16
  for (int64_t g = 0; g < n_groups; ++g) {
    for (int64_t o = 0; o < out; ++o) {
      const uint32_t stored = detail::nibble(qzeros[g * (out / 8) + o / 8], o % 8);
      zeros[g * out + o] = static_cast<uint8_t>(stored + zero_offset);
      if (q.sym && stored + zero_offset != 8)
        fail(where, ".qzeros: a sym checkpoint with checkpoint_format ",
             q.zeros_minus_one ? "gptq (v1) stores zero - 1 = 7" : "gptq_v2 stores zero = 8",
             " everywhere, found ", stored, " at group ", g, ", column ", o,
             q.zeros_minus_one && stored == 8
                 ? " (this looks like a gptq_v2 checkpoint: set checkpoint_format to gptq_v2)"
                 : "");
      const float s = f16_to_f32(scales[g * out + o]);
      if (!std::isfinite(s)) fail(where, ".scales[", g, ", ", o, "] is not finite (", s, ")");
    }
  }
  return build_int4_matrix(
      in, out, group_of, n_groups,
      [&](int64_t i, int64_t o) { return detail::nibble(qweight[(i / 8) * out + o], i % 8); },
      [&](int64_t g, int64_t o) { return scales[g * out + o]; },
      [&](int64_t g, int64_t o) { return zeros[g * out + o]; });
}

// A quantized [out, in] matrix in logical form: what the quantizer produces.
struct QuantizedMatrix {
  int64_t in = 0, out = 0, n_groups = 0;
  std::vector<uint8_t> codes;  // [out, in], 0..15
  std::vector<f16> scales;     // [n_groups, out]
  std::vector<uint8_t> zeros;  // [n_groups, out], true zero points
  std::vector<int32_t> g_idx;  // [in]

  Int4Matrix to_int4() const {
    return build_int4_matrix(
        in, out, g_idx, n_groups, [&](int64_t i, int64_t o) { return codes[o * in + i]; },
        [&](int64_t g, int64_t o) { return scales[g * out + o]; },
        [&](int64_t g, int64_t o) { return zeros[g * out + o]; });
  }
};

// GPTQ v1 ("gptq" checkpoint_format) tensors of a quantized matrix, ready for write_safetensors.
struct GptqPacked {
  std::vector<int32_t> qweight;  // [in / 8, out]
  std::vector<int32_t> qzeros;   // [n_groups, out / 8], zero - 1
  std::vector<f16> scales;       // [n_groups, out]
  std::vector<int32_t> g_idx;    // [in]
};

inline GptqPacked pack_gptq_v1(const QuantizedMatrix& m, const std::string& where) {
  const int64_t in = m.in, out = m.out;
  if (in % 8 != 0 || out % 8 != 0)
    fail(where, ": shape [", out, ", ", in, "] cannot be GPTQ-packed (multiples of 8 needed)");
  GptqPacked p;
  p.qweight.assign(static_cast<size_t>(in / 8 * out), 0);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i)
      p.qweight[(i / 8) * out + o] |=
          static_cast<int32_t>(static_cast<uint32_t>(m.codes[o * in + i] & 0xF) << (4 * (i % 8)));
  p.qzeros.assign(static_cast<size_t>(m.n_groups * (out / 8)), 0);
  for (int64_t g = 0; g < m.n_groups; ++g)
    for (int64_t o = 0; o < out; ++o) {
      const int zero = m.zeros[g * out + o];
      if (zero < 1 || zero > 16)
        fail(where, ": zero point ", zero, " cannot be stored in GPTQ v1 (1..16)");
      p.qzeros[g * (out / 8) + o / 8] |=
          static_cast<int32_t>(static_cast<uint32_t>((zero - 1) & 0xF) << (4 * (o % 8)));
    }
  p.scales = m.scales;
  p.g_idx = m.g_idx;
  return p;
}

}  // namespace hllm
