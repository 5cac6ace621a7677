// What every CUDA kernel file and the CUDA backend share: error checking, bf16/fp16 interop with
// the CUDA native types, 16-byte vector loads and stores, warp and block reductions, and a small
// RAII device buffer. Header-only; compiles on its own under nvcc.
//
//   errors       HLLM_CUDA_CHECK(expr), HLLM_CUBLAS_CHECK(expr), HLLM_CUDA_CHECK_LAUNCH();
//                the device-side error flag: KERNEL_ERROR_* bits, raise_kernel_error,
//                kernel_error_text
//   16-bit types to_nv / from_nv (bit casts hllm::bf16 <-> __nv_bfloat16, hllm::f16 <-> __half),
//                to_f32(x), from_f32<T>(f)
//   memory       load16 / load16_stream / load16_no_allocate, store16 / store16_stream,
//                Pack16<T> with load_pack / load_pack_stream / store_pack, bit_cast
//   reductions   warp_sum / warp_max<WIDTH>, block_sum / block_max<BLOCK_THREADS>
//                (warp_reduce / block_reduce<SumOp | MaxOp>)
//   host         ceil_div, round_up, device_count / gpu_available, device_sm_count, DeviceBuffer<T>
//
// Namespace: hllm::cuda. Inside `namespace hllm`, an unqualified `cuda::` names this namespace, so
// code there that wants libcu++ (cuda::std, cuda::pipeline) must spell it `::cuda::`.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "hllm/core/dtype.hpp"
#include "hllm/core/error.hpp"

// ---- Error checking -----------------------------------------------------------------------------
//
// Every CUDA runtime call goes through HLLM_CUDA_CHECK, every cuBLAS call through
// HLLM_CUBLAS_CHECK; both throw hllm::Error naming file:line, the expression and the library's own
// description. Every kernel launch is followed by HLLM_CUDA_CHECK_LAUNCH(), which catches a bad
// launch configuration (grid/block/shared-memory size) at the launch that caused it.

// Define HLLM_CUDA_SYNC_CHECK=1 to also synchronize after every launch, so a fault inside a kernel
// (out-of-bounds access, trap) is reported at that kernel rather than at some later call. Debugging
// only: it serializes host and GPU and is illegal while a stream is being captured into a graph.
#ifndef HLLM_CUDA_SYNC_CHECK
#define HLLM_CUDA_SYNC_CHECK 0
#endif

