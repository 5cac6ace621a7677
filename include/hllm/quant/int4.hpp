// hllm's INT4 weight layout: what every GPTQ checkpoint is repacked into at load, and what the CPU
// int4 matmul (cpu/int4_matmul.hpp) and the CUDA gemv_q4 kernels read. The dequantization formula
// lives here, once (int4_dequant), for the CPU path, the repacker and the CUDA kernels.
//
// A linear layer y[n, out] = x[n, in] · Wᵀ with W[out, in] (nn.Linear orientation) is cut into
// tiles of 4 output rows × 128 inputs. One tile (struct int4_tile, 272 bytes = 17 × 16 B):
//
//   byte 0        8        16                 80                 144                208       272
//        [scale×4][zero×4 ][ row 0: 64 B codes ][ row 1: 64 B codes ][ row 2 ...      ][ row 3 ...
//        ]
//         f16      f16       4 chunks of 16 B, one chunk = 32 inputs
//
//   one 16-byte chunk (32 inputs k = 0..31 of one row), ggml q4_0 nibble order:
//     byte b (0..15):  bits 0..3 = code of input b,   bits 4..7 = code of input b + 16
//
//   W[o, i] = int4_dequant(code, scale[r], zero[r]) = scale[r] * (code - zero[r])
//
// - Every row's quantization parameters sit in the 16 bytes in front of its codes ("scales next
//   to the weights they scale"): a GPU half-warp streams one tile as 17 aligned 16-byte loads.
// - zero is stored as the true zero point (GPTQ v2 semantics, 0..16; sym = 8), as fp16 (exact).
// - scale is fp16 (GPTQ stores fp16) and (code - zero) a small integer, so scale * (code - zero)
//   is exact in fp32 however it is evaluated (fma(code, s, -z*s) included): all paths agree
//   bitwise.
//
// Matrix = row strips of 4 outputs, each strip the k_tiles tiles along the input, contiguous:
//
//   tiles[strip][k_tile]      strip = o / 4,  k_tile = p / 128
//   strip 0: [tile k0][tile k1] ... [tile k_tiles-1]
//   strip 1: [tile k0][tile k1] ...
//
// The input axis is in *packed order* p = 0 .. 128 * k_tiles - 1, where every tile belongs to one
// quantization group. input_index[p] names the original input feature at packed position p, or -1
// for padding (code 0, and the activation there is 0). GPTQ act-order checkpoints (g_idx not i / G)
// are repacked with their inputs sorted by group, so the matmul gathers x once per call into packed
// order (exllama's approach) and the hot loop never looks up a group per element. input_index is
// empty when packed order is the identity (in % 128 == 0 and g_idx = i / G with G % 128 == 0): then
// x is read as is. Rows past `out` in the last strip are padding (scale 0, zero 0, codes 0).
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

namespace hllm {

inline constexpr int INT4_TILE_ROWS = 4;  // output rows per tile: 4 × 4 B params = one 16 B header
inline constexpr int INT4_TILE_K = 128;   // inputs per tile: the usual GPTQ group size
inline constexpr int INT4_CHUNK_K = 32;   // inputs per 16-byte chunk of codes
inline constexpr int INT4_ROW_BYTES = INT4_TILE_K / 2;

struct int4_tile {
  f16 scale[INT4_TILE_ROWS];                  // per row
  f16 zero[INT4_TILE_ROWS];                   // per row, integer-valued
  uint8_t q[INT4_TILE_ROWS][INT4_ROW_BYTES];  // codes, see the chunk diagram above
};
static_assert(sizeof(int4_tile) == 272 && sizeof(int4_tile) % 16 == 0,
              "a tile is 17 16-byte loads; tiles stay 16-byte aligned back to back");

// The dequantization formula (one source of truth): weight = scale * (code - zero).
HLLM_HOST_DEVICE float int4_dequant(uint32_t code, float scale, float zero) {
  return scale * (static_cast<float>(code) - zero);
}

// Where input k (0..127) of a tile row lives: byte and bit shift inside int4_tile::q[row].
HLLM_HOST_DEVICE int int4_code_byte(int k) { return (k / INT4_CHUNK_K) * 16 + k % 16; }
HLLM_HOST_DEVICE int int4_code_shift(int k) { return (k % INT4_CHUNK_K) < 16 ? 0 : 4; }

HLLM_HOST_DEVICE uint32_t int4_code(const int4_tile& tile, int row, int k) {
  return (tile.q[row][int4_code_byte(k)] >> int4_code_shift(k)) & 0xFu;
}

HLLM_HOST_DEVICE float int4_weight(const int4_tile& tile, int row, int k) {
  return int4_dequant(int4_code(tile, row, k), f16_to_f32(tile.scale[row]),
                      f16_to_f32(tile.zero[row]));
}

// A matrix in the tile layout, wherever it lives (host memory or a device buffer): a view.
struct Int4View {
  const int4_tile* tiles = nullptr;      // [strips][k_tiles]
  const int32_t* input_index = nullptr;  // [k_tiles * 128] original input per packed position, -1
                                         // = padding; nullptr = identity
  int64_t in = 0;                        // logical input features
  int64_t out = 0;                       // logical output features
  int64_t k_tiles = 0;                   // tiles along the input
  Device device = Device::cpu;

  int64_t strips() const { return (out + INT4_TILE_ROWS - 1) / INT4_TILE_ROWS; }
  int64_t packed_in() const { return k_tiles * INT4_TILE_K; }
  int64_t n_tiles() const { return strips() * k_tiles; }
  size_t nbytes() const { return static_cast<size_t>(n_tiles()) * sizeof(int4_tile); }
  const int4_tile& tile(int64_t strip, int64_t k_tile) const {
    return tiles[strip * k_tiles + k_tile];
  }
};

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
