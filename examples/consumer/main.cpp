// hllm used as a library: open a model folder and stream a greedy answer to one chat message.
// The README's "Using the headers" example; built both ways a CMake project gets hllm by ctest
// `consumer_package` (examples/consumer/CMakeLists.txt), which checks its text equals `hllm run`'s.
// Usage: hllm_consumer MODEL_DIR PROMPT
#include <cstdio>
#include <hllm/hllm.hpp>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s MODEL_DIR PROMPT\n", argv[0]);
    return 2;
  }
  try {
    auto model = hllm::open_model(argv[1]);  // weights, tokenizer, backend (CPU here)
    const std::vector<hllm::ChatMessage> chat{{"user", argv[2]}};
    hllm::SamplingParams greedy;  // or model->sampling: the checkpoint's generation_config.json
    greedy.temperature = 0.0f;
    hllm::generate_text(*model, hllm::encode_prompt(*model->tokenizer, chat), greedy, 32,
                        [](std::string_view piece) {
                          std::fwrite(piece.data(), 1, piece.size(), stdout);
                          return true;  // false stops the generation
                        });
    std::printf("\n");
  } catch (const std::exception& e) {  // hllm::Error for every recoverable problem
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
