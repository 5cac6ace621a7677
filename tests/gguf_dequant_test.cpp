// GGUF files written by llama.cpp's own tools (tests/data/gguf, see ../README there): the reader
// finds every tensor, and each block type dequantizes to exactly what gguf-py's reference
// implementation computed (golden.<type>.safetensors: the first 64 rows of three tensors).
// Types the fixtures lack (Q4_1, Q5_0, Q5_1) are checked against hand-built blocks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "hllm/io/gguf.hpp"
#include "hllm/io/safetensors.hpp"
#include "hllm/layout/ggml_blocks.hpp"

namespace {

const std::string DATA = std::string(HLLM_TEST_DATA) + "/gguf/";

// Distance in units in the last place between two finite floats.
int64_t ulp_distance(float a, float b) {
  int32_t ia, ib;
  std::memcpy(&ia, &a, 4);
  std::memcpy(&ib, &b, 4);
  if (ia < 0) ia = INT32_MIN - ia;
  if (ib < 0) ib = INT32_MIN - ib;
  return std::llabs(static_cast<int64_t>(ia) - ib);
}

class DequantGolden : public testing::TestWithParam<std::string> {};

TEST_P(DequantGolden, FirstRowsEqualGgufPy) {
  const hllm::GgufFile file(DATA + "model." + GetParam() + ".gguf");
  const hllm::SafetensorsFile golden(DATA + "golden." + GetParam() + ".safetensors");
  for (const char* name : {"blk.0.attn_q.weight", "blk.0.ffn_down.weight", "output.weight"}) {
    const hllm::GgufTensorInfo* t = file.find_tensor(name);
    ASSERT_NE(t, nullptr) << name;
    const hllm::Tensor expected = golden.tensor(std::string("dequant.") + name);
    const int64_t in = t->ne[0], rows = expected.dim(0);
    ASSERT_EQ(expected.dim(1), in) << name;
    const int64_t row_bytes = static_cast<int64_t>(t->nbytes) / t->ne[1];
    std::vector<float> row(static_cast<size_t>(in));
    int64_t worst = 0;
    for (int64_t r = 0; r < rows; ++r) {
      hllm::ggml_dequant_row(t->type, reinterpret_cast<const uint8_t*>(t->data) + r * row_bytes, in,
                             row.data());
      for (int64_t i = 0; i < in; ++i)
        worst = std::max(worst, ulp_distance(row[i], expected.as<float>()[r * in + i]));
    }
    EXPECT_LE(worst, 1) << GetParam() << " " << name << " (" << hllm::ggml_type_info(t->type).name
                        << ")";
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, DequantGolden,
                         testing::Values("f16", "bf16", "q8_0", "q4_0", "q4_k_m", "q5_k_m",
                                         "q6_k"));

TEST(GgufReader, ReadsLlamaCppMetadataAndTensors) {
  const hllm::GgufFile file(DATA + "model.q4_k_m.gguf");
  EXPECT_EQ(file.version(), 3u);
  EXPECT_EQ(file.string("general.architecture"), "llama");
  EXPECT_EQ(file.integer("llama.block_count"), 2);
  EXPECT_EQ(file.integer("llama.embedding_length"), 512);
  EXPECT_EQ(file.string_array("tokenizer.ggml.tokens").size(), 512u);
  EXPECT_EQ(file.integer("tokenizer.ggml.bos_token_id"), 1);
  // 2 layers × 9 tensors + token_embd, output_norm, output
  EXPECT_EQ(file.tensors().size(), 21u);
  const hllm::GgufTensorInfo* q = file.find_tensor("blk.1.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->shape(), (hllm::Shape{512, 512}));
  EXPECT_EQ(q->type, hllm::GgmlType::Q4_K);
  EXPECT_EQ(q->nbytes, 512u * 2 * 144);
  EXPECT_THROW(file.integer("general.architecture"), hllm::Error);
  EXPECT_THROW(file.string("no.such.key"), hllm::Error);
}

// Q4_1 / Q5_0 / Q5_1 blocks built by hand: element i gets code c(i), so the expected weights
// follow from the format definition directly.
std::vector<uint8_t> half(float v) {
  const hllm::f16 h = hllm::f32_to_f16(v);
  return {static_cast<uint8_t>(h.bits & 0xFF), static_cast<uint8_t>(h.bits >> 8)};
}

TEST(GgmlBlocks, SmallBlockTypesFollowTheirDefinition) {
  const float d = 0.5f, m = -3.0f;
  const auto code4 = [](int i) { return (i * 7 + 3) % 16; };
  const auto code5 = [](int i) { return (i * 11 + 5) % 32; };
  std::vector<uint8_t> qs4(16), qs5(16);
  uint32_t qh = 0;
  for (int i = 0; i < 16; ++i) {
    qs4[i] = static_cast<uint8_t>(code4(i) | code4(i + 16) << 4);
    qs5[i] = static_cast<uint8_t>((code5(i) & 15) | (code5(i + 16) & 15) << 4);
    qh |= static_cast<uint32_t>(code5(i) >> 4) << i | static_cast<uint32_t>(code5(i + 16) >> 4)
                                                          << (i + 16);
  }
  const auto cat = [](std::initializer_list<std::vector<uint8_t>> parts) {
    std::vector<uint8_t> out;
    for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
  };
  const std::vector<uint8_t> qh_bytes = {static_cast<uint8_t>(qh), static_cast<uint8_t>(qh >> 8),
                                         static_cast<uint8_t>(qh >> 16),
                                         static_cast<uint8_t>(qh >> 24)};
  const auto q4_1 = cat({half(d), half(m), qs4});
  const auto q5_0 = cat({half(d), qh_bytes, qs5});
  const auto q5_1 = cat({half(d), half(m), qh_bytes, qs5});
  ASSERT_EQ(q4_1.size(), 20u);
  ASSERT_EQ(q5_0.size(), 22u);
  ASSERT_EQ(q5_1.size(), 24u);
  float out[32];
  hllm::ggml_dequant_block(hllm::GgmlType::Q4_1, q4_1.data(), out);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(out[i], d * code4(i) + m) << "Q4_1 " << i;
  hllm::ggml_dequant_block(hllm::GgmlType::Q5_0, q5_0.data(), out);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(out[i], d * (code5(i) - 16)) << "Q5_0 " << i;
  hllm::ggml_dequant_block(hllm::GgmlType::Q5_1, q5_1.data(), out);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(out[i], d * code5(i) + m) << "Q5_1 " << i;
}

}  // namespace
