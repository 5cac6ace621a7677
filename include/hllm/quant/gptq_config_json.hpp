// parse_quant_config: config.json's `quantization_config` (or AutoGPTQ's quantize_config.json)
// -> QuantConfig (quant/gptq_config.hpp, which says what is supported).
#pragma once

#include <string>

#include "hllm/core/error.hpp"
#include "hllm/io/json.hpp"
#include "hllm/quant/gptq_config.hpp"

namespace hllm {

// Parses a quantization_config object (or a quantize_config.json); `where` names it in errors.
// A missing quant_method means GPTQ only when `assume_gptq` (AutoGPTQ's side file has none).
inline QuantConfig parse_quant_config(const json& q, const std::string& where,
                                      bool assume_gptq = false) {
  if (!q.is_object())
    fail(where, ": quantization_config must be an object (found ", describe_json(q), ")");
  const JsonFields fields{q, where + " quantization_config"};
  const std::string method = fields.string_or("quant_method", assume_gptq ? "gptq" : "");
  if (method != "gptq")
    fail(
        where, ": quantization method \"", method,
        "\" is not supported (supported: gptq, 4 bits; AWQ, bitsandbytes, FP8 and others are not)");
  QuantConfig c;
  c.method = QuantMethod::gptq;
  if (!fields.has("bits") || !q.at("bits").is_number_integer()) fields.wrong("bits", "4");
  const int64_t bits = fields.integer("bits");  // not get<int>(): 4294967300 would become 4
  if (bits != 4) fail(where, ": GPTQ bits ", bits, " is not supported (supported: 4)");
  c.bits = static_cast<int>(bits);
  c.group_size = fields.has("group_size") ? fields.integer("group_size") : 128;
  if (c.group_size == 0 || c.group_size < -1)
    fields.wrong("group_size", "a positive integer or -1 (per channel)");
  c.desc_act = fields.boolean_or("desc_act", false);
  c.sym = fields.boolean_or("sym", true);
  c.damp_percent = fields.number_or("damp_percent", 0.01);
  // AutoGPTQ < 0.8 wrote is_marlin_format; newer files write checkpoint_format (HF calls the same
  // key `format` in some versions).
  if (fields.boolean_or("is_marlin_format", false))
    fail(where, ": Marlin-packed GPTQ checkpoints are not supported (supported: checkpoint_format ",
         "gptq or gptq_v2)");
  const std::string format =
      fields.string_or("checkpoint_format", fields.string_or("format", "gptq"));
  if (format == "gptq")
    c.zeros_minus_one = true;
  else if (format == "gptq_v2")
    c.zeros_minus_one = false;
  else
    fail(where, ": GPTQ checkpoint_format \"", format,
         "\" is not supported (supported: gptq, gptq_v2)");
  if (fields.boolean_or("lm_head", false))
    fail(where, ": a quantized lm_head (lm_head: true) is not supported (supported: fp16/bf16 ",
         "lm_head)");
  if (fields.has("dynamic") && !(q.at("dynamic").is_object() && q.at("dynamic").empty()))
    fail(where, ": per-module GPTQ overrides (\"dynamic\") are not supported");
  return c;
}

}  // namespace hllm
