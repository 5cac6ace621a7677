// safetensors reader/writer: round trips, the real tiny Llama fixture, sharded folders, and corrupt
// files in the style of llama.cpp's test-gguf — every corruption must be an hllm::Error naming the
// file (and tensor), never a crash or an out-of-bounds read (the sanitizer build checks the
// latter).
#include "hllm/io/safetensors.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using hllm::Checkpoint;
using hllm::DType;
using hllm::SafetensorsFile;
using hllm::Shape;
using hllm::Tensor;

namespace {

// A scratch folder per test, unique per test process, removed afterwards.
class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("hllm-safetensors-" + std::to_string(::getpid()) + "-" + test->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path dir_;
};

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

uint64_t read_u64_le(const std::string& bytes) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | static_cast<uint8_t>(bytes[i]);
  return value;
}

std::string u64_le(uint64_t value) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  return out;
}

// A file with the given header text (not padded) and `data_size` bytes of data.
std::string make_file(const std::string& header, size_t data_size) {
  return u64_le(header.size()) + header + std::string(data_size, '\x11');
}

// Opens `path` as a safetensors file and returns the hllm::Error message, which must name the file
// (the test fails if opening succeeds).
std::string open_error(const fs::path& path) {
  try {
    SafetensorsFile file(path);
  } catch (const hllm::Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    return message;
  }
  ADD_FAILURE() << "opening " << path << " succeeded";
  return "";
}

std::string checkpoint_error(const fs::path& dir) {
  try {
    Checkpoint::open(dir);
  } catch (const hllm::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "opening checkpoint " << dir << " succeeded";
  return "";
}

#define EXPECT_HAS(message, part) \
  EXPECT_NE(std::string(message).find(part), std::string::npos) << (message)

// --- round trips -----------------------------------------------------------------------------

TEST_F(SafetensorsTest, RoundTripAllDtypesAndShapes) {
  std::vector<float> f32 = {1.5f, -2.0f, 3.25f, 0.0f, -0.5f, 7.0f};
  std::vector<uint16_t> bf16 = {0x3f80, 0xc000, 0x7f80, 0x0001, 0x1234, 0xffff,
                                0x4000, 0x4040, 0x4080, 0x40a0, 0x40c0, 0x40e0};
  std::vector<uint16_t> f16_odd = {0x3c00, 0x4000, 0xbc00};  // 3 elements: 6 bytes
  std::vector<float> after_odd = {42.0f, -42.0f};            // lands at a 2 (mod 4) offset
  std::vector<int32_t> i32_empty;
  std::vector<int64_t> i64 = {INT64_MIN, -1, 0, 1, INT64_MAX, 123456789012345};
  float scalar = 3.5f;
  const std::vector<std::pair<std::string, Tensor>> tensors = {
      {"f32", Tensor(f32.data(), DType::f32, Shape{2, 3})},
      {"bf16.rank4", Tensor(bf16.data(), DType::bf16, Shape{2, 3, 1, 2})},
      {"f16.odd", Tensor(f16_odd.data(), DType::f16, Shape{3})},
      {"f32.misaligned", Tensor(after_odd.data(), DType::f32, Shape{2})},
      {"i32.zero_size", Tensor(i32_empty.data(), DType::i32, Shape{2, 0, 3})},
      {"i64", Tensor(i64.data(), DType::i64, Shape{3, 2})},
      {"scalar", Tensor(&scalar, DType::f32, Shape{})},
  };
  const fs::path path = dir_ / "round_trip.safetensors";
  hllm::write_safetensors(path, tensors, {{"format", "pt"}, {"note", "héllo"}});

  EXPECT_EQ(read_u64_le(read_bytes(path)) % 8, 0u) << "header must be padded to 8 bytes";

  const SafetensorsFile file(path);
  EXPECT_EQ(file.path(), path);
  EXPECT_EQ(file.metadata().at("format"), "pt");
  EXPECT_EQ(file.metadata().at("note"), "héllo");
  ASSERT_EQ(file.tensors().size(), tensors.size());
  for (const auto& [name, original] : tensors) {
    SCOPED_TRACE(name);
    const hllm::TensorInfo* info = file.find(name);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->dtype, original.dtype);
    EXPECT_EQ(info->shape, original.shape);
    EXPECT_EQ(info->nbytes(), original.nbytes());
    const Tensor view = file.tensor(name);
    EXPECT_EQ(view.dtype, original.dtype);
    EXPECT_EQ(view.shape, original.shape);
    EXPECT_TRUE(view.is_contiguous());
    ASSERT_NE(view.data, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(view.data) % hllm::dtype_size(view.dtype), 0u);
    if (original.nbytes() > 0) {
      EXPECT_EQ(std::memcmp(view.data, original.data, original.nbytes()), 0);
    }
  }
  EXPECT_EQ(file.tensor("scalar").numel(), 1);
  EXPECT_EQ(file.tensor("scalar").as<float>()[0], 3.5f);
  EXPECT_EQ(file.tensor("i32.zero_size").numel(), 0);
  EXPECT_EQ(file.tensor("f32.misaligned").as<float>()[1], -42.0f);
  // Storage order is the order given to the writer.
  EXPECT_EQ(file.tensors().front().name, "f32");
  EXPECT_EQ(file.find("nope"), nullptr);
  try {
    file.tensor("nope");
    ADD_FAILURE() << "no error for a missing tensor";
  } catch (const hllm::Error& e) {
    EXPECT_HAS(e.what(), path.string());
    EXPECT_HAS(e.what(), "\"nope\"");
  }
}

