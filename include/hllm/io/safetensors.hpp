// safetensors checkpoints: a validating mmap reader (SafetensorsFile), Hugging Face model folders
// with one file or several shards (Checkpoint), and a writer (write_safetensors).
//
// File format (https://huggingface.co/docs/safetensors, little-endian throughout):
//
//   [ u64 N ][ N bytes: UTF-8 JSON object, may be space-padded ][ data section ............ ]
//    0        8                                                8 + N               file end
//
//   header: { "__metadata__": {"format": "pt"},                optional, string -> string
//             "model.norm.weight": {"dtype": "BF16", "shape": [4096],
//                                   "data_offsets": [BEGIN, END]}, ... }
//
// BEGIN/END are byte offsets relative to the data section, row-major ("C") layout. The spec
// demands that the tensors, sorted by offset, cover the data section exactly: no overlaps and no
// holes (so a file cannot hide a second payload). Every rule is checked when a file is opened, so
// a truncated or corrupt file is an hllm::Error naming the file (and tensor), never an
// out-of-bounds read.
//
// A sharded folder (model-00001-of-00004.safetensors, ...) has model.safetensors.index.json:
//   { "metadata": {"total_size": ...},
//     "weight_map": { "lm_head.weight": "model-00004-of-00004.safetensors", ... } }
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "hllm/core/dtype.hpp"
#include "hllm/core/error.hpp"
#include "hllm/core/mmap.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/io/json.hpp"

namespace hllm {

// One tensor's entry in a safetensors header.
struct TensorInfo {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  uint64_t begin = 0;  // byte offset of the first element, relative to the data section
  uint64_t end = 0;    // one past the last byte; end - begin == numel * dtype_size
  uint64_t nbytes() const { return end - begin; }
};

namespace detail {

// The reference implementation (safetensors' MAX_HEADER_SIZE) refuses larger headers; so do we, so
// a corrupt length cannot make us parse gigabytes of tensor data as JSON.
inline constexpr uint64_t SAFETENSORS_MAX_HEADER = 100'000'000;

inline uint64_t read_u64_le(const std::byte* p) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | static_cast<uint64_t>(p[i]);
  return value;
}

// Parses the header JSON. nlohmann keeps the last of duplicate keys silently, so a parse callback
// sees every top-level key (depth 1) and rejects repeats.
inline nlohmann::json parse_safetensors_header(std::string_view text, const std::string& where) {
  std::set<std::string, std::less<>> seen;
  const auto reject_duplicates = [&](int depth, nlohmann::json::parse_event_t event,
                                     nlohmann::json& parsed) {
    if (depth == 1 && event == nlohmann::json::parse_event_t::key) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second)
        fail(where, ": header key \"", key, "\" appears twice (duplicate tensor name)");
    }
    return true;
  };
  try {
    return nlohmann::json::parse(text.begin(), text.end(), reject_duplicates);
  } catch (const nlohmann::json::exception& e) {
    fail(where, ": header is not valid UTF-8 JSON (", e.what(), ")");
  }
}

