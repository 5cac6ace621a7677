// Ctrl-C handling for interactive commands: the first SIGINT during an answer stops that answer,
// not the program. Installed without SA_RESTART so a blocking read of stdin returns on Ctrl-C too.
#pragma once

#include <csignal>

namespace hllm::tools {

inline volatile std::sig_atomic_t interrupted = 0;

inline void install_interrupt_handler() {
  struct sigaction action {};
  action.sa_handler = [](int) { interrupted = 1; };
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;
  sigaction(SIGINT, &action, nullptr);
}

}  // namespace hllm::tools
