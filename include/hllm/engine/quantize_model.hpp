// Quantizing a whole bf16/fp16 Llama model folder to a standard GPTQ checkpoint (what
// `hllm quantize` runs):
//
//   for each layer l (in order; "true sequential" at layer granularity):
//     GPTQ only: run the calibration sequences through the model whose layers < l are already
//       quantized (dequantized to fp32), recording H = 2/N Σ x xᵀ of the inputs of layer l's
//       projections (q/k/v share one input, gate/up share one) with a Backend wrapper
//     quantize q, k, v, o, gate, up, down (RTN or GPTQ, quant/quantize.hpp)
//   write OUT_DIR: model.safetensors (GPTQ v1 tensors, other weights fp16), config.json with
//   quantization_config, quantize_config.json, and the tokenizer / generation files copied over.
//
// The written folder loads in hllm (model/load.hpp) and in other GPTQ loaders (AutoGPTQ,
// GPTQModel, transformers + optimum, vLLM): checkpoint_format "gptq", torch_dtype float16.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "hllm/cpu/backend.hpp"
#include "hllm/io/json.hpp"
#include "hllm/io/safetensors.hpp"
#include "hllm/model/llama.hpp"
#include "hllm/model/load.hpp"
#include "hllm/quant/gptq.hpp"
#include "hllm/quant/quantize.hpp"

namespace hllm {

enum class QuantizeMethod { rtn, gptq };

struct QuantizeModelOptions {
  QuantizeMethod method = QuantizeMethod::gptq;
  QuantizeOptions matrix;  // group size, sym, act-order, damping
  int threads = 0;         // CPU threads for the calibration forward passes
};

// One quantized projection, for the caller's report.
struct QuantizedReport {
  std::string name;      // "model.layers.0.self_attn.q_proj"
  double rel_error = 0;  // ||W - Wq||_F / ||W||_F
};

namespace detail {

// Input Hessian of one projection input: H = Σ x xᵀ over `tokens` rows (scaled 2/N at the end).
struct Hessian {
  int64_t in = 0;
  int64_t tokens = 0;
  std::vector<double> h;  // [in, in]
};

// A Backend that forwards every op to `inner` and accumulates the Hessian of the inputs of the
// watched linear weights (keyed by the weight's data pointer).
class HessianRecorder final : public Backend {
 public:
  HessianRecorder(Backend& inner, ThreadPool& pool, std::map<const void*, Hessian*> watched)
      : inner_(inner), pool_(pool), watched_(std::move(watched)) {}

  std::string name() const override { return inner_.name(); }
  Device device() const override { return inner_.device(); }
  DType activation_dtype() const override { return inner_.activation_dtype(); }
  DType kv_dtype() const override { return inner_.kv_dtype(); }
  Buffer allocate(DType dtype, Shape shape) override { return inner_.allocate(dtype, shape); }
  Tensor upload_weight(const Tensor& host) override { return inner_.upload_weight(host); }
  // The inner backend may copy a weight (the CPU backend's row panels): its Hessian is then found
  // under the copy's address.
  Linear upload_linear(const Linear& host) override {
    Linear uploaded = inner_.upload_linear(host);
    const auto it = watched_.find(host.data());
    if (it != watched_.end() && uploaded.data() != host.data()) {
      Hessian* hessian = it->second;
      watched_.erase(it);
      watched_.emplace(uploaded.data(), hessian);
    }
    return uploaded;
  }
  Linear upload_embedding(const Linear& host) override { return inner_.upload_embedding(host); }
  void to_host_f32(const Tensor& x, std::span<float> out) override { inner_.to_host_f32(x, out); }
  void begin_step(const Step& step) override { inner_.begin_step(step); }
  void embedding(const Linear& table, const Tensor& out) override { inner_.embedding(table, out); }
  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) override {
    inner_.rmsnorm(x, weight, eps, out);
  }
  void add_rmsnorm(const Tensor& x, const Tensor& y, const Tensor& weight, float eps,
                   const Tensor& out) override {
    inner_.add_rmsnorm(x, y, weight, eps, out);
  }
  void matmul(const Tensor& x, const Linear& weight, const Tensor& out) override {
    const auto it = watched_.find(weight.data());
    if (it != watched_.end()) accumulate(x, *it->second);
    inner_.matmul(x, weight, out);
  }
  void rope_store_kv(const Tensor& q, const Tensor& k, const Tensor& v,
                     const KvLayer& cache) override {
    inner_.rope_store_kv(q, k, v, cache);
  }
  void attention(const Tensor& q, const KvLayer& cache, float scale, const Tensor& out) override {
    inner_.attention(q, cache, scale, out);
  }
  void swiglu(const Tensor& gate, const Tensor& up, const Tensor& out) override {
    inner_.swiglu(gate, up, out);
  }
  void argmax(const Tensor& logits, std::span<int32_t> ids) override { inner_.argmax(logits, ids); }
  void sample(const Tensor& logits, std::span<const SampleRow> rows,
              std::span<int32_t> ids) override {
    inner_.sample(logits, rows, ids);
  }