#define HLLM_CUDA_CHECK(expr) ::hllm::cuda::detail::check_cuda((expr), #expr, __FILE__, __LINE__)
#define HLLM_CUBLAS_CHECK(expr) \
  ::hllm::cuda::detail::check_cublas((expr), #expr, __FILE__, __LINE__)
#define HLLM_CUDA_CHECK_LAUNCH() ::hllm::cuda::detail::check_launch(__FILE__, __LINE__)

namespace hllm::cuda {
namespace detail {

inline void check_cuda(cudaError_t status, const char* expr, const char* file, int line) {
  if (status != cudaSuccess) [[unlikely]] {
    fail(file, ":", line, ": CUDA error ", cudaGetErrorName(status), " (",
         cudaGetErrorString(status), ") in ", expr);
  }
}

inline void check_cublas(cublasStatus_t status, const char* expr, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS) [[unlikely]] {
    fail(file, ":", line, ": cuBLAS error ", cublasGetStatusName(status), " (",
         cublasGetStatusString(status), ") in ", expr);
  }
}

// cudaGetLastError (not cudaPeekAtLastError): it also clears a non-sticky launch error, so the
// next, unrelated call does not report it a second time.
inline void check_launch(const char* file, int line) {
  check_cuda(cudaGetLastError(), "kernel launch", file, line);
  if constexpr (HLLM_CUDA_SYNC_CHECK) {
    check_cuda(cudaDeviceSynchronize(), "kernel execution (HLLM_CUDA_SYNC_CHECK)", file, line);
  }
}

}  // namespace detail

// ---- Device-side error flag ---------------------------------------------------------------------
//
// A kernel that meets an input it can only survive by clamping (so it stays memory-safe but
// computes something other than what was asked) cannot throw: it sets a bit in an int32 flag in
// device memory that the caller owns, passes to the launcher (nullable: null = not reported) and
// reads back at its next synchronization (CudaBackend: before to_host_f32 and argmax return).
// The flag's address is fixed, so kernels recorded into a CUDA graph keep reporting into it.
// Bits are OR-ed, never cleared by a kernel; the reader resets the flag to 0.

// Attention (attn_decode_paged, attn_prefill): a query's kv_len was above the launch's host bound
// max_kv_len; it was clamped to max_kv_len, so positions past the bound were not attended.
inline constexpr int32_t KERNEL_ERROR_KV_LEN_ABOVE_MAX = 1 << 0;
// Attention: a query's kv_len was below 1 (no position to attend; its output is zeros).
inline constexpr int32_t KERNEL_ERROR_KV_LEN_BELOW_ONE = 1 << 1;

// Sets `bit` in *flag (no-op for a null flag). Called on the error path only, by one thread.
__device__ __forceinline__ void raise_kernel_error(int32_t* flag, int32_t bit) {
  if (flag != nullptr) atomicOr(flag, bit);
}

// What the bits of a read-back flag mean, for an error message.
inline std::string kernel_error_text(int32_t bits) {
  std::string text;
  const auto add = [&](int32_t bit, const char* what) {
    if ((bits & bit) == 0) return;
    if (!text.empty()) text += "; ";
    text += what;
    bits &= ~bit;
  };
  add(KERNEL_ERROR_KV_LEN_ABOVE_MAX,
      "attention: a query's kv_len exceeded the step's max_kv_len (clamped: positions past it "
      "were not attended)");
  add(KERNEL_ERROR_KV_LEN_BELOW_ONE, "attention: a query's kv_len was below 1 (output zeros)");
  if (bits != 0) {
    if (!text.empty()) text += "; ";
    text += "unknown error bits " + std::to_string(bits);
  }
  return text;
}

// ---- Hardware constants ------------------------------------------------------------------------

// Threads per warp on every NVIDIA GPU so far (CUDA C++ Programming Guide, "SIMT Architecture").
// `warpSize` is a run-time variable; kernels need a compile-time constant for array sizes.
inline constexpr int WARP_SIZE = 32;
// Shuffle mask naming all 32 lanes: the reductions below are called by whole, converged warps.
inline constexpr unsigned FULL_WARP_MASK = 0xffffffffu;
// Upper bound on threads per block on every architecture we build for (sm_80 .. sm_90a;
// CUDA C++ Programming Guide, "Compute Capabilities", Table 21).
inline constexpr int MAX_BLOCK_THREADS = 1024;

// ---- Index math --------------------------------------------------------------------------------

// ceil(a / b) for non-negative a and positive b: the number of tiles of size b covering a.
template <std::integral T>
__host__ __device__ constexpr T ceil_div(T a, T b) {
  return (a + b - 1) / b;
}

// a rounded up to a multiple of b (b > 0).
template <std::integral T>
__host__ __device__ constexpr T round_up(T a, T b) {
  return ceil_div(a, b) * b;
}

static_assert(ceil_div(0, 4) == 0 && ceil_div(1, 4) == 1 && ceil_div(4, 4) == 1 &&
              ceil_div(5, 4) == 2 && round_up(5, 4) == 8);

// A grid-stride loop over `count` items: GRID_STRIDE_THREADS threads per block, one item per
// thread up to 4096 blocks (plenty to fill any GPU), beyond that each thread strides.
inline constexpr int GRID_STRIDE_THREADS = 256;
inline unsigned grid_stride_blocks(int64_t count) {
  constexpr int64_t MAX_BLOCKS = 4096;
  const int64_t blocks = ceil_div<int64_t>(count, GRID_STRIDE_THREADS);
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks > MAX_BLOCKS ? MAX_BLOCKS : blocks);
}

// ---- bf16 / fp16 <-> CUDA native types ---------------------------------------------------------
//
// hllm::bf16 / hllm::f16 (core/dtype.hpp) are the storage types of host code and the weight
// loader; __nv_bfloat16 / __half are what the CUDA math intrinsics and tensor-core fragments take.
// Both hold the same 16 bits, so converting between them is a bit cast and costs nothing.

static_assert(sizeof(__nv_bfloat16) == sizeof(bf16) && sizeof(__half) == sizeof(f16));

HLLM_HOST_DEVICE __nv_bfloat16 to_nv(bf16 x) { return __ushort_as_bfloat16(x.bits); }
HLLM_HOST_DEVICE __half to_nv(f16 x) { return __ushort_as_half(x.bits); }
HLLM_HOST_DEVICE bf16 from_nv(__nv_bfloat16 x) { return bf16{__bfloat16_as_ushort(x)}; }
HLLM_HOST_DEVICE f16 from_nv(__half x) { return f16{__half_as_ushort(x)}; }

