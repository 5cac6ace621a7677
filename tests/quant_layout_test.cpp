// hllm's INT4 tile layout and the GPTQ repacker on their own:
//   - the shared helpers (int4_dequant, nibble positions) on hand-made values;
//   - build -> dequantize round trips on odd shapes (in, out not multiples of 8 / 128), random
//     groupings (act-order), and the matmul (decode and batched paths) against a double reference;
//   - GPTQ v1 pack -> repack is the identity; act-order inputs end up sorted by group;
//   - corrupt / inconsistent GPTQ tensors and configs: one clear hllm::Error each.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "hllm/core/threads.hpp"
#include "hllm/cpu/int4_matmul.hpp"
#include "hllm/io/json.hpp"
#include "hllm/io/safetensors.hpp"
#include "hllm/model/load.hpp"
#include "hllm/quant/gptq.hpp"
#include "hllm/quant/gptq_config_json.hpp"
#include "hllm/quant/int4.hpp"
#include "hllm/quant/quantize.hpp"
#include "int4_random.hpp"

namespace {

namespace fs = std::filesystem;
using hllm::DType;
using hllm::Tensor;

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const hllm::Error& e) {
    return e.what();
  }
  return "(no error)";
}

float reference_weight(const hllm::QuantizedMatrix& m, int64_t o, int64_t i) {
  const int64_t g = m.g_idx[i];
  return hllm::f16_to_f32(m.scales[g * m.out + o]) *
         (static_cast<float>(m.codes[o * m.in + i]) - static_cast<float>(m.zeros[g * m.out + o]));
}

TEST(Int4Layout, HelpersOnHandMadeValues) {
  EXPECT_EQ(hllm::int4_dequant(15, 0.5f, 8.0f), 3.5f);
  EXPECT_EQ(hllm::int4_dequant(0, 0.25f, 8.0f), -2.0f);
  EXPECT_EQ(hllm::int4_dequant(3, 2.0f, 0.0f), 6.0f);
  // ggml q4_0 order within a 16-byte chunk; chunks of 32 inputs back to back.
  EXPECT_EQ(hllm::int4_code_byte(0), 0);
  EXPECT_EQ(hllm::int4_code_shift(0), 0);
  EXPECT_EQ(hllm::int4_code_byte(15), 15);
  EXPECT_EQ(hllm::int4_code_byte(16), 0);
  EXPECT_EQ(hllm::int4_code_shift(16), 4);
  EXPECT_EQ(hllm::int4_code_byte(31), 15);
  EXPECT_EQ(hllm::int4_code_byte(32), 16);
  EXPECT_EQ(hllm::int4_code_byte(127), 63);
  EXPECT_EQ(hllm::int4_code_shift(127), 4);
  hllm::int4_tile tile{};
  tile.q[2][5] = 0xA3;  // input 5 -> 3, input 21 -> 10
  tile.scale[2] = hllm::f32_to_f16(0.5f);
  tile.zero[2] = hllm::f32_to_f16(8.0f);
  EXPECT_EQ(hllm::int4_code(tile, 2, 5), 3u);
  EXPECT_EQ(hllm::int4_code(tile, 2, 21), 10u);
  EXPECT_EQ(hllm::int4_weight(tile, 2, 21), 1.0f);
  EXPECT_EQ(hllm::int4_weight(tile, 2, 5), -2.5f);
}

struct Shape {
  int64_t out, in, n_groups;
  bool shuffle;
};

class Int4RoundTrip : public testing::TestWithParam<Shape> {};

