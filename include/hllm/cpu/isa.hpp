// Which x86 vector instructions the CPU kernels may use, chosen at run time (one binary runs on any
// x86-64): the best level the CPU supports, lowered by the environment variable HLLM_CPU_ISA
// (scalar | avx2 | avx512) so that every path can be run and tested on one machine. A level above
// what the CPU supports is refused by name, never executed.
//
//   scalar       portable C++ (also every non-x86 build)
//   avx2         AVX2 + FMA + F16C (x86-64 from 2013 on)
//   avx512       AVX2 level plus AVX-512 F/BW and VNNI (vpdpbusd: int8 dot products)
#pragma once

#include <cstdlib>
#include <string_view>

#include "hllm/core/error.hpp"

namespace hllm::cpu {

enum class CpuIsa { scalar = 0, avx2 = 1, avx512 = 2 };

inline const char* isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::avx2:
      return "avx2";
    case CpuIsa::avx512:
      return "avx512";
    default:
      return "scalar";
  }
}

// The best level this CPU supports, ignoring HLLM_CPU_ISA.
inline CpuIsa cpu_isa_supported() {
#if defined(__x86_64__)
  static const CpuIsa supported = [] {
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") ||
        !__builtin_cpu_supports("f16c"))
      return CpuIsa::scalar;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vnni"))
      return CpuIsa::avx512;
    return CpuIsa::avx2;
  }();
  return supported;
#else
  return CpuIsa::scalar;
#endif
}

// HLLM_CPU_ISA's value as a level (unset or empty: the supported level).
inline CpuIsa parse_cpu_isa(std::string_view name) {
  if (name.empty()) return cpu_isa_supported();
  for (CpuIsa isa : {CpuIsa::scalar, CpuIsa::avx2, CpuIsa::avx512}) {
    if (name != isa_name(isa)) continue;
    if (isa > cpu_isa_supported())
      fail("HLLM_CPU_ISA=", name, ": this CPU supports up to ", isa_name(cpu_isa_supported()));
    return isa;
  }
  fail("HLLM_CPU_ISA=", name, ": expected scalar, avx2 or avx512");
}

// The level the kernels use: checked once per process.
inline CpuIsa cpu_isa() {
  static const CpuIsa isa = [] {
    const char* env = std::getenv("HLLM_CPU_ISA");
    return parse_cpu_isa(env != nullptr ? env : "");
  }();
  return isa;
}

}  // namespace hllm::cpu
