// CudaBackend: the Backend interface (model/backend.hpp) on one NVIDIA GPU.
//
//   weights      uploaded once: dense tensors as bf16 (whatever the checkpoint stored), INT4 tiles
//                (layout/int4_tiles.hpp) byte for byte with their act-order input index
//   activations  bf16 on the device, fp32 inside every kernel; logits fp32
//   matmul       INT4, <= 8 tokens: gemv_q4 (tensor-core GEMV, the decode path)
//                INT4, 9 .. GEMM_Q4_MAX_TOKENS: gemm_q4 (tensor-core GEMM, weights decoded in
//                registers: batched decode and prefill chunks)
//                INT4, more tokens: dequantize the layer to bf16 in a scratch buffer + cuBLAS GEMM
//                dense: cuBLAS (bf16 in, fp32 compute, bf16 or fp32 out)
//   attention    attn_prefill (FlashAttention-2 style, tensor cores) for a prompt chunk of one
//                sequence longer than MAX_GRAPH_TOKENS; attn_decode_paged (split-KV) otherwise
//   sampling     sample(): penalties and the sampling rule on the device; only ids come back
//   steps        begin_step copies the step inputs (ids, positions, block tables, RoPE
//                frequencies) into one device buffer with a single host-to-device copy; the ops
//                read them there, so a decode step (<= MAX_GRAPH_TOKENS tokens) is recorded once
//                as a CUDA graph and replayed: no launch gaps, near-zero host work per token.
//
// Everything runs on the backend's own stream; to_host_f32, argmax and sample synchronize it, and
// each then throws hllm::Error if a kernel raised the device-side error flag (common.cuh).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "hllm/core/dtype.hpp"
#include "hllm/core/error.hpp"
#include "hllm/cuda/activation.cuh"
#include "hllm/cuda/attn_decode_paged.cuh"
#include "hllm/cuda/attn_prefill.cuh"
#include "hllm/cuda/common.cuh"
#include "hllm/cuda/dequant_q4.cuh"
#include "hllm/cuda/gemm_q4.cuh"
#include "hllm/cuda/gemv_q4.cuh"
#include "hllm/cuda/norm.cuh"
#include "hllm/cuda/rope.cuh"
#include "hllm/cuda/sampling.cuh"
#include "hllm/layout/paged_kv.hpp"
#include "hllm/model/backend.hpp"

namespace hllm {

class CudaBackend final : public Backend {
 public:
  // Steps of at most this many tokens are recorded as CUDA graphs (decode, batched decode).
  static constexpr int64_t MAX_GRAPH_TOKENS = 8;
  // INT4 matmuls of up to this many tokens run gemm_q4; longer chunks dequantize the layer once and
  // call cuBLAS (amortized over the chunk). A first estimate, to be set by the crossover
  // int4_matmul_bench measures on the GPU (gemm_q4 vs dequant_cublas rows).
  static constexpr int64_t GEMM_Q4_MAX_TOKENS = 1024;
  // Step inputs that fit the device step buffer: tokens per step and block-table entries.
  static constexpr int64_t MAX_STEP_TOKENS = 1 << 16;
  static constexpr int64_t MAX_TABLE_ENTRIES = 1 << 20;
  static constexpr int64_t MAX_HALF_HEAD_DIM = 256;