TEST_P(Int4RoundTrip, DequantizeAndMatmulMatchTheFormula) {
  const Shape s = GetParam();
  const hllm::QuantizedMatrix m = random_matrix(s.out, s.in, s.n_groups, s.shuffle, 7);
  const hllm::Int4Matrix packed = m.to_int4();
  const hllm::Int4View& w = packed.view();
  EXPECT_EQ(w.strips(), (s.out + 3) / 4);
  EXPECT_GE(w.packed_in(), s.in);
  const std::vector<float> dense = hllm::dequantize_int4(w);
  for (int64_t o = 0; o < s.out; ++o)
    for (int64_t i = 0; i < s.in; ++i)
      ASSERT_EQ(dense[o * s.in + i], reference_weight(m, o, i)) << "o " << o << " i " << i;
  // Every tile holds one group only; padding rows / inputs are zero codes.
  for (int64_t kt = 0; kt < w.k_tiles; ++kt) {
    const int32_t* index = w.input_index;
    const int64_t first = index ? index[kt * 128] : kt * 128;
    for (int k = 0; k < 128; ++k) {
      const int64_t i = index ? index[kt * 128 + k] : kt * 128 + k;
      if (i >= 0) {
        ASSERT_EQ(m.g_idx[i], m.g_idx[first]);
      }
    }
  }

  hllm::ThreadPool pool(2);
  std::vector<float> scratch;
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (const int64_t n : {int64_t{1}, int64_t{3}, int64_t{40}}) {
    std::vector<float> x(static_cast<size_t>(n * s.in)), y(static_cast<size_t>(n * s.out), NAN);
    for (float& v : x) v = dist(rng);
    hllm::cpu::matmul_int4(Tensor(x.data(), DType::f32, {n, s.in}), w,
                           Tensor(y.data(), DType::f32, {n, s.out}), pool, scratch);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t o = 0; o < s.out; ++o) {
        double ref = 0, mag = 0;
        for (int64_t i = 0; i < s.in; ++i) {
          ref += double{x[t * s.in + i]} * dense[o * s.in + i];
          mag += std::fabs(double{x[t * s.in + i]} * dense[o * s.in + i]);
        }
        ASSERT_NEAR(y[t * s.out + o], ref, 1e-6 * mag + 1e-30)
            << "n " << n << " t " << t << " o " << o;
      }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, Int4RoundTrip,
    testing::Values(Shape{13, 200, 1, false},    // odd everything, per channel
                    Shape{13, 200, 4, true},     // odd, random groups of 50 (padded tiles)
                    Shape{8, 128, 1, false},     // one tile row pair
                    Shape{40, 384, 3, false},    // identity packing, group 128
                    Shape{40, 384, 3, true},     // act-order, group 128
                    Shape{6, 1000, 8, true},     // 125-input groups: each padded to a tile
                    Shape{24, 512, 2, false}));  // group 256: two tiles share a group

// The load-time quantizer writes tiles directly; the logical RTN quantizer (asym, groups of 128)
// repacked by to_int4() is its oracle, byte for byte, for bf16 / f16 / f32 weights and out % 4 != 0.
TEST(Int4Layout, TileQuantizerEqualsTheLogicalRtnRepacked) {
  const int64_t out = 37, in = 384;
  std::mt19937 rng(4);
  std::normal_distribution<float> dist(0.0f, 0.05f);
  std::vector<float> w(static_cast<size_t>(out * in));
  for (float& v : w) v = hllm::bf16_to_f32(hllm::f32_to_bf16(dist(rng)));  // exact in every dtype
  std::vector<hllm::bf16> w_bf16;
  std::vector<hllm::f16> w_f16;
  for (const float v : w)
    w_bf16.push_back(hllm::f32_to_bf16(v)), w_f16.push_back(hllm::f32_to_f16(v));
  hllm::QuantizeOptions asym;
  asym.group_size = 128;
  asym.sym = false;
  const hllm::Int4Matrix expected = hllm::quantize_rtn(w, out, in, asym).to_int4();
  hllm::ThreadPool pool(2);
  for (const Tensor& t :
       {Tensor(w.data(), DType::f32, {out, in}), Tensor(w_bf16.data(), DType::bf16, {out, in}),
        Tensor(w_f16.data(), DType::f16, {out, in})}) {
    const hllm::Int4Matrix got = hllm::quantize_rtn_tiles(t, pool);
    ASSERT_EQ(got.view().nbytes(), expected.view().nbytes());
    EXPECT_EQ(std::memcmp(got.view().tiles, expected.view().tiles, got.view().nbytes()), 0)
        << hllm::dtype_name(t.dtype);
  }
  EXPECT_NE(error_of([&] {
              hllm::quantize_rtn_tiles(Tensor(w.data(), DType::f32, {in, out}), pool);
            }).find("in % 128 == 0"),
            std::string::npos);
}

