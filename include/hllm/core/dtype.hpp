// Element types of tensors as stored in checkpoints, and the bf16 / fp16 <-> fp32 conversions.
//
// The conversions are `__host__ __device__` (HLLM_HOST_DEVICE) so the CPU reference, the weight
// loader and the CUDA kernels share one definition of each format.
//
//   bf16:  s eeeeeeee mmmmmmm            = the top 16 bits of an IEEE fp32
//   fp16:  s eeeee mmmmmmmmmm            IEEE binary16 (bias 15, subnormals, inf, nan)
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>

#include "hllm/core/error.hpp"

#if defined(__CUDACC__)
#define HLLM_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define HLLM_HOST_DEVICE inline
#endif

namespace hllm {

enum class DType : uint8_t { f32, f16, bf16, i32, i64 };

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32:
      return 4;
    case DType::f16:
      return 2;
    case DType::bf16:
      return 2;
    case DType::i32:
      return 4;
    case DType::i64:
      return 8;
  }
  return 0;
}

// Spelling used by safetensors headers ("F32", "BF16", ...).
constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32:
      return "F32";
    case DType::f16:
      return "F16";
    case DType::bf16:
      return "BF16";
    case DType::i32:
      return "I32";
    case DType::i64:
      return "I64";
  }
  return "?";
}

inline DType dtype_from_name(std::string_view name) {
  for (DType t : {DType::f32, DType::f16, DType::bf16, DType::i32, DType::i64}) {
    if (dtype_name(t) == name) return t;
  }
  fail("unsupported dtype \"", name, "\" (supported: F32, F16, BF16, I32, I64)");
}

// Raw 16-bit storage types: plain structs so host code never needs cuda_bf16.h.
struct bf16 {
  uint16_t bits;
};
struct f16 {
  uint16_t bits;
};
static_assert(sizeof(bf16) == 2 && sizeof(f16) == 2);

// visit(std::type_identity<T>{}) with T the storage type of a floating-point dtype (bf16, f16,
// float): the one switch for code that treats each weight dtype alike. Any other dtype fails,
// naming `what`.
template <typename Visit>
decltype(auto) visit_float_dtype(DType dtype, std::string_view what, Visit&& visit) {
  switch (dtype) {
    case DType::bf16:
      return visit(std::type_identity<bf16>{});
    case DType::f16:
      return visit(std::type_identity<f16>{});
    case DType::f32:
      return visit(std::type_identity<float>{});
    default:
      fail(what, " dtype ", dtype_name(dtype), " is not supported (BF16, F16, F32)");
  }
}

HLLM_HOST_DEVICE float bits_to_f32(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
#endif
}

HLLM_HOST_DEVICE uint32_t f32_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
#endif
}

HLLM_HOST_DEVICE float bf16_to_f32(bf16 x) { return bits_to_f32(uint32_t{x.bits} << 16); }

// Round to nearest even, NaN stays NaN (quiet), like torch's float -> bfloat16.
HLLM_HOST_DEVICE bf16 f32_to_bf16(float f) {
  const uint32_t bits = f32_to_bits(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<uint16_t>((bits >> 16) | 0x40u)};
  const uint32_t rounding_bias = 0x7fffu + ((bits >> 16) & 1u);
  return bf16{static_cast<uint16_t>((bits + rounding_bias) >> 16)};
}

HLLM_HOST_DEVICE float f16_to_f32(f16 x) {
  const uint32_t sign = uint32_t{x.bits & 0x8000u} << 16;
  const uint32_t exponent = (x.bits >> 10) & 0x1fu;
  const uint32_t mantissa = x.bits & 0x3ffu;
  if (exponent == 0x1f) return bits_to_f32(sign | 0x7f800000u | (mantissa << 13));  // inf / nan
  if (exponent != 0) return bits_to_f32(sign | ((exponent + 112) << 23) | (mantissa << 13));
  // Zero or subnormal: mantissa * 2^-24, exact in fp32.
  const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
  return sign ? -magnitude : magnitude;
}

// Round to nearest even with overflow to inf and gradual underflow, like torch's float -> half.
HLLM_HOST_DEVICE f16 f32_to_f16(float f) {
  const uint32_t bits = f32_to_bits(f);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs_bits = bits & 0x7fffffffu;
  if (abs_bits > 0x7f800000u) return f16{static_cast<uint16_t>(sign | 0x7e00u)};   // nan
  if (abs_bits >= 0x477ff000u) return f16{static_cast<uint16_t>(sign | 0x7c00u)};  // >= 65520: inf
  if (abs_bits < 0x38800000u) {
    // Below the smallest normal (2^-14): scale so the fp16 subnormal unit (2^-24) becomes 1.0 and
    // let the fp32 -> int rounding do round-to-nearest-even via the 1.5 * 2^23 magic number.
    const float magnitude = bits_to_f32(abs_bits) * 16777216.0f + 12582912.0f;
    return f16{static_cast<uint16_t>(sign | (f32_to_bits(magnitude) & 0x7ffu))};
  }
  const uint32_t rounding_bias = 0xfffu + ((abs_bits >> 13) & 1u);
  const uint32_t rebased = abs_bits - (112u << 23) + rounding_bias;
  return f16{static_cast<uint16_t>(sign | (rebased >> 13))};
}

}  // namespace hllm