  // Graphs are on unless `use_graphs` is false, the environment says HLLM_CUDA_GRAPHS=0 (A/B
  // runs of the same binary), or the build synchronizes after every launch (HLLM_CUDA_SYNC_CHECK:
  // a synchronize is illegal while a stream is being captured).
  explicit CudaBackend(int device = 0, bool use_graphs = true)
      : use_graphs_(use_graphs && graphs_allowed()) {
    if (cuda::device_count() == 0) fail("CUDA backend: no GPU found");
    HLLM_CUDA_CHECK(cudaSetDevice(device));
    HLLM_CUDA_CHECK(cudaGetDeviceProperties(&props_, device));
    HLLM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    HLLM_CUBLAS_CHECK(cublasCreate(&cublas_));
    HLLM_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
    // A fixed cuBLAS workspace: cuBLAS then never allocates, which graph capture requires.
    cublas_workspace_ = cuda::DeviceBuffer<uint8_t>(size_t{32} << 20);
    HLLM_CUBLAS_CHECK(
        cublasSetWorkspace(cublas_, cublas_workspace_.data(), cublas_workspace_.size_bytes()));
    const size_t step_bytes = step_capacity_bytes();
    step_device_ = cuda::DeviceBuffer<uint8_t>(step_bytes);
    void* pinned = nullptr;
    HLLM_CUDA_CHECK(cudaMallocHost(&pinned, step_bytes));
    step_host_ = PinnedBytes(static_cast<uint8_t*>(pinned), [](uint8_t* p) { cudaFreeHost(p); });
    HLLM_CUDA_CHECK(cudaEventCreateWithFlags(&step_copied_, cudaEventDisableTiming));
    error_flag_ = cuda::DeviceBuffer<int32_t>(1);  // zeroed on stream_, ahead of every kernel
    HLLM_CUDA_CHECK(cudaMemsetAsync(error_flag_.data(), 0, sizeof(int32_t), stream_));
    void* flag_host = nullptr;
    HLLM_CUDA_CHECK(cudaMallocHost(&flag_host, sizeof(int32_t)));
    error_host_ =
        PinnedBytes(static_cast<uint8_t*>(flag_host), [](uint8_t* p) { cudaFreeHost(p); });
    std::memset(error_host_.get(), 0, sizeof(int32_t));
  }

  ~CudaBackend() override {
    graphs_.clear();
    cudaEventDestroy(step_copied_);
    cublasDestroy(cublas_);
    cudaStreamDestroy(stream_);
  }
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override {
    return std::string("cuda (") + props_.name + (use_graphs_ ? "" : ", graphs off") + ")";
  }
  Device device() const override { return Device::cuda; }
  DType activation_dtype() const override { return DType::bf16; }
  cudaStream_t stream() const { return stream_; }
  const cudaDeviceProp& properties() const { return props_; }
  // How many steps were replayed from a recorded graph (tests check that decode uses them).
  int64_t graph_replays() const { return graph_replays_; }
  bool uses_graphs() const { return use_graphs_; }

  // Whether this build and environment allow CUDA graphs (see the constructor).
  static bool graphs_allowed() {
    if (HLLM_CUDA_SYNC_CHECK) return false;
    const char* env = std::getenv("HLLM_CUDA_GRAPHS");
    return env == nullptr || std::string_view(env) != "0";
  }

  Buffer allocate(DType dtype, Shape shape) override {
    const size_t bytes =
        std::max<size_t>(static_cast<size_t>(shape.numel()) * dtype_size(dtype), 1);
    auto memory = device_memory(bytes);
    Buffer buffer;
    buffer.tensor = Tensor(memory.get(), dtype, shape, Device::cuda);
    buffer.memory = std::move(memory);
    return buffer;
  }

  // bf16 weights are copied as they are; fp16/fp32 ones are converted on the host in slices of
  // UPLOAD_SLICE elements (not a second whole copy of an embedding table in host memory).
  Tensor upload_weight(const Tensor& host) override {
    if (host.device != Device::cpu) fail("upload_weight: the tensor is not in host memory");
    Buffer buffer = allocate(DType::bf16, host.shape);
    auto* dst = static_cast<bf16*>(buffer.tensor.data);
    if (host.dtype == DType::bf16) {
      copy_to_device(dst, host.data, static_cast<size_t>(host.numel()) * sizeof(bf16));
    } else {
      constexpr int64_t UPLOAD_SLICE = int64_t{1} << 22;  // 8 MB of bf16
      std::vector<bf16> converted(static_cast<size_t>(std::min(host.numel(), UPLOAD_SLICE)));
      for (int64_t begin = 0; begin < host.numel(); begin += UPLOAD_SLICE) {
        const int64_t count = std::min(UPLOAD_SLICE, host.numel() - begin);
        for (int64_t i = 0; i < count; ++i) converted[i] = host_element_bf16(host, begin + i);
        copy_to_device(dst + begin, converted.data(), static_cast<size_t>(count) * sizeof(bf16));
      }
    }
    resident_.push_back(buffer.memory);
    return buffer.tensor;
  }