// Validates one header entry on its own; how entries fit together is checked by the caller.
inline TensorInfo parse_tensor_entry(const std::string& where, const std::string& name,
                                     const nlohmann::json& entry, uint64_t data_size) {
  const std::string at = str_cat(where, ": tensor \"", name, "\"");
  if (!entry.is_object())
    fail(at, ": header entry is not a JSON object (found ", describe_json(entry), ")");
  TensorInfo info;
  info.name = name;

  const auto dtype = entry.find("dtype");
  if (dtype == entry.end() || !dtype->is_string()) fail(at, ": \"dtype\" must be a string");
  try {
    info.dtype = dtype_from_name(dtype->get_ref<const std::string&>());
  } catch (const Error& e) {
    fail(at, ": ", e.what());
  }

  const auto shape = entry.find("shape");
  if (shape == entry.end() || !shape->is_array())
    fail(at, ": \"shape\" must be an array of non-negative integers");
  if (shape->size() > MAX_DIMS)
    fail(at, ": shape ", describe_json(*shape), " has rank ", shape->size(), " (at most ", MAX_DIMS,
         " dimensions are supported)");
  // numel over the non-zero dims must fit in int64 so that Shape::numel and Tensor's strides can
  // never overflow, even for a zero-size tensor whose other dims are huge.
  uint64_t numel_nonzero = 1;
  bool has_zero_dim = false;
  for (const auto& dim : *shape) {
    if (!dim.is_number_unsigned() || dim.get<uint64_t>() > uint64_t{INT64_MAX})
      fail(at, ": shape ", describe_json(*shape), " must list non-negative integers");
    const uint64_t d = dim.get<uint64_t>();
    info.shape.dims[info.shape.rank++] = static_cast<int64_t>(d);
    if (d == 0) {
      has_zero_dim = true;
    } else if (__builtin_mul_overflow(numel_nonzero, d, &numel_nonzero) ||
               numel_nonzero > uint64_t{INT64_MAX}) {
      fail(at, ": shape ", describe_json(*shape), " has too many elements (overflows 64 bits)");
    }
  }
  uint64_t nbytes = 0;
  if (!has_zero_dim && __builtin_mul_overflow(numel_nonzero, dtype_size(info.dtype), &nbytes))
    fail(at, ": shape ", describe_json(*shape), " of ", dtype_name(info.dtype),
         " overflows 64 bits of bytes");

  const auto offsets = entry.find("data_offsets");
  if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2 ||
      !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned())
    fail(at, ": \"data_offsets\" must be [begin, end] with non-negative integers");
  info.begin = (*offsets)[0].get<uint64_t>();
  info.end = (*offsets)[1].get<uint64_t>();
  if (info.end < info.begin)
    fail(at, ": data_offsets ", describe_json(*offsets), " end before they begin");
  if (info.end > data_size)
    fail(at, ": data_offsets ", describe_json(*offsets), " run past the end of the ", data_size,
         "-byte data section (truncated file?)");
  if (info.end - info.begin != nbytes)
    fail(at, ": shape ", info.shape.str(), " of ", dtype_name(info.dtype), " needs ", nbytes,
         " bytes but data_offsets ", describe_json(*offsets), " span ", info.end - info.begin);
  return info;
}

}  // namespace detail

// One .safetensors file, mapped and validated. Tensors are views into the mapping: read-only
// memory, alive as long as this object (moving it keeps them valid).
class SafetensorsFile {
 public:
  explicit SafetensorsFile(std::filesystem::path path) : file_(std::move(path)) {
    const std::string where = file_.path().string();
    const uint64_t size = file_.size();
    if (size < 8)
      fail(where, ": file is ", size, " bytes, too short for the 8-byte header length ",
           "(truncated, or not a safetensors file)");
    const uint64_t header_size = detail::read_u64_le(file_.data());
    if (header_size > detail::SAFETENSORS_MAX_HEADER)
      fail(where, ": header length ", header_size, " exceeds the ", detail::SAFETENSORS_MAX_HEADER,
           "-byte limit (corrupt, or not a safetensors file)");
    if (header_size > size - 8)
      fail(where, ": header length ", header_size, " runs past the end of the ", size,
           "-byte file (truncated?)");

    const char* header_text = reinterpret_cast<const char*>(file_.data() + 8);
    const nlohmann::json header =
        detail::parse_safetensors_header(std::string_view(header_text, header_size), where);
    if (!header.is_object())
      fail(where, ": header is not a JSON object (found a JSON ", header.type_name(), ")");

    const uint64_t data_start = 8 + header_size;
    const uint64_t data_size = size - data_start;
    for (const auto& [name, entry] : header.items()) {
      if (name == "__metadata__") {
        read_metadata(where, entry);
      } else {
        tensors_.push_back(detail::parse_tensor_entry(where, name, entry, data_size));
      }
    }
    check_coverage(where, data_size);

    for (size_t i = 0; i < tensors_.size(); ++i) {
      const TensorInfo& info = tensors_[i];
      by_name_.emplace(info.name, i);
      const std::byte* data = file_.data() + data_start + info.begin;
      // The data section starts wherever the header ends (HF pads it to 8 bytes, other writers need
      // not), so a view may be misaligned for its dtype: such tensors get an aligned copy.
      if (reinterpret_cast<uintptr_t>(data) % dtype_size(info.dtype) != 0) {
        auto& copy = aligned_copies_.emplace_back(std::max<uint64_t>(1, (info.nbytes() + 7) / 8));
        std::memcpy(copy.data(), data, info.nbytes());
        data = reinterpret_cast<const std::byte*>(copy.data());
      }
      data_.push_back(data);
    }
  }

  const std::filesystem::path& path() const { return file_.path(); }