// Widening to fp32: exact for every input. On the device fp16 uses the hardware convert
// (cvt.f32.f16, one instruction) instead of dtype.hpp's bit-twiddling; both give the same bits for
// every non-NaN input, and a NaN either way (checked on all 65536 patterns by cuda_common_test).
HLLM_HOST_DEVICE float to_f32(float x) { return x; }
HLLM_HOST_DEVICE float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
HLLM_HOST_DEVICE float to_f32(__half x) { return __half2float(x); }
HLLM_HOST_DEVICE float to_f32(bf16 x) { return bf16_to_f32(x); }  // a 16-bit shift everywhere
HLLM_HOST_DEVICE float to_f32(f16 x) {
#if defined(__CUDA_ARCH__)
  return __half2float(to_nv(x));
#else
  return f16_to_f32(x);
#endif
}

// Narrowing from fp32, round to nearest even. On the device this uses the hardware converts
// (cvt.rn.bf16.f32 on sm_80+, cvt.rn.f16.f32), which agree bit for bit with dtype.hpp's
// f32_to_bf16 / f32_to_f16 on every non-NaN input; a NaN comes out as the canonical NaN rather than
// the quieted input, which nothing downstream can tell apart.
template <typename T>
HLLM_HOST_DEVICE T from_f32(float x) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(x);
  } else if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(x);
  } else if constexpr (std::is_same_v<T, bf16>) {
#if defined(__CUDA_ARCH__)
    return from_nv(__float2bfloat16_rn(x));
#else
    return f32_to_bf16(x);
#endif
  } else if constexpr (std::is_same_v<T, f16>) {
#if defined(__CUDA_ARCH__)
    return from_nv(__float2half_rn(x));
#else
    return f32_to_f16(x);
#endif
  } else {
    static_assert(sizeof(T) == 0, "from_f32: T must be float, bf16, f16, __nv_bfloat16 or __half");
  }
}

// ---- 16-byte vector loads and stores -----------------------------------------------------------
//
// 16 bytes is the widest access one thread can issue (LDG.128 / STG.128): a warp then moves 512
// contiguous bytes per instruction, four full 128-byte cache lines, which is how memory-bound
// kernels (GEMV over weights, norms, the KV cache) reach DRAM bandwidth with few instructions.
// Every pointer passed here must be 16-byte aligned (cudaMalloc returns 256-byte aligned memory;
// rows must be padded to a multiple of 16 bytes by whoever lays them out).

inline constexpr int VEC_BYTES = 16;

// A 16-byte vector viewed as N elements of T (8 bf16/f16, 4 float, 32 packed int4 in 4 uint32).
template <typename T>
struct alignas(VEC_BYTES) Pack16 {
  static_assert(VEC_BYTES % sizeof(T) == 0, "Pack16: element size must divide 16 bytes");
  static constexpr int N = VEC_BYTES / static_cast<int>(sizeof(T));
  T elem[N];
};
static_assert(sizeof(Pack16<bf16>) == 16 && Pack16<bf16>::N == 8 && Pack16<float>::N == 4);

// Reinterprets the bytes of one trivially copyable value as another of the same size. memcpy
// between registers compiles to nothing; it is the one defined way to do this in C++
// (reinterpret_cast or a union would be undefined behaviour).
template <typename To, typename From>
HLLM_HOST_DEVICE To bit_cast(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast: sizes differ");
  static_assert(std::is_trivially_copyable_v<To> && std::is_trivially_copyable_v<From>);
  To to;
  memcpy(&to, &from, sizeof(To));
  return to;
}

// Plain load, cached in L1 and L2: for data the block or its neighbours read again (activations,
// the KV cache of a decode step that several query heads share under GQA).
__device__ __forceinline__ uint4 load16(const void* p) { return *static_cast<const uint4*>(p); }

// Streaming load (ld.global.cs, "cache streaming, likely accessed once"): the lines are allocated
// with evict-first priority in L1 and L2. For weights, which a decode step reads exactly once and
// which (gigabytes) cannot stay in a 40-60 MB L2 anyway: caching them normally would only evict the
// activations and KV blocks that are reused.
__device__ __forceinline__ uint4 load16_stream(const void* p) {
  return __ldcs(static_cast<const uint4*>(p));
}