  Linear upload_linear(const Linear& host) override {
    if (host.is_ggml())
      fail("CUDA backend: ", host.storage_name(),
           " weights (GGUF blocks) have no CUDA kernels yet; run with --device cpu");
    if (!host.is_int4()) return Linear(upload_weight(host.dense));
    const Int4View& h = host.int4;
    auto tiles = device_memory(h.nbytes());
    copy_to_device(tiles.get(), h.tiles, h.nbytes());
    std::shared_ptr<void> index;
    if (h.input_index != nullptr) {
      const size_t bytes = static_cast<size_t>(h.packed_in()) * sizeof(int32_t);
      index = device_memory(bytes);
      copy_to_device(index.get(), h.input_index, bytes);
    }
    Int4View view = h;
    view.tiles = static_cast<const int4_tile*>(tiles.get());
    view.input_index = static_cast<const int32_t*>(index.get());
    view.device = Device::cuda;
    auto owner = std::make_shared<std::pair<std::shared_ptr<void>, std::shared_ptr<void>>>(
        std::move(tiles), std::move(index));
    return Linear(view, std::move(owner));
  }

  void to_host_f32(const Tensor& x, std::span<float> out) override {
    if (static_cast<int64_t>(out.size()) != x.numel())
      fail("to_host_f32: tensor ", x.shape.str(), " does not fit ", out.size(), " floats");
    const float* src = x.as<float>();
    if (x.dtype == DType::bf16) {
      float* converted = scratch<float>(convert_scratch_, static_cast<size_t>(x.numel()));
      cuda::launch_convert_to_f32(bf(x), converted, x.numel(), stream_);
      src = converted;
    } else if (x.dtype != DType::f32) {
      fail("to_host_f32: unsupported dtype ", dtype_name(x.dtype));
    }
    HLLM_CUDA_CHECK(
        cudaMemcpyAsync(out.data(), src, out.size_bytes(), cudaMemcpyDeviceToHost, stream_));
    synchronize_and_check_kernels();
  }

  // ---- step inputs ----------------------------------------------------------------------------

  void begin_step(const Step& step) override {
    const int64_t n = static_cast<int64_t>(step.ids.size());
    const int64_t half = static_cast<int64_t>(step.rope->inv_freq.size());
    if (n == 0 || n > MAX_STEP_TOKENS || static_cast<int64_t>(step.seq.size()) != n ||
        static_cast<int64_t>(step.positions.size()) != n)
      fail("CUDA step: ", n, " tokens (at most ", MAX_STEP_TOKENS, "), ", step.seq.size(),
           " sequence ids, ", step.positions.size(), " positions");
    if (static_cast<int64_t>(step.block_tables.size()) > MAX_TABLE_ENTRIES ||
        half > MAX_HALF_HEAD_DIM)
      fail("CUDA step: ", step.block_tables.size(), " block-table entries (at most ",
           MAX_TABLE_ENTRIES, ") or head_dim ", 2 * half, " too large");
    // The previous step's copy must have left the pinned buffer before it is rewritten.
    HLLM_CUDA_CHECK(cudaEventSynchronize(step_copied_));
    layout_ = StepLayout(n, half);
    uint8_t* host = step_host_.get();
    const auto put = [&](size_t offset, const void* src, size_t bytes) {
      std::memcpy(host + offset, src, bytes);
    };
    put(layout_.ids, step.ids.data(), n * sizeof(int32_t));
    put(layout_.seq, step.seq.data(), n * sizeof(int32_t));
    put(layout_.positions, step.positions.data(), n * sizeof(int32_t));
    auto* kv_len = reinterpret_cast<int32_t*>(host + layout_.kv_len);
    for (int64_t t = 0; t < n; ++t) kv_len[t] = step.positions[t] + 1;
    put(layout_.inv_freq, step.rope->inv_freq.data(), half * sizeof(float));
    put(layout_.tables, step.block_tables.data(), step.block_tables.size_bytes());
    const size_t bytes = layout_.tables + step.block_tables.size_bytes();
    HLLM_CUDA_CHECK(
        cudaMemcpyAsync(step_device_.data(), host, bytes, cudaMemcpyHostToDevice, stream_));
    HLLM_CUDA_CHECK(cudaEventRecord(step_copied_, stream_));
    n_tokens_ = static_cast<int>(n);
    // One sequence at consecutive positions: a prompt chunk, which the prefill kernel takes.
    one_sequence_chunk_ = true;
    for (int64_t t = 1; t < n; ++t)
      one_sequence_chunk_ = one_sequence_chunk_ && step.seq[t] == step.seq[0] &&
                            step.positions[t] == step.positions[0] + t;
    max_blocks_per_seq_ = step.max_blocks_per_seq;
    block_size_ = step.block_size;
    max_kv_len_ = step.max_kv_len;
    attention_factor_ = step.rope->attention_factor;
  }

