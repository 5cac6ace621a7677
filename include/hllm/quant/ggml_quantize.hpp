// Quantizing fp32 rows into ggml blocks (layout/ggml_blocks.hpp has the formats): Q8_0, Q4_0,
// Q5_0, Q4_K and Q6_K, the types llama.cpp's common presets are made of. Written from the format
// definitions; a straightforward round-to-nearest quantizer, no search for better scales.
//
//   Q8_0  per 32: d = max|x| / 127, q = round(x / d) in −127..127
//   Q4_0  per 32: d = m / −8 where m is the element of largest magnitude (sign kept, as ggml's
//         reference does), q = round(x / d) + 8 clamped to 0..15: m itself is code 0 exactly,
//         values of the other sign reach +8 and clamp to +7
//   Q5_0  per 32: as Q4_0 with d = m / −16 and q in 0..31 (the fifth bits apart, in qh)
//   Q4_K  per 32 (sub-block j of a 256 super-block): the offset max(0, −min x) is stored as
//         M_j = dmin·mq_j (6-bit mq_j, fp16 super-block dmin), then max(x) + M_j is split into 15
//         steps d·sc_j (6-bit sc_j, fp16 d): weight = d·sc_j·q − dmin·mq_j, q in 0..15
//   Q6_K  per 16 (sub-block j of 256): step max|x| / 31 as an int8 multiple of the fp16 d,
//         weight = d·sc_j·(q − 32), q − 32 in −31..31
//
// Every scale is stored rounded away from zero (the fp16 value, and the 6/8-bit sub-block factor,
// are at least what was asked for), so the grid always covers the block: the round-trip error of
// an element is at most half the step its block dequantizes with (Q4_0, Q5_0: a whole step for
// the clamped positive end), up to fp32 rounding, and values on the grid come back exactly. Codes are computed
// against the stored scales, as the dequantizer will use them. Scales beyond fp16 saturate at
// 65504: blocks of |x| above 65504 × the largest code (Q4_0: ~5·10⁵, Q8_0: ~8·10⁶) come back
// clipped. Non-finite inputs are not supported.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "hllm/core/dtype.hpp"
#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/layout/ggml_blocks.hpp"