TEST(Int4Layout, ActOrderInputsAreSortedByGroupAndIdentityIsElided) {
  const hllm::QuantizedMatrix ordered = random_matrix(8, 384, 3, false, 1);
  EXPECT_EQ(ordered.to_int4().view().input_index, nullptr);
  const hllm::QuantizedMatrix shuffled = random_matrix(8, 384, 3, true, 1);
  const hllm::Int4Matrix packed = shuffled.to_int4();
  const hllm::Int4View& w = packed.view();
  ASSERT_NE(w.input_index, nullptr);
  ASSERT_EQ(w.k_tiles, 3);
  std::vector<int> seen(384, 0);
  for (int64_t p = 0; p < 384; ++p) {
    const int32_t i = w.input_index[p];
    ASSERT_GE(i, 0);
    ++seen[i];
    EXPECT_EQ(shuffled.g_idx[i], p / 128);
    if (p % 128) {
      EXPECT_GT(i, w.input_index[p - 1]) << "stable within a group";
    }
  }
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), 384);
}

hllm::GptqTensors tensors_of(hllm::GptqPacked& p, const hllm::QuantizedMatrix& m) {
  return {Tensor(p.qweight.data(), DType::i32, {m.in / 8, m.out}),
          Tensor(p.qzeros.data(), DType::i32, {m.n_groups, m.out / 8}),
          Tensor(p.scales.data(), DType::f16, {m.n_groups, m.out}),
          Tensor(p.g_idx.data(), DType::i32, {m.in})};
}

hllm::QuantConfig gptq_config(bool sym, bool desc_act, int64_t group = 128) {
  hllm::QuantConfig q;
  q.method = hllm::QuantMethod::gptq;
  q.sym = sym;
  q.desc_act = desc_act;
  q.group_size = group;
  return q;
}

TEST(Gptq, PackThenRepackIsTheIdentity) {
  hllm::QuantizedMatrix m = random_matrix(24, 384, 3, true, 5);
  for (auto& z : m.zeros) z = static_cast<uint8_t>(std::max<int>(z, 1));  // v1 stores 1..16
  hllm::GptqPacked p = hllm::pack_gptq_v1(m, "m");
  const hllm::Int4Matrix a = m.to_int4();
  const hllm::Int4Matrix b =
      hllm::repack_gptq(tensors_of(p, m), m.in, m.out, gptq_config(false, true), "m");
  ASSERT_EQ(a.view().nbytes(), b.view().nbytes());
  EXPECT_EQ(std::memcmp(a.view().tiles, b.view().tiles, a.view().nbytes()), 0);
  EXPECT_TRUE(std::equal(a.view().input_index, a.view().input_index + 384, b.view().input_index));
}