  void run_step(uint64_t key, const std::function<void()>& ops) override {
    if (!use_graphs_ || n_tokens_ > MAX_GRAPH_TOKENS) return ops();
    // The table shape is baked into the recorded kernels' arguments: part of the key.
    key ^= (static_cast<uint64_t>(max_blocks_per_seq_) << 32 | static_cast<uint32_t>(block_size_)) *
           0x9e3779b97f4a7c15ull;
    key ^= static_cast<uint64_t>(max_kv_len_) * 0xc2b2ae3d27d4eb4full;
    const auto found = graphs_.find(key);
    if (found != graphs_.end()) {
      HLLM_CUDA_CHECK(cudaGraphLaunch(found->second.exec, stream_));
      ++graph_replays_;
      return;
    }
    // First sight of this step shape: run it for real (scratch buffers grow here, outside any
    // capture), then record the same ops for the next time.
    ops();
    if (graphs_.size() >= 64) graphs_.clear();
    cudaGraph_t graph = nullptr;
    HLLM_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    capturing_ = true;
    try {
      ops();
    } catch (...) {
      capturing_ = false;
      cudaStreamEndCapture(stream_, &graph);
      if (graph != nullptr) cudaGraphDestroy(graph);
      throw;
    }
    capturing_ = false;
    HLLM_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    Graph recorded;
    recorded.graph = graph;
    HLLM_CUDA_CHECK(cudaGraphInstantiate(&recorded.exec, graph, 0));
    graphs_.emplace(key, std::move(recorded));
  }

  // ---- ops ------------------------------------------------------------------------------------

  void embedding(const Linear& table, const Tensor& out) override {
    if (!table.is_dense()) fail("CUDA backend: the embedding table must be dense");
    check_bf16(table.dense, "embedding table");
    cuda::launch_embedding(bf(table.dense), step_i32(layout_.ids), n_tokens_,
                           static_cast<int>(table.dense.dim(1)),
                           static_cast<int>(table.dense.dim(0)), bf(out), stream_);
  }

  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) override {
    cuda::launch_rmsnorm(bf(x), bf(weight), eps, bf(out), static_cast<int>(x.dim(0)),
                         static_cast<int>(x.dim(1)), stream_);
  }

  void add_rmsnorm(const Tensor& x, const Tensor& y, const Tensor& weight, float eps,
                   const Tensor& out) override {
    cuda::launch_add_rmsnorm(bf(x), bf(y), bf(weight), eps, bf(out), static_cast<int>(x.dim(0)),
                             static_cast<int>(x.dim(1)), stream_);
  }

  void matmul(const Tensor& x, const Linear& weight, const Tensor& out) override {
    const int64_t n = x.dim(0), in = x.dim(1), out_features = weight.out_features();
    if (in != weight.in_features() || out.dim(0) != n || out.dim(1) != out_features)
      fail("matmul: x ", x.shape.str(), " · [", out_features, ", ", weight.in_features(), "]ᵀ -> ",
           out.shape.str());
    if (out.dtype != DType::bf16 && out.dtype != DType::f32)
      fail("matmul: output dtype ", dtype_name(out.dtype), " (bf16 or f32)");
    if (!weight.is_int4()) {
      return gemm_bf16(bf(x), weight.dense.as<__nv_bfloat16>(), n, in, out_features, out);
    }
    const Int4View& w = weight.int4;
    const __nv_bfloat16* x_packed = bf(x);
    if (w.input_index != nullptr) {
      __nv_bfloat16* gathered =
          scratch<__nv_bfloat16>(gather_scratch_, static_cast<size_t>(n * w.packed_in()));
      cuda::launch_gather_packed(bf(x), in, w.input_index, w.packed_in(), static_cast<int>(n),
                                 gathered, stream_);
      x_packed = gathered;
    }
    if (n <= cuda::GEMV_Q4_MAX_BATCH) {
      if (out.dtype == DType::f32)
        return cuda::launch_gemv_q4_f32(w, x_packed, static_cast<int>(n), out.as<float>(), stream_);
      return cuda::launch_gemv_q4(w, x_packed, static_cast<int>(n), bf(out), stream_);
    }
    if (n <= GEMM_Q4_MAX_TOKENS) {
      const size_t ws_floats = cuda::gemm_q4_workspace_floats(w, n);
      float* workspace = ws_floats > 0 ? scratch<float>(gemm_scratch_, ws_floats) : nullptr;
      if (out.dtype == DType::f32)
        return cuda::launch_gemm_q4_f32(w, x_packed, n, out.as<float>(), workspace, ws_floats,
                                        stream_);
      return cuda::launch_gemm_q4(w, x_packed, n, bf(out), workspace, ws_floats, stream_);
    }
    // Long prefill chunks: dequantize the whole layer once, then one cuBLAS GEMM.
    __nv_bfloat16* dense =
        scratch<__nv_bfloat16>(dequant_scratch_, static_cast<size_t>(out_features * w.packed_in()));
    cuda::launch_dequant_q4(w, dense, stream_);
    gemm_bf16(x_packed, dense, n, w.packed_in(), out_features, out);
  }

