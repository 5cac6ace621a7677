// hllm — the single runner. Each subcommand lives in its own tools/cmd_*.hpp and registers itself
// here; the library never prints, this file and the commands do.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "cmd_bench.hpp"
#include "cmd_chat.hpp"
#include "cmd_generate.hpp"
#include "cmd_info.hpp"
#include "cmd_logits.hpp"
#include "cmd_perplexity.hpp"
#include "cmd_quantize.hpp"
#include "cmd_run.hpp"
#if HLLM_HAVE_HTTPLIB
#include "cmd_compare.hpp"
#include "cmd_serve.hpp"
#endif
#include "cmd_tokenize.hpp"
#include "hllm/core/error.hpp"
#include "hllm/version.hpp"

int main(int argc, char** argv) {
  CLI::App app{"hllm: a Llama-3 inference engine (CPU reference and CUDA)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "hllm " HLLM_VERSION_STRING);
  hllm::tools::add_run_command(app);
  hllm::tools::add_chat_command(app);
  hllm::tools::add_info_command(app);
  hllm::tools::add_logits_command(app);
  hllm::tools::add_generate_command(app);
  hllm::tools::add_quantize_command(app);
  hllm::tools::add_tokenize_command(app);
  hllm::tools::add_bench_command(app);
#if HLLM_HAVE_HTTPLIB
  hllm::tools::add_serve_command(app);
  hllm::tools::add_compare_command(app);
#endif
  hllm::tools::add_perplexity_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const hllm::Error& e) {
    std::fprintf(stderr, "hllm: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hllm: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
