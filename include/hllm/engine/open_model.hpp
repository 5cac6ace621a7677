// A model ready to run, in one call: a Hugging Face model folder or a GGUF file -> weights (mmap'd, validated,
// GPTQ repacked), its tokenizer and chat format, a backend (cpu | cuda | auto), the Llama forward
// pass, and the sampling defaults and stop tokens the checkpoint ships with.
//
//   std::unique_ptr<hllm::LoadedModel> m = hllm::open_model("Meta-Llama-3-8B-Instruct");
//   std::vector<int32_t> prompt = hllm::encode_prompt(*m->tokenizer, messages);
//   hllm::EngineCore core(m->model, hllm::EngineOptions::one_sequence(8192, true));
//   hllm::generate(core, prompt, m->sampling, options, on_token);
//                                      (engine/engine_core.hpp, engine/generate.hpp)
//
// The runner's run, chat, serve, perplexity, bench, generate and logits commands open models only
// through here, so they agree on what a model folder means.
#pragma once

#include <algorithm>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/cpu/backend.hpp"
#include "hllm/engine/generate_text.hpp"
#include "hllm/engine/sampler.hpp"
#include "hllm/model/cuda_entry.hpp"
#include "hllm/model/llama.hpp"
#include "hllm/model/load.hpp"
#include "hllm/quant/ggml_quantize.hpp"
#include "hllm/quant/quantize.hpp"
#include "hllm/tokenizer/gguf_tokenizer.hpp"
#include "hllm/tokenizer/tokenizer.hpp"
#include "hllm/tokenizer/tokenizer_load.hpp"

