// Writing GGUF v3 files (the format io/gguf.hpp reads): metadata of any scalar, string or array
// type, and tensors whose bytes the caller gives already in their ggml type (F32, F16, BF16 or
// blocks). Alignment 32; tensor data in the order added.
//
//   GgufWriter w;
//   w.add_string("general.architecture", "llama");
//   w.add_u32("llama.block_count", 32);
//   w.add_tensor("output_norm.weight", GgmlType::F32, {4096}, bytes);   // ne: innermost first
//   w.write("model.gguf");
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/io/gguf.hpp"
#include "hllm/layout/ggml_blocks.hpp"

namespace hllm {

class GgufWriter {
 public:
  void add_string(std::string_view key, std::string_view value) {
    begin(key, GgufType::string);
    put_string(metadata_, value);
  }
  void add_u32(std::string_view key, uint32_t value) { add_scalar(key, GgufType::u32, value); }
  void add_i32(std::string_view key, int32_t value) { add_scalar(key, GgufType::i32, value); }
  void add_u64(std::string_view key, uint64_t value) { add_scalar(key, GgufType::u64, value); }
  void add_f32(std::string_view key, float value) { add_scalar(key, GgufType::f32, value); }
  void add_bool(std::string_view key, bool value) {
    add_scalar(key, GgufType::boolean, static_cast<uint8_t>(value));
  }
  void add_strings(std::string_view key, std::span<const std::string> values) {
    begin(key, GgufType::array);
    put(metadata_, static_cast<uint32_t>(GgufType::string));
    put(metadata_, static_cast<uint64_t>(values.size()));
    for (const std::string& v : values) put_string(metadata_, v);
  }
  void add_i32s(std::string_view key, std::span<const int32_t> values) {
    begin(key, GgufType::array);
    put(metadata_, static_cast<uint32_t>(GgufType::i32));
    put(metadata_, static_cast<uint64_t>(values.size()));
    for (const int32_t v : values) put(metadata_, v);
  }

  // ne: GGUF order (innermost first: a matrix [out, in] is {in, out}); bytes: exactly the size
  // the type and shape need.
  void add_tensor(std::string_view name, GgmlType type, std::vector<int64_t> ne,
                  std::span<const std::byte> bytes) {
    const GgmlTypeInfo info = ggml_type_info(type);
    int64_t elements = 1;
    for (const int64_t d : ne) elements *= d;
    if (ne.empty() || ne[0] % info.block_elems != 0 ||
        static_cast<size_t>(elements / info.block_elems * info.block_bytes) != bytes.size())
      fail("GgufWriter: tensor \"", name, "\": ", bytes.size(), " bytes do not make a ", info.name,
           " tensor of that shape");
    put_string(infos_, name);
    put(infos_, static_cast<uint32_t>(ne.size()));
    for (const int64_t d : ne) put(infos_, static_cast<uint64_t>(d));
    put(infos_, static_cast<uint32_t>(type));
    pad(data_);
    put(infos_, static_cast<uint64_t>(data_.size()));
    data_.insert(data_.end(), reinterpret_cast<const char*>(bytes.data()),
                 reinterpret_cast<const char*>(bytes.data()) + bytes.size());
    ++n_tensors_;
  }

  void write(const std::filesystem::path& path) const {
    std::string header = "GGUF";
    put(header, uint32_t{3});
    put(header, n_tensors_);
    put(header, n_kv_);
    header += metadata_;
    header += infos_;
    pad(header);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    out.write(data_.data(), static_cast<std::streamsize>(data_.size()));
    if (!out) fail("cannot write ", path.string());
  }

 private:
  static constexpr size_t ALIGNMENT = GgufFile::DEFAULT_ALIGNMENT;

  template <typename T>
  static void put(std::string& out, T value) {
    char bytes[sizeof(T)];
    std::memcpy(bytes, &value, sizeof(T));
    out.append(bytes, sizeof(T));
  }
  static void put_string(std::string& out, std::string_view s) {
    put(out, static_cast<uint64_t>(s.size()));
    out += s;
  }
  static void pad(std::string& out) {
    out.resize((out.size() + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT, '\0');
  }
  void begin(std::string_view key, GgufType type) {
    put_string(metadata_, key);
    put(metadata_, static_cast<uint32_t>(type));
    ++n_kv_;
  }
  template <typename T>
  void add_scalar(std::string_view key, GgufType type, T value) {
    begin(key, type);
    put(metadata_, value);
  }

  std::string metadata_, infos_, data_;
  uint64_t n_kv_ = 0, n_tensors_ = 0;
};

}  // namespace hllm
