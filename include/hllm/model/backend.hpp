// Backend: the small set of operations the Llama forward pass (model/llama.hpp) is written against.
// The CPU backend (cpu/backend.hpp) is the fp32 reference; the CUDA backend implements the same
// calls.
//
// Conventions for every op:
//   - activations are 2-D/3-D row-major tensors of activation_dtype() on device(), token-major:
//     [n_tokens, width] or [n_tokens, n_heads, head_dim];
//   - weights are nn.Linear layout [out_features, in_features], as HF stores them, after
//     upload_weight(); linear layers are a Linear (model/linear.hpp): a dense tensor or INT4
//     tiles (layout/int4_tiles.hpp) whose act-order input permutation the backend applies inside
//     matmul;
//   - ops do not allocate; the caller passes outputs created by allocate().
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/layout/sample_penalty.hpp"
#include "hllm/model/linear.hpp"
#include "hllm/model/rope.hpp"

namespace hllm {

// Memory a backend handed out, freed when the last copy of the Buffer goes away.
struct Buffer {
  Tensor tensor;
  std::shared_ptr<void> memory;
};

// One layer of the KV cache, paged (layout/paged_kv.hpp): rows are (block, slot) pairs,
// [n_blocks * block_size, n_kv_heads, head_dim] of Backend::kv_dtype(); K is stored after RoPE.
// Which rows belong to which sequence is the step's block table (Step below).
struct KvLayer {
  Tensor k;
  Tensor v;
};

// Everything about one forward step that changes from step to step, given to the backend once per
// step (begin_step) before any op runs. Ops read it from there, never from their arguments, so
// the ops of a step form a fixed program that a GPU backend can capture once and replay (CUDA
// graphs): only these inputs change.
//
//   token t (0 .. n-1): ids[t], sequence seq[t] (a row of block_tables), position positions[t];
//                       it attends to positions 0 .. positions[t] of its sequence (causal)
//   block_tables       [n_seqs, max_blocks_per_seq] physical block of each logical block
struct Step {
  std::span<const int32_t> ids;
  std::span<const int32_t> seq;
  std::span<const int32_t> positions;
  std::span<const int32_t> block_tables;
  int32_t max_blocks_per_seq = 0;
  int32_t block_size = 0;
  int32_t max_kv_len = 0;  // a bound on positions[t] + 1 that stays fixed across replays (e.g.
                           // the cache capacity): picks the attention split count
  const RopeTable* rope = nullptr;  // inverse frequencies for this step (dynamic NTK varies)
};

// A process-wide unique number for objects whose identity goes into a recorded step's key
// (models, caches, buffer generations): unlike addresses, never reused after a free.
inline uint64_t next_object_id() {
  static std::atomic<uint64_t> counter{0};
  return ++counter;
}

// Step::max_kv_len for a step whose longest attention covers `length` positions of a cache
// (per sequence) of `limit` rows: a bound that changes rarely (it is part of a recorded step's
// key) yet stays near the real length (it sizes the attention's split over the cache) — the next
// power of two, at least 256, at most `limit`.
inline int32_t kv_length_bound(int64_t length, int64_t limit) {
  int64_t bound = 256;
  while (bound < length) bound *= 2;
  return static_cast<int32_t>(std::min(bound, limit));
}

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string name() const = 0;
  virtual Device device() const = 0;
  virtual DType activation_dtype() const = 0;
  // The element type of KV caches (KvCache): activation_dtype() unless the backend says otherwise
  // (the CPU's fp16 cache, cpu/backend.hpp).
  virtual DType kv_dtype() const { return activation_dtype(); }

  virtual Buffer allocate(DType dtype, Shape shape) = 0;
  // A view of the host weight that this backend's ops can read (CPU: the same memory; a GPU backend
  // copies it to the device and keeps it alive as long as the backend lives).
  virtual Tensor upload_weight(const Tensor& host) = 0;
  // The same for a linear layer's weight, dense, INT4 or ggml blocks (a backend without kernels
  // for a kind refuses it, naming the storage); the returned Linear keeps any copy alive.
  virtual Linear upload_linear(const Linear& host) = 0;
  // An embedding table that is only looked up by row (untied from the lm_head): a backend that
  // re-lays out matmul weights may keep this one as it is.
  virtual Linear upload_embedding(const Linear& host) { return upload_linear(host); }
  // Copies an activation tensor (or fp32 logits) to host memory as fp32.
  virtual void to_host_f32(const Tensor& x, std::span<float> out) = 0;

