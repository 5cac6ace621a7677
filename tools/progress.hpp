// The runner's progress line while the weights are read in (hllm::prefetch_weights), on stderr
// when it is a terminal:
//   loading 7.41 / 16.06 GB  46%  1.9 GB/s  ETA 5 s
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>

#include "hllm/model/load.hpp"

namespace hllm::tools {

inline LoadProgress load_progress_printer() {
  if (isatty(STDERR_FILENO) == 0) return {};
  using clock = std::chrono::steady_clock;
  struct State {
    clock::time_point start = clock::now();
    clock::time_point last_print = start;
  };
  auto state = std::make_shared<State>();
  return [state](double done, double total) {
    const auto now = clock::now();
    if (done >= total) {
      std::fprintf(stderr, "\r\033[K");
      return;
    }
    if (now - state->last_print < std::chrono::milliseconds(100)) return;
    state->last_print = now;
    const double rate = done / std::chrono::duration<double>(now - state->start).count();
    std::fprintf(stderr, "\rhllm: loading %.2f / %.2f GB  %3.0f%%  %.1f GB/s  ETA %.0f s   ",
                 done / 1e9, total / 1e9, 100.0 * done / total, rate / 1e9, (total - done) / rate);
  };
}

}  // namespace hllm::tools