TEST_F(SafetensorsTest, EmptyHeaderIsAValidFile) {
  hllm::write_safetensors(dir_ / "empty.safetensors", {});
  const SafetensorsFile file(dir_ / "empty.safetensors");
  EXPECT_TRUE(file.tensors().empty());
  EXPECT_TRUE(file.metadata().empty());
}

TEST_F(SafetensorsTest, WriterRejectsNonContiguousAndDuplicates) {
  std::vector<float> data(6, 1.0f);
  Tensor transposed(data.data(), DType::f32, Shape{2, 3});
  transposed.strides = {1, 2, 0, 0};
  EXPECT_THROW(hllm::write_safetensors(dir_ / "a.safetensors", {{"t", transposed}}), hllm::Error);
  const Tensor t(data.data(), DType::f32, Shape{6});
  EXPECT_THROW(hllm::write_safetensors(dir_ / "b.safetensors", {{"t", t}, {"t", t}}), hllm::Error);
}

// --- the real fixture --------------------------------------------------------------------------

TEST_F(SafetensorsTest, ReadsTinyLlamaFixture) {
  const fs::path folder = fs::path(HLLM_TEST_DATA) / "llama3-tiny-h512-l2-v512";
  if (!fs::exists(folder / "model.safetensors")) GTEST_SKIP() << "fixture missing: " << folder;
  const SafetensorsFile file(folder / "model.safetensors");
  EXPECT_EQ(file.metadata().at("format"), "pt");
  EXPECT_EQ(file.tensors().size(), 3u + 2u * 9u);  // embed, lm_head, norm + 9 per layer
  for (const hllm::TensorInfo& info : file.tensors())
    EXPECT_EQ(info.dtype, DType::bf16) << info.name;
  EXPECT_EQ(file.tensor("model.embed_tokens.weight").shape, (Shape{512, 512}));
  EXPECT_EQ(file.tensor("lm_head.weight").shape, (Shape{512, 512}));
  EXPECT_EQ(file.tensor("model.norm.weight").shape, (Shape{512}));
  EXPECT_EQ(file.tensor("model.layers.0.self_attn.q_proj.weight").shape, (Shape{512, 512}));
  EXPECT_EQ(file.tensor("model.layers.1.self_attn.k_proj.weight").shape, (Shape{128, 512}));
  EXPECT_EQ(file.tensor("model.layers.1.self_attn.v_proj.weight").shape, (Shape{128, 512}));
  EXPECT_EQ(file.tensor("model.layers.0.mlp.gate_proj.weight").shape, (Shape{768, 512}));
  EXPECT_EQ(file.tensor("model.layers.0.mlp.down_proj.weight").shape, (Shape{512, 768}));
  EXPECT_EQ(file.tensor("model.layers.1.post_attention_layernorm.weight").shape, (Shape{512}));

  const Checkpoint ckpt = Checkpoint::open(folder);
  EXPECT_TRUE(ckpt.contains("model.norm.weight"));
  EXPECT_FALSE(ckpt.contains("model.layers.2.mlp.up_proj.weight"));
  EXPECT_EQ(ckpt.names().size(), file.tensors().size());
  uint64_t data_bytes = 0;
  for (const hllm::TensorInfo& info : file.tensors()) data_bytes += info.nbytes();
  EXPECT_EQ(ckpt.total_bytes(), data_bytes);
  // RMSNorm weights of a trained (or randomly initialized HF) model are finite bf16 values.
  const Tensor norm = ckpt.tensor("model.norm.weight");
  for (int64_t i = 0; i < norm.numel(); ++i) {
    EXPECT_TRUE(std::isfinite(hllm::bf16_to_f32(norm.as<hllm::bf16>()[i])));
  }
}