  void rope_store_kv(const Tensor& q, const Tensor& k, const Tensor& v,
                     const KvLayer& cache) override {
    cuda::launch_rope_store_kv(
        bf(q), bf(k), bf(v), n_tokens_, static_cast<int>(q.dim(1)), static_cast<int>(k.dim(1)),
        static_cast<int>(q.dim(2)), step_i32(layout_.seq), step_i32(layout_.positions),
        reinterpret_cast<const float*>(step_device_.data() + layout_.inv_freq), attention_factor_,
        paged_view(cache), stream_);
  }

  void attention(const Tensor& q, const KvLayer& cache, float scale, const Tensor& out) override {
    const int n_heads = static_cast<int>(q.dim(1));
    if (one_sequence_chunk_ && n_tokens_ > MAX_GRAPH_TOKENS) {  // never inside a graph capture
      return cuda::launch_attn_prefill(bf(q), paged_view(cache), step_i32(layout_.seq),
                                       step_i32(layout_.kv_len), n_tokens_, n_heads, max_kv_len_,
                                       scale, nullptr, 0, bf(out), stream_, error_flag_.data());
    }
    const size_t bytes = cuda::attn_decode_workspace_bytes(n_tokens_, n_heads,
                                                           static_cast<int>(q.dim(2)), max_kv_len_);
    float* workspace = scratch<float>(attn_scratch_, cuda::ceil_div(bytes, sizeof(float)));
    cuda::launch_attn_decode_paged(bf(q), paged_view(cache), step_i32(layout_.seq),
                                   step_i32(layout_.kv_len), n_tokens_, n_heads, max_kv_len_, scale,
                                   workspace, bytes, bf(out), stream_, error_flag_.data());
  }

  void swiglu(const Tensor& gate, const Tensor& up, const Tensor& out) override {
    cuda::launch_swiglu(bf(gate), bf(up), bf(out), gate.numel(), stream_);
  }

  // Greedy ids of each row of fp32 logits [rows, vocab], computed on the device: 4 bytes per row
  // cross PCIe instead of the whole row.
  void argmax(const Tensor& logits, std::span<int32_t> ids) override {
    const int rows = static_cast<int>(logits.dim(0));
    if (logits.dtype != DType::f32 || static_cast<int>(ids.size()) != rows)
      fail("argmax: logits ", logits.shape.str(), " for ", ids.size(), " ids");
    auto* device_ids = reinterpret_cast<int32_t*>(
        unrecorded_scratch(ids_scratch_, static_cast<size_t>(rows) * sizeof(int32_t)));
    cuda::launch_argmax(logits.as<float>(), rows, static_cast<int>(logits.dim(1)), device_ids,
                        stream_);
    HLLM_CUDA_CHECK(
        cudaMemcpyAsync(ids.data(), device_ids, ids.size_bytes(), cudaMemcpyDeviceToHost, stream_));
    synchronize_and_check_kernels();
  }

