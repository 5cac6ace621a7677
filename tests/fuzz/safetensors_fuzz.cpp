// libFuzzer harness: a .safetensors file (the 8-byte header length, the JSON header, the data
// section) opened by hllm::SafetensorsFile, the reader every checkpoint goes through. A bad file
// must be an hllm::Error; an accepted one must keep the promises the loader relies on: tensors
// tile the data section exactly, each view holds the file's bytes at its offsets, and lookups by
// name find each tensor.
#include <cstdint>
#include <cstring>
#include <string>

#include "fuzz_util.hpp"
#include "hllm/io/safetensors.hpp"

using hllm::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path path = hllm::fuzz::scratch_dir() / "input.safetensors";
  hllm::fuzz::write_file(path, data, size);
  hllm::fuzz::expect_only_hllm_errors("SafetensorsFile", [&] {
    const hllm::SafetensorsFile file(path);
    check(size >= 8, "accepted a file shorter than the length field");
    uint64_t header_size = 0;
    for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | data[i];
    check(header_size <= size - 8, "header length past the end of the file");
    const uint64_t data_start = 8 + header_size, data_size = size - data_start;

    uint64_t covered = 0;
    for (const hllm::TensorInfo& info : file.tensors()) {
      check(info.begin == covered, "tensors do not tile the data section", info.name);
      check(info.end >= info.begin && info.end <= data_size, "offsets out of range", info.name);
      covered = info.end;
      check(file.find(info.name) == &info, "find() does not return the tensor", info.name);
      const hllm::Tensor t = file.tensor(info.name);
      check(t.nbytes() == info.nbytes(), "view size differs from the offsets", info.name);
      check(t.nbytes() == 0 ||
                std::memcmp(t.data, data + data_start + info.begin, info.nbytes()) == 0,
            "view bytes differ from the file's", info.name);
      check(reinterpret_cast<uintptr_t>(t.data) % hllm::dtype_size(t.dtype) == 0 || t.nbytes() == 0,
            "misaligned view", info.name);
    }
    check(covered == data_size, "data section not covered");
    size_t metadata_bytes = 0;  // read every metadata string
    for (const auto& [key, value] : file.metadata()) metadata_bytes += key.size() + value.size();
    check(metadata_bytes <= header_size, "more metadata than header");
    check(file.find("\x01 no such tensor") == nullptr, "found a tensor that is not there");
  });
  return 0;
}
