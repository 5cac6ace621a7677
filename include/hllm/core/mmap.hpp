// MappedFile: a whole file mapped read-only into memory (RAII, move-only). Checkpoints are read
// this way so a 16 GB model costs page-cache pages, not a copy, and tensors are views into it.
//
// The mapping is PROT_READ + MAP_PRIVATE: writing through a pointer into it faults. An empty file
// maps to nothing (data() == nullptr, size() == 0) because mmap rejects length 0.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <utility>

#include "hllm/core/error.hpp"

namespace hllm {

class MappedFile {
 public:
  explicit MappedFile(std::filesystem::path path) : path_(std::move(path)) {
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("cannot open ", path_.string(), ": ", std::strerror(errno));
    // The mapping outlives the descriptor, so close it on every path out of here.
    struct FdCloser {
      int fd;
      ~FdCloser() { ::close(fd); }
    } closer{fd};

    struct stat st {};
    if (::fstat(fd, &st) != 0) fail("cannot stat ", path_.string(), ": ", std::strerror(errno));
    if (!S_ISREG(st.st_mode)) fail(path_.string(), ": not a regular file");
    size_ = static_cast<size_t>(st.st_size);
    if (size_ == 0) return;

    void* mapped = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapped == MAP_FAILED) fail("cannot mmap ", path_.string(), ": ", std::strerror(errno));
    data_ = static_cast<const std::byte*>(mapped);
    // Loading reads nearly every byte once, so start the readahead now (a hint: errors ignored).
    ::madvise(mapped, size_, MADV_WILLNEED);
  }

  MappedFile(MappedFile&& other) noexcept
      : path_(std::move(other.path_)),
        data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)) {}

  MappedFile& operator=(MappedFile&& other) noexcept {
    if (this != &other) {
      unmap();
      path_ = std::move(other.path_);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() { unmap(); }

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  void unmap() {
    if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
    data_ = nullptr;
    size_ = 0;
  }

  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace hllm