  // Penalties and the sampling rule on the device (sampling.cuh): the rows' parameters, draws and
  // penalty lists go up in one copy, the ids come back; the logits never leave the GPU.
  void sample(const Tensor& logits, std::span<const SampleRow> rows,
              std::span<int32_t> ids) override {
    const int n_rows = static_cast<int>(logits.dim(0)), vocab = static_cast<int>(logits.dim(1));
    if (logits.dtype != DType::f32 || static_cast<int>(rows.size()) != n_rows ||
        static_cast<int>(ids.size()) != n_rows)
      fail("sample: logits ", logits.shape.str(), " for ", rows.size(), " rows and ", ids.size(),
           " ids");
    if (vocab > cuda::SAMPLE_MAX_VOCAB) return Backend::sample(logits, rows, ids);  // on the host
    size_t n_tokens = 0, longest = 0;
    for (const SampleRow& r : rows) {
      n_tokens += r.penalized.size();
      longest = std::max(longest, r.penalized.size());
    }
    const SampleLayout at(static_cast<size_t>(n_rows), n_tokens);
    uint8_t* host = pinned_scratch(sample_host_, grown(sample_host_.bytes, at.bytes));
    auto* params = reinterpret_cast<SampleRuleParams*>(host + at.params);
    auto* penalties = reinterpret_cast<SamplePenalties*>(host + at.penalties);
    auto* uniforms = reinterpret_cast<float*>(host + at.uniforms);
    auto* offsets = reinterpret_cast<int32_t*>(host + at.offsets);
    auto* tokens = reinterpret_cast<SamplePenaltyToken*>(host + at.tokens);
    offsets[0] = 0;
    for (int r = 0; r < n_rows; ++r) {
      params[r] = rows[r].rule;
      penalties[r] = rows[r].penalties;
      uniforms[r] = rows[r].uniform;
      std::copy(rows[r].penalized.begin(), rows[r].penalized.end(), tokens + offsets[r]);
      offsets[r + 1] = offsets[r] + static_cast<int32_t>(rows[r].penalized.size());
    }
    const size_t device_bytes = at.bytes + n_rows * sizeof(int32_t);
    uint8_t* device =
        unrecorded_scratch(sample_scratch_, grown(sample_scratch_.bytes, device_bytes));
    auto* device_ids = reinterpret_cast<int32_t*>(device + at.bytes);
    try {
      HLLM_CUDA_CHECK(cudaMemcpyAsync(device, host, at.bytes, cudaMemcpyHostToDevice, stream_));
      cuda::launch_apply_penalties(logits.as<float>(), n_rows, vocab,
                                   reinterpret_cast<SamplePenalties*>(device + at.penalties),
                                   reinterpret_cast<int32_t*>(device + at.offsets),
                                   reinterpret_cast<SamplePenaltyToken*>(device + at.tokens),
                                   static_cast<int>(longest), stream_);
      cuda::launch_sample(logits.as<float>(), n_rows, vocab,
                          reinterpret_cast<SampleRuleParams*>(device + at.params),
                          reinterpret_cast<float*>(device + at.uniforms), device_ids, stream_);
      HLLM_CUDA_CHECK(cudaMemcpyAsync(ids.data(), device_ids, ids.size_bytes(),
                                      cudaMemcpyDeviceToHost, stream_));
    } catch (...) {
      cudaStreamSynchronize(stream_);  // the staging copy must be done before anyone reuses it
      throw;
    }
    synchronize_and_check_kernels();
  }

 private:
  // The kernels' error flag (cuda/common.cuh, "Device-side error flag"): both attention launches
  // report a kv_len outside 1 .. max_kv_len into error_flag_. Its address never changes, so the
  // launches recorded in a CUDA graph report into it on every replay. The read-back is not part
  // of any graph: the methods that synchronize (to_host_f32, argmax, sample) run outside
  // run_step's capture (a synchronize is illegal while capturing), and each queues a 4-byte copy
  // of the flag behind the step's kernels, synchronizes, then throws if a bit was set (after
  // resetting the flag, so the next step starts clean).
  void synchronize_and_check_kernels() {
    HLLM_CUDA_CHECK(cudaMemcpyAsync(error_host_.get(), error_flag_.data(), sizeof(int32_t),
                                    cudaMemcpyDeviceToHost, stream_));
    HLLM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    int32_t bits = 0;
    std::memcpy(&bits, error_host_.get(), sizeof(bits));
    if (bits == 0) [[likely]]
      return;
    std::memset(error_host_.get(), 0, sizeof(int32_t));
    HLLM_CUDA_CHECK(cudaMemsetAsync(error_flag_.data(), 0, sizeof(int32_t), stream_));
    fail("CUDA backend: ", cuda::kernel_error_text(bits),
         " (max_kv_len of the last step: ", max_kv_len_,
         "); the results of the steps since the last check are wrong");
  }

