// CpuBackend: the fp32 reference implementation of the Backend interface, vectorized (cpu/simd.hpp)
// and threaded over one ThreadPool. Weights keep their stored dtype and are widened to fp32 as
// they are read. Dense matrices are copied at load into row panels (layout/dense_panels.hpp: one
// FMA chain per output, the same bits for any number of tokens); the untied embedding table, INT4
// weights (layout/int4_tiles.hpp) and GGUF's ggml blocks (layout/ggml_blocks.hpp) are read where
// they are (the mmap'd checkpoint or the repacked tiles), the quantized ones dequantized on the fly
// by cpu/int4_matmul.hpp and cpu/ggml_matmul.hpp.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "hllm/core/threads.hpp"
#include "hllm/cpu/activation.hpp"
#include "hllm/cpu/attention_paged.hpp"
#include "hllm/cpu/ggml_kq8_matmul.hpp"
#include "hllm/cpu/ggml_matmul.hpp"
#include "hllm/cpu/ggml_q8_matmul.hpp"
#include "hllm/cpu/int4_matmul.hpp"
#include "hllm/cpu/int4_q8_matmul.hpp"
#include "hllm/cpu/matmul.hpp"
#include "hllm/cpu/matmul_panels.hpp"
#include "hllm/cpu/norm.hpp"
#include "hllm/cpu/rope.hpp"
#include "hllm/layout/dense_panels.hpp"
#include "hllm/layout/paged_kv.hpp"
#include "hllm/model/backend.hpp"

namespace hllm {

// How quantized weights (INT4 tiles; GGUF's blocks) meet the activations:
//   exact  fp32 activations (cpu/int4_matmul.hpp, cpu/ggml_matmul.hpp): the reference, equal to
//          the dequantized fp32 product up to fp32 rounding (what the golden tests check).
//   int8   activations rounded to int8 per 32 inputs, integer dot products (VNNI / AVX2,
//          cpu/int4_q8_matmul.hpp, cpu/ggml_q8_matmul.hpp): llama.cpp's numerics and several times
//          less compute; each 32-input chunk's error is at most Σ|w|·d/2, d = max|x|/127 of the
//          chunk (INT4, Q8_0, Q4_0, Q5_0, Q4_1, Q5_1). Q4_K / Q5_K / Q6_K take it too, rounded
//          per 256 inputs as llama.cpp's Q8_K (cpu/ggml_kq8_matmul.hpp, AVX2 or AVX-512 VNNI;
//          the fp32 path on a CPU without AVX2).
enum class CpuMatmul { exact, int8 };

inline const char* cpu_matmul_name(CpuMatmul matmul) {
  return matmul == CpuMatmul::int8 ? "int8" : "exact";
}

// The element type of the CPU backend's KV cache:
//   f32        the reference (what the golden tests check);
//   f16        K and V rounded to fp16 (relative error <= 2^-11), as llama.cpp caches them by
//              default: half the memory per position and half the K/V bytes a decode step reads
//              (at 2,048 positions of Llama-3.2-1B, 67 MB instead of 134 MB beside ~0.8 GB of q4
//              weights);
//   automatic  f16 with CpuMatmul::int8 (llama.cpp's numerics), f32 with exact.
enum class CpuKvCache { automatic, f32, f16 };

inline const char* cpu_kv_cache_name(CpuKvCache kv) {
  switch (kv) {
    case CpuKvCache::f32:
      return "f32";
    case CpuKvCache::f16:
      return "f16";
    default:
      return "auto";
  }
}

inline DType cpu_kv_dtype(CpuKvCache kv, CpuMatmul matmul) {
  if (kv == CpuKvCache::automatic) return matmul == CpuMatmul::int8 ? DType::f16 : DType::f32;
  return kv == CpuKvCache::f16 ? DType::f16 : DType::f32;
}

class CpuBackend final : public Backend {
 public:
  // n_threads = 0: one per hardware thread.
  explicit CpuBackend(int n_threads = 0, CpuMatmul int4_matmul = CpuMatmul::exact,
                      CpuKvCache kv_cache = CpuKvCache::automatic)
      : pool_(n_threads),
        int4_matmul_(int4_matmul),
        kv_dtype_(cpu_kv_dtype(kv_cache, int4_matmul)) {}