 private:
  // h += xᵀ x, as one threaded matmul of xᵀ with itself (fp32 products, summed into fp64).
  void accumulate(const Tensor& x, Hessian& h) {
    const int64_t n = x.dim(0), in = x.dim(1);
    const float* xs = x.as<float>();
    xt_.resize(static_cast<size_t>(in * n));
    for (int64_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < in; ++i) xt_[i * n + t] = xs[t * in + i];
    product_.resize(static_cast<size_t>(in * in));
    const Tensor xt(xt_.data(), DType::f32, {in, n});
    cpu::matmul(xt, xt, Tensor(product_.data(), DType::f32, {in, in}), pool_);
    for (int64_t i = 0; i < in * in; ++i) h.h[i] += product_[i];
    h.tokens += n;
  }

  Backend& inner_;
  ThreadPool& pool_;
  std::map<const void*, Hessian*> watched_;
  std::vector<float> xt_, product_;  // scratch: xᵀ [in, n] and xᵀx [in, in]
};

inline std::vector<float> widen_weight(const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) {
    switch (t.dtype) {
      case DType::bf16:
        out[i] = bf16_to_f32(t.as<bf16>()[i]);
        break;
      case DType::f16:
        out[i] = f16_to_f32(t.as<f16>()[i]);
        break;
      default:
        out[i] = t.as<float>()[i];
    }
  }
  return out;
}

inline std::vector<f16> to_f16(const Tensor& t) {
  const std::vector<float> wide = widen_weight(t);
  std::vector<f16> out(wide.size());
  for (size_t i = 0; i < wide.size(); ++i) out[i] = f32_to_f16(wide[i]);
  return out;
}

}  // namespace detail

