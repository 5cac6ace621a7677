// `hllm quantize` end to end on the tiny bf16 model: RTN and GPTQ (with and without act-order)
// write standard GPTQ v1 folders that hllm loads back as INT4, with dequantized weights close to
// the originals, and the quality against the bf16 logits (mean KL and perplexity on held-out text,
// tests/data/quant_text.txt: first 2/3 calibrate, last 1/3 evaluate) is printed and ordered:
// GPTQ must not be worse than RTN. The runner command is exercised once, too.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "hllm/cpu/backend.hpp"
#include "hllm/engine/quantize_model.hpp"
#include "hllm/io/json.hpp"
#include "hllm/model/llama.hpp"
#include "hllm/model/load.hpp"

namespace {

namespace fs = std::filesystem;
const fs::path MODEL_DIR = fs::path(HLLM_TEST_DATA) / "llama3-tiny-h512-l2-v512";

std::vector<int32_t> text_bytes() {
  std::ifstream in(fs::path(HLLM_TEST_DATA) / "quant_text.txt", std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  std::vector<int32_t> ids;
  for (unsigned char ch : text.str()) ids.push_back(ch);
  return ids;
}

std::vector<std::vector<int32_t>> chunks(std::span<const int32_t> ids, size_t len) {
  std::vector<std::vector<int32_t>> out;
  for (size_t i = 0; i + 1 < ids.size(); i += len)
    out.emplace_back(ids.begin() + i, ids.begin() + std::min(ids.size(), i + len));
  return out;
}

// log-softmax logits of every position of every sequence.
std::vector<std::vector<float>> all_logits(const fs::path& dir,
                                           const std::vector<std::vector<int32_t>>& sequences) {
  const hllm::ModelFolder folder = hllm::open_model_folder(dir);
  hllm::CpuBackend backend(2);
  hllm::LlamaModel model(folder.config, folder.weights, backend);
  std::vector<std::vector<float>> out;
  for (const auto& seq : sequences) {
    const int64_t n = static_cast<int64_t>(seq.size()), vocab = folder.config.vocab_size;
    hllm::KvCache cache = model.new_cache(n);
    std::vector<float> logits(static_cast<size_t>(n * vocab));
    model.forward(seq, cache, logits, true);
    for (int64_t t = 0; t < n; ++t) {
      float* row = logits.data() + t * vocab;
      const float max = *std::max_element(row, row + vocab);
      double sum = 0;
      for (int64_t v = 0; v < vocab; ++v) sum += std::exp(double{row[v]} - max);
      for (int64_t v = 0; v < vocab; ++v) row[v] -= max + static_cast<float>(std::log(sum));
    }
    out.push_back(std::move(logits));
  }
  return out;
}

struct Quality {
  double mean_kl = 0;       // KL(bf16 || quantized) per position, nats
  double perplexity = 0;    // of the text itself (next byte)
  double argmax_agree = 0;  // fraction of positions with the bf16 argmax
};

Quality quality(const std::vector<std::vector<float>>& ref,
                const std::vector<std::vector<float>>& ours,
                const std::vector<std::vector<int32_t>>& sequences, int64_t vocab) {
  Quality q;
  double nll = 0;
  int64_t positions = 0, predicted = 0, agree = 0;
  for (size_t s = 0; s < sequences.size(); ++s) {
    const int64_t n = static_cast<int64_t>(sequences[s].size());
    for (int64_t t = 0; t < n; ++t) {
      const float* p = ref[s].data() + t * vocab;
      const float* r = ours[s].data() + t * vocab;
      double kl = 0;
      for (int64_t v = 0; v < vocab; ++v) kl += std::exp(double{p[v]}) * (p[v] - r[v]);
      q.mean_kl += kl;
      agree += std::max_element(p, p + vocab) == p + (std::max_element(r, r + vocab) - r);
      ++positions;
      if (t + 1 < n) nll -= r[sequences[s][t + 1]], ++predicted;
    }
  }
  q.mean_kl /= static_cast<double>(positions);
  q.perplexity = std::exp(nll / static_cast<double>(predicted));
  q.argmax_agree = static_cast<double>(agree) / static_cast<double>(positions);
  return q;
}

class QuantizeRoundTrip : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = fs::temp_directory_path() / ("hllm_quantize_test_" + std::to_string(getpid()));
    fs::remove_all(root_);
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }
  static fs::path root_;
};
fs::path QuantizeRoundTrip::root_;