namespace hllm {

// The backend for `device`: "cpu"; "cuda" (an error when this program has no CUDA, there is no
// GPU, or cuda_supports() refuses the model); "auto" = cuda when all of that holds, else cpu.
// threads: CPU threads (0 = one per hardware thread); int4_matmul: the CPU's INT4 arithmetic;
// kv_cache: the CPU's KV cache type (a GPU keeps K/V in its activation dtype, bf16).
inline std::unique_ptr<Backend> make_backend(std::string_view device, int threads,
                                             const LlamaConfig& config,
                                             CpuMatmul int4_matmul = CpuMatmul::exact,
                                             CpuKvCache kv_cache = CpuKvCache::automatic) {
  if (device == "cuda") {
    if (!cuda_supports(config))  // refused by name whatever the machine
      fail("device cuda: ", cuda_refusal(config), "; use device cpu");
    if (!cuda_built_in()) make_cuda_backend();  // throws: says how to build with CUDA
    if (cuda_device_count() == 0) fail("device cuda: no GPU found");
    return make_cuda_backend();
  }
  if (device == "auto" && cuda_supports(config) && cuda_device_count() > 0)
    return make_cuda_backend();
  if (device != "cpu" && device != "auto")
    fail("device must be cpu, cuda or auto (got \"", device, "\")");
  return std::make_unique<CpuBackend>(threads, int4_matmul, kv_cache);
}

// "cpu, 8 threads, avx512, int4 int8, kv f16" or "cuda (NVIDIA H200)".
inline std::string describe_backend(const Backend& backend) {
  if (const auto* cpu = dynamic_cast<const CpuBackend*>(&backend))
    return "cpu, " + std::to_string(cpu->n_threads()) + " threads, " +
           cpu::isa_name(cpu::cpu_isa()) + ", int4 " + cpu_matmul_name(cpu->int4_matmul()) +
           ", kv " + (cpu->kv_dtype() == DType::f16 ? "f16" : "f32");
  return backend.name();
}

// Device memory in use on the GPU (all processes, as cudaMemGetInfo sees it); 0 on the CPU.
inline double device_bytes_in_use(const Backend& backend) {
  return backend.device() == Device::cuda ? cuda_bytes_in_use() : 0.0;
}

// The lm_head (the tied embedding's matrix too) as stored, or rounded at load: q8 = Q8_0 blocks
// (8.5 bits per weight), q6 = Q6_K blocks (6.56 bits, what llama.cpp's 4- and 5-bit presets
// give their output tensor), both CPU only; q4 = INT4 tiles (RTN, asymmetric, groups of 128;
// 4.25 bits). The head is the largest single read of a small model's decode step (Llama-3.2-1B:
// half of all bytes in bf16). The embedding lookup keeps the stored rows; a quantized head (GPTQ,
// GGUF) stays as it is.
// automatic: q8 on the CPU backend (when the hidden size is a multiple of 32), as stored on a GPU.
// (q6 reads 0.77x q8's bytes but measured only 2-4% faster decode on Llama-3.2-1B shapes, and
// took the GPTQ fixtures' int8 logits from 0.7-2.1% to 2.1-2.9% median relative L2 error against
// Hugging Face: the documented int8 tolerance is 3%.)
enum class LmHead { stored, q8, q6, q4, automatic };

inline const char* lm_head_name(LmHead head) {
  switch (head) {
    case LmHead::stored:
      return "bf16";
    case LmHead::q8:
      return "q8";
    case LmHead::q6:
      return "q6";
    case LmHead::q4:
      return "q4";
    case LmHead::automatic:
      return "auto";
  }
  return "?";
}

// The inputs one block of `head` covers.
inline int64_t lm_head_block(LmHead head) {
  switch (head) {
    case LmHead::q8:
      return ggml_type_info(GgmlType::Q8_0).block_elems;
    case LmHead::q6:
      return ggml_type_info(GgmlType::Q6_K).block_elems;
    case LmHead::q4:
      return INT4_TILE_K;
    default:
      return 1;
  }
}

// What `automatic` means on `device` (see LmHead).
inline LmHead automatic_lm_head(const Linear& lm_head, Device device) {
  return device == Device::cpu && lm_head.in_features() % lm_head_block(LmHead::q8) == 0
             ? LmHead::q8
             : LmHead::stored;
}

// Quantizes a dense lm_head in place as `head` asks for the backend on `device` (threads: 0 =
// all).
inline void apply_lm_head(LlamaWeights& weights, LmHead head, Device device, int threads) {
  Linear& lm_head = weights.lm_head;
  if (head == LmHead::automatic) head = automatic_lm_head(lm_head, device);
  if ((head == LmHead::q8 || head == LmHead::q6) && device != Device::cpu)
    fail("--lm-head ", lm_head_name(head), " is for the CPU backend (on a GPU: q4 or bf16)");
  if (head == LmHead::stored || !lm_head.is_dense()) return;
  if (lm_head.in_features() % lm_head_block(head) != 0)
    fail("--lm-head ", lm_head_name(head), ": the hidden size (", lm_head.in_features(),
         ") is not a multiple of ", lm_head_block(head));
  ThreadPool pool(threads);
  if (head == LmHead::q4) {
    lm_head = make_int4_linear(quantize_rtn_tiles(lm_head.dense, pool));
    return;
  }
  GgmlMatrix blocks =
      quantize_ggml_rows(lm_head.dense, head == LmHead::q6 ? GgmlType::Q6_K : GgmlType::Q8_0, pool);
  lm_head = Linear(blocks.view, std::move(blocks.memory));
}

struct OpenOptions {
  std::string device = "auto";                  // cpu | cuda | auto (make_backend)
  int threads = 0;                              // CPU threads, 0 = one per hardware thread
  CpuMatmul int4_matmul = CpuMatmul::exact;     // the CPU's INT4 arithmetic (CpuMatmul)
  CpuKvCache kv_cache = CpuKvCache::automatic;  // the CPU's KV cache type (CpuKvCache)
  LmHead lm_head = LmHead::stored;              // quantize a dense lm_head at load (LmHead)
  std::optional<std::filesystem::path> config;  // a config.json to use instead of the folder's
  std::filesystem::path tokenizer;  // tokenizer.json (or its folder); empty = the model folder's
  bool load_tokenizer = true;       // false: token ids only (no tokenizer.json needed)
  bool prefetch = false;  // read every weight page in before the backend takes them (the first
                          // forward pass then does not pay for the disk)
  LoadProgress progress;  // with prefetch: called as the pages are read
};

// Everything open_model() assembles, in the order it is built (a bad tokenizer fails before any
// weight is read). Held by pointer: the model refers to the backend and to the mapped weights.
struct LoadedModel {
  ModelFolder folder;                  // config, mapped checkpoint, weights, generation_config
  std::optional<Tokenizer> tokenizer;  // absent when opened with load_tokenizer = false
  std::unique_ptr<Backend> backend;    // where the model runs (weights uploaded once)
  LlamaModel model;                    // the forward pass: forward, forward_step, new_cache
  // Generation ends at any of these: the checkpoint's eos ids, the tokenizer's stop tokens and
  // <|eot_id|> (the chat format ends every turn with it, base models included).
  std::vector<int64_t> stop_ids;
  // generation_config.json's temperature / top_p / top_k over the library's defaults; seed 0 (set
  // one per request for different draws).
  SamplingParams sampling;