  // Sets the step inputs for the ops that follow (the spans are copied; they need not outlive the
  // call).
  virtual void begin_step(const Step& step) = 0;
  // Runs `ops` (the ops of one step) once. A GPU backend may record them the first time a `key`
  // is seen and replay the recording afterwards: `key` must change whenever anything the ops
  // capture changes (token count, buffers, cache) — step inputs excepted.
  virtual void run_step(uint64_t key, const std::function<void()>& ops) { (void)key, ops(); }

  // out[t, :] = table[ids[t], :] for the step's ids (range-checked by the caller); the table is
  // a [vocab, hidden] Linear (dense, or ggml blocks dequantized row by row).
  virtual void embedding(const Linear& table, const Tensor& out) = 0;
  // out = weight * x / rms(x) per row (out may alias x).
  virtual void rmsnorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) = 0;
  // x += y, then out = rmsnorm(x) (the residual add fused with the next norm).
  virtual void add_rmsnorm(const Tensor& x, const Tensor& y, const Tensor& weight, float eps,
                           const Tensor& out) = 0;
  // out[n, out_features] = x[n, in_features] · weightᵀ (dense, INT4 or ggml blocks, dequantized on
  // the fly);
  // out is activation_dtype() or f32.
  virtual void matmul(const Tensor& x, const Linear& weight, const Tensor& out) = 0;
  // Several weights that read the same input (a layer's q/k/v, gate/up): each out = x · weightᵀ,
  // the bits matmul gives it. A backend may run them as one op; this default runs them in turn.
  struct MatmulTarget {
    const Linear& weight;
    Tensor out;
  };
  virtual void matmul_shared_input(const Tensor& x, std::initializer_list<MatmulTarget> targets) {
    for (const MatmulTarget& target : targets) matmul(x, target.weight, target.out);
  }
  // Rotates q [n, n_heads, head_dim] in place and k [n, n_kv_heads, head_dim] by the step's
  // positions, and writes k and v into the cache at each token's (sequence, position).
  virtual void rope_store_kv(const Tensor& q, const Tensor& k, const Tensor& v,
                             const KvLayer& cache) = 0;
  // Causal attention of q [n, n_heads, head_dim]: token t over positions 0 .. positions[t] of its
  // sequence in the cache.
  virtual void attention(const Tensor& q, const KvLayer& cache, float scale, const Tensor& out) = 0;
  // out = silu(gate) * up (out may alias gate).
  virtual void swiglu(const Tensor& gate, const Tensor& up, const Tensor& out) = 0;

  // Greedy ids of fp32 logits [rows, vocab] (lowest index on ties), computed where the logits are.
  virtual void argmax(const Tensor& logits, std::span<int32_t> ids) = 0;

  // ids[r] = the id sampling point rows[r] picks from row r of fp32 logits [rows, vocab]
  // (layout/sample_penalty.hpp: penalties, then the sampling rule). A GPU backend samples where the
  // logits are, and only the ids come back; this default copies the rows to the host. `logits`
  // may be left penalized.
  virtual void sample(const Tensor& logits, std::span<const SampleRow> rows,
                      std::span<int32_t> ids) {
    const int64_t n_rows = logits.dim(0), vocab = logits.dim(1);
    if (static_cast<int64_t>(rows.size()) != n_rows || static_cast<int64_t>(ids.size()) != n_rows)
      fail("sample: logits ", logits.shape.str(), " for ", rows.size(), " rows and ", ids.size(),
           " ids");
    std::vector<float> host(static_cast<size_t>(logits.numel()));
    to_host_f32(logits, host);
    for (int64_t r = 0; r < n_rows; ++r)
      ids[r] = sample_row(std::span(host).subspan(r * vocab, vocab), rows[r]);
  }
};

}  // namespace hllm