// Read-only-path load that does not allocate in L1 (ld.global.nc.L1::no_allocate, PTX ISA 7.4,
// sm_70+). Same purpose as load16_stream, but it also keeps L1 (which shares its SRAM with shared
// memory) free for the tiles a kernel stages there. Only for memory that nothing writes during the
// kernel (the .nc path is not coherent with the kernel's own writes): weights, never outputs.
__device__ __forceinline__ uint4 load16_no_allocate(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

__device__ __forceinline__ void store16(void* p, uint4 v) { *static_cast<uint4*>(p) = v; }

// Streaming store (st.global.cs): for outputs this kernel writes once and that the next kernel will
// not read soon (e.g. logits copied to the host), so they do not evict reused data from L2.
__device__ __forceinline__ void store16_stream(void* p, uint4 v) {
  __stcs(static_cast<uint4*>(p), v);
}

template <typename T>
__device__ __forceinline__ Pack16<T> load_pack(const T* p) {
  return bit_cast<Pack16<T>>(load16(p));
}
template <typename T>
__device__ __forceinline__ Pack16<T> load_pack_stream(const T* p) {
  return bit_cast<Pack16<T>>(load16_stream(p));
}
template <typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack16<T>& v) {
  store16(p, bit_cast<uint4>(v));
}

// ---- Warp and block reductions -----------------------------------------------------------------
//
// Butterfly (xor) shuffles: after log2(WIDTH) steps every lane holds the result, so no broadcast is
// needed. WIDTH < 32 reduces independent groups of WIDTH consecutive lanes (e.g. 8 lanes per row of
// a small GEMV tile). All 32 lanes of the warp must call (FULL_WARP_MASK).
//
// Max uses fmaxf, which returns the other operand when one is NaN: a NaN input does not make the
// max NaN. Kernels that must propagate NaN check for it separately.

struct SumOp {
  static constexpr float IDENTITY = 0.0f;
  __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};
struct MaxOp {
  static constexpr float IDENTITY = -std::numeric_limits<float>::infinity();
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

template <typename Op, int WIDTH = WARP_SIZE>
__device__ __forceinline__ float warp_reduce(float v) {
  static_assert(WIDTH >= 1 && WIDTH <= WARP_SIZE && (WIDTH & (WIDTH - 1)) == 0,
                "warp_reduce: WIDTH must be a power of two <= 32");
#pragma unroll
  for (int offset = WIDTH / 2; offset > 0; offset /= 2) {
    v = Op{}(v, __shfl_xor_sync(FULL_WARP_MASK, v, offset));
  }
  return v;
}

template <int WIDTH = WARP_SIZE>
__device__ __forceinline__ float warp_sum(float v) {
  return warp_reduce<SumOp, WIDTH>(v);
}
template <int WIDTH = WARP_SIZE>
__device__ __forceinline__ float warp_max(float v) {
  return warp_reduce<MaxOp, WIDTH>(v);
}

// Reduces one value per thread over the whole block and returns the result to every thread.
// BLOCK_THREADS must equal blockDim.x (1-D blocks) and be a multiple of 32; every thread of the
// block must call it (it contains barriers). Calling it several times in a row is safe.
template <typename Op, int BLOCK_THREADS>
__device__ __forceinline__ float block_reduce(float v) {
  static_assert(BLOCK_THREADS % WARP_SIZE == 0 && BLOCK_THREADS <= MAX_BLOCK_THREADS,
                "block_reduce: BLOCK_THREADS must be a multiple of 32 and at most 1024");
  constexpr int N_WARPS = BLOCK_THREADS / WARP_SIZE;
  __shared__ float warp_results[N_WARPS];  // one partial per warp
  [[maybe_unused]] const int lane = static_cast<int>(threadIdx.x) % WARP_SIZE;
  [[maybe_unused]] const int warp = static_cast<int>(threadIdx.x) / WARP_SIZE;

  v = warp_reduce<Op>(v);
  if constexpr (N_WARPS > 1) {
    // The barrier before the write: every thread has finished reading warp_results of an earlier
    // call of this same reduction.
    __syncthreads();
    if (lane == 0) warp_results[warp] = v;
    __syncthreads();
    // Every warp reduces the N_WARPS partials itself, so all threads end with the result without a
    // third barrier for a broadcast.
    v = warp_reduce<Op>(lane < N_WARPS ? warp_results[lane] : Op::IDENTITY);
  }
  return v;
}

template <int BLOCK_THREADS>
__device__ __forceinline__ float block_sum(float v) {
  return block_reduce<SumOp, BLOCK_THREADS>(v);
}
template <int BLOCK_THREADS>
__device__ __forceinline__ float block_max(float v) {
  return block_reduce<MaxOp, BLOCK_THREADS>(v);
}

// ---- Devices -----------------------------------------------------------------------------------

// Number of usable CUDA devices: 0 when there is no driver, no device, or the driver is too old for
// this runtime. Never throws. When `why` is given and the answer is 0, it receives the reason.
inline int device_count(cudaError_t* why = nullptr) noexcept {
  int n = 0;
  const cudaError_t status = cudaGetDeviceCount(&n);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();  // clear it, so a later HLLM_CUDA_CHECK_LAUNCH does not report it
    n = 0;
  }
  if (why != nullptr) *why = (status == cudaSuccess && n == 0) ? cudaErrorNoDevice : status;
  return n;
}

