// PTX wrappers the tensor-core kernels share (sm_80+): shared-memory addresses, cp.async copies,
// ldmatrix, the bf16 mma.sync m16n8k16 and two bf16x2 helpers. Each is one instruction; what the
// fragments hold is documented with the kernel that lays them out (layout/int4_mma.hpp,
// layout/attn_prefill_tiles.hpp).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "hllm's CUDA kernels need sm_80 or newer (bf16 mma.sync, cp.async, bf16x2 fma)"
#endif

namespace hllm::cuda::ptx {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy that bypasses registers and L1 (.cg); src_bytes 0 writes zeros
// without reading src (the zero-fill of rows past the end).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// d += a · b, mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (PTX ISA, "Warp-level matrix
// multiply"): A 16 × 16 in 4 registers, B 16 × 8 in 2, C/D 16 × 8 fp32 in 4.
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4],
                                                  uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// (lo, hi) -> bf16x2, round to nearest even, lo in the low half (cvt's first source is the high
// half: PTX ISA, "cvt", .bf16x2).
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

// a · 1 + c per bf16 half (fma.rn.bf16x2). The INT4 kernels add c = −(128 + zero) to
// a = 128 + code: the result code − zero is an integer in [-16, 15], exact whatever the rounding.
__device__ __forceinline__ uint32_t bf16x2_add(uint32_t a, uint32_t c) {
  constexpr uint32_t ONE = 0x3F803F80u;  // bf16x2 (1.0, 1.0)
  uint32_t d;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(ONE), "r"(c));
  return d;
}

}  // namespace hllm::cuda::ptx
