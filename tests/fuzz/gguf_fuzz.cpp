// libFuzzer harness: a GGUF file (llama.cpp's model format) opened by hllm::GgufFile, then, when it
// is a Llama, by the model loader and the GGUF tokenizer. A bad file must be an hllm::Error. An
// accepted one must keep the reader's promises, checked against an independent walk of the bytes
// here: the metadata and tensor counts are the file's, each tensor's data pointer is the data
// section (the tensor infos padded to the alignment) plus its offset and holds those bytes of the
// file, nbytes follows from the type and dimensions, no two tensors overlap, lookups by name find
// each one, and every typed accessor on every key either returns (exactly when the value has that
// type) or throws hllm::Error. An accepted tokenizer encodes and decodes a few texts and every id.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_util.hpp"
#include "hllm/io/gguf.hpp"
#include "hllm/model/gguf_load.hpp"
#include "hllm/tokenizer/gguf_tokenizer.hpp"
#include "tokenizer_checks.hpp"

using hllm::GgufType;
using hllm::fuzz::check;

namespace {

// The harness's own reading of the layout (io/gguf.hpp's comment): only used on files GgufFile
// accepted, so every step must succeed; bounds are checked all the same.
struct Walk {
  const uint8_t* data;
  size_t size;
  size_t pos = 0;

  uint64_t take(size_t bytes) {
    check(bytes <= size - pos, "independent walk ran past the end of an accepted file");
    uint64_t v = 0;
    std::memcpy(&v, data + pos, bytes);  // little-endian host
    pos += bytes;
    return v;
  }
  std::string_view string() {
    const uint64_t n = take(8);
    check(n <= size - pos, "independent walk: a string past the end of an accepted file");
    const std::string_view s(reinterpret_cast<const char*>(data + pos), n);
    pos += n;
    return s;
  }
  static size_t scalar_size(uint32_t type) {  // by value type id; 0 for string and array
    constexpr size_t sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return type < std::size(sizes) ? sizes[type] : 0;
  }
  void skip_value(uint32_t type) {
    if (type == 8) {
      string();
    } else if (type == 9) {
      const auto element = static_cast<uint32_t>(take(4));
      const uint64_t count = take(8);
      check(element != 9, "accepted an array of arrays");
      for (uint64_t i = 0; i < count; ++i) skip_value(element);
    } else {
      check(scalar_size(type) > 0, "accepted an unknown value type");
      take(scalar_size(type));
    }
  }
};

struct TensorRecord {
  std::string_view name;
  std::vector<int64_t> ne;
  uint32_t type;
  uint64_t offset;
};

// Runs `body`, which must either return or throw hllm::Error: true when it returned.
template <typename Body>
bool returns(const char* what, Body&& body) {
  bool ok = false;
  hllm::fuzz::expect_only_hllm_errors(what, [&] {
    body();
    ok = true;
  });
  return ok;
}

bool is_integer(GgufType t) {
  return t != GgufType::f32 && t != GgufType::f64 && t != GgufType::string && t != GgufType::array;
}

void check_metadata(const hllm::GgufFile& file) {
  for (const auto& entry : file.metadata()) {  // (clang 14 cannot capture a structured binding)
    const std::string& key = entry.first;
    const hllm::GgufValue& v = entry.second;
    const bool scalar_int = is_integer(v.type);
    const bool number = scalar_int || v.type == GgufType::f32 || v.type == GgufType::f64;
    const bool array = v.type == GgufType::array;
    check(returns("string", [&] { (void)file.string(key); }) == (v.type == GgufType::string),
          "string() and the value type disagree", key);
    check(returns("integer", [&] { (void)file.integer(key); }) == scalar_int,
          "integer() and the value type disagree", key);
    check(returns("number", [&] { (void)file.number(key); }) == number,
          "number() and the value type disagree", key);
    size_t n = 0;
    check(returns("string_array", [&] { n = file.string_array(key).size(); }) ==
              (array && v.element == GgufType::string),
          "string_array() and the value type disagree", key);
    check(!array || v.element != GgufType::string || n == v.count, "string_array size", key);
    check(returns("integer_array", [&] { n = file.integer_array(key).size(); }) ==
              (array && is_integer(v.element)),
          "integer_array() and the value type disagree", key);
    check(!array || !is_integer(v.element) || n == v.count, "integer_array size", key);
    check(returns("string_or_none", [&] { (void)file.string_or_none(key).value(); }) ==
              (v.type == GgufType::string),
          "string_or_none() and the value type disagree", key);
    check(
        returns("integer_or_none", [&] { (void)file.integer_or_none(key).value(); }) == scalar_int,
        "integer_or_none() and the value type disagree", key);
    check(returns("number_or_none", [&] { (void)file.number_or_none(key).value(); }) == number,
          "number_or_none() and the value type disagree", key);
    (void)hllm::GgufFile::describe(v);
  }
  check(!file.string_or_none("\x01 no such key").has_value(), "found a key that is not there");
}

void check_tensors(const hllm::GgufFile& file, const uint8_t* data, size_t size) {
  Walk w{data, size};
  check(w.take(4) == 0x46554747u, "accepted a file without the magic");  // "GGUF"
  const uint64_t version = w.take(4);
  check(version == 2 || version == 3, "accepted version", std::to_string(version));
  check(file.version() == version, "version differs from the file's");
  const uint64_t n_tensors = w.take(8), n_kv = w.take(8);
  check(file.metadata().size() == n_kv, "metadata count differs from the header's");
  check(file.tensors().size() == n_tensors, "tensor count differs from the header's");
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string_view key = w.string();
    check(file.find(key) != nullptr, "a key of the file is not found", std::string(key));
    w.skip_value(static_cast<uint32_t>(w.take(4)));
  }
  std::vector<TensorRecord> records;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    TensorRecord r;
    r.name = w.string();
    const uint64_t n_dims = w.take(4);
    for (uint64_t d = 0; d < n_dims; ++d) r.ne.push_back(static_cast<int64_t>(w.take(8)));
    r.type = static_cast<uint32_t>(w.take(4));
    r.offset = w.take(8);
    records.push_back(r);
  }
  const uint64_t alignment = file.alignment();
  check(alignment > 0 && (alignment & (alignment - 1)) == 0, "alignment not a power of two");
  const uint64_t data_start = (w.pos + alignment - 1) / alignment * alignment;
  check(data_start <= size, "data section starts past the end");
  check(file.file_size() == size, "file_size() differs");

  std::vector<const hllm::GgufTensorInfo*> by_offset;
  for (size_t i = 0; i < records.size(); ++i) {
    const hllm::GgufTensorInfo& t = file.tensors()[i];
    const TensorRecord& r = records[i];
    const std::string name(r.name);
    check(t.name == r.name, "tensor name differs from the file's", name);
    check(t.ne == r.ne && static_cast<uint32_t>(t.type) == r.type && t.offset == r.offset,
          "tensor info differs from the file's", name);
    check(file.find_tensor(t.name) == &t, "find_tensor() does not return the tensor", name);
    check(t.offset % alignment == 0, "unaligned offset", name);
    const hllm::GgmlTypeInfo info = hllm::ggml_type_info(t.type);
    check(!info.name.empty() && t.ne[0] % info.block_elems == 0, "bad type or row", name);
    check(t.numel() > 0 &&
              t.numel() / info.block_elems * info.block_bytes == static_cast<int64_t>(t.nbytes),
          "nbytes does not follow from the type and dimensions", name);
    check(t.offset <= size - data_start && t.nbytes <= size - data_start - t.offset,
          "tensor outside the file", name);
    check(std::memcmp(t.data, data + data_start + t.offset, t.nbytes) == 0,
          "tensor bytes differ from the file's at data start + offset", name);
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto* a, const auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    check(by_offset[i - 1]->offset + by_offset[i - 1]->nbytes <= by_offset[i]->offset,
          "tensors overlap", by_offset[i]->name);
  check(file.find_tensor("\x01 no such tensor") == nullptr, "found a tensor that is not there");
}