// --- sharded folders --------------------------------------------------------------------------

// Writes shards "model-00001-of-00002.safetensors" (a, b) and "...00002..." (c) plus an index whose
// weight_map is `weight_map` (JSON text).
struct ShardedFolder {
  std::vector<float> a = {1, 2, 3}, b = {4, 5}, c = {6, 7, 8, 9};

  void write(const fs::path& dir, const std::string& weight_map) {
    hllm::write_safetensors(dir / "model-00001-of-00002.safetensors",
                            {{"a", Tensor(a.data(), DType::f32, Shape{3})},
                             {"b", Tensor(b.data(), DType::f32, Shape{2})}});
    hllm::write_safetensors(dir / "model-00002-of-00002.safetensors",
                            {{"c", Tensor(c.data(), DType::f32, Shape{2, 2})}});
    write_bytes(dir / "model.safetensors.index.json",
                R"({"metadata": {"total_size": 36}, "weight_map": )" + weight_map + "}");
  }
};

const char* const GOOD_WEIGHT_MAP = R"({"a": "model-00001-of-00002.safetensors",
  "b": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"})";

TEST_F(SafetensorsTest, ShardedCheckpoint) {
  ShardedFolder folder;
  folder.write(dir_, GOOD_WEIGHT_MAP);
  const Checkpoint ckpt = Checkpoint::open(dir_);
  EXPECT_EQ(ckpt.names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(ckpt.total_bytes(), 36u);
  EXPECT_EQ(ckpt.info("c").shape, (Shape{2, 2}));
  EXPECT_EQ(ckpt.tensor("b").as<float>()[1], 5.0f);
  EXPECT_EQ(ckpt.tensor("c").as<float>()[3], 9.0f);
  EXPECT_TRUE(ckpt.contains("a"));
  EXPECT_FALSE(ckpt.contains("d"));
  const std::string message = [&] {
    try {
      ckpt.tensor("d");
    } catch (const hllm::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  }();
  EXPECT_HAS(message, dir_.string());
  EXPECT_HAS(message, "\"d\"");
}

TEST_F(SafetensorsTest, CheckpointFolderWithoutWeights) {
  EXPECT_HAS(checkpoint_error(dir_), dir_.string());
  EXPECT_HAS(checkpoint_error(dir_ / "does-not-exist"), "does-not-exist");
}

TEST_F(SafetensorsTest, MissingShard) {
  ShardedFolder folder;
  folder.write(dir_, GOOD_WEIGHT_MAP);
  fs::remove(dir_ / "model-00002-of-00002.safetensors");
  const std::string message = checkpoint_error(dir_);
  EXPECT_HAS(message, "model-00002-of-00002.safetensors");
  EXPECT_HAS(message, "missing");
}

TEST_F(SafetensorsTest, IndexPointingOutsideTheFolder) {
  ShardedFolder folder;
  for (const char* shard : {"../x.safetensors", "sub/x.safetensors", "..", ""}) {
    SCOPED_TRACE(shard);
    folder.write(dir_, std::string(R"({"a": ")") + shard + "\"}");
    const std::string message = checkpoint_error(dir_);
    EXPECT_HAS(message, "model.safetensors.index.json");
    EXPECT_HAS(message, "not a plain file name");
  }
}

TEST_F(SafetensorsTest, IndexNotJson) {
  ShardedFolder folder;
  folder.write(dir_, "{\"a\": ");
  EXPECT_HAS(checkpoint_error(dir_), "model.safetensors.index.json");
  folder.write(dir_, "[]");
  EXPECT_HAS(checkpoint_error(dir_), "weight_map");
  folder.write(dir_, R"({"a": 7})");
  EXPECT_HAS(checkpoint_error(dir_), "\"a\"");
}

TEST_F(SafetensorsTest, TensorMissingFromItsShard) {
  ShardedFolder folder;
  folder.write(dir_, R"({"a": "model-00001-of-00002.safetensors",
    "b": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors",
    "d": "model-00002-of-00002.safetensors"})");
  const std::string message = checkpoint_error(dir_);
  EXPECT_HAS(message, "model-00002-of-00002.safetensors");
  EXPECT_HAS(message, "\"d\"");
  EXPECT_HAS(message, "missing from this shard");
}

TEST_F(SafetensorsTest, ShardTensorMappedElsewhereOrUnlisted) {
  ShardedFolder folder;
  folder.write(dir_, R"({"a": "model-00001-of-00002.safetensors",
    "b": "model-00002-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"})");
  std::string message = checkpoint_error(dir_);  // "b" is listed for shard 2 but lives in shard 1
  EXPECT_HAS(message, "\"b\"");
  folder.write(dir_, R"({"a": "model-00001-of-00002.safetensors",
    "c": "model-00002-of-00002.safetensors"})");
  message = checkpoint_error(dir_);
  EXPECT_HAS(message, "model-00001-of-00002.safetensors");
  EXPECT_HAS(message, "\"b\" is not listed");
}

