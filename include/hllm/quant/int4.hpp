// Building matrices in hllm's INT4 tile layout (layout/int4_tiles.hpp): the host-owned matrix,
// the packed input order of grouped (act-order) inputs, and dequantization back to fp32.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <vector>

#include "hllm/core/dtype.hpp"
#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/layout/int4_tiles.hpp"

namespace hllm {

// Host memory holding one repacked matrix; the view stays valid while this object lives (moving
// it keeps the pointers: the memory is on the heap).
class Int4Matrix {
 public:
  Int4Matrix() = default;

  // Zeroed tiles for an [out, in] matrix with k_tiles tiles per strip; input_index empty =
  // identity (then k_tiles must be in / 128).
  Int4Matrix(int64_t in, int64_t out, int64_t k_tiles, std::vector<int32_t> input_index)
      : input_index_(std::move(input_index)) {
    if (in <= 0 || out <= 0 || k_tiles * INT4_TILE_K < in)
      fail("int4 matrix: bad shape [", out, ", ", in, "] with ", k_tiles, " tiles of 128 inputs");
    if (input_index_.empty() && k_tiles * INT4_TILE_K != in)
      fail("int4 matrix: identity packing needs in % 128 == 0 (in = ", in, ")");
    if (!input_index_.empty() && static_cast<int64_t>(input_index_.size()) != k_tiles * INT4_TILE_K)
      fail("int4 matrix: input_index has ", input_index_.size(), " entries, need ",
           k_tiles * INT4_TILE_K);
    view_.in = in;
    view_.out = out;
    view_.k_tiles = k_tiles;
    constexpr size_t ALIGNMENT = 64;
    const size_t bytes = std::max<size_t>(view_.nbytes(), 1);
    void* memory = ::operator new (bytes, std::align_val_t{ALIGNMENT});
    std::memset(memory, 0, bytes);
    memory_.reset(memory, [](void* p) { ::operator delete (p, std::align_val_t{ALIGNMENT}); });
    view_.tiles = static_cast<const int4_tile*>(memory);
    view_.input_index = input_index_.empty() ? nullptr : input_index_.data();
  }

  Int4Matrix(Int4Matrix&&) = default;
  Int4Matrix& operator=(Int4Matrix&&) = default;
  Int4Matrix(const Int4Matrix&) = delete;
  Int4Matrix& operator=(const Int4Matrix&) = delete;

  const Int4View& view() const { return view_; }
  int4_tile* tiles() { return static_cast<int4_tile*>(memory_.get()); }
  int4_tile& tile(int64_t strip, int64_t k_tile) { return tiles()[strip * view_.k_tiles + k_tile]; }

 private:
  Int4View view_;
  std::shared_ptr<void> memory_;
  std::vector<int32_t> input_index_;
};

// Packed input order for a grouping of the inputs: inputs sorted by group (stable), every group
// padded to a whole number of tiles. Returns input_index (empty when the order is the identity)
// and the tile count. group_of[i] must be in [0, n_groups) (checked by the caller).
struct Int4Packing {
  std::vector<int32_t> input_index;  // empty = identity
  int64_t k_tiles = 0;
};

inline Int4Packing int4_packing(std::span<const int32_t> group_of, int64_t n_groups) {
  std::vector<int64_t> count(static_cast<size_t>(n_groups), 0);
  for (int32_t g : group_of) ++count[g];
  std::vector<int64_t> start(static_cast<size_t>(n_groups) + 1, 0);  // packed start of each group
  for (int64_t g = 0; g < n_groups; ++g)
    start[g + 1] = start[g] + (count[g] + INT4_TILE_K - 1) / INT4_TILE_K * INT4_TILE_K;
  Int4Packing packing;
  packing.k_tiles = start[n_groups] / INT4_TILE_K;
  packing.input_index.assign(static_cast<size_t>(start[n_groups]), -1);
  std::vector<int64_t> next(start.begin(), start.end() - 1);
  bool identity = start[n_groups] == static_cast<int64_t>(group_of.size());
  for (size_t i = 0; i < group_of.size(); ++i) {
    const int64_t p = next[group_of[i]]++;
    packing.input_index[p] = static_cast<int32_t>(i);
    identity = identity && p == static_cast<int64_t>(i);
  }
  if (identity) packing.input_index.clear();
  return packing;
}

// Builds the tile layout from any logical description of a quantized [out, in] matrix:
//   group_of[i]        quantization group of input i, in [0, n_groups)
//   code(i, o)         4-bit code of W[o, i]
//   scale(g, o)        fp16 scale of group g, row o
//   zero(g, o)         true zero point (0..16) of group g, row o
// Used by the GPTQ repacker and the quantizer; the one place that writes tiles.
template <typename Code, typename Scale, typename Zero>
Int4Matrix build_int4_matrix(int64_t in, int64_t out, std::span<const int32_t> group_of,
                             int64_t n_groups, Code&& code, Scale&& scale, Zero&& zero) {
  if (static_cast<int64_t>(group_of.size()) != in)
    fail("int4 matrix: ", group_of.size(), " group indices for ", in, " inputs");
  Int4Packing packing = int4_packing(group_of, n_groups);
  const int64_t k_tiles = packing.k_tiles;
  Int4Matrix m(in, out, k_tiles, std::move(packing.input_index));
  const int32_t* index = m.view().input_index;
  const auto input_at = [&](int64_t p) -> int64_t { return index ? index[p] : p; };
  for (int64_t s = 0; s < m.view().strips(); ++s) {
    for (int64_t kt = 0; kt < k_tiles; ++kt) {
      int4_tile& t = m.tile(s, kt);
      const int64_t first = input_at(kt * INT4_TILE_K);  // every tile starts with a real input
      const int64_t g = group_of[first];
      for (int r = 0; r < INT4_TILE_ROWS; ++r) {
        const int64_t o = s * INT4_TILE_ROWS + r;
        if (o >= out) break;
        t.scale[r] = scale(g, o);
        t.zero[r] = f32_to_f16(static_cast<float>(zero(g, o)));
        for (int k = 0; k < INT4_TILE_K; ++k) {
          const int64_t i = input_at(kt * INT4_TILE_K + k);
          if (i < 0) continue;
          const uint32_t c = static_cast<uint32_t>(code(i, o)) & 0xFu;
          t.q[r][int4_code_byte(k)] |= static_cast<uint8_t>(c << int4_code_shift(k));
        }
      }
    }
  }
  return m;
}

// The dense fp32 matrix W[out, in] a view represents (tests, the quantizer's error checks).
inline std::vector<float> dequantize_int4(const Int4View& w) {
  if (w.device != Device::cpu) fail("dequantize_int4: the matrix is not in host memory");
  std::vector<float> dense(static_cast<size_t>(w.out * w.in), 0.0f);
  for (int64_t s = 0; s < w.strips(); ++s)
    for (int64_t kt = 0; kt < w.k_tiles; ++kt)
      for (int r = 0; r < INT4_TILE_ROWS; ++r) {
        const int64_t o = s * INT4_TILE_ROWS + r;
        if (o >= w.out) break;
        for (int k = 0; k < INT4_TILE_K; ++k) {
          const int64_t p = kt * INT4_TILE_K + k;
          const int64_t i = w.input_index ? w.input_index[p] : p;
          if (i >= 0) dense[o * w.in + i] = int4_weight(w.tile(s, kt), r, k);
        }
      }
  return dense;
}

}  // namespace hllm