  // In storage order (ascending data_offsets).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }

  // The "__metadata__" map ({"format": "pt"} for files written by torch), empty if absent.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  const TensorInfo* find(std::string_view name) const {
    const auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : &tensors_[it->second];
  }

  // A contiguous CPU view of the tensor. Read-only memory: writing through it faults.
  Tensor tensor(std::string_view name) const {
    const auto it = by_name_.find(name);
    if (it == by_name_.end()) fail(path().string(), ": no tensor named \"", name, "\"");
    const TensorInfo& info = tensors_[it->second];
    return Tensor(const_cast<std::byte*>(data_[it->second]), info.dtype, info.shape);
  }

 private:
  void read_metadata(const std::string& where, const nlohmann::json& entry) {
    if (!entry.is_object()) fail(where, ": \"__metadata__\" must be an object of strings");
    for (const auto& [key, value] : entry.items()) {
      if (!value.is_string())
        fail(where, ": \"__metadata__\" value for \"", key, "\" must be a string (found ",
             describe_json(value), ")");
      metadata_.emplace(key, value.get<std::string>());
    }
  }

  // Sorts by offset and checks that the tensors tile [0, data_size) exactly, as the spec requires.
  void check_coverage(const std::string& where, uint64_t data_size) {
    std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
      return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
    });
    uint64_t covered = 0;  // the data section [0, covered) belongs to the tensors seen so far
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const TensorInfo& t = tensors_[i];
      if (t.begin < covered)
        fail(where, ": tensor \"", t.name, "\" (data_offsets [", t.begin, ", ", t.end,
             "]) overlaps tensor \"", tensors_[i - 1].name, "\" (data_offsets [",
             tensors_[i - 1].begin, ", ", tensors_[i - 1].end, "])");
      if (t.begin > covered)
        fail(where, ": bytes [", covered, ", ", t.begin, ") of the data section before tensor \"",
             t.name, "\" belong to no tensor (the safetensors spec forbids holes)");
      covered = t.end;
    }
    if (covered != data_size)
      fail(where, ": bytes [", covered, ", ", data_size, ") at the end of the data section ",
           "belong to no tensor (the safetensors spec forbids holes)");
  }

  MappedFile file_;
  std::vector<TensorInfo> tensors_;
  std::vector<const std::byte*> data_;                  // per tensor: into file_ or aligned_copies_
  std::vector<std::vector<uint64_t>> aligned_copies_;   // rare; see the constructor
  std::map<std::string, size_t, std::less<>> by_name_;  // name -> index into tensors_
  std::map<std::string, std::string> metadata_;
};

// A model folder as downloaded from Hugging Face: model.safetensors, or the shards listed by
// model.safetensors.index.json (model.safetensors wins when both exist, as in transformers).
//
// The index is authoritative and must agree with the shards: a tensor the index lists but its shard
// lacks, or a tensor a shard holds that the index does not map to that shard, is an error — loading
// it from either place would be a guess. Shard names must be plain file names inside the folder.
class Checkpoint {
 public:
  static Checkpoint open(const std::filesystem::path& dir) {
    Checkpoint ckpt;
    ckpt.dir_ = dir;
    if (!std::filesystem::is_directory(dir))
      fail(dir.string(), ": not a model folder (expected a directory with model.safetensors or ",
           "model.safetensors.index.json)");
    if (std::filesystem::exists(dir / "model.safetensors")) {
      ckpt.files_.emplace_back(dir / "model.safetensors");
      for (const TensorInfo& info : ckpt.files_[0].tensors()) ckpt.file_of_.emplace(info.name, 0);
    } else if (std::filesystem::exists(dir / "model.safetensors.index.json")) {
      ckpt.open_shards(dir / "model.safetensors.index.json");
    } else {
      fail(dir.string(), ": no model.safetensors or model.safetensors.index.json in this folder");
    }
    return ckpt;
  }

  const std::filesystem::path& dir() const { return dir_; }

  bool contains(std::string_view name) const { return file_of_.find(name) != file_of_.end(); }

  const TensorInfo& info(std::string_view name) const {
    return *files_[file_index(name)].find(name);
  }

  Tensor tensor(std::string_view name) const { return files_[file_index(name)].tensor(name); }