// --- corrupt files -----------------------------------------------------------------------------

// A valid two-tensor file: "w" F32 [2, 2] at [0, 16), "v" BF16 [4] at [16, 24).
const std::string GOOD_HEADER =
    R"({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},)"
    R"( "v": {"dtype": "BF16", "shape": [4], "data_offsets": [16, 24]}})";

// A one-tensor header "t" with the given JSON fields.
std::string one_tensor(const std::string& dtype, const std::string& shape,
                       const std::string& offsets) {
  return R"({"t": {"dtype": ")" + dtype + R"(", "shape": )" + shape + R"(, "data_offsets": )" +
         offsets + "}}";
}

TEST_F(SafetensorsTest, GoodHeaderOpens) {
  write_bytes(dir_ / "good.safetensors", make_file(GOOD_HEADER, 24));
  const SafetensorsFile file(dir_ / "good.safetensors");
  EXPECT_EQ(file.tensors().size(), 2u);
}

TEST_F(SafetensorsTest, EmptyFile) {
  write_bytes(dir_ / "x.safetensors", "");
  EXPECT_HAS(open_error(dir_ / "x.safetensors"), "0 bytes");
}

TEST_F(SafetensorsTest, ShorterThanHeaderLength) {
  write_bytes(dir_ / "x.safetensors", "\x05\0\0");
  EXPECT_HAS(open_error(dir_ / "x.safetensors"), "too short");
}

TEST_F(SafetensorsTest, TruncatedInHeader) {
  const std::string good = make_file(GOOD_HEADER, 24);
  write_bytes(dir_ / "x.safetensors", good.substr(0, 8 + GOOD_HEADER.size() / 2));
  EXPECT_HAS(open_error(dir_ / "x.safetensors"), "runs past the end");
}

TEST_F(SafetensorsTest, TruncatedInData) {
  const std::string good = make_file(GOOD_HEADER, 24);
  write_bytes(dir_ / "x.safetensors", good.substr(0, good.size() - 5));
  const std::string message = open_error(dir_ / "x.safetensors");
  EXPECT_HAS(message, "tensor \"v\"");
  EXPECT_HAS(message, "past the end");
}

