// ggml's quantized block formats, as GGUF files (llama.cpp, Ollama, LM Studio) store weights:
// the type ids a GGUF tensor names, the size of each block, and the dequantization of one block
// (the one definition the loader, the CPU matmul and the tests use). Written from the format
// definitions; every block is little-endian and byte-packed (no padding, so blocks may start at
// any address: read them with memcpy, never through a struct pointer).
//
// A row of `in` weights is in / block_elems blocks back to back; a matrix [out, in] (GGUF's
// ne = {in, out}) is its rows back to back.
//
//   type   elems bytes  layout                                      weight
//   Q4_0    32    18    d:f16, qs[16]                               d·(q − 8)
//   Q4_1    32    20    d:f16, m:f16, qs[16]                        d·q + m
//   Q5_0    32    22    d:f16, qh:u32, qs[16]                       d·(q − 16), q = nibble | bit<<4
//   Q5_1    32    24    d:f16, m:f16, qh:u32, qs[16]                d·q + m
//   Q8_0    32    34    d:f16, qs:i8[32]                            d·q
//   Q4_K   256   144    d, dmin:f16, scales[12], qs[128]            d·sc_j·q − dmin·m_j
//   Q5_K   256   176    d, dmin:f16, scales[12], qh[32], qs[128]    d·sc_j·q − dmin·m_j (5-bit q)
//   Q6_K   256   210    ql[128], qh[64], scales:i8[16], d:f16       d·sc_j·(q − 32)
//
// 32-element blocks: qs[i] holds element i (low nibble) and element i + 16 (high nibble); the
// 5th bit of element i is bit i of qh. K-quants ("super-blocks" of 256): 8 sub-blocks of 32
// (Q4_K/Q5_K, 6-bit scale and min each, packed into 12 bytes) or 16 of 16 (Q6_K, int8 scales);
// their code layouts are spelled out at each dequant function below.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "hllm/core/dtype.hpp"
#include "hllm/core/tensor.hpp"

namespace hllm {

// GGML type ids as written in GGUF tensor infos (ggml.h's enum ggml_type).
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  BF16 = 30,
};

struct GgmlTypeInfo {
  std::string_view name;  // "Q4_K"; empty for an id hllm does not know
  int64_t block_elems;    // weights per block (1 for F32/F16/BF16)
  int64_t block_bytes;    // bytes per block
  bool supported;         // hllm can compute with it (the rest are named in errors)
};

// Every id ggml has defined up to 39 has a name here, so an error can say "IQ2_XXS is not
// supported" instead of "type 16"; ids hllm computes with carry supported = true.
constexpr GgmlTypeInfo ggml_type_info(uint32_t id) {
  switch (id) {
    case 0:
      return {"F32", 1, 4, true};
    case 1:
      return {"F16", 1, 2, true};
    case 2:
      return {"Q4_0", 32, 18, true};
    case 3:
      return {"Q4_1", 32, 20, true};
    case 6:
      return {"Q5_0", 32, 22, true};
    case 7:
      return {"Q5_1", 32, 24, true};
    case 8:
      return {"Q8_0", 32, 34, true};
    case 9:
      return {"Q8_1", 32, 36, false};
    case 10:
      return {"Q2_K", 256, 84, false};
    case 11:
      return {"Q3_K", 256, 110, false};
    case 12:
      return {"Q4_K", 256, 144, true};
    case 13:
      return {"Q5_K", 256, 176, true};
    case 14:
      return {"Q6_K", 256, 210, true};
    case 15:
      return {"Q8_K", 256, 292, false};
    case 16:
      return {"IQ2_XXS", 256, 66, false};
    case 17:
      return {"IQ2_XS", 256, 74, false};
    case 18:
      return {"IQ3_XXS", 256, 98, false};
    case 19:
      return {"IQ1_S", 256, 50, false};
    case 20:
      return {"IQ4_NL", 32, 18, false};
    case 21:
      return {"IQ3_S", 256, 110, false};
    case 22:
      return {"IQ2_S", 256, 82, false};
    case 23:
      return {"IQ4_XS", 256, 136, false};
    case 24:
      return {"I8", 1, 1, false};
    case 25:
      return {"I16", 1, 2, false};
    case 26:
      return {"I32", 1, 4, false};
    case 27:
      return {"I64", 1, 8, false};
    case 28:
      return {"F64", 1, 8, false};
    case 29:
      return {"IQ1_M", 256, 56, false};
    case 30:
      return {"BF16", 1, 2, true};
    case 34:
      return {"TQ1_0", 256, 54, false};
    case 35:
      return {"TQ2_0", 256, 66, false};
    case 39:
      return {"MXFP4", 32, 17, false};
    default:
      return {"", 0, 0, false};
  }
}