TEST(Gptq, InconsistentTensorsAreClearErrors) {
  hllm::QuantizedMatrix m = random_matrix(16, 256, 2, false, 9);
  for (auto& z : m.zeros) z = 8;
  hllm::GptqPacked p = hllm::pack_gptq_v1(m, "m");
  const hllm::QuantConfig sym = gptq_config(true, false);
  const auto repack = [&](hllm::GptqTensors t, hllm::QuantConfig q) {
    return error_of([&] { hllm::repack_gptq(t, 256, 16, q, "layer.q_proj"); });
  };
  EXPECT_EQ(repack(tensors_of(p, m), sym), "(no error)");

  hllm::GptqTensors t = tensors_of(p, m);
  t.qweight = t.qweight.reshape({16, 32});
  EXPECT_EQ(repack(t, sym), "layer.q_proj.qweight: shape [16, 32], expected [32, 16]");
  t = tensors_of(p, m);
  t.scales.dtype = DType::bf16;
  EXPECT_EQ(repack(t, sym), "layer.q_proj.scales: dtype BF16, expected F16");
  t = tensors_of(p, m);
  t.qzeros = t.qzeros.reshape({1, 4});
  EXPECT_NE(repack(t, sym).find("layer.q_proj.qzeros: shape [1, 4], expected [2, 2]"),
            std::string::npos);
  EXPECT_NE(repack(tensors_of(p, m), gptq_config(true, false, 64)).find("scales: shape [2, 16]"),
            std::string::npos);

  std::vector<int32_t> bad_g_idx = p.g_idx;
  bad_g_idx[77] = 2;
  t = tensors_of(p, m);
  t.g_idx = Tensor(bad_g_idx.data(), DType::i32, {256});
  EXPECT_EQ(repack(t, sym), "layer.q_proj.g_idx[77] = 2 is outside [0, 2) (groups in scales)");
  bad_g_idx[77] = -1;
  EXPECT_NE(repack(t, sym).find("g_idx[77] = -1 is outside"), std::string::npos);
  t = tensors_of(p, m);
  t.g_idx = {};
  EXPECT_EQ(repack(t, sym), "(no error)") << "no g_idx: i / group_size";
  EXPECT_NE(repack(t, gptq_config(true, true)).find("g_idx: missing, but desc_act"),
            std::string::npos);

  // v1 sym stores 7; 8 means a v2 checkpoint labeled v1.
  EXPECT_NE(repack(tensors_of(p, m),
                   [] {
                     hllm::QuantConfig q = gptq_config(true, false);
                     q.zeros_minus_one = false;
                     return q;
                   }())
                .find("gptq_v2 stores zero = 8 everywhere, found 7"),
            std::string::npos);
  std::vector<int32_t> zeros8(p.qzeros.size(), static_cast<int32_t>(0x88888888u));
  t = tensors_of(p, m);
  t.qzeros = Tensor(zeros8.data(), DType::i32, {2, 2});
  const std::string v2_as_v1 = repack(t, sym);
  EXPECT_NE(v2_as_v1.find("sym checkpoint with checkpoint_format gptq (v1) stores zero - 1 = 7"),
            std::string::npos)
      << v2_as_v1;
  EXPECT_NE(v2_as_v1.find("set checkpoint_format to gptq_v2"), std::string::npos);

  hllm::QuantConfig bits8 = sym;
  bits8.bits = 8;
  EXPECT_EQ(repack(tensors_of(p, m), bits8),
            "layer.q_proj: GPTQ bits 8 is not supported (supported: 4)");
  EXPECT_NE(error_of([&] {
              hllm::repack_gptq(tensors_of(p, m), 256, 12, sym, "x");
            }).find("multiples of 8"),
            std::string::npos);
}

TEST(Gptq, QuantizationConfigErrors) {
  const auto parse = [](const char* text) {
    return error_of([&] { hllm::parse_quant_config(hllm::json::parse(text), "config.json"); });
  };
  EXPECT_EQ(parse(R"({"quant_method": "gptq", "bits": 4, "group_size": 128})"), "(no error)");
  EXPECT_EQ(parse(R"({"quant_method": "gptq", "bits": 8, "group_size": 128})"),
            "config.json: GPTQ bits 8 is not supported (supported: 4)");
  EXPECT_NE(parse(R"({"quant_method": "awq", "bits": 4})").find("\"awq\" is not supported"),
            std::string::npos);
  EXPECT_NE(parse(R"({"quant_method": "gptq", "bits": 4, "checkpoint_format": "marlin"})")
                .find("checkpoint_format \"marlin\" is not supported (supported: gptq, gptq_v2)"),
            std::string::npos);
  EXPECT_NE(parse(R"({"quant_method": "gptq", "bits": 4, "is_marlin_format": true})")
                .find("Marlin-packed"),
            std::string::npos);
  EXPECT_NE(parse(R"({"quant_method": "gptq", "bits": 4, "group_size": 0})").find("group_size"),
            std::string::npos);
  EXPECT_NE(parse(R"({"quant_method": "gptq", "bits": 4, "lm_head": true})").find("lm_head"),
            std::string::npos);
  EXPECT_NE(parse(R"({"bits": 4})").find("quantization method \"\" is not supported"),
            std::string::npos);
  const hllm::QuantConfig v2 = hllm::parse_quant_config(
      hllm::json::parse(R"({"quant_method": "gptq", "bits": 4, "checkpoint_format": "gptq_v2",
                            "group_size": -1, "desc_act": true, "sym": false})"),
      "c");
  EXPECT_FALSE(v2.zeros_minus_one);
  EXPECT_EQ(v2.group_size, -1);
  EXPECT_TRUE(v2.desc_act);
  EXPECT_FALSE(v2.sym);
}