TEST_F(SafetensorsTest, HeaderLengthPastTheEnd) {
  std::string bytes = make_file(GOOD_HEADER, 24);
  bytes.replace(0, 8, u64_le(bytes.size()));
  write_bytes(dir_ / "x.safetensors", bytes);
  EXPECT_HAS(open_error(dir_ / "x.safetensors"), "runs past the end");
}

TEST_F(SafetensorsTest, HeaderLengthOver100MB) {
  std::string bytes = make_file(GOOD_HEADER, 24);
  bytes.replace(0, 8, u64_le(100'000'001));
  write_bytes(dir_ / "x.safetensors", bytes);
  EXPECT_HAS(open_error(dir_ / "x.safetensors"), "limit");
  bytes.replace(0, 8, u64_le(UINT64_MAX));
  write_bytes(dir_ / "x.safetensors", bytes);
  EXPECT_HAS(open_error(dir_ / "x.safetensors"), "limit");
}

TEST_F(SafetensorsTest, HeaderNotJson) {
  write_bytes(dir_ / "x.safetensors", make_file(R"({"w": {"dtype": "F32",)", 0));
  EXPECT_HAS(open_error(dir_ / "x.safetensors"), "JSON");
}

TEST_F(SafetensorsTest, HeaderNotAnObject) {
  write_bytes(dir_ / "x.safetensors", make_file("[1, 2, 3]   ", 0));
  EXPECT_HAS(open_error(dir_ / "x.safetensors"), "not a JSON object");
  write_bytes(dir_ / "x.safetensors", make_file(R"({"t": [1, 2]})", 0));
  EXPECT_HAS(open_error(dir_ / "x.safetensors"), "tensor \"t\"");
}

TEST_F(SafetensorsTest, InvalidUtf8InHeader) {
  write_bytes(dir_ / "x.safetensors",
              make_file("{\"t\xff\xfe\": {\"dtype\": \"F32\", \"shape\": [1], "
                        "\"data_offsets\": [0, 4]}}",
                        4));
  EXPECT_HAS(open_error(dir_ / "x.safetensors"), "UTF-8");
}

TEST_F(SafetensorsTest, DuplicateTensorName) {
  write_bytes(dir_ / "x.safetensors",
              make_file(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                        R"( "t": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                        8));
  const std::string message = open_error(dir_ / "x.safetensors");
  EXPECT_HAS(message, "\"t\"");
  EXPECT_HAS(message, "twice");
}

TEST_F(SafetensorsTest, OverlappingOffsets) {
  write_bytes(dir_ / "x.safetensors",
              make_file(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                        R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                        12));
  const std::string message = open_error(dir_ / "x.safetensors");
  EXPECT_HAS(message, "tensor \"b\"");
  EXPECT_HAS(message, "overlaps");
}

TEST_F(SafetensorsTest, HoleBetweenTensors) {
  write_bytes(dir_ / "x.safetensors",
              make_file(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                        R"( "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})",
                        12));
  std::string message = open_error(dir_ / "x.safetensors");
  EXPECT_HAS(message, "tensor \"b\"");
  EXPECT_HAS(message, "holes");
  // Bytes after the last tensor are a hole too.
  write_bytes(dir_ / "x.safetensors", make_file(one_tensor("F32", "[1]", "[0, 4]"), 8));
  message = open_error(dir_ / "x.safetensors");
  EXPECT_HAS(message, "holes");
}

TEST_F(SafetensorsTest, OffsetsPastTheEnd) {
  write_bytes(dir_ / "x.safetensors", make_file(one_tensor("F32", "[2]", "[0, 8]"), 4));
  const std::string message = open_error(dir_ / "x.safetensors");
  EXPECT_HAS(message, "tensor \"t\"");
  EXPECT_HAS(message, "past the end");
  write_bytes(
      dir_ / "x.safetensors",
      make_file(one_tensor("F32", "[0]", "[18446744073709551615, 18446744073709551615]"), 0));
  EXPECT_HAS(open_error(dir_ / "x.safetensors"), "past the end");
}