inline bool gpu_available() noexcept { return device_count() > 0; }

// SMs of the current device, read once (the first call's device; hllm runs one GPU per process).
inline int device_sm_count() {
  static const int count = [] {
    int device = 0, n = 0;
    HLLM_CUDA_CHECK(cudaGetDevice(&device));
    HLLM_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    return n;
  }();
  return count;
}

// ---- DeviceBuffer ------------------------------------------------------------------------------
//
// Owns `size()` elements of T in device memory (cudaMalloc: at least 256-byte aligned, so every
// Pack16 load at a multiple of 16 bytes from the start is aligned). Move-only. Copies to and from
// the host are synchronous (cudaMemcpy), which is what tests and one-time weight uploads want.

template <typename T>
class DeviceBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "DeviceBuffer holds trivially copyable types");

 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t size) : size_(size) {
    if (size == 0) return;
    if (size > std::numeric_limits<size_t>::max() / sizeof(T)) {
      fail("DeviceBuffer: ", size, " elements of ", sizeof(T), " bytes overflow size_t");
    }
    void* p = nullptr;
    const cudaError_t status = cudaMalloc(&p, size * sizeof(T));
    if (status != cudaSuccess) {
      (void)cudaGetLastError();  // an allocation failure is not sticky; leave no trace of it
      fail("DeviceBuffer: cudaMalloc of ", size * sizeof(T),
           " bytes failed: ", cudaGetErrorString(status));
    }
    data_ = static_cast<T*>(p);
  }
  // Allocates host.size() elements and uploads them.
  explicit DeviceBuffer(std::span<const T> host) : DeviceBuffer(host.size()) { upload(host); }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(std::span<const T>(host)) {}

  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      release();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  ~DeviceBuffer() { release(); }

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return size_; }
  size_t size_bytes() const { return size_ * sizeof(T); }
  bool empty() const { return size_ == 0; }

  void upload(std::span<const T> host) {
    check_size(host.size(), "upload");
    if (size_ != 0) {
      HLLM_CUDA_CHECK(cudaMemcpy(data_, host.data(), size_bytes(), cudaMemcpyHostToDevice));
    }
  }
  void download(std::span<T> host) const {
    check_size(host.size(), "download");
    if (size_ != 0) {
      HLLM_CUDA_CHECK(cudaMemcpy(host.data(), data_, size_bytes(), cudaMemcpyDeviceToHost));
    }
  }
  std::vector<T> download() const {
    std::vector<T> host(size_);
    download(std::span<T>(host));
    return host;
  }

  // Sets every byte to 0xff: all-ones is a NaN in f32, bf16 and fp16 alike, so an output element a
  // kernel forgot to write shows up as NaN in a test (for integer types it reads as -1 / max).
  void poison() {
    if (size_ != 0) HLLM_CUDA_CHECK(cudaMemset(data_, 0xff, size_bytes()));
  }

 private:
  void check_size(size_t host_size, const char* what) const {
    if (host_size != size_) {
      fail("DeviceBuffer::", what, ": host has ", host_size, " elements, device buffer ", size_);
    }
  }
  void release() noexcept {
    // A destructor must not throw; a failing cudaFree here means the context is already broken, and
    // the next checked call reports that.
    if (data_ != nullptr) (void)cudaFree(data_);
    data_ = nullptr;
    size_ = 0;
  }

  T* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace hllm::cuda