  std::string name() const override { return "cpu"; }
  Device device() const override { return Device::cpu; }
  DType activation_dtype() const override { return DType::f32; }
  DType kv_dtype() const override { return kv_dtype_; }
  int n_threads() const { return pool_.size(); }
  CpuMatmul int4_matmul() const { return int4_matmul_; }
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
  // Dense weights are copied into row panels (layout/dense_panels.hpp), the order the matmul
  // kernels stream; INT4 tiles and ggml blocks are read where they are.
  Linear upload_linear(const Linear& host) override {
    if (!host.is_dense() || host.dense_panels || host.empty()) return host;
    const Tensor& rows = host.dense;
    if (rows.rank() != 2 || !rows.is_contiguous())
      fail("upload_linear: a dense weight must be a contiguous [out, in] matrix, not ",
           rows.shape.str());
    const int64_t out = rows.dim(0), in = rows.dim(1);
    Buffer panels = allocate(rows.dtype, {dense_panels_elements(out, in)});
    visit_float_dtype(
        rows.dtype, "upload_linear: dense weight", [&]<typename T>(std::type_identity<T>) {
          pool_.parallel_for(dense_panel_count(out), [&](int64_t panel) {
            pack_dense_panels(rows.as<T>(), out, in, panel, panel + 1, panels.tensor.as<T>());
          });
        });
    Linear uploaded(Tensor(panels.tensor.data, rows.dtype, rows.shape));
    uploaded.owner = std::move(panels.memory);
    uploaded.dense_panels = true;
    return uploaded;
  }
  // Only looked up by row: stays where it is.
  Linear upload_embedding(const Linear& host) override { return host; }

  void to_host_f32(const Tensor& x, std::span<float> out) override {
    if (x.dtype != DType::f32 || static_cast<int64_t>(out.size()) != x.numel())
      fail("to_host_f32: tensor ", x.shape.str(), " does not fit ", out.size(), " floats");
    std::memcpy(out.data(), x.data, x.nbytes());
  }

  void begin_step(const Step& step) override {
    ids_.assign(step.ids.begin(), step.ids.end());
    seq_.assign(step.seq.begin(), step.seq.end());
    positions_.assign(step.positions.begin(), step.positions.end());
    block_tables_.assign(step.block_tables.begin(), step.block_tables.end());
    max_blocks_per_seq_ = step.max_blocks_per_seq;
    block_size_ = step.block_size;
    rope_ = step.rope;
  }