// Quantizes `src` (a dense model folder) into a GPTQ folder at `out_dir`. `calibration` holds
// token-id sequences (needed for GPTQ, ignored by RTN); `progress` receives one line per step.
inline std::vector<QuantizedReport> quantize_model(
    const ModelFolder& src, const std::filesystem::path& out_dir, const QuantizeModelOptions& opt,
    const std::vector<std::vector<int32_t>>& calibration,
    const std::function<void(const std::string&)>& progress = {}) {
  const LlamaConfig& c = src.config;
  if (src.gguf)
    fail(src.dir.string(),
         ": quantize writes a HF GPTQ folder from a HF model folder; a GGUF file ",
         "runs as it is (its Q4_K / Q4_0 / ... blocks are read in place)");
  if (c.quant.quantized()) fail(src.dir.string(), ": the model is already quantized");
  if (opt.method == QuantizeMethod::gptq && calibration.empty())
    fail("quantize: GPTQ needs calibration tokens (or use the rtn method)");
  const auto say = [&](const std::string& line) {
    if (progress) progress(line);
  };

  LlamaWeights work = src.weights;              // layers < l point at their quantized versions
  std::vector<std::vector<float>> dequantized;  // fp32 storage of those views
  dequantized.reserve(static_cast<size_t>(c.n_layers) * 7);
  std::map<std::string, QuantizedMatrix> quantized;
  std::vector<QuantizedReport> report;
  CpuBackend cpu(opt.threads);

  for (int64_t l = 0; l < c.n_layers; ++l) {
    LayerWeights& layer = work.layers[l];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    detail::Hessian attn_in{c.hidden_size, 0, {}}, o_in{c.q_dim(), 0, {}},
        mlp_in{c.hidden_size, 0, {}}, down_in{c.intermediate_size, 0, {}};
    if (opt.method == QuantizeMethod::gptq) {
      for (detail::Hessian* h : {&attn_in, &o_in, &mlp_in, &down_in})
        h->h.assign(static_cast<size_t>(h->in * h->in), 0.0);
      detail::HessianRecorder recorder(cpu, cpu.pool(),
                                       {{layer.wq.dense.data, &attn_in},
                                        {layer.wo.dense.data, &o_in},
                                        {layer.w_gate.dense.data, &mlp_in},
                                        {layer.w_down.dense.data, &down_in}});
      LlamaModel model(c, work, recorder);
      std::vector<float> logits(static_cast<size_t>(c.vocab_size));
      for (const std::vector<int32_t>& sequence : calibration) {
        KvCache cache = model.new_cache(static_cast<int64_t>(sequence.size()));
        model.forward(sequence, cache, logits, /*all_logits=*/false);
      }
      for (detail::Hessian* h : {&attn_in, &o_in, &mlp_in, &down_in}) {
        const double scale = 2.0 / static_cast<double>(std::max<int64_t>(h->tokens, 1));
        for (double& v : h->h) v *= scale;
      }
    }
    const std::pair<const char*, std::pair<Linear*, detail::Hessian*>> projections[] = {
        {"self_attn.q_proj", {&layer.wq, &attn_in}}, {"self_attn.k_proj", {&layer.wk, &attn_in}},
        {"self_attn.v_proj", {&layer.wv, &attn_in}}, {"self_attn.o_proj", {&layer.wo, &o_in}},
        {"mlp.gate_proj", {&layer.w_gate, &mlp_in}}, {"mlp.up_proj", {&layer.w_up, &mlp_in}},
        {"mlp.down_proj", {&layer.w_down, &down_in}}};
    for (const auto& [suffix, target] : projections) {
      Linear& linear = *target.first;
      const int64_t out = linear.out_features(), in = linear.in_features();
      const std::vector<float> w = detail::widen_weight(linear.dense);
      QuantizedMatrix q = opt.method == QuantizeMethod::gptq
                              ? quantize_gptq(w, out, in, target.second->h, opt.matrix)
                              : quantize_rtn(w, out, in, opt.matrix);
      std::vector<float> dq = dequantize_int4(q.to_int4().view());
      double err = 0, norm = 0;
      for (size_t i = 0; i < w.size(); ++i)
        err += (double{w[i]} - dq[i]) * (double{w[i]} - dq[i]), norm += double{w[i]} * w[i];
      const std::string name = p + suffix;
      report.push_back({name, std::sqrt(err / std::max(norm, 1e-300))});
      say(name + ": relative weight error " + std::to_string(report.back().rel_error));
      dequantized.push_back(std::move(dq));
      linear = Linear(Tensor(dequantized.back().data(), DType::f32, {out, in}));
      quantized.emplace(name, std::move(q));
    }
  }

  // ---- write the folder -------------------------------------------------------------------------
  std::filesystem::create_directories(out_dir);
  std::vector<std::vector<f16>> f16_storage;
  std::vector<GptqPacked> packed_storage;
  std::vector<std::pair<std::string, Tensor>> tensors;
  f16_storage.reserve(src.checkpoint.names().size());
  packed_storage.reserve(quantized.size());
  for (const std::string& name : src.checkpoint.names()) {
    const std::string prefix = name.size() > 7 ? name.substr(0, name.size() - 7) : "";
    const auto it = name.ends_with(".weight") ? quantized.find(prefix) : quantized.end();
    if (it == quantized.end()) {
      const Tensor t = src.checkpoint.tensor(name);
      f16_storage.push_back(detail::to_f16(t));
      tensors.emplace_back(name, Tensor(f16_storage.back().data(), DType::f16, t.shape));
      continue;
    }
    const QuantizedMatrix& m = it->second;
    packed_storage.push_back(pack_gptq_v1(m, prefix));
    GptqPacked& pk = packed_storage.back();
    tensors.emplace_back(prefix + ".qweight",
                         Tensor(pk.qweight.data(), DType::i32, {m.in / 8, m.out}));
    tensors.emplace_back(prefix + ".qzeros",
                         Tensor(pk.qzeros.data(), DType::i32, {m.n_groups, m.out / 8}));
    tensors.emplace_back(prefix + ".scales",
                         Tensor(pk.scales.data(), DType::f16, {m.n_groups, m.out}));
    tensors.emplace_back(prefix + ".g_idx", Tensor(pk.g_idx.data(), DType::i32, {m.in}));
  }
  write_safetensors(out_dir / "model.safetensors", tensors, {{"format", "pt"}});

  const nlohmann::ordered_json quant_config = {{"bits", 4},
                                               {"group_size", opt.matrix.group_size},
                                               {"damp_percent", opt.matrix.damp_percent},
                                               {"desc_act", opt.matrix.act_order},
                                               {"static_groups", false},
                                               {"sym", opt.matrix.sym},
                                               {"true_sequential", true},
                                               {"model_name_or_path", nullptr},
                                               {"model_file_base_name", "model"},
                                               {"quant_method", "gptq"},
                                               {"checkpoint_format", "gptq"}};
  const auto write_json = [&](const std::filesystem::path& path, const nlohmann::ordered_json& j) {
    std::ofstream file(path, std::ios::binary | std::ios::trunc);
    file << j.dump(2) << "\n";
    if (!file) fail("cannot write ", path.string());
  };
  nlohmann::ordered_json config;
  {
    std::ifstream in(src.dir / "config.json", std::ios::binary);
    if (!in) fail("cannot open ", (src.dir / "config.json").string());
    config = nlohmann::ordered_json::parse(in);
  }
  config["torch_dtype"] = "float16";
  if (config.contains("dtype")) config["dtype"] = "float16";
  config["quantization_config"] = quant_config;
  write_json(out_dir / "config.json", config);
  write_json(out_dir / "quantize_config.json", quant_config);
  for (const char* file : {"generation_config.json", "tokenizer.json", "tokenizer_config.json",
                           "special_tokens_map.json", "tokenizer.model"})
    if (std::filesystem::exists(src.dir / file))
      std::filesystem::copy_file(src.dir / file, out_dir / file,
                                 std::filesystem::copy_options::overwrite_existing);
  say("wrote " + (out_dir / "model.safetensors").string());
  return report;
}

}  // namespace hllm
