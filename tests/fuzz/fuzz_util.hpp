// Shared by the libFuzzer harnesses of tests/fuzz/: a scratch folder per process (for the parsers
// that read files), and the rule for what an input may end in:
//   hllm::Error                 the expected outcome of a bad input;
//   nlohmann::json::exception   escaping hllm's API, a finding (hllm promises hllm::Error naming
//                               the file and field), but a tolerated one: each distinct message is
//                               noted on stderr ("fuzz: note: ..."); with HLLM_FUZZ_STRICT_JSON=1
//                               it aborts instead, so libFuzzer saves (and can minimize) the input;
//   anything else               a finding: reported, then abort() so that libFuzzer saves the
//                               input. So are crashes, sanitizer reports, hangs and failed checks.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <string_view>
#include <typeinfo>

#include "hllm/core/error.hpp"

namespace hllm::fuzz {

// A folder of this process's own, removed at exit (not after a crash): under $HLLM_FUZZ_SCRATCH
// when set, else on tmpfs when there is one.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    std::filesystem::path base = "/dev/shm";
    if (const char* env = std::getenv("HLLM_FUZZ_SCRATCH"); env != nullptr && *env != '\0')
      base = env;
    else if (::access(base.c_str(), W_OK) != 0)
      base = std::filesystem::temp_directory_path();
    std::filesystem::path d = base / ("hllm-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  static const bool cleanup = [] {
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(dir, ignored);
    });
    return true;
  }();
  (void)cleanup;
  return dir;
}

inline void write_file(const std::filesystem::path& path, const void* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) {
    std::fprintf(stderr, "fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
}

// A property of the code under test does not hold: print it and abort (libFuzzer keeps the input).
[[noreturn]] inline void violated(const char* what, const std::string& detail = "") {
  std::fprintf(stderr, "fuzz: property violated: %s %s\n", what, detail.c_str());
  std::abort();
}

inline void check(bool ok, const char* what, const std::string& detail = "") {
  if (!ok) violated(what, detail);
}

// A nlohmann::json exception escaped `what` (see the top of this file).
inline void json_exception_escaped(const char* what, const std::exception& e) {
  static const bool strict = [] {
    const char* v = std::getenv("HLLM_FUZZ_STRICT_JSON");
    return v != nullptr && std::string_view(v) == "1";
  }();
  const std::string message =
      std::string(what) + " let a nlohmann::json exception escape: " + e.what();
  if (strict) violated("(HLLM_FUZZ_STRICT_JSON=1)", message);
  static std::set<std::string> noted;
  if (noted.size() < 32 && noted.insert(message).second)
    std::fprintf(stderr, "fuzz: note: %s\n", message.c_str());
}

// Runs `body`; hllm::Error is expected, anything else thrown is a finding (nlohmann's tolerated).
template <typename Body>
void expect_only_hllm_errors(const char* what, Body&& body) {
  try {
    body();
  } catch (const hllm::Error&) {
  } catch (const nlohmann::json::exception& e) {
    json_exception_escaped(what, e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz: %s: unexpected exception %s: %s\n", what, typeid(e).name(),
                 e.what());
    std::abort();
  } catch (...) {
    std::fprintf(stderr, "fuzz: %s: unexpected exception of a non-std type\n", what);
    std::abort();
  }
}

}  // namespace hllm::fuzz
