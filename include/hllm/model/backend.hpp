// Backend: the small set of operations the Llama forward pass (model/llama.hpp) is written against.
// The CPU backend (cpu/backend.hpp) is the fp32 reference; the CUDA backend implements the same
// calls.
//
// Conventions for every op:
//   - activations are 2-D/3-D row-major tensors of activation_dtype() on device(), token-major:
//     [n_tokens, width] or [n_tokens, n_heads, head_dim];
//   - weights are nn.Linear layout [out_features, in_features], as HF stores them, after
//   upload_weight(); linear layers are a Linear (model/linear.hpp): a dense tensor or INT4 tiles
//   (quant/int4.hpp) whose act-order input permutation the backend applies inside matmul;
//   - ops do not allocate; the caller passes outputs created by allocate().
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "hllm/core/tensor.hpp"
#include "hllm/model/linear.hpp"
#include "hllm/model/rope.hpp"

namespace hllm {

// Memory a backend handed out, freed when the last copy of the Buffer goes away.
struct Buffer {
  Tensor tensor;
  std::shared_ptr<void> memory;
};

// One layer's slice of the KV cache: rows are positions, [capacity, n_kv_heads, head_dim]; K is
// stored after RoPE.
struct KvLayer {
  Tensor k;
  Tensor v;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string name() const = 0;
  virtual Device device() const = 0;
  virtual DType activation_dtype() const = 0;

  virtual Buffer allocate(DType dtype, Shape shape) = 0;
  // A view of the host weight that this backend's ops can read (CPU: the same memory; a GPU backend
  // copies it to the device and keeps it alive as long as the backend lives).
  virtual Tensor upload_weight(const Tensor& host) = 0;
  // The same for a linear layer's weight, dense or INT4; the returned Linear keeps any copy alive.
  virtual Linear upload_linear(const Linear& host) = 0;
  // Copies an activation tensor to host memory as fp32.
  virtual void to_host_f32(const Tensor& x, std::span<float> out) = 0;

  // out[t, :] = table[ids[t], :]; ids were range-checked by the caller.
  virtual void embedding(const Tensor& table, std::span<const int32_t> ids, const Tensor& out) = 0;
  // out = weight * x / rms(x) per row (out may alias x).
  virtual void rmsnorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) = 0;
  // out[n, out_features] = x[n, in_features] · weightᵀ (dense or INT4, dequantized on the fly)
  virtual void matmul(const Tensor& x, const Linear& weight, const Tensor& out) = 0;
  // Rotates x [n, heads, head_dim] in place; token t is at positions[t].
  virtual void rope(const Tensor& x, std::span<const int64_t> positions,
                    const RopeTable& table) = 0;
  // Writes k, v [n, n_kv_heads, head_dim] into cache rows start_pos .. start_pos + n - 1.
  virtual void store_kv(const Tensor& k, const Tensor& v, const KvLayer& cache,
                        int64_t start_pos) = 0;
  // Causal attention of q [n, n_heads, head_dim] (positions start_pos ..) over cache rows 0 ..
  // start_pos + t.
  virtual void attention(const Tensor& q, const KvLayer& cache, int64_t start_pos, float scale,
                         const Tensor& out) = 0;
  // out = silu(gate) * up (out may alias gate).
  virtual void swiglu(const Tensor& gate, const Tensor& up, const Tensor& out) = 0;
  // x += y
  virtual void add(const Tensor& x, const Tensor& y) = 0;
};

}  // namespace hllm
