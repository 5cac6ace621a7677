// libFuzzer harness: model.safetensors.index.json, the map of a sharded checkpoint (tensor name ->
// shard file), read by hllm::Checkpoint::open. The model folder holds two fixed shards,
// a.safetensors (tensors a.x, a.y) and b.safetensors (b.z); the input is the index. A bad index
// (unknown shard, a path outside the folder, a tensor in the wrong shard, ...) must be an
// hllm::Error; an accepted one must resolve every name it lists to a readable tensor (an empty
// weight_map is accepted: the model loader then names the first tensor it misses).
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_util.hpp"
#include "hllm/io/safetensors.hpp"

using hllm::fuzz::check;

namespace {

const std::filesystem::path& model_dir() {
  static const std::filesystem::path dir = [] {
    const std::filesystem::path d = hllm::fuzz::scratch_dir() / "model";
    std::filesystem::create_directories(d);
    static float a_x[4] = {1, 2, 3, 4};
    static int32_t a_y[2] = {5, 6};
    static uint16_t b_z[3] = {7, 8, 9};
    hllm::write_safetensors(d / "a.safetensors",
                            {{"a.x", hllm::Tensor(a_x, hllm::DType::f32, hllm::Shape{2, 2})},
                             {"a.y", hllm::Tensor(a_y, hllm::DType::i32, hllm::Shape{2})}});
    hllm::write_safetensors(d / "b.safetensors",
                            {{"b.z", hllm::Tensor(b_z, hllm::DType::bf16, hllm::Shape{3})}});
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::filesystem::path& dir = model_dir();
  hllm::fuzz::write_file(dir / "model.safetensors.index.json", data, size);
  hllm::fuzz::expect_only_hllm_errors("Checkpoint::open", [&] {
    const hllm::Checkpoint ckpt = hllm::Checkpoint::open(dir);
    const std::vector<std::string> names = ckpt.names();
    uint64_t total = 0;
    for (const std::string& name : names) {
      check(ckpt.contains(name), "names() lists a tensor contains() denies", name);
      const hllm::Tensor t = ckpt.tensor(name);
      check(t.nbytes() == ckpt.info(name).nbytes(), "tensor size differs from its info", name);
      total += t.nbytes();
    }
    check(total <= ckpt.total_bytes(), "more tensor bytes than the shards hold");
  });
  return 0;
}
