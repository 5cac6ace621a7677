// Reading the weights in up front, with a progress line on stderr when it is a terminal:
//   loading 7.41 / 16.06 GB  46%  1.9 GB/s  ETA 5 s
// The checkpoint is mmap'd, so this only faults the pages in (one read per 4 KiB page); without it
// the first forward pass would pay the same cost, silently.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "hllm/io/safetensors.hpp"

namespace hllm::tools {

inline void prefetch_weights(const Checkpoint& checkpoint) {
  using clock = std::chrono::steady_clock;
  const bool show = isatty(STDERR_FILENO) != 0;
  const double total = static_cast<double>(checkpoint.total_bytes());
  const auto start = clock::now();
  auto last_print = start;
  double done = 0.0;
  unsigned checksum = 0;  // keeps the reads from being optimized away
  constexpr size_t PAGE = 4096;
  for (const std::string& name : checkpoint.names()) {
    const Tensor t = checkpoint.tensor(name);
    const auto* bytes = static_cast<const volatile unsigned char*>(t.data);
    for (size_t offset = 0; offset < t.nbytes(); offset += PAGE) checksum += bytes[offset];
    done += static_cast<double>(t.nbytes());
    const auto now = clock::now();
    if (show && now - last_print > std::chrono::milliseconds(100)) {
      last_print = now;
      const double seconds = std::chrono::duration<double>(now - start).count();
      const double rate = done / seconds;
      std::fprintf(stderr, "\rhllm: loading %.2f / %.2f GB  %3.0f%%  %.1f GB/s  ETA %.0f s   ",
                   done / 1e9, total / 1e9, 100.0 * done / total, rate / 1e9,
                   (total - done) / rate);
    }
  }
  if (show) std::fprintf(stderr, "\r\033[K");
  (void)checksum;
}

}  // namespace hllm::tools