  // Byte offsets (16-aligned) of one sample() call's inputs: params [rows], penalties [rows],
  // uniforms [rows], offsets [rows + 1] into tokens [n_tokens] (every row's penalty list).
  struct SampleLayout {
    size_t params = 0, penalties = 0, uniforms = 0, offsets = 0, tokens = 0, bytes = 0;
    SampleLayout(size_t rows, size_t n_tokens) {
      const auto aligned = [](size_t bytes) { return cuda::round_up<size_t>(bytes, 16); };
      penalties = params + aligned(rows * sizeof(SampleRuleParams));
      uniforms = penalties + aligned(rows * sizeof(SamplePenalties));
      offsets = uniforms + aligned(rows * sizeof(float));
      tokens = offsets + aligned((rows + 1) * sizeof(int32_t));
      bytes = tokens + aligned(n_tokens * sizeof(SamplePenaltyToken));
    }
  };

  // Pinned host staging that grows on demand (sample() synchronizes before it returns, so the
  // next call may overwrite it).
  using PinnedBytes = std::unique_ptr<uint8_t, void (*)(uint8_t*)>;
  struct PinnedScratch {
    PinnedBytes memory{nullptr, [](uint8_t*) {}};
    size_t bytes = 0;
  };
  static uint8_t* pinned_scratch(PinnedScratch& s, size_t bytes) {
    if (bytes > s.bytes) {
      void* p = nullptr;
      HLLM_CUDA_CHECK(cudaMallocHost(&p, bytes));
      s.memory = PinnedBytes(static_cast<uint8_t*>(p), [](uint8_t* q) { cudaFreeHost(q); });
      s.bytes = bytes;
    }
    return s.memory.get();
  }

  // Offsets (bytes, 16-aligned) of the step inputs in the step buffer; they depend only on the
  // token count and head_dim, both part of every graph key.
  struct StepLayout {
    size_t ids = 0, seq = 0, positions = 0, kv_len = 0, inv_freq = 0, tables = 0;
    StepLayout() = default;
    StepLayout(int64_t n, int64_t half) {
      const size_t ints = static_cast<size_t>(cuda::round_up<int64_t>(n, 4)) * sizeof(int32_t);
      seq = ids + ints;
      positions = seq + ints;
      kv_len = positions + ints;
      inv_freq = kv_len + ints;
      tables = inv_freq + static_cast<size_t>(cuda::round_up<int64_t>(half, 4)) * sizeof(float);
    }
  };
  static size_t step_capacity_bytes() {
    return StepLayout(MAX_STEP_TOKENS, MAX_HALF_HEAD_DIM).tables +
           static_cast<size_t>(MAX_TABLE_ENTRIES) * sizeof(int32_t);
  }

  struct Graph {
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    Graph() = default;
    Graph(Graph&& o) noexcept
        : graph(std::exchange(o.graph, nullptr)), exec(std::exchange(o.exec, nullptr)) {}
    Graph& operator=(Graph&&) = delete;
    ~Graph() {
      if (exec != nullptr) cudaGraphExecDestroy(exec);
      if (graph != nullptr) cudaGraphDestroy(graph);
    }
  };

  // Weight uploads go through the backend's stream and are complete on return, so no later op
  // can see a half-written weight.
  void copy_to_device(void* dst, const void* src, size_t bytes) {
    HLLM_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    HLLM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  static std::shared_ptr<void> device_memory(size_t bytes) {
    void* p = nullptr;
    const cudaError_t status = cudaMalloc(&p, std::max<size_t>(bytes, 1));
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      fail("CUDA backend: cannot allocate ", bytes, " bytes of GPU memory (",
           cudaGetErrorString(status), ")");
    }
    return std::shared_ptr<void>(p, [](void* q) { cudaFree(q); });
  }

  static bf16 host_element_bf16(const Tensor& t, int64_t i) {
    switch (t.dtype) {
      case DType::f16:
        return f32_to_bf16(f16_to_f32(t.as<f16>()[i]));
      case DType::f32:
        return f32_to_bf16(t.as<float>()[i]);
      default:
        fail("upload_weight: unsupported dtype ", dtype_name(t.dtype));
    }
  }

  static __nv_bfloat16* bf(const Tensor& t) {
    if (t.dtype != DType::bf16 || t.device != Device::cuda)
      fail("CUDA backend: expected a bf16 device tensor, got ", dtype_name(t.dtype), " ",
           t.shape.str());
    return t.as<__nv_bfloat16>();
  }
  static void check_bf16(const Tensor& t, const char* what) {
    if (t.dtype != DType::bf16) fail("CUDA backend: ", what, " must be bf16");
  }
  const int32_t* step_i32(size_t offset) const {
    return reinterpret_cast<const int32_t*>(step_device_.data() + offset);
  }