constexpr GgmlTypeInfo ggml_type_info(GgmlType t) {
  return ggml_type_info(static_cast<uint32_t>(t));
}

// True for the block-quantized types (weights kept as blocks); F32/F16/BF16 load as plain tensors.
inline bool ggml_is_quantized(GgmlType t) { return ggml_type_info(t).block_elems > 1; }

namespace ggml_detail {

inline float load_f16(const uint8_t* p) {
  f16 h;
  std::memcpy(&h.bits, p, 2);
  return f16_to_f32(h);
}

inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Q4_K / Q5_K sub-block j (0..7): its 6-bit scale and min from the 12 packed bytes. Sub-blocks
// 0-3 keep them in the low 6 bits of bytes j (scale) and j + 4 (min); sub-blocks 4-7 take their
// low 4 bits from byte j + 4 (scale: low nibble, min: high nibble) and their top 2 bits from the
// spare top bits of bytes j − 4 (scale) and j (min).
inline void k_scale_min(const uint8_t* scales, int j, int& scale, int& min) {
  if (j < 4) {
    scale = scales[j] & 63;
    min = scales[j + 4] & 63;
  } else {
    scale = (scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4);
    min = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
  }
}

}  // namespace ggml_detail

// One block of `type` at `block` -> block_elems floats at `out`. Products are evaluated as
// written (scale·q, then − m): the same fp32 operations as gguf-py's reference dequantizer.
inline void ggml_dequant_block(GgmlType type, const uint8_t* block, float* out) {
  using namespace ggml_detail;
  switch (type) {
    case GgmlType::Q4_0: {
      const float d = load_f16(block);
      const uint8_t* qs = block + 2;
      for (int i = 0; i < 16; ++i) {
        out[i] = d * static_cast<float>((qs[i] & 0x0F) - 8);
        out[i + 16] = d * static_cast<float>((qs[i] >> 4) - 8);
      }
      return;
    }
    case GgmlType::Q4_1: {
      const float d = load_f16(block), m = load_f16(block + 2);
      const uint8_t* qs = block + 4;
      for (int i = 0; i < 16; ++i) {
        out[i] = d * static_cast<float>(qs[i] & 0x0F) + m;
        out[i + 16] = d * static_cast<float>(qs[i] >> 4) + m;
      }
      return;
    }
    case GgmlType::Q5_0:
    case GgmlType::Q5_1: {
      const bool has_min = type == GgmlType::Q5_1;
      const float d = load_f16(block), m = has_min ? load_f16(block + 2) : 0.0f;
      const uint32_t qh = load_u32(block + (has_min ? 4 : 2));
      const uint8_t* qs = block + (has_min ? 8 : 6);
      const int offset = has_min ? 0 : 16;
      for (int i = 0; i < 16; ++i) {
        const int lo = (qs[i] & 0x0F) | static_cast<int>(((qh >> i) & 1u) << 4);
        const int hi = (qs[i] >> 4) | static_cast<int>(((qh >> (i + 16)) & 1u) << 4);
        out[i] = d * static_cast<float>(lo - offset);
        out[i + 16] = d * static_cast<float>(hi - offset);
        if (has_min) out[i] += m, out[i + 16] += m;
      }
      return;
    }
    case GgmlType::Q8_0: {
      const float d = load_f16(block);
      for (int i = 0; i < 32; ++i)
        out[i] = d * static_cast<float>(static_cast<int8_t>(block[2 + i]));
      return;
    }
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: {
      // 4 groups of 64 elements g = 0..3: qs[32g + l] holds element 64g + l (low nibble,
      // sub-block 2g) and 64g + 32 + l (high nibble, sub-block 2g + 1); Q5_K's 5th bits are bits
      // 2g and 2g + 1 of qh[l].
      const bool five = type == GgmlType::Q5_K;
      const float d = load_f16(block), dmin = load_f16(block + 2);
      const uint8_t* scales = block + 4;
      const uint8_t* qh = block + 16;
      const uint8_t* qs = block + (five ? 48 : 16);
      for (int g = 0; g < 4; ++g) {
        int sc0, m0, sc1, m1;
        k_scale_min(scales, 2 * g, sc0, m0);
        k_scale_min(scales, 2 * g + 1, sc1, m1);
        const float d0 = d * static_cast<float>(sc0), min0 = dmin * static_cast<float>(m0);
        const float d1 = d * static_cast<float>(sc1), min1 = dmin * static_cast<float>(m1);
        for (int l = 0; l < 32; ++l) {
          int lo = qs[32 * g + l] & 0x0F, hi = qs[32 * g + l] >> 4;
          if (five) {
            lo |= ((qh[l] >> (2 * g)) & 1) << 4;
            hi |= ((qh[l] >> (2 * g + 1)) & 1) << 4;
          }
          out[64 * g + l] = d0 * static_cast<float>(lo) - min0;
          out[64 * g + 32 + l] = d1 * static_cast<float>(hi) - min1;
        }
      }
      return;
    }
    case GgmlType::Q6_K: {
      // 2 halves of 128 elements h: ql[64h + l] (l < 64) holds the low 4 bits of elements
      // 128h + l (low nibble) and 128h + 64 + l (high nibble); qh[32h + l] (l < 32) holds the top
      // 2 bits of elements 128h + l, +32, +64, +96 (bit pairs 0-1, 2-3, 4-5, 6-7). Element e has
      // scale scales[e / 16].
      const uint8_t* ql = block;
      const uint8_t* qh = block + 128;
      const auto* scales = reinterpret_cast<const int8_t*>(block + 192);
      const float d = load_f16(block + 208);
      for (int e = 0; e < 256; ++e) {
        const int h = e / 128, r = e % 128;  // half, and place in it
        const int quarter = r / 32, l = r % 32;
        const uint8_t low_byte = ql[64 * h + (quarter % 2) * 32 + l];
        const int low = quarter < 2 ? (low_byte & 0x0F) : (low_byte >> 4);
        const int high = (qh[32 * h + l] >> (2 * quarter)) & 3;
        const float scale = d * static_cast<float>(scales[e / 16]);
        out[e] = scale * static_cast<float>((low | (high << 4)) - 32);
      }
      return;
    }
    case GgmlType::F32:
      std::memcpy(out, block, 4);
      return;
    case GgmlType::F16:
      out[0] = load_f16(block);
      return;
    case GgmlType::BF16: {
      bf16 b;
      std::memcpy(&b.bits, block, 2);
      out[0] = bf16_to_f32(b);
      return;
    }
    default:
      return;  // unsupported types never reach a tensor (the loader refuses them by name)
  }
}

// A matrix [out, in] of ggml blocks, wherever it lives: a view (the GGUF mapping, or memory a
// Linear owns).
struct GgmlView {
  GgmlType type = GgmlType::Q4_0;
  const uint8_t* data = nullptr;  // out rows of row_bytes() each
  int64_t out = 0;
  int64_t in = 0;  // a multiple of the type's block_elems
  Device device = Device::cpu;

  int64_t row_bytes() const {
    const GgmlTypeInfo info = ggml_type_info(type);
    return in / info.block_elems * info.block_bytes;
  }
  size_t nbytes() const { return static_cast<size_t>(out * row_bytes()); }
  const uint8_t* row(int64_t r) const { return data + r * row_bytes(); }
};

// A whole row: in / block_elems blocks at `row` -> `in` floats.
inline void ggml_dequant_row(GgmlType type, const uint8_t* row, int64_t in, float* out) {
  const GgmlTypeInfo info = ggml_type_info(type);
  for (int64_t b = 0; b < in / info.block_elems; ++b)
    ggml_dequant_block(type, row + b * info.block_bytes, out + b * info.block_elems);
}

}  // namespace hllm
