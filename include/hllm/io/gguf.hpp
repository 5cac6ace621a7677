// GGUF files (llama.cpp's single-file model format): a validating mmap reader.
//
// File layout (GGUF v2/v3, little-endian; a string is u64 length + bytes, no terminator):
//
//   "GGUF" u32 version  u64 n_tensors  u64 n_kv
//   n_kv ×      [ key: string ][ u32 value type ][ value ]
//                 value: a scalar (u8 i8 u16 i16 u32 i32 f32 bool u64 i64 f64), a string, or an
//                 array: u32 element type, u64 count, the elements back to back
//   n_tensors × [ name: string ][ u32 n_dims ][ u64 ne[n_dims] ][ u32 ggml type ][ u64 offset ]
//   padding to general.alignment (default 32)
//   data section: tensor data at `offset` from its start (each offset a multiple of the alignment)
//
// ne[0] is the innermost (contiguous) dimension: a matrix [out, in] in row-major terms is
// ne = {in, out}. Every count, length, offset, dimension and type is checked before use: no
// allocation is sized by the file before the bytes it describes are known to exist, element
// counts cannot overflow, every tensor lies inside the data section without overlapping another,
// keys and tensor names are unique. Anything wrong is an hllm::Error naming the file and the key
// or tensor; nothing is read out of bounds. String values are views into the mapping.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/core/mmap.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/layout/ggml_blocks.hpp"

namespace hllm {

// Metadata value types (gguf_type in the spec).
enum class GgufType : uint32_t {
  u8 = 0,
  i8 = 1,
  u16 = 2,
  i16 = 3,
  u32 = 4,
  i32 = 5,
  f32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  u64 = 10,
  i64 = 11,
  f64 = 12,
};

inline std::string_view gguf_type_name(GgufType t) {
  constexpr std::string_view names[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                        "bool", "string", "array", "u64", "i64", "f64"};
  const auto i = static_cast<uint32_t>(t);
  return i < std::size(names) ? names[i] : "?";
}

// One metadata value. Scalars are widened into `integer` (all integer types and bool) or
// `number` (f32, f64; integers too); arrays keep their element type and count: string arrays as
// views, numeric arrays as their raw little-endian bytes (read with the accessors of GgufFile).
struct GgufValue {
  GgufType type = GgufType::u8;
  GgufType element = GgufType::u8;        // arrays only
  uint64_t count = 0;                     // arrays only
  int64_t integer = 0;                    // integer types and bool (u64 above 2^63 - 1 is refused)
  double number = 0.0;                    // every numeric type
  std::string_view text;                  // strings
  std::vector<std::string_view> strings;  // arrays of strings
  const std::byte* raw = nullptr;         // arrays of numbers: count elements
};

struct GgufTensorInfo {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> ne;  // GGUF order: ne[0] innermost
  uint64_t offset = 0;      // from the start of the data section
  uint64_t nbytes = 0;
  const std::byte* data = nullptr;  // into the mapping

  // Row-major shape (ne reversed): a matrix is [out, in].
  Shape shape() const {
    Shape s;
    for (auto it = ne.rbegin(); it != ne.rend(); ++it) s.dims[s.rank++] = *it;
    return s;
  }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : ne) n *= d;
    return n;
  }
};