  // Every tensor name, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(file_of_.size());
    for (const auto& entry : file_of_) out.push_back(entry.first);
    return out;
  }

  // Bytes of tensor data over all files (what loading reads).
  uint64_t total_bytes() const {
    uint64_t total = 0;
    for (const SafetensorsFile& file : files_)
      for (const TensorInfo& info : file.tensors()) total += info.nbytes();
    return total;
  }

 private:
  size_t file_index(std::string_view name) const {
    const auto it = file_of_.find(name);
    if (it == file_of_.end()) fail(dir_.string(), ": checkpoint has no tensor \"", name, "\"");
    return it->second;
  }

  static bool is_plain_file_name(const std::string& name) {
    return !name.empty() && name != "." && name != ".." &&
           name.find_first_of(std::string_view("/\\\0", 3)) == std::string::npos;
  }

  void open_shards(const std::filesystem::path& index_path) {
    const std::string where = index_path.string();
    const json index = read_json_file(index_path);
    if (!index.is_object() || !index.contains("weight_map") || !index.at("weight_map").is_object())
      fail(where,
           ": must be a JSON object with a \"weight_map\" object (tensor name -> shard file)");

    std::map<std::string, size_t> shard_index;  // shard file name -> index into files_
    for (const auto& [name, shard] : index.at("weight_map").items()) {
      if (!shard.is_string())
        fail(where, ": tensor \"", name, "\" must map to a shard file name (found ",
             describe_json(shard), ")");
      const auto& shard_name = shard.get_ref<const std::string&>();
      if (!is_plain_file_name(shard_name))
        fail(where, ": tensor \"", name, "\" maps to \"", shard_name,
             "\", which is not a plain file name inside the model folder");
      auto [it, is_new] = shard_index.emplace(shard_name, files_.size());
      if (is_new) {
        const std::filesystem::path shard_path = dir_ / shard_name;
        if (!std::filesystem::exists(shard_path))
          fail(where, ": shard \"", shard_name, "\" (holding tensor \"", name,
               "\") is missing from ", dir_.string());
        files_.emplace_back(shard_path);
      }
      if (files_[it->second].find(name) == nullptr)
        fail(files_[it->second].path().string(), ": tensor \"", name, "\" is listed in ", where,
             " but missing from this shard");
      file_of_.emplace(name, it->second);
    }
    for (size_t f = 0; f < files_.size(); ++f) {
      for (const TensorInfo& info : files_[f].tensors()) {
        const auto it = file_of_.find(info.name);
        if (it == file_of_.end())
          fail(files_[f].path().string(), ": tensor \"", info.name, "\" is not listed in ", where);
        if (it->second != f)
          fail(files_[f].path().string(), ": tensor \"", info.name,
               "\" is also in this shard, but ", where, " maps it to ",
               files_[it->second].path().filename().string());
      }
    }
  }

  std::filesystem::path dir_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t, std::less<>> file_of_;  // tensor name -> index into files_
};

// Writes a spec-conformant file: the header padded with spaces to a multiple of 8 bytes (so the
// data section is 8-byte aligned, as HF writes it), then the tensors back to back in the given
// order. Tensors must be contiguous and on the CPU.
inline void write_safetensors(const std::filesystem::path& path,
                              const std::vector<std::pair<std::string, Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
  const std::string where = path.string();
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__" || header.contains(name))
      fail(where, ": tensor name \"", name, "\" is reserved or given twice");
    if (t.device != Device::cpu || !t.is_contiguous() || (t.data == nullptr && t.numel() != 0))
      fail(where, ": tensor \"", name, "\" must be a contiguous CPU tensor with data");
    std::vector<int64_t> dims(t.shape.dims.begin(), t.shape.dims.begin() + t.rank());
    header[name] = {{"dtype", std::string(dtype_name(t.dtype))},
                    {"shape", dims},
                    {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail(where, ": cannot encode the header (", e.what(), ")");
  }
  text.append((8 - text.size() % 8) % 8, ' ');

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail("cannot create ", where, ": ", std::strerror(errno));
  char length[8];
  for (int i = 0; i < 8; ++i)
    length[i] = static_cast<char>((uint64_t{text.size()} >> (8 * i)) & 0xff);
  out.write(length, 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& entry : tensors) {
    const Tensor& t = entry.second;
    if (t.nbytes() != 0)
      out.write(static_cast<const char*>(t.data), static_cast<std::streamsize>(t.nbytes()));
  }
  out.flush();
  if (!out) fail("error writing ", where, ": ", std::strerror(errno));
}

}  // namespace hllm