TEST_F(QuantizeRoundTrip, RtnAndGptqLoadBackAndGptqIsBetter) {
  const std::vector<int32_t> ids = text_bytes();
  ASSERT_GT(ids.size(), 3000u);
  const size_t split = ids.size() * 2 / 3;
  const auto calib = chunks(std::span(ids).first(split), 256);
  const auto eval = chunks(std::span(ids).subspan(split), 256);
  const hllm::ModelFolder src = hllm::open_model_folder(MODEL_DIR);
  const int64_t vocab = src.config.vocab_size;
  const auto reference = all_logits(MODEL_DIR, eval);

  struct Variant {
    const char* name;
    hllm::QuantizeMethod method;
    bool act_order;
    int64_t group;
  };
  const Variant variants[] = {{"rtn", hllm::QuantizeMethod::rtn, false, 128},
                              {"gptq", hllm::QuantizeMethod::gptq, false, 128},
                              {"gptq-act-order", hllm::QuantizeMethod::gptq, true, 128},
                              {"rtn-per-channel", hllm::QuantizeMethod::rtn, false, -1},
                              {"gptq-per-channel", hllm::QuantizeMethod::gptq, false, -1}};
  std::map<std::string, Quality> results;
  for (const Variant& v : variants) {
    hllm::QuantizeModelOptions opt;
    opt.method = v.method;
    opt.matrix.act_order = v.act_order;
    opt.matrix.group_size = v.group;
    opt.threads = 2;
    const fs::path out = root_ / v.name;
    hllm::quantize_model(src, out, opt, calib);

    // A standard GPTQ v1 folder ...
    for (const char* file :
         {"config.json", "quantize_config.json", "model.safetensors", "generation_config.json"})
      EXPECT_TRUE(fs::exists(out / file)) << file;
    const hllm::json config = hllm::read_json_file(out / "config.json");
    EXPECT_EQ(config["quantization_config"]["checkpoint_format"], "gptq");
    EXPECT_EQ(config["quantization_config"]["desc_act"], v.act_order);
    EXPECT_EQ(config["torch_dtype"], "float16");
    // ... that hllm loads back as INT4 with weights close to the originals.
    const hllm::ModelFolder back = hllm::open_model_folder(out);
    ASSERT_TRUE(back.config.quant.quantized());
    EXPECT_TRUE(back.config.quant.zeros_minus_one);
    EXPECT_EQ(back.config.quant.group_size, v.group);
    for (int64_t l = 0; l < src.config.n_layers; ++l) {
      const hllm::Linear& q = back.weights.layers[l].w_up;
      const hllm::Tensor& d = src.weights.layers[l].w_up.dense;
      ASSERT_TRUE(q.is_int4());
      EXPECT_EQ(q.int4.input_index != nullptr, v.act_order);
      const std::vector<float> dq = hllm::dequantize_int4(q.int4);
      double err = 0, norm = 0, max_w = 0;
      for (int64_t i = 0; i < d.numel(); ++i)
        max_w = std::max(max_w, std::fabs(double{hllm::bf16_to_f32(d.as<hllm::bf16>()[i])}));
      for (int64_t i = 0; i < d.numel(); ++i) {
        const double w = hllm::bf16_to_f32(d.as<hllm::bf16>()[i]);
        err += (w - dq[i]) * (w - dq[i]), norm += w * w;
        // RTN moves no weight by more than a quantization step of the widest group (GPTQ does,
        // on purpose: it trades weight error for output error).
        if (v.method == hllm::QuantizeMethod::rtn) {
          ASSERT_LE(std::fabs(w - dq[i]), 2.0 * max_w / 15.0 * 1.01 + 1e-6) << v.name << " " << i;
        }
      }
      EXPECT_LT(std::sqrt(err / norm), 0.2) << v.name;
    }
    results[v.name] = quality(reference, all_logits(out, eval), eval, vocab);
  }
  const Quality bf16 = quality(reference, reference, eval, vocab);
  std::printf("held-out %zu bytes; bf16 perplexity %.3f\n", ids.size() - split, bf16.perplexity);
  for (const auto& [name, q] : results)
    std::printf("%-17s mean KL %.5f nats  perplexity %.3f  argmax agreement %.3f\n", name.c_str(),
                q.mean_kl, q.perplexity, q.argmax_agree);
  EXPECT_LT(results["gptq"].mean_kl, results["rtn"].mean_kl);
  EXPECT_LT(results["gptq-per-channel"].mean_kl, results["rtn-per-channel"].mean_kl);
  EXPECT_LT(results["gptq-act-order"].mean_kl, results["rtn"].mean_kl);
}

TEST_F(QuantizeRoundTrip, RunnerWritesALoadableCheckpoint) {
  const fs::path out = root_ / "cli";
  const std::string command = std::string(HLLM_RUNNER) + " quantize -m " + MODEL_DIR.string() +
                              " -o " + out.string() + " --method gptq --act-order --calib " +
                              (fs::path(HLLM_TEST_DATA) / "quant_text.txt").string() +
                              " --calib-bytes --seq-len 512 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  std::string output;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof buffer, pipe)) output.append(buffer, n);
  ASSERT_EQ(pclose(pipe), 0) << output;
  EXPECT_NE(output.find("14 projections"), std::string::npos) << output;
  const hllm::ModelFolder back = hllm::open_model_folder(out);
  EXPECT_TRUE(back.config.quant.desc_act);
  EXPECT_TRUE(back.weights.layers[0].wq.is_int4());

  // GPTQ without calibration is refused with a hint.
  FILE* bad = popen((std::string(HLLM_RUNNER) + " quantize -m " + MODEL_DIR.string() + " -o " +
                     (root_ / "bad").string() + " 2>&1")
                        .c_str(),
                    "r");
  output.clear();
  while (size_t n = fread(buffer, 1, sizeof buffer, bad)) output.append(buffer, n);
  EXPECT_NE(pclose(bad), 0);
  EXPECT_NE(output.find("--method gptq needs calibration"), std::string::npos) << output;
}

}  // namespace
