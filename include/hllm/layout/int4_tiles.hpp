// hllm's INT4 weight layout: what every GPTQ checkpoint is repacked into at load, and what the CPU
// int4 matmul (cpu/int4_matmul.hpp) and the CUDA gemv_q4 kernels read. The dequantization formula
// lives here, once (int4_dequant), for the CPU path, the repacker and the CUDA kernels.
//
// A linear layer y[n, out] = x[n, in] · Wᵀ with W[out, in] (nn.Linear orientation) is cut into
// tiles of 4 output rows × 128 inputs. One tile (struct int4_tile, 272 bytes = 17 × 16 B):
//
//   byte 0        8        16                   80                   144          208          272
//        [scale×4][zero×4 ][ row 0: 64 B codes ][ row 1: 64 B codes ][ row 2 ... ][ row 3 ... ]
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

#include <cstddef>
#include <cstdint>

#include "hllm/core/dtype.hpp"
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

}  // namespace hllm
