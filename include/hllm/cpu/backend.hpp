// CpuBackend: the fp32 reference implementation of the Backend interface, vectorized (cpu/simd.hpp)
// and threaded over one ThreadPool. Weights stay where they are (the mmap'd checkpoint) in their
// stored dtype and are widened to fp32 as they are read; INT4 weights (quant/int4.hpp) are
// dequantized on the fly by cpu/int4_matmul.hpp.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "hllm/core/threads.hpp"
#include "hllm/cpu/activation.hpp"
#include "hllm/cpu/attention.hpp"
#include "hllm/cpu/int4_matmul.hpp"
#include "hllm/cpu/matmul.hpp"
#include "hllm/cpu/norm.hpp"
#include "hllm/cpu/rope.hpp"
#include "hllm/model/backend.hpp"

namespace hllm {

class CpuBackend final : public Backend {
 public:
  // n_threads = 0: one per hardware thread.
  explicit CpuBackend(int n_threads = 0) : pool_(n_threads) {}

  std::string name() const override { return "cpu"; }
  Device device() const override { return Device::cpu; }
  DType activation_dtype() const override { return DType::f32; }
  int n_threads() const { return pool_.size(); }
  ThreadPool& pool() { return pool_; }

  Buffer allocate(DType dtype, Shape shape) override {
    constexpr size_t ALIGNMENT = 64;  // one cache line; also what AVX-512 loads like
    const size_t bytes =
        std::max<size_t>(static_cast<size_t>(shape.numel()) * dtype_size(dtype), 1);
    void* memory = ::operator new (bytes, std::align_val_t{ALIGNMENT});
    Buffer buffer;
    buffer.memory.reset(memory,
                        [](void* p) { ::operator delete (p, std::align_val_t{ALIGNMENT}); });
    buffer.tensor = Tensor(memory, dtype, shape);
    return buffer;
  }

  Tensor upload_weight(const Tensor& host) override { return host; }
  Linear upload_linear(const Linear& host) override { return host; }

  void to_host_f32(const Tensor& x, std::span<float> out) override {
    if (x.dtype != DType::f32 || static_cast<int64_t>(out.size()) != x.numel())
      fail("to_host_f32: tensor ", x.shape.str(), " does not fit ", out.size(), " floats");
    std::memcpy(out.data(), x.data, x.nbytes());
  }

  void embedding(const Tensor& table, std::span<const int32_t> ids, const Tensor& out) override {
    const int64_t dim = table.dim(1);
    pool_.parallel_for(static_cast<int64_t>(ids.size()), [&](int64_t t) {
      float* dst = out.as<float>() + t * dim;
      const int64_t row = ids[t] * dim;
      switch (table.dtype) {
        case DType::bf16:
          return widen_row(table.as<bf16>() + row, dst, dim);
        case DType::f16:
          return widen_row(table.as<f16>() + row, dst, dim);
        default:
          return widen_row(table.as<float>() + row, dst, dim);
      }
    });
  }

  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) override {
    cpu::rmsnorm(x, weight, eps, out, pool_);
  }
  void matmul(const Tensor& x, const Linear& weight, const Tensor& out) override {
    if (weight.is_int4()) return cpu::matmul_int4(x, weight.int4, out, pool_, int4_scratch_);
    cpu::matmul(x, weight.dense, out, pool_);
  }
  void rope(const Tensor& x, std::span<const int64_t> positions, const RopeTable& table) override {
    cpu::apply_rope(x, positions, table, pool_);
  }
  void store_kv(const Tensor& k, const Tensor& v, const KvLayer& cache,
                int64_t start_pos) override {
    if (start_pos < 0 || start_pos + k.dim(0) > cache.k.dim(0))
      fail("store_kv: positions ", start_pos, "..", start_pos + k.dim(0), " exceed the cache of ",
           cache.k.dim(0));
    const size_t row_bytes = static_cast<size_t>(k.numel() / k.dim(0)) * sizeof(float);
    std::memcpy(cache.k.rows(start_pos, start_pos + k.dim(0)).data, k.data, k.dim(0) * row_bytes);
    std::memcpy(cache.v.rows(start_pos, start_pos + v.dim(0)).data, v.data, v.dim(0) * row_bytes);
  }
  void attention(const Tensor& q, const KvLayer& cache, int64_t start_pos, float scale,
                 const Tensor& out) override {
    cpu::attention_causal(q, cache.k, cache.v, start_pos, scale, out, pool_);
  }
  void swiglu(const Tensor& gate, const Tensor& up, const Tensor& out) override {
    cpu::swiglu(gate, up, out, pool_);
  }
  void add(const Tensor& x, const Tensor& y) override {
    if (x.numel() != y.numel()) fail("add: ", x.shape.str(), " + ", y.shape.str());
    float* dst = x.as<float>();
    const float* src = y.as<float>();
    for (int64_t i = 0; i < x.numel(); ++i) dst[i] += src[i];
  }

 private:
  template <typename T>
  static void widen_row(const T* src, float* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = cpu::to_f32(src[i]);
  }

  ThreadPool pool_;
  std::vector<float> int4_scratch_;  // activations in an INT4 weight's packed input order
};

}  // namespace hllm