namespace hllm {

// The types ggml_quantize_row writes.
inline bool ggml_can_quantize(GgmlType t) {
  return t == GgmlType::Q8_0 || t == GgmlType::Q4_0 || t == GgmlType::Q5_0 || t == GgmlType::Q4_K ||
         t == GgmlType::Q6_K;
}

namespace ggml_quant_detail {

// The fp16 nearest to v that is at least |v| in magnitude (saturating at ±65504).
inline f16 f16_covering(float v) {
  f16 h = f32_to_f16(v);
  if (std::fabs(f16_to_f32(h)) < std::fabs(v)) ++h.bits;  // one fp16 step away from zero
  if ((h.bits & 0x7c00u) == 0x7c00u) h.bits = static_cast<uint16_t>((h.bits & 0x8000u) | 0x7bffu);
  return h;
}

inline void store_f16(uint8_t* p, f16 h) { std::memcpy(p, &h.bits, 2); }

// Round to nearest (ties to even) of a v with |v| < 2²²: adding 1.5·2²³ leaves the integer in the
// low mantissa bits.
inline int round_small(float v) {
  const float shifted = v + 12582912.0f;
  int32_t bits;
  std::memcpy(&bits, &shifted, 4);
  return bits - 0x4b400000;
}

// codes[i] = round((x[i] + shift) / step) + offset, within lo..hi; step 0 gives `offset`.
inline void codes(const float* x, int n, float shift, float step, int offset, int lo, int hi,
                  int* out) {
  if (step == 0.0f) return std::fill(out, out + n, offset);
  const float low = static_cast<float>(lo - offset), high = static_cast<float>(hi - offset);
  for (int i = 0; i < n; ++i)
    out[i] = round_small(std::clamp((x[i] + shift) / step, low, high)) + offset;
}

inline float abs_max(const float* x, int n) {
  float m = 0.0f;
  for (int i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

// The smallest factor in 0..max_factor with factor·unit ≥ want (unit 0: 0).
inline int covering_factor(float want, float unit, int max_factor) {
  if (unit == 0.0f) return 0;
  return static_cast<int>(std::min(static_cast<float>(max_factor), std::ceil(want / unit)));
}

// Q8_0: d:f16, qs:i8[32].
inline void block_q8_0(const float* x, uint8_t* b) {
  const f16 d = f16_covering(abs_max(x, 32) / 127.0f);
  store_f16(b, d);
  int q[32];
  codes(x, 32, 0.0f, f16_to_f32(d), 0, -127, 127, q);
  for (int i = 0; i < 32; ++i) b[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(q[i]));
}

// Q4_0 / Q5_0's scale and codes: d = m / −half (m the element of largest magnitude, sign kept),
// stored at b; q = round(x / d) + half within 0 .. 2·half − 1.
inline void offset_codes(const float* x, int half, uint8_t* b, int q[32]) {
  float extreme = 0.0f;
  for (int i = 0; i < 32; ++i)
    if (std::fabs(x[i]) > std::fabs(extreme)) extreme = x[i];
  const f16 d = f16_covering(extreme == 0.0f ? 0.0f : extreme / static_cast<float>(-half));
  store_f16(b, d);  // +0 for a zero block
  codes(x, 32, 0.0f, f16_to_f32(d), half, 0, 2 * half - 1, q);
}

// Q4_0: d:f16, qs[16] with element i in the low nibble of byte i and element i + 16 in the high.
inline void block_q4_0(const float* x, uint8_t* b) {
  int q[32];
  offset_codes(x, 8, b, q);
  for (int i = 0; i < 16; ++i) b[2 + i] = static_cast<uint8_t>(q[i] | q[i + 16] << 4);
}

// Q5_0: d:f16, qh:u32 (bit i = the fifth bit of element i's code), qs[16] (element i < 16 in the
// low nibble of byte i, element i + 16 in its high nibble).
inline void block_q5_0(const float* x, uint8_t* b) {
  int q[32];
  offset_codes(x, 16, b, q);
  uint32_t qh = 0;
  for (int i = 0; i < 32; ++i) qh |= static_cast<uint32_t>(q[i] >> 4) << i;
  std::memcpy(b + 2, &qh, 4);  // little-endian, as GGUF stores it (x86, arm64)
  for (int i = 0; i < 16; ++i)
    b[6 + i] = static_cast<uint8_t>((q[i] & 0x0F) | (q[i + 16] & 0x0F) << 4);
}

// Q4_K's 12 scale bytes from 8 six-bit scales and mins (the inverse of ggml_detail::k_scale_min):
// sub-blocks 0-3 in the low 6 bits of bytes j (scale) and j + 4 (min); 4-7 as low nibbles in byte
// j + 4 and top 2 bits in the spare top bits of bytes j − 4 (scale) and j (min).
inline void pack_k_scales(const int* sc, const int* mq, uint8_t* scales) {
  for (int j = 0; j < 4; ++j) {
    scales[j] = static_cast<uint8_t>(sc[j] | (sc[j + 4] >> 4) << 6);
    scales[j + 4] = static_cast<uint8_t>(mq[j] | (mq[j + 4] >> 4) << 6);
    scales[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0x0F) | (mq[j + 4] & 0x0F) << 4);
  }
}

// Q4_K: d, dmin:f16, scales[12], qs[128]; qs[32g + l] holds element 64g + l (low nibble) and
// 64g + 32 + l (high nibble). The offsets are fixed first (rounded up, so −M_j ≤ min x), then each
// sub-block's step covers max(x) + M_j in 15 steps.
inline void block_q4_k(const float* x, uint8_t* b) {
  float offset[8], range[8];
  float max_offset = 0.0f;
  for (int j = 0; j < 8; ++j) {
    offset[j] = std::max(0.0f, -*std::min_element(x + 32 * j, x + 32 * j + 32));
    max_offset = std::max(max_offset, offset[j]);
  }
  const f16 dmin = f16_covering(max_offset / 63.0f);
  const float dmin_f = f16_to_f32(dmin);
  int mq[8], sc[8];
  float max_step = 0.0f;
  for (int j = 0; j < 8; ++j) {
    mq[j] = covering_factor(offset[j], dmin_f, 63);
    offset[j] = dmin_f * static_cast<float>(mq[j]);  // as the dequantizer computes it
    range[j] = 0.0f;
    for (int i = 32 * j; i < 32 * j + 32; ++i) range[j] = std::max(range[j], x[i] + offset[j]);
    max_step = std::max(max_step, range[j] / 15.0f);
  }
  const f16 d = f16_covering(max_step / 63.0f);
  const float d_f = f16_to_f32(d);
  store_f16(b, d);
  store_f16(b + 2, dmin);
  int q[256];
  for (int j = 0; j < 8; ++j) {
    sc[j] = covering_factor(range[j] / 15.0f, d_f, 63);
    codes(x + 32 * j, 32, offset[j], d_f * static_cast<float>(sc[j]), 0, 0, 15, q + 32 * j);
  }
  pack_k_scales(sc, mq, b + 4);
  for (int g = 0; g < 4; ++g)
    for (int l = 0; l < 32; ++l)
      b[16 + 32 * g + l] = static_cast<uint8_t>(q[64 * g + l] | q[64 * g + 32 + l] << 4);
}

// Q6_K: ql[128], qh[64], scales:i8[16], d:f16. Element e = 128h + 32·quarter + l: low 4 bits in
// ql[64h + 32·(quarter % 2) + l] (low nibble for quarters 0-1, high for 2-3), top 2 bits at bit
// 2·quarter of qh[32h + l].
inline void block_q6_k(const float* x, uint8_t* b) {
  float step[16];
  float max_step = 0.0f;
  for (int j = 0; j < 16; ++j) {
    step[j] = abs_max(x + 16 * j, 16) / 31.0f;
    max_step = std::max(max_step, step[j]);
  }
  const f16 d = f16_covering(max_step / 127.0f);
  const float d_f = f16_to_f32(d);
  int q[256];
  for (int j = 0; j < 16; ++j) {
    const int sc = covering_factor(step[j], d_f, 127);
    b[192 + j] = static_cast<uint8_t>(static_cast<int8_t>(sc));
    codes(x + 16 * j, 16, 0.0f, d_f * static_cast<float>(sc), 32, 1, 63, q + 16 * j);
  }
  store_f16(b + 208, d);
  std::memset(b, 0, 192);
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, quarter = (e % 128) / 32, l = e % 32;
    b[64 * h + 32 * (quarter % 2) + l] |= static_cast<uint8_t>((q[e] & 0x0F) << 4 * (quarter / 2));
    b[128 + 32 * h + l] |= static_cast<uint8_t>((q[e] >> 4) << 2 * quarter);
  }
}

}  // namespace ggml_quant_detail

// One block: block_elems floats at x -> block_bytes bytes at out.
inline void ggml_quantize_block(GgmlType type, const float* x, uint8_t* out) {
  using namespace ggml_quant_detail;
  switch (type) {
    case GgmlType::Q8_0:
      return block_q8_0(x, out);
    case GgmlType::Q4_0:
      return block_q4_0(x, out);
    case GgmlType::Q5_0:
      return block_q5_0(x, out);
    case GgmlType::Q4_K:
      return block_q4_k(x, out);
    case GgmlType::Q6_K:
      return block_q6_k(x, out);
    default:
      fail("ggml quantize: ", ggml_type_info(type).name, " is not supported");
  }
}

// n floats at x (n a multiple of the block size) -> n / block_elems blocks at out
// (GgmlView{type, .., in = n}.row_bytes() bytes).
inline void ggml_quantize_row(GgmlType type, const float* x, int64_t n, uint8_t* out) {
  const GgmlTypeInfo info = ggml_type_info(type);
  if (!ggml_can_quantize(type))
    fail("ggml quantize: ", info.name.empty() ? "this type" : info.name, " is not supported");
  if (n % info.block_elems != 0)
    fail("ggml quantize: a row of ", n, " is not a multiple of ", info.name, "'s ",
         info.block_elems);
  for (int64_t b = 0; b < n / info.block_elems; ++b)
    ggml_quantize_block(type, x + b * info.block_elems, out + b * info.block_bytes);
}

// A matrix quantized to ggml blocks in memory of its own (the view points into `memory`).
struct GgmlMatrix {
  std::shared_ptr<uint8_t[]> memory;
  GgmlView view;
};

// A dense [out, in] bf16 / f16 / f32 weight -> ggml blocks, row by row over `pool` (no fp32
// copy of the matrix: one row at a time per thread).
inline GgmlMatrix quantize_ggml_rows(const Tensor& w, GgmlType type, ThreadPool& pool) {
  if (w.rank() != 2 || (w.dtype != DType::bf16 && w.dtype != DType::f16 && w.dtype != DType::f32))
    fail("ggml quantize: expected a bf16, f16 or f32 [out, in] weight, got ", dtype_name(w.dtype),
         " ", w.shape.str());
  GgmlMatrix m;
  m.view.type = type;
  m.view.out = w.dim(0);
  m.view.in = w.dim(1);
  const int64_t row_bytes = m.view.row_bytes();
  m.memory = std::make_shared<uint8_t[]>(static_cast<size_t>(m.view.out * row_bytes));
  m.view.data = m.memory.get();
  pool.parallel_for(m.view.out, [&](int64_t r) {
    std::vector<float> row(static_cast<size_t>(m.view.in));
    for (int64_t k = 0; k < m.view.in; ++k) row[k] = w.f32_at(r * m.view.in + k);
    ggml_quantize_row(type, row.data(), m.view.in, m.memory.get() + r * row_bytes);
  });
  return m;
}

}  // namespace hllm
