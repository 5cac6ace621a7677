// QuantConfig: how a checkpoint's linear weights are quantized, read from config.json's
// `quantization_config` (transformers / optimum) or the AutoGPTQ side file `quantize_config.json`
// by quant/gptq_config_json.hpp.
//
// Supported: GPTQ, 4 bits, any group size (128 and -1 = per output channel are the common ones),
// desc_act (act-order) true/false, sym true/false, checkpoint_format "gptq" (v1: zero points
// stored minus one) or "gptq_v2" (stored as is). Everything else (other bit widths, AWQ,
// bitsandbytes, FP8, Marlin-packed, per-module overrides, a quantized lm_head) is refused with one
// line naming the field and what is supported.
#pragma once

#include <cstdint>

namespace hllm {

// ggml: a GGUF file whose weights are (partly) ggml blocks, one type per tensor (Q4_K, Q6_K, ...);
// the fields below then do not apply.
enum class QuantMethod { none, gptq, ggml };

struct QuantConfig {
  QuantMethod method = QuantMethod::none;
  int bits = 4;                 // code width (only 4)
  int64_t group_size = 128;     // inputs sharing a scale; -1 = one group per output channel
  bool desc_act = false;        // act-order: groups follow g_idx, not i / group_size
  bool sym = true;              // symmetric: zero point 8 everywhere
  bool zeros_minus_one = true;  // checkpoint_format "gptq" (v1) stores zero - 1; "gptq_v2" not
  double damp_percent = 0.01;   // informational (quantizer damping)

  bool quantized() const { return method != QuantMethod::none; }
};

}  // namespace hllm