TEST_F(SafetensorsTest, EndBeforeBegin) {
  write_bytes(dir_ / "x.safetensors", make_file(one_tensor("F32", "[1]", "[8, 4]"), 8));
  const std::string message = open_error(dir_ / "x.safetensors");
  EXPECT_HAS(message, "tensor \"t\"");
  EXPECT_HAS(message, "end before");
}

TEST_F(SafetensorsTest, MalformedOffsets) {
  for (const char* offsets : {"[0]", "[0, 4, 8]", "[-4, 0]", "[0, 4.0]", "\"0-4\""}) {
    SCOPED_TRACE(offsets);
    write_bytes(dir_ / "x.safetensors", make_file(one_tensor("F32", "[1]", offsets), 4));
    EXPECT_HAS(open_error(dir_ / "x.safetensors"), "data_offsets");
  }
}

TEST_F(SafetensorsTest, SizeShapeMismatch) {
  write_bytes(dir_ / "x.safetensors", make_file(one_tensor("F32", "[3]", "[0, 8]"), 8));
  const std::string message = open_error(dir_ / "x.safetensors");
  EXPECT_HAS(message, "tensor \"t\"");
  EXPECT_HAS(message, "needs 12 bytes");
}

TEST_F(SafetensorsTest, NumelOverflow) {
  for (const char* shape : {"[4294967296, 4294967296]", "[9223372036854775807, 2]",
                            "[0, 4294967296, 4294967296]", "[18446744073709551615]"}) {
    SCOPED_TRACE(shape);
    write_bytes(dir_ / "x.safetensors", make_file(one_tensor("F32", shape, "[0, 0]"), 0));
    const std::string message = open_error(dir_ / "x.safetensors");
    EXPECT_HAS(message, "tensor \"t\"");
  }
  // numel fits in int64 but numel * 4 bytes does not.
  write_bytes(dir_ / "x.safetensors",
              make_file(one_tensor("F32", "[4611686018427387904]", "[0, 0]"), 0));
  EXPECT_HAS(open_error(dir_ / "x.safetensors"), "overflows");
}

TEST_F(SafetensorsTest, NegativeOrNonIntegerDim) {
  for (const char* shape : {"[-1]", "[2, -3]", "[1.5]", "[\"2\"]", "[null]", "4", "{}"}) {
    SCOPED_TRACE(shape);
    write_bytes(dir_ / "x.safetensors", make_file(one_tensor("F32", shape, "[0, 4]"), 4));
    const std::string message = open_error(dir_ / "x.safetensors");
    EXPECT_HAS(message, "tensor \"t\"");
    EXPECT_HAS(message, "non-negative integers");
  }
}

TEST_F(SafetensorsTest, UnknownDtype) {
  for (const char* dtype : {"F64", "F8_E4M3", "BOOL", "U8", "bf16", ""}) {
    SCOPED_TRACE(dtype);
    write_bytes(dir_ / "x.safetensors", make_file(one_tensor(dtype, "[1]", "[0, 8]"), 8));
    const std::string message = open_error(dir_ / "x.safetensors");
    EXPECT_HAS(message, "tensor \"t\"");
    EXPECT_HAS(message, std::string("\"") + dtype + "\"");
    EXPECT_HAS(message, "F32, F16, BF16, I32, I64");
  }
  write_bytes(dir_ / "x.safetensors",
              make_file(R"({"t": {"shape": [1], "data_offsets": [0, 4]}})", 4));
  EXPECT_HAS(open_error(dir_ / "x.safetensors"), "dtype");
}

TEST_F(SafetensorsTest, RankFive) {
  write_bytes(dir_ / "x.safetensors", make_file(one_tensor("F32", "[1, 1, 1, 1, 1]", "[0, 4]"), 4));
  const std::string message = open_error(dir_ / "x.safetensors");
  EXPECT_HAS(message, "tensor \"t\"");
  EXPECT_HAS(message, "rank 5");
}