  PagedKvView paged_view(const KvLayer& cache) const {
    PagedKvView view;
    view.k = cache.k.data;
    view.v = cache.v.data;
    view.block_tables = step_i32(layout_.tables);
    view.max_blocks_per_seq = max_blocks_per_seq_;
    view.block_size = block_size_;
    view.n_kv_heads = static_cast<int32_t>(cache.k.dim(1));
    view.head_dim = static_cast<int32_t>(cache.k.dim(2));
    return view;
  }

  // out[n, o] = x[n, k] · w[o, k]ᵀ. cuBLAS is column-major: there this is outᵀ[o, n] = w ·
  // xᵀ, with w read transposed from its row-major [o, k] (= column-major [k, o]) storage.
  void gemm_bf16(const __nv_bfloat16* x, const __nv_bfloat16* w, int64_t n, int64_t k, int64_t o,
                 const Tensor& out) {
    const float alpha = 1.0f, beta = 0.0f;
    const cudaDataType out_type = out.dtype == DType::f32 ? CUDA_R_32F : CUDA_R_16BF;
    HLLM_CUBLAS_CHECK(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(o),
                                   static_cast<int>(n), static_cast<int>(k), &alpha, w, CUDA_R_16BF,
                                   static_cast<int>(k), x, CUDA_R_16BF, static_cast<int>(k), &beta,
                                   out.data, out_type, static_cast<int>(o), CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT));
  }

  // Scratch buffers grow on demand, never while a graph is being recorded; growing one
  // invalidates the recorded graphs (they hold its old address).
  struct Scratch {
    std::shared_ptr<void> memory;
    size_t bytes = 0;
  };
  template <typename T>
  T* scratch(Scratch& s, size_t elements) {
    const size_t bytes = elements * sizeof(T);
    if (bytes > s.bytes) {
      if (capturing_) fail("CUDA backend: scratch grew while recording a graph");
      HLLM_CUDA_CHECK(cudaStreamSynchronize(stream_));
      graphs_.clear();  // any step, graphed or not, can grow a scratch buffer
      s.memory = device_memory(bytes);
      s.bytes = bytes;
    }
    return static_cast<T*>(s.memory.get());
  }

  // The same for a buffer no recorded step uses (sampling, argmax: they run after run_step), so
  // growing it leaves the graphs alone.
  uint8_t* unrecorded_scratch(Scratch& s, size_t bytes) {
    if (bytes > s.bytes) {
      HLLM_CUDA_CHECK(cudaStreamSynchronize(stream_));
      s.memory = device_memory(bytes);
      s.bytes = bytes;
    }
    return static_cast<uint8_t*>(s.memory.get());
  }

  // The size to grow a per-step buffer to: at least 1.5x what it had (penalty lists lengthen by a
  // few entries per step: no reallocation every step), and at least 64 KB.
  static size_t grown(size_t had, size_t need) {
    return need <= had ? had : std::max({need, had + had / 2, size_t{64} << 10});
  }

  bool use_graphs_;
  cudaDeviceProp props_{};
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  cuda::DeviceBuffer<uint8_t> cublas_workspace_;
  std::vector<std::shared_ptr<void>> resident_;  // uploaded weights

  // Step inputs: pinned host staging -> one copy -> step_device_ (fixed address).
  PinnedBytes step_host_{nullptr, [](uint8_t*) {}};
  // The kernels' error flag (device, fixed address) and its pinned host copy (4 bytes each).
  cuda::DeviceBuffer<int32_t> error_flag_;
  PinnedBytes error_host_{nullptr, [](uint8_t*) {}};
  cuda::DeviceBuffer<uint8_t> step_device_;
  cudaEvent_t step_copied_ = nullptr;
  StepLayout layout_;
  int n_tokens_ = 0;
  bool one_sequence_chunk_ = false;
  int32_t max_blocks_per_seq_ = 0, block_size_ = 0, max_kv_len_ = 0;
  float attention_factor_ = 1.0f;

  Scratch gather_scratch_, dequant_scratch_, gemm_scratch_, attn_scratch_, convert_scratch_,
      ids_scratch_, sample_scratch_;
  PinnedScratch sample_host_;
  bool capturing_ = false;
  std::unordered_map<uint64_t, Graph> graphs_;
  int64_t graph_replays_ = 0;
};

}  // namespace hllm
