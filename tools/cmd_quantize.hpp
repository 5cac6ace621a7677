// `hllm quantize -m BF16_MODEL_DIR -o OUT_DIR [--method rtn|gptq] [--group-size 128] [--act-order]
//                [--asym]
//                [--calib TEXT_FILE [--tokenizer PATH] | --calib-bytes | --calib-ids FILE]`
// Writes a standard GPTQ (v1) checkpoint folder; see include/hllm/engine/quantize_model.hpp.
//
// Calibration text for GPTQ is tokenized with the model's tokenizer.json (or --tokenizer). Models
// without one (the tiny test models) can take the text's UTF-8 bytes as token ids (--calib-bytes),
// or a file of token ids (--calib-ids, separated by commas or whitespace).
#pragma once

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/engine/quantize_model.hpp"
#include "hllm/model/load.hpp"
#include "hllm/tokenizer/tokenizer.hpp"
#include "hllm/tokenizer/tokenizer_load.hpp"

namespace hllm::tools {

inline std::string read_text(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(what, ": cannot open ", path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

inline void add_quantize_command(CLI::App& app) {
  struct Options {
    std::string model_dir, output_dir, method = "gptq", calib, calib_ids, tokenizer;
    int64_t group_size = 128;
    int64_t seq_len = 256;
    bool act_order = false, asym = false, calib_bytes = false;
    double damp = 0.01;
    int threads = 0;
  };
  auto o = std::make_shared<Options>();
  CLI::App* command = app.add_subcommand(
      "quantize", "Quantize a bf16/fp16 model folder to a GPTQ int4 checkpoint (v1 format)");
  command->add_option("-m,--model", o->model_dir, "bf16/fp16 HF model folder")->required();
  command->add_option("-o,--output", o->output_dir, "output folder (created)")->required();
  command->add_option("--method", o->method, "rtn or gptq (default gptq)")
      ->check(CLI::IsMember({"rtn", "gptq"}));
  command->add_option("--group-size", o->group_size, "inputs per scale, -1 = per channel");
  command->add_flag("--act-order", o->act_order, "GPTQ: quantize columns by decreasing H diag");
  command->add_flag("--asym", o->asym, "asymmetric grid (default symmetric)");
  command->add_option("--damp", o->damp, "GPTQ damping, fraction of mean(diag H)");
  command->add_option("--calib", o->calib, "calibration text file (UTF-8)");
  command->add_option("--tokenizer", o->tokenizer, "tokenizer.json (default: the model's)");
  command->add_flag("--calib-bytes", o->calib_bytes,
                    "use the calibration text's UTF-8 bytes as token ids (models without a "
                    "tokenizer, vocab >= 256)");
  command->add_option("--calib-ids", o->calib_ids, "file of calibration token ids");
  command->add_option("--seq-len", o->seq_len, "calibration tokens per sequence")
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20));
  command->add_option("-t,--threads", o->threads, "CPU threads (default: all)");
  command->callback([o] {
    const ModelFolder src = open_model_folder(o->model_dir);
    QuantizeModelOptions opt;
    opt.method = o->method == "rtn" ? QuantizeMethod::rtn : QuantizeMethod::gptq;
    opt.matrix.group_size = o->group_size;
    opt.matrix.sym = !o->asym;
    opt.matrix.act_order = o->act_order;
    opt.matrix.damp_percent = o->damp;
    opt.threads = o->threads;
    if (o->act_order && opt.method == QuantizeMethod::rtn)
      fail("quantize: --act-order needs --method gptq");

    std::vector<int32_t> tokens;
    if (!o->calib_ids.empty()) {
      std::string text = read_text(o->calib_ids, "--calib-ids");
      for (char& ch : text)
        if (ch == ',') ch = ' ';
      std::istringstream in(text);
      long long id;
      while (in >> id) tokens.push_back(static_cast<int32_t>(id));
      if (!in.eof()) fail("--calib-ids: ", o->calib_ids, " holds something that is not an id");
    } else if (!o->calib.empty()) {
      const std::string text = read_text(o->calib, "--calib");
      if (o->calib_bytes) {
        for (unsigned char ch : text) tokens.push_back(ch);
      } else {
        const Tokenizer tok = load_tokenizer(o->tokenizer.empty() ? o->model_dir : o->tokenizer);
        if (src.config.bos_token_id >= 0 && src.config.bos_token_id < src.config.vocab_size)
          tokens.push_back(static_cast<int32_t>(src.config.bos_token_id));
        for (auto id : tok.encode(text, /*match_special=*/false))
          tokens.push_back(static_cast<int32_t>(id));
      }
    } else if (o->calib_bytes) {
      fail("quantize: --calib-bytes needs --calib TEXT_FILE");
    }
    for (int32_t id : tokens)
      if (id < 0 || id >= src.config.vocab_size)
        fail("quantize: calibration token ", id, " is outside the vocabulary [0, ",
             src.config.vocab_size, ")");
    std::vector<std::vector<int32_t>> sequences;
    for (size_t i = 0; i + 1 < tokens.size(); i += static_cast<size_t>(o->seq_len))
      sequences.emplace_back(
          tokens.begin() + static_cast<std::ptrdiff_t>(i),
          tokens.begin() + static_cast<std::ptrdiff_t>(std::min(tokens.size(), i + o->seq_len)));
    if (opt.method == QuantizeMethod::gptq && sequences.empty())
      fail("quantize: --method gptq needs calibration (--calib TEXT_FILE [--calib-bytes] or ",
           "--calib-ids FILE); --method rtn needs none");

    const auto start = std::chrono::steady_clock::now();
    std::fprintf(stderr, "hllm: quantizing %s (%s, group %lld, %s%s), %zu calibration tokens\n",
                 o->model_dir.c_str(), o->method.c_str(), static_cast<long long>(o->group_size),
                 o->asym ? "asym" : "sym", o->act_order ? ", act-order" : "", tokens.size());
    const auto report = quantize_model(
        src, o->output_dir, opt, sequences,
        [](const std::string& line) { std::fprintf(stderr, "hllm: %s\n", line.c_str()); });
    double mean = 0;
    for (const auto& r : report) mean += r.rel_error / static_cast<double>(report.size());
    std::fprintf(stderr, "hllm: %zu projections, mean relative weight error %.4f, %.1f s\n",
                 report.size(), mean,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  });
}

}  // namespace hllm::tools