TEST_F(SafetensorsTest, BadMetadata) {
  write_bytes(dir_ / "x.safetensors", make_file(R"({"__metadata__": {"format": 1}})", 0));
  EXPECT_HAS(open_error(dir_ / "x.safetensors"), "__metadata__");
  write_bytes(dir_ / "x.safetensors", make_file(R"({"__metadata__": "pt"})", 0));
  EXPECT_HAS(open_error(dir_ / "x.safetensors"), "__metadata__");
}

TEST_F(SafetensorsTest, NotARegularFile) {
  EXPECT_HAS(open_error(dir_), "not a regular file");
  try {
    SafetensorsFile file(dir_ / "missing.safetensors");
    ADD_FAILURE() << "opened a missing file";
  } catch (const hllm::Error& e) {
    EXPECT_HAS(e.what(), "missing.safetensors");
  }
}

// --- randomized robustness -----------------------------------------------------------------------

// Mutates a valid file thousands of times (byte flips, digit edits in the header, truncation):
// each must either open with every tensor inside the data section or throw hllm::Error.
TEST_F(SafetensorsTest, RandomCorruptionNeverCrashes) {
  std::vector<float> w = {1, 2, 3, 4, 5, 6};
  std::vector<uint16_t> v = {1, 2, 3};
  std::vector<int64_t> ids = {7, 8};
  const fs::path good_path = dir_ / "good.safetensors";
  hllm::write_safetensors(good_path,
                          {{"w", Tensor(w.data(), DType::f32, Shape{2, 3})},
                           {"v", Tensor(v.data(), DType::bf16, Shape{3})},
                           {"ids", Tensor(ids.data(), DType::i64, Shape{2, 1})},
                           {"none", Tensor(w.data(), DType::f16, Shape{0, 4})}},
                          {{"format", "pt"}});
  const std::string good = read_bytes(good_path);
  const size_t header_end = 8 + read_u64_le(good);

  std::mt19937 rng(20240601);
  const auto uniform = [&](size_t n) {
    return std::uniform_int_distribution<size_t>(0, n - 1)(rng);
  };
  int opened = 0, rejected = 0;
  const fs::path path = dir_ / "mutated.safetensors";
  for (int iteration = 0; iteration < 3000; ++iteration) {
    std::string bytes = good;
    const size_t mutations = 1 + uniform(3);
    for (size_t m = 0; m < mutations && !bytes.empty(); ++m) {
      switch (uniform(4)) {
        case 0:  // any byte, any value
          bytes[uniform(bytes.size())] = static_cast<char>(uniform(256));
          break;
        case 1:  // a header byte (mostly JSON structure and numbers)
          bytes[uniform(std::min(bytes.size(), header_end))] = static_cast<char>(uniform(256));
          break;
        case 2: {  // a header digit becomes another digit: shapes and offsets stay well-formed
          const size_t at = uniform(std::min(bytes.size(), header_end));
          if (at >= 8 && bytes[at] >= '0' && bytes[at] <= '9')
            bytes[at] = static_cast<char>('0' + uniform(10));
          break;
        }
        default:
          bytes.resize(uniform(bytes.size() + 1));
      }
    }
    write_bytes(path, bytes);
    try {
      const SafetensorsFile file(path);
      ++opened;
      const uint64_t data_start = 8 + read_u64_le(bytes);
      const uint64_t data_size = bytes.size() - data_start;
      uint64_t covered = 0;
      for (const hllm::TensorInfo& info : file.tensors()) {
        ASSERT_LE(info.begin, info.end) << iteration;
        ASSERT_LE(info.end, data_size) << iteration;
        covered += info.nbytes();
        // Every byte of the view equals the file's bytes (the sanitizer build catches any read
        // outside the mapping).
        const Tensor t = file.tensor(info.name);
        ASSERT_EQ(t.nbytes(), info.nbytes()) << iteration;
        ASSERT_EQ(std::memcmp(t.data, bytes.data() + data_start + info.begin, t.nbytes()), 0)
            << iteration;
      }
      ASSERT_EQ(covered, data_size) << iteration;
    } catch (const hllm::Error& e) {
      ++rejected;
      ASSERT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
    }
  }
  EXPECT_GT(opened, 0);
  EXPECT_GT(rejected, 0);
}

}  // namespace