// Whole folders: a fixture copy with one tensor removed / changed, and quantize_config.json only.
class GptqFolder : public testing::Test {
 protected:
  void SetUp() override {
    src_ = fs::path(HLLM_TEST_DATA) / "llama3-tiny-gptq-asym";
    dir_ = fs::temp_directory_path() / ("hllm_gptq_folder_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Copies the fixture's tensors to dir_ except `skip`; `edit` may change one tensor's data.
  void write_model(const std::string& skip,
                   const std::function<void(const std::string&, std::vector<char>&)>& edit = {}) {
    const hllm::SafetensorsFile file(src_ / "model.safetensors");
    std::vector<std::vector<char>> storage;
    storage.reserve(file.tensors().size());
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (const hllm::TensorInfo& info : file.tensors()) {
      if (info.name == skip) continue;
      const Tensor t = file.tensor(info.name);
      storage.emplace_back(static_cast<const char*>(t.data),
                           static_cast<const char*>(t.data) + t.nbytes());
      if (edit) edit(info.name, storage.back());
      tensors.emplace_back(info.name, Tensor(storage.back().data(), t.dtype, t.shape));
    }
    hllm::write_safetensors(dir_ / "model.safetensors", tensors);
  }

  fs::path src_, dir_;
};

TEST_F(GptqFolder, MissingQzerosNamesTheTensor) {
  fs::copy_file(src_ / "config.json", dir_ / "config.json");
  write_model("model.layers.1.mlp.up_proj.qzeros");
  EXPECT_NE(error_of([&] {
              hllm::open_model_folder(dir_);
            }).find("GPTQ tensor \"model.layers.1.mlp.up_proj.qzeros\" is missing"),
            std::string::npos);
}

TEST_F(GptqFolder, OutOfRangeGroupIndexNamesTheTensor) {
  fs::copy_file(src_ / "config.json", dir_ / "config.json");
  write_model("", [](const std::string& name, std::vector<char>& data) {
    if (name == "model.layers.0.self_attn.o_proj.g_idx") {
      const int32_t bad = 9;
      std::memcpy(data.data() + 4 * 10, &bad, 4);
    }
  });
  EXPECT_NE(error_of([&] {
              hllm::open_model_folder(dir_);
            }).find("model.layers.0.self_attn.o_proj.g_idx[10] = 9 is outside [0, 4)"),
            std::string::npos);
}

TEST_F(GptqFolder, QuantizeConfigJsonAloneIsEnough) {
  hllm::json config = hllm::read_json_file(src_ / "config.json");
  config.erase("quantization_config");
  std::ofstream(dir_ / "config.json") << config.dump();
  write_model("");
  // Without quantize_config.json the GPTQ tensors are an error that says what is missing ...
  EXPECT_NE(error_of([&] { hllm::open_model_folder(dir_); }).find("has no quantization_config"),
            std::string::npos);
  // ... with it, the folder loads as GPTQ (AutoGPTQ's side file has no quant_method).
  fs::copy_file(src_ / "quantize_config.json", dir_ / "quantize_config.json");
  const hllm::ModelFolder folder = hllm::open_model_folder(dir_);
  EXPECT_TRUE(folder.config.quant.quantized());
  EXPECT_FALSE(folder.config.quant.sym);
  EXPECT_TRUE(folder.weights.layers[1].w_down.is_int4());
}

}  // namespace