  LoadedModel(const std::filesystem::path& dir, const OpenOptions& options)
      : folder(open_model_folder(dir, options.config)),
        tokenizer(open_tokenizer(folder, options)),
        backend(prepared_backend(folder, options)),
        model(folder.config, folder.weights, *backend),
        stop_ids(stop_ids_of(folder, tokenizer)),
        sampling(SamplingParams::from_generation_config(folder.generation)) {}

  const LlamaConfig& config() const { return folder.config; }
  std::string backend_description() const { return describe_backend(*backend); }

 private:
  static std::optional<Tokenizer> open_tokenizer(const ModelFolder& folder,
                                                 const OpenOptions& options) {
    if (!options.load_tokenizer) return std::nullopt;
    const LlamaConfig& config = folder.config;
    Tokenizer tokenizer = !options.tokenizer.empty() ? load_tokenizer_from(options.tokenizer)
                          : folder.gguf              ? tokenizer_from_gguf(*folder.gguf)
                                                     : load_tokenizer(folder.dir);
    if (static_cast<int64_t>(tokenizer.vocab_size()) > config.vocab_size)
      fail("the tokenizer has ", tokenizer.vocab_size(), " tokens but the model only ",
           config.vocab_size, " (wrong tokenizer?)");
    return tokenizer;
  }

  // Pages read in (prefetch), the backend, then the lm_head quantized for it (LmHead).
  static std::unique_ptr<Backend> prepared_backend(ModelFolder& folder,
                                                   const OpenOptions& options) {
    if (options.prefetch) prefetch_weights(folder, options.progress);
    std::unique_ptr<Backend> backend = make_backend(options.device, options.threads, folder.config,
                                                    options.int4_matmul, options.kv_cache);
    apply_lm_head(folder.weights, options.lm_head, backend->device(), options.threads);
    return backend;
  }

  static std::vector<int64_t> stop_ids_of(const ModelFolder& folder,
                                          const std::optional<Tokenizer>& tokenizer) {
    std::vector<int64_t> ids = folder.eos_ids;
    if (!tokenizer) return ids;
    const std::vector<TokenId> tokenizer_stops = tokenizer->stop_ids();
    std::vector<int64_t> more(tokenizer_stops.begin(), tokenizer_stops.end());
    if (const auto eot = tokenizer->find_added("<|eot_id|>")) more.push_back(*eot);
    for (const int64_t id : more)
      if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
    return ids;
  }
};

// Opens the Hugging Face model folder `dir` (config.json, *.safetensors, tokenizer.json,
// generation_config.json; bf16/fp16/fp32 or GPTQ int4) on the backend the options ask for.
inline std::unique_ptr<LoadedModel> open_model(const std::filesystem::path& dir,
                                               const OpenOptions& options = {}) {
  return std::make_unique<LoadedModel>(dir, options);
}

// generate_text (engine/generate_text.hpp) with the model's tokenizer and stop ids.
inline GenerationResult generate_text(LoadedModel& m, std::span<const int32_t> prompt,
                                      const SamplingParams& sampling, int64_t max_new_tokens,
                                      const std::function<bool(std::string_view)>& on_text,
                                      bool ignore_eos = false) {
  if (!m.tokenizer) fail("generate_text: the model was opened without its tokenizer");
  return generate_text(m.model, *m.tokenizer, m.stop_ids, prompt, sampling, max_new_tokens, on_text,
                       ignore_eos);
}

}  // namespace hllm