// True for a path that names a GGUF file (by its ".gguf" name, or its first four bytes).
inline bool is_gguf_file(const std::filesystem::path& path) {
  if (!std::filesystem::is_regular_file(path)) return false;
  if (path.extension() == ".gguf") return true;
  char magic[4] = {};
  std::ifstream in(path, std::ios::binary);
  return in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

class GgufFile {
 public:
  static constexpr uint32_t DEFAULT_ALIGNMENT = 32;
  static constexpr int MAX_DIMS = 4;  // GGML_MAX_DIMS
  // Reservations sized by a count from the file stop here (the vector grows with the entries
  // actually read): a corrupt count must not become a huge allocation before it is disproved.
  static constexpr uint64_t RESERVE_CAP = 1 << 16;

  explicit GgufFile(const std::filesystem::path& path) : file_(path), source_(path.string()) {
    parse();
  }

  const std::string& source() const { return source_; }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  size_t file_size() const { return file_.size(); }
  const std::map<std::string, GgufValue, std::less<>>& metadata() const { return metadata_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }  // in file order

  const GgufValue* find(std::string_view key) const {
    const auto it = metadata_.find(key);
    return it == metadata_.end() ? nullptr : &it->second;
  }
  const GgufTensorInfo* find_tensor(std::string_view name) const {
    const auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
  }

  // Typed access; a missing required key or a value of the wrong type names the key.
  std::string_view string(std::string_view key) const {
    const GgufValue& v = require(key);
    if (v.type != GgufType::string) wrong_type(key, v, "a string");
    return v.text;
  }
  std::optional<std::string_view> string_or_none(std::string_view key) const {
    return find(key) ? std::optional(string(key)) : std::nullopt;
  }
  int64_t integer(std::string_view key) const {
    const GgufValue& v = require(key);
    if (!is_integer(v.type)) wrong_type(key, v, "an integer");
    return v.integer;
  }
  std::optional<int64_t> integer_or_none(std::string_view key) const {
    return find(key) ? std::optional(integer(key)) : std::nullopt;
  }
  double number(std::string_view key) const {
    const GgufValue& v = require(key);
    if (!is_integer(v.type) && v.type != GgufType::f32 && v.type != GgufType::f64)
      wrong_type(key, v, "a number");
    return v.number;
  }
  std::optional<double> number_or_none(std::string_view key) const {
    return find(key) ? std::optional(number(key)) : std::nullopt;
  }
  std::span<const std::string_view> string_array(std::string_view key) const {
    const GgufValue& v = require(key);
    if (v.type != GgufType::array || v.element != GgufType::string)
      wrong_type(key, v, "an array of strings");
    return v.strings;
  }
  // An array of any integer type, widened.
  std::vector<int64_t> integer_array(std::string_view key) const {
    const GgufValue& v = require(key);
    if (v.type != GgufType::array || !is_integer(v.element))
      wrong_type(key, v, "an array of integers");
    constexpr uint64_t MAX_ELEMENTS = uint64_t{1} << 26;  // 8x a 128k vocabulary's token types
    if (v.count > MAX_ELEMENTS)
      fail(source_, ": metadata key \"", key, "\" has ", v.count, " elements (", MAX_ELEMENTS,
           " at most are read)");
    std::vector<int64_t> out(v.count);
    const size_t size = scalar_size(v.element);
    for (uint64_t i = 0; i < v.count; ++i) {
      if (v.element == GgufType::u64 && load<uint64_t>(v.raw + i * size) > uint64_t{INT64_MAX})
        fail(source_, ": metadata key \"", key, "\"[", i, "] is a u64 above 2^63 - 1");
      out[i] = read_scalar(v.element, v.raw + i * size).integer;
    }
    return out;
  }

  // "u32", "array of string[128256]"
  static std::string describe(const GgufValue& v) {
    if (v.type != GgufType::array) return std::string(gguf_type_name(v.type));
    return detail::str_cat("array of ", gguf_type_name(v.element), "[", v.count, "]");
  }

 private:
  struct Scalar {
    int64_t integer = 0;
    double number = 0.0;
  };

  static bool is_integer(GgufType t) {
    return t == GgufType::u8 || t == GgufType::i8 || t == GgufType::u16 || t == GgufType::i16 ||
           t == GgufType::u32 || t == GgufType::i32 || t == GgufType::u64 || t == GgufType::i64 ||
           t == GgufType::boolean;
  }
  // Bytes of one scalar element; 0 for string and array.
  static size_t scalar_size(GgufType t) {
    switch (t) {
      case GgufType::u8:
      case GgufType::i8:
      case GgufType::boolean:
        return 1;
      case GgufType::u16:
      case GgufType::i16:
        return 2;
      case GgufType::u32:
      case GgufType::i32:
      case GgufType::f32:
        return 4;
      case GgufType::u64:
      case GgufType::i64:
      case GgufType::f64:
        return 8;
      default:
        return 0;
    }
  }
  template <typename T>
  static T load(const std::byte* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  // The caller has checked that scalar_size(t) bytes exist at p.
  static Scalar read_scalar(GgufType t, const std::byte* p) {
    switch (t) {
      case GgufType::u8:
        return from_int(load<uint8_t>(p));
      case GgufType::i8:
        return from_int(load<int8_t>(p));
      case GgufType::boolean:
        return from_int(load<uint8_t>(p) != 0);
      case GgufType::u16:
        return from_int(load<uint16_t>(p));
      case GgufType::i16:
        return from_int(load<int16_t>(p));
      case GgufType::u32:
        return from_int(load<uint32_t>(p));
      case GgufType::i32:
        return from_int(load<int32_t>(p));
      case GgufType::i64:
        return from_int(load<int64_t>(p));
      case GgufType::u64: {
        const uint64_t v = load<uint64_t>(p);  // above INT64_MAX: clamped, refused by users
        return from_int(static_cast<int64_t>(std::min<uint64_t>(v, INT64_MAX)));
      }
      case GgufType::f32:
        return {0, static_cast<double>(load<float>(p))};
      case GgufType::f64:
        return {0, load<double>(p)};
      default:
        return {};
    }
  }
  static Scalar from_int(int64_t v) { return {v, static_cast<double>(v)}; }

  const GgufValue& require(std::string_view key) const {
    const GgufValue* v = find(key);
    if (v == nullptr) fail(source_, ": metadata key \"", key, "\" is missing");
    return *v;
  }
  [[noreturn]] void wrong_type(std::string_view key, const GgufValue& v, const char* want) const {
    fail(source_, ": metadata key \"", key, "\" is ", describe(v), ", expected ", want);
  }

  // --- parsing: a cursor over the mapped bytes that checks every read ---
  const std::byte* base() const { return file_.data(); }
  uint64_t remaining() const { return file_.size() - pos_; }

  void need(uint64_t bytes, const std::string& what) const {
    if (bytes > remaining())
      fail(source_, ": truncated file: ", what, " needs ", bytes, " bytes at offset ", pos_,
           " but the file has ", remaining(), " left");
  }
  template <typename T>
  T take(const std::string& what) {
    need(sizeof(T), what);
    const T v = load<T>(base() + pos_);
    pos_ += sizeof(T);
    return v;
  }
  std::string_view take_string(const std::string& what) {
    const uint64_t length = take<uint64_t>(what + " length");
    need(length, what);
    const std::string_view s(reinterpret_cast<const char*>(base() + pos_), length);
    pos_ += length;
    return s;
  }
  GgufType take_type(const std::string& what) {
    const uint32_t t = take<uint32_t>(what);
    if (t > static_cast<uint32_t>(GgufType::f64)) fail(source_, ": ", what, " ", t, " is unknown");
    return static_cast<GgufType>(t);
  }

  GgufValue take_value(GgufType type, const std::string& key) {
    GgufValue v;
    v.type = type;
    const std::string what = "value of \"" + key + "\"";
    if (type == GgufType::string) {
      v.text = take_string(what);
    } else if (type == GgufType::array) {
      v.element = take_type("element type of \"" + key + "\"");
      if (v.element == GgufType::array)
        fail(source_, ": metadata key \"", key, "\" is an array of arrays (not supported)");
      v.count = take<uint64_t>("element count of \"" + key + "\"");
      if (v.element == GgufType::string) {
        // Each string takes at least its 8-byte length: bound the count before reserving.
        if (v.count > remaining() / 8)
          fail(source_, ": metadata key \"", key, "\" claims ", v.count,
               " strings, more than the file could hold");
        v.strings.reserve(std::min<uint64_t>(v.count, RESERVE_CAP));
        for (uint64_t i = 0; i < v.count; ++i) v.strings.push_back(take_string(what));
      } else {
        const size_t size = scalar_size(v.element);
        if (v.count > remaining() / size)
          fail(source_, ": metadata key \"", key, "\" claims ", v.count, " elements of ",
               gguf_type_name(v.element), ", more than the file holds");
        v.raw = base() + pos_;
        pos_ += v.count * size;
      }
    } else {
      const size_t size = scalar_size(type);
      need(size, what);
      const Scalar s = read_scalar(type, base() + pos_);
      if (type == GgufType::u64 && load<uint64_t>(base() + pos_) > uint64_t{INT64_MAX})
        fail(source_, ": metadata key \"", key, "\" is a u64 above 2^63 - 1");
      pos_ += size;
      v.integer = s.integer;
      v.number = s.number;
    }
    return v;
  }

  void parse() {
    need(4, "the magic \"GGUF\"");
    if (std::memcmp(base(), "GGUF", 4) != 0)
      fail(source_, ": not a GGUF file (the first 4 bytes are not \"GGUF\")");
    pos_ = 4;
    version_ = take<uint32_t>("the version");
    if (version_ == 0x02000000u || version_ == 0x03000000u)
      fail(source_, ": a big-endian GGUF file (only little-endian files are supported)");
    if (version_ != 2 && version_ != 3)
      fail(source_, ": GGUF version ", version_, " is not supported (2 and 3 are)");
    const uint64_t n_tensors = take<uint64_t>("the tensor count");
    const uint64_t n_kv = take<uint64_t>("the metadata count");
    // Smallest entries: a key/value is 8 + 4 + 1 bytes, a tensor info 8 + 4 + 4 + 8 bytes.
    if (n_kv > remaining() / 13)
      fail(source_, ": the header claims ", n_kv, " metadata entries, more than the file holds");
    for (uint64_t i = 0; i < n_kv; ++i) {
      const std::string key(take_string(detail::str_cat("metadata key #", i)));
      if (key.empty()) fail(source_, ": metadata key #", i, " is empty");
      const GgufType type = take_type("value type of \"" + key + "\"");
      GgufValue value = take_value(type, key);
      if (!metadata_.emplace(key, std::move(value)).second)
        fail(source_, ": metadata key \"", key, "\" appears twice");
    }
    read_alignment();
    if (n_tensors > remaining() / 24)
      fail(source_, ": the header claims ", n_tensors, " tensors, more than the file holds");
    tensors_.reserve(std::min<uint64_t>(n_tensors, RESERVE_CAP));
    for (uint64_t i = 0; i < n_tensors; ++i) tensors_.push_back(take_tensor_info(i));
    const uint64_t data_start = (pos_ + alignment_ - 1) / alignment_ * alignment_;
    if (data_start > file_.size())
      fail(source_, ": truncated file: the data section would start at ", data_start,
           " but the file has ", file_.size(), " bytes");
    place_tensors(data_start);
  }

  void read_alignment() {
    const GgufValue* a = find("general.alignment");
    if (a == nullptr) return;
    if (a->type != GgufType::u32) wrong_type("general.alignment", *a, "a u32");
    if (a->integer == 0 || (a->integer & (a->integer - 1)) != 0)
      fail(source_, ": general.alignment ", a->integer, " is not a power of two");
    alignment_ = static_cast<uint32_t>(a->integer);
  }

  GgufTensorInfo take_tensor_info(uint64_t i) {
    GgufTensorInfo t;
    t.name = std::string(take_string(detail::str_cat("name of tensor #", i)));
    if (t.name.empty()) fail(source_, ": tensor #", i, " has an empty name");
    const std::string what = "tensor \"" + t.name + "\"";
    const uint32_t n_dims = take<uint32_t>(what + " dimension count");
    if (n_dims == 0 || n_dims > MAX_DIMS)
      fail(source_, ": ", what, " has ", n_dims, " dimensions (1 to ", MAX_DIMS, " allowed)");
    constexpr int64_t MAX_ELEMENTS = int64_t{1} << 50;  // far above any model, far from overflow
    int64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t n = take<uint64_t>(what + " dimension");
      if (n == 0 || n > static_cast<uint64_t>(MAX_ELEMENTS) ||
          static_cast<int64_t>(n) > MAX_ELEMENTS / elements)
        fail(source_, ": ", what, " has a bad dimension ", n, " (", MAX_ELEMENTS,
             " elements at most, none empty)");
      elements *= static_cast<int64_t>(n);
      t.ne.push_back(static_cast<int64_t>(n));
    }
    const uint32_t type_id = take<uint32_t>(what + " type");
    const GgmlTypeInfo info = ggml_type_info(type_id);
    if (info.name.empty()) fail(source_, ": ", what, " has unknown ggml type ", type_id);
    t.type = static_cast<GgmlType>(type_id);
    if (t.ne[0] % info.block_elems != 0)
      fail(source_, ": ", what, " has rows of ", t.ne[0], " elements, not a multiple of the ",
           info.name, " block (", info.block_elems, ")");
    t.nbytes = static_cast<uint64_t>(elements / info.block_elems * info.block_bytes);
    t.offset = take<uint64_t>(what + " offset");
    if (t.offset % alignment_ != 0)
      fail(source_, ": ", what, " offset ", t.offset, " is not a multiple of the alignment ",
           alignment_);
    if (!tensor_index_.emplace(t.name, i).second)
      fail(source_, ": tensor \"", t.name, "\" appears twice");
    return t;
  }

  void place_tensors(uint64_t data_start) {
    const uint64_t data_size = file_.size() - data_start;
    std::vector<const GgufTensorInfo*> by_offset;
    for (GgufTensorInfo& t : tensors_) {
      if (t.offset > data_size || t.nbytes > data_size - t.offset)
        fail(source_, ": tensor \"", t.name, "\" (", t.nbytes, " bytes at data offset ", t.offset,
             ") lies outside the file (data section of ", data_size, " bytes)");
      t.data = base() + data_start + t.offset;
      by_offset.push_back(&t);
    }
    std::sort(by_offset.begin(), by_offset.end(),
              [](const auto* a, const auto* b) { return a->offset < b->offset; });
    for (size_t i = 1; i < by_offset.size(); ++i)
      if (by_offset[i - 1]->offset + by_offset[i - 1]->nbytes > by_offset[i]->offset)
        fail(source_, ": tensors \"", by_offset[i - 1]->name, "\" and \"", by_offset[i]->name,
             "\" overlap");
  }

  MappedFile file_;
  std::string source_;
  uint64_t pos_ = 0;
  uint32_t version_ = 0;
  uint32_t alignment_ = DEFAULT_ALIGNMENT;
  std::map<std::string, GgufValue, std::less<>> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace hllm