void check_tokenizer(const hllm::GgufFile& file) {
  const hllm::Tokenizer tok = hllm::tokenizer_from_gguf(file);
  for (const std::string_view sample :
       {std::string_view("Hello, the world is here!  \n\n  x"), std::string_view("h\xc3\xa9llo"),
        std::string_view("<|begin_of_text|>user\n\n123456 it's<|eot_id|>")}) {
    for (const bool special : {false, true}) {
      std::vector<hllm::TokenId> ids;
      if (!returns("encode", [&] { ids = tok.encode(sample, special); })) continue;
      for (const hllm::TokenId id : ids)
        check(id >= 0 && static_cast<size_t>(id) < tok.vocab_size(), "encode gave a bad id");
      std::string back;
      if (!returns("decode", [&] { back = tok.decode(ids); })) continue;
      hllm::fuzz::check_streamed_decode(tok, ids, back);
    }
  }
  hllm::fuzz::decode_every_id(tok);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path path = hllm::fuzz::scratch_dir() / "input.gguf";
  hllm::fuzz::write_file(path, data, size);
  hllm::fuzz::expect_only_hllm_errors("GgufFile", [&] {
    const hllm::GgufFile file(path);
    check_tensors(file, data, size);
    check_metadata(file);
    const hllm::GgufValue* arch = file.find("general.architecture");
    if (arch == nullptr || arch->type != GgufType::string || arch->text != "llama") return;
    hllm::fuzz::expect_only_hllm_errors("gguf_llama_config", [&] {
      const hllm::LlamaConfig config = hllm::gguf_llama_config(file);
      hllm::fuzz::expect_only_hllm_errors("gguf_llama_weights", [&] {
        const hllm::LlamaWeights weights = hllm::gguf_llama_weights(file, config);
        check(static_cast<int64_t>(weights.layers.size()) == config.n_layers, "layer count");
        check(weights.embed.out_features() == config.vocab_size &&
                  weights.embed.in_features() == config.hidden_size,
              "embedding shape");
      });
    });
    if (file.find("tokenizer.ggml.model") != nullptr)
      hllm::fuzz::expect_only_hllm_errors("tokenizer_from_gguf", [&] { check_tokenizer(file); });
  });
  return 0;
}