  void embedding(const Linear& weight, const Tensor& out) override {
    if (weight.is_int4()) fail("embedding: an INT4 embedding table is not supported");
    const int64_t dim = weight.in_features();
    const Tensor& table = weight.dense;
    pool_.parallel_for(static_cast<int64_t>(ids_.size()), [&](int64_t t) {
      float* dst = out.as<float>() + t * dim;
      if (weight.is_ggml()) return cpu::ggml_dequant_row_fast(weight.ggml, ids_[t], dst);
      visit_float_dtype(table.dtype, "embedding", [&]<typename T>(std::type_identity<T>) {
        table_row(table.as<T>(), weight.dense_panels, ids_[t], dim, dst);
      });
    });
  }

  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) override {
    cpu::rmsnorm(x, weight, eps, out, pool_);
  }
  void add_rmsnorm(const Tensor& x, const Tensor& y, const Tensor& weight, float eps,
                   const Tensor& out) override {
    if (x.numel() != y.numel()) fail("add_rmsnorm: ", x.shape.str(), " + ", y.shape.str());
    float* dst = x.as<float>();
    const float* src = y.as<float>();
    for (int64_t i = 0; i < x.numel(); ++i) dst[i] += src[i];
    cpu::rmsnorm(x, weight, eps, out, pool_);
  }
  void matmul(const Tensor& x, const Linear& weight, const Tensor& out) override {
    if (weight.is_int4() && int4_matmul_ == CpuMatmul::int8)
      return cpu::matmul_int4_q8(x, weight.int4, out, pool_, activation_scratch_, q8_scratch_);
    if (weight.is_int4()) return cpu::matmul_int4(x, weight.int4, out, pool_, activation_scratch_);
    if (weight.is_ggml() && int4_matmul_ == CpuMatmul::int8 &&
        cpu::ggml_q8_path_supports(weight.ggml.type))
      return cpu::matmul_ggml_q8(x, weight.ggml, out, pool_, q8_blocks_);
    if (weight.is_ggml() && int4_matmul_ == CpuMatmul::int8 &&
        cpu::ggml_kq8_path_supports(weight.ggml.type))
      return cpu::matmul_ggml_kq8(x, weight.ggml, out, pool_, q8k_blocks_);
    if (weight.is_ggml()) return cpu::matmul_ggml(x, weight.ggml, out, pool_);
    if (weight.dense_panels) {  // dense's shape is [out, in]; its memory holds the panels
      const int64_t rows = weight.out_features(), cols = weight.in_features();
      const Tensor panels(weight.dense.data, weight.dense.dtype,
                          {dense_panels_elements(rows, cols)});
      return cpu::matmul_panels(x, panels, rows, out, pool_, activation_scratch_);
    }
    cpu::matmul(x, weight.dense, out, pool_);
  }
  // INT4 weights with int8 activations and one input order: one rounding of x, one parallel loop
  // (matmul_int4_q8_group); anything else one matmul after another.
  void matmul_shared_input(const Tensor& x, std::initializer_list<MatmulTarget> targets) override {
    const Int4View* weights[cpu::INT4_Q8_GROUP_MAX];
    Tensor outs[cpu::INT4_Q8_GROUP_MAX];
    size_t count = 0;
    if (int4_matmul_ == CpuMatmul::int8 && targets.size() <= cpu::INT4_Q8_GROUP_MAX)
      for (const MatmulTarget& target : targets) {
        if (!target.weight.is_int4()) break;
        weights[count] = &target.weight.int4;
        outs[count++] = target.out;
      }
    if (count == targets.size() && cpu::int4_q8_share_input({weights, count}))
      return cpu::matmul_int4_q8_group(x, {weights, count}, {outs, count}, pool_,
                                       activation_scratch_, q8_scratch_);
    Backend::matmul_shared_input(x, targets);
  }
  void rope_store_kv(const Tensor& q, const Tensor& k, const Tensor& v,
                     const KvLayer& cache) override {
    const int64_t n = q.dim(0);
    if (k.dim(0) != n || v.dim(0) != n || static_cast<int64_t>(positions_.size()) != n)
      fail("rope_store_kv: ", n, " queries, ", k.dim(0), " keys, ", positions_.size(),
           " step positions");
    positions64_.assign(positions_.begin(), positions_.end());
    cpu::apply_rope(q, positions64_, *rope_, pool_);
    cpu::apply_rope(k, positions64_, *rope_, pool_);
    const PagedKvView view = paged_view(cache);
    const int64_t rows = cache.k.dim(0);
    const int64_t row_values = k.numel() / n;
    const bool half = kv_pool_is_f16(cache);
    for (int64_t t = 0; t < n; ++t) {
      const int64_t row = paged_kv_row(view, seq_[t], positions_[t]);
      if (row < 0 || row >= rows) fail("rope_store_kv: cache row ", row, " outside ", rows);
      const float* k_row = k.as<float>() + t * row_values;
      const float* v_row = v.as<float>() + t * row_values;
      if (half) {
        cpu::store_f16(k_row, cache.k.as<f16>() + row * row_values, row_values);
        cpu::store_f16(v_row, cache.v.as<f16>() + row * row_values, row_values);
      } else {
        std::copy_n(k_row, row_values, cache.k.as<float>() + row * row_values);
        std::copy_n(v_row, row_values, cache.v.as<float>() + row * row_values);
      }
    }
  }
  void attention(const Tensor& q, const KvLayer& cache, float scale, const Tensor& out) override {
    kv_len_.resize(positions_.size());
    for (size_t t = 0; t < positions_.size(); ++t) kv_len_[t] = positions_[t] + 1;
    const int n_heads = static_cast<int>(q.dim(1));
    if (kv_pool_is_f16(cache))
      return cpu::attention_paged<float, f16>(q.as<float>(), paged_view(cache), seq_, kv_len_,
                                              n_heads, scale, out.as<float>(), pool_);
    cpu::attention_paged(q.as<float>(), paged_view(cache), seq_, kv_len_, n_heads, scale,
                         out.as<float>(), pool_);
  }
  void swiglu(const Tensor& gate, const Tensor& up, const Tensor& out) override {
    cpu::swiglu(gate, up, out, pool_);
  }
  void argmax(const Tensor& logits, std::span<int32_t> ids) override {
    const int64_t rows = logits.dim(0), vocab = logits.dim(1);
    if (logits.dtype != DType::f32 || static_cast<int64_t>(ids.size()) != rows)
      fail("argmax: logits ", logits.shape.str(), " for ", ids.size(), " ids");
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = logits.as<float>() + r * vocab;
      ids[r] = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
    }
  }

 private:
  // Row `id` of an embedding table, widened to fp32 (a table tied to the lm_head is in panels).
  template <typename T>
  static void table_row(const T* table, bool panels, int64_t id, int64_t dim, float* dst) {
    const auto widen = [](T v) { return cpu::to_f32(v); };
    if (panels) return unpack_dense_panel_row(table, dim, id, dst, widen);
    const T* src = table + id * dim;
    for (int64_t i = 0; i < dim; ++i) dst[i] = widen(src[i]);
  }

  // Whether a cache layer's pools are f16 (else f32); anything else is an error.
  static bool kv_pool_is_f16(const KvLayer& cache) {
    const DType t = cache.k.dtype;
    if (cache.v.dtype != t || (t != DType::f16 && t != DType::f32))
      fail("CPU KV cache: K ", dtype_name(t), " and V ", dtype_name(cache.v.dtype),
           " (f32 or f16, both the same)");
    return t == DType::f16;
  }

  PagedKvView paged_view(const KvLayer& cache) const {
    PagedKvView view;
    view.k = cache.k.data;
    view.v = cache.v.data;
    view.block_tables = block_tables_.data();
    view.max_blocks_per_seq = max_blocks_per_seq_;
    view.block_size = block_size_;
    view.n_kv_heads = static_cast<int32_t>(cache.k.dim(1));
    view.head_dim = static_cast<int32_t>(cache.k.dim(2));
    return view;
  }

  ThreadPool pool_;
  CpuMatmul int4_matmul_;
  DType kv_dtype_;  // f32 or f16 (CpuKvCache)
  // Activations rearranged for the kernel at hand: an INT4 weight's packed input order, the
  // AVX-512 dense prompt kernel's token groups.
  std::vector<float> activation_scratch_;
  cpu::Q8Activations q8_scratch_;  // the same rounded to int8 (CpuMatmul::int8)
  cpu::Q8Blocks q8_blocks_;        // activations rounded to int8 for 32-weight GGUF blocks
  cpu::Q8KBlocks q8k_blocks_;      // and for Q4_K / Q6_K (per 256 inputs)
  // The step inputs (begin_step).
  std::vector<int32_t> ids_, seq_, positions_, block_tables_, kv_len_;
  std::vector<int64_t> positions64_;
  int32_t max_blocks_per_seq_ = 0, block_size_ = 0;
  const RopeTable* rope_ = nullptr;
};

}  // namespace hllm
