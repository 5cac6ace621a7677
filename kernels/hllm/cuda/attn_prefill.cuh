// Causal prefill attention over the paged KV cache, FlashAttention-2 style (tensor cores):
//
//   out[t, h, :] = softmax(scale · q[t, h, :] · K[seq, 0 .. kv_len(t) - 1, kvh, :]ᵀ) · V[same rows]
//   t = 0 .. n_queries - 1 (the new tokens of ONE sequence), kvh = h / (n_heads / n_kv_heads),
//   kv_len(t) = min(start + t + 1, max_kv_len), start = query_kv_len[0] - 1, seq = query_seq[0]
//
//   q     [n_queries, n_heads, head_dim]                    bf16
//   kv    pools [n_blocks, block_size, n_kv_heads, head_dim] bf16 (layout/paged_kv.hpp), already
//         holding the chunk's own K/V (rope_store_kv runs first)
//   query_seq, query_kv_len  DEVICE int32 arrays, the decode kernel's convention (query t's kv_len
//         is start + t + 1); only element 0 of each is read, so a captured CUDA graph replays with
//         a new start. The grid depends only on n_queries and n_kv_heads.
//   out   [n_queries, n_heads, head_dim]                    bf16
//   error_flag  nullable DEVICE int32 (common.cuh, "Device-side error flag"): a chunk whose last
//         query would see more than max_kv_len positions (start + n_queries > max_kv_len) is
//         clamped as above and sets KERNEL_ERROR_KV_LEN_ABOVE_MAX; query_kv_len[0] < 1 is taken as
//         start 0 and sets KERNEL_ERROR_KV_LEN_BELOW_ONE.
//
// Same signature as launch_attn_decode_paged (attn_decode_paged.cuh), so the backend switches by
// query count. The schedule and fragment maps are in layout/attn_prefill_tiles.hpp, a lane-by-lane
// CPU emulation of this kernel in cpu/attn_prefill_emulate.hpp (tested by
// tests/attn_prefill_tiles_test.cpp); in short:
//
//   grid (row tiles, n_kv_heads)   block: 4 warps, 64 rows = (query, head-in-group) pairs
//   block (b, kvh) -> rows 64b .. 64b + 63 of KV head kvh: row r = query r / GROUP, head
//                     kvh·GROUP + r % GROUP, so each K/V tile in shared memory serves all GROUP
//                     query heads of the KV head (GQA: K/V read once per group, not per head).
//                     Blocks run heaviest (latest queries) first, for a short tail.
//   warp w         -> rows 16w .. 16w + 15: Q fragments in registers (ldmatrix once), S = Q·Kᵀ
//                     and O += P·V with mma.sync.m16n8k16 bf16 -> fp32, online softmax in fp32
//   K/V tiles      64 positions × head_dim, cp.async 16-byte copies, double-buffered; each row
//                     located through the block table (paged_kv_row_in_table), rows past the
//                     block's last visible position zero-filled; tiles past a warp's diagonal
//                     skipped, per-element causal masks only on diagonal tiles
//   shared memory  Q 64 × 136 + 2 × (K, V) 64 × 136 bf16 = 87,040 B (head_dim 128; rows padded
//                     by 8 bf16 so ldmatrix is bank-conflict free): 2 blocks per H100 SM
//
// FLOPs and bytes, Llama-3-8B (32 heads, 8 KV heads, head_dim 128), one 8192-token prompt:
//   FLOPs   4 · S² · head_dim · n_heads / 2 (causal) = 4 · 8192² · 128 · 32 / 2 = 550 GFLOP
//           (~0.56 ms at 989 dense bf16 TFLOP/s on an H100 SXM: compute bound)
//   bytes   K + V per block = kv_len · 256 B · 2, re-read by the 64/GROUP-query blocks from L2;
//           q and out 8192 · 32 · 128 · 2 B = 64 MiB each: ~0.1 ms at 3.35 TB/s.
// Needs sm_80+ (bf16 mma, ldmatrix, cp.async). No allocation, no sync: graph-capturable.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "hllm/core/error.hpp"
#include "hllm/cuda/common.cuh"
#include "hllm/cuda/ptx.cuh"
#include "hllm/layout/attn_prefill_tiles.hpp"
#include "hllm/layout/attn_split.hpp"
#include "hllm/layout/paged_kv.hpp"

namespace hllm::cuda {

namespace detail {

inline constexpr int ATTN_PREFILL_THREADS = ATTN_PREFILL_WARPS * WARP_SIZE;

// ---- The kernel ---------------------------------------------------------------------------------

// HEAD_DIM  dims per head: fixes the k-steps of S (HEAD_DIM / 16) and the O accumulator tiles
//           (HEAD_DIM / 8 n-tiles × 4 fp32 = 64 registers a thread for 128).
// GROUP     query heads per KV head: rows of a block are (query, head-in-group) pairs; a constant
//           so row -> query is a shift.
template <int HEAD_DIM, int GROUP>
__global__ void __launch_bounds__(ATTN_PREFILL_THREADS)
    attn_prefill_kernel(const __nv_bfloat16* __restrict__ q, PagedKvView kv,
                        const int32_t* __restrict__ query_seq,
                        const int32_t* __restrict__ query_kv_len, int32_t n_queries,
                        int32_t n_heads, int32_t max_kv_len, float q_scale,
                        __nv_bfloat16* __restrict__ out, int32_t* error_flag) {
  constexpr int BM = ATTN_PREFILL_BLOCK_M, BN = ATTN_PREFILL_BLOCK_N;
  constexpr int STRIDE = attn_prefill_smem_stride(HEAD_DIM);  // bf16 per shared row
  constexpr int KSTEPS = HEAD_DIM / 16;                       // k-steps of S = Q·Kᵀ
  constexpr int S_TILES = BN / 8;                             // n-tiles of S (positions)
  constexpr int O_TILES = HEAD_DIM / 8;                       // n-tiles of O (dims)
  constexpr int CHUNKS_Q = BM * HEAD_DIM / ATTN_PREFILL_CHUNK / ATTN_PREFILL_THREADS;
  constexpr int CHUNKS_KV = BN * HEAD_DIM / ATTN_PREFILL_CHUNK / ATTN_PREFILL_THREADS;
  constexpr int TILE_BYTES = BN * STRIDE * 2;
  static_assert(HEAD_DIM % 16 == 0 && BM % GROUP == 0 &&
                CHUNKS_Q * ATTN_PREFILL_THREADS * ATTN_PREFILL_CHUNK == BM * HEAD_DIM);

  extern __shared__ __align__(16) unsigned char smem[];
  // sq [BM][STRIDE], then sk [2][BN][STRIDE], then sv [2][BN][STRIDE] (bf16)
  const uint32_t sq = ptx::smem_addr(smem);
  const uint32_t sk = sq + BM * STRIDE * 2;
  const uint32_t sv = sk + 2 * TILE_BYTES;

  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid % WARP_SIZE, warp = tid / WARP_SIZE;
  const int64_t row0 = (static_cast<int64_t>(gridDim.x) - 1 - blockIdx.x) * BM;  // heavy first
  const int32_t kv_head = static_cast<int32_t>(blockIdx.y);
  const int64_t n_rows = static_cast<int64_t>(n_queries) * GROUP;

  // start and the sequence from device memory; clamps keep a bad length inside the block table.
  // A chunk outside 1 .. max_kv_len (its last query sees first_kv_len + n_queries - 1 positions)
  // is reported once, by thread 0 of block (0, 0).
  const int32_t first_kv_len = query_kv_len[0];
  if (blockIdx.x == 0 && blockIdx.y == 0 && tid == 0) {
    if (int64_t{first_kv_len} + n_queries - 1 > max_kv_len)
      raise_kernel_error(error_flag, KERNEL_ERROR_KV_LEN_ABOVE_MAX);
    if (first_kv_len < 1) raise_kernel_error(error_flag, KERNEL_ERROR_KV_LEN_BELOW_ONE);
  }
  const int32_t start = min(max(first_kv_len, 1), max_kv_len) - 1;
  const int32_t seq = query_seq[0];
  const int32_t* table = kv.block_tables + static_cast<int64_t>(seq) * kv.max_blocks_per_seq;
  const auto* k_pool = static_cast<const __nv_bfloat16*>(kv.k);
  const auto* v_pool = static_cast<const __nv_bfloat16*>(kv.v);

  const int32_t block_kv_len = attn_prefill_kv_len(
      start, attn_prefill_row_query(row0 + BM - 1, GROUP, n_queries), max_kv_len);
  const int32_t n_tiles = attn_prefill_kv_tiles(block_kv_len);
  const int64_t wrow0 = row0 + warp * ATTN_PREFILL_WARP_M;
  const int32_t warp_kv_first =
      attn_prefill_kv_len(start, attn_prefill_row_query(wrow0, GROUP, n_queries), max_kv_len);
  const int32_t warp_tiles = attn_prefill_kv_tiles(attn_prefill_kv_len(
      start, attn_prefill_row_query(wrow0 + ATTN_PREFILL_WARP_M - 1, GROUP, n_queries),
      max_kv_len));
  // The thread's two rows g, g + 8 (C elements 0-1 and 2-3): their horizons.
  int32_t lim[2];
#pragma unroll
  for (int h = 0; h < 2; ++h)
    lim[h] = attn_prefill_kv_len(
        start, attn_prefill_row_query(wrow0 + attn_mma_c_row(lane, 2 * h), GROUP, n_queries),
        max_kv_len);

    // Q tile -> shared (group 0): rows past the chunk are zeros.
#pragma unroll
  for (int u = 0; u < CHUNKS_Q; ++u) {
    const int c = tid + u * ATTN_PREFILL_THREADS;
    const int r = attn_prefill_chunk_row(c, HEAD_DIM), col = attn_prefill_chunk_col(c, HEAD_DIM);
    const int64_t row = row0 + r;
    // q[query, kv_head·GROUP + g, :] with query = row / GROUP, g = row % GROUP: the GROUP rows of a
    // query are contiguous, so this is q + ((query·n_heads + kv_head·GROUP) + g)·HEAD_DIM.
    const __nv_bfloat16* src =
        row < n_rows
            ? q + ((row / GROUP) * n_heads + int64_t{kv_head} * GROUP + row % GROUP) * HEAD_DIM +
                  col
            : q;
    ptx::cp_async16(sq + (r * STRIDE + col) * 2, src, row < n_rows ? 16 : 0);
  }
  ptx::cp_async_commit();

  // K/V tile j -> buffer j % 2.
  auto load_tile = [&](int32_t j) {
    const uint32_t k_dst = sk + (j & 1) * TILE_BYTES, v_dst = sv + (j & 1) * TILE_BYTES;
#pragma unroll
    for (int u = 0; u < CHUNKS_KV; ++u) {
      const int c = tid + u * ATTN_PREFILL_THREADS;
      const int r = attn_prefill_chunk_row(c, HEAD_DIM), col = attn_prefill_chunk_col(c, HEAD_DIM);
      const int32_t pos = j * BN + r;
      const bool valid = pos < block_kv_len;
      const int64_t off =
          valid
              ? paged_kv_offset(kv, paged_kv_row_in_table(table, kv.block_size, pos), kv_head) + col
              : 0;
      const uint32_t dst = (r * STRIDE + col) * 2;
      ptx::cp_async16(k_dst + dst, k_pool + off, valid ? 16 : 0);
      ptx::cp_async16(v_dst + dst, v_pool + off, valid ? 16 : 0);
    }
  };
  load_tile(0);
  ptx::cp_async_commit();

  // Q fragments: wait for group 0 (Q) while tile 0 is still in flight.
  ptx::cp_async_wait<1>();
  __syncthreads();
  uint32_t qa[KSTEPS][4];
  {
    const uint32_t base =
        sq +
        ((warp * ATTN_PREFILL_WARP_M + attn_ldm_a_row(lane)) * STRIDE + attn_ldm_a_col(lane)) * 2;
#pragma unroll
    for (int ks = 0; ks < KSTEPS; ++ks) ptx::ldmatrix_x4(qa[ks], base + ks * 16 * 2);
  }

  float o[O_TILES][4];
#pragma unroll
  for (int dt = 0; dt < O_TILES; ++dt)
#pragma unroll
    for (int i = 0; i < 4; ++i) o[dt][i] = 0.0f;
  float m[2] = {ATTN_NEG_INF, ATTN_NEG_INF}, l[2] = {0.0f, 0.0f};

  // Per-lane ldmatrix offsets (bytes) within a tile.
  const uint32_t k_lane = (attn_ldm_k_row(lane) * STRIDE + attn_ldm_k_col(lane)) * 2;
  const uint32_t v_lane = (attn_ldm_v_row(lane) * STRIDE + attn_ldm_v_col(lane)) * 2;

  for (int32_t j = 0; j < n_tiles; ++j) {
    if (j + 1 < n_tiles) load_tile(j + 1);
    ptx::cp_async_commit();   // possibly empty: keeps the group count uniform
    ptx::cp_async_wait<1>();  // tile j has landed (this thread's copies) ...
    __syncthreads();          // ... and every thread's

    if (j < warp_tiles) {  // warp-uniform: tiles past the warp's diagonal are skipped
      const uint32_t k_tile = sk + (j & 1) * TILE_BYTES + k_lane;
      const uint32_t v_tile = sv + (j & 1) * TILE_BYTES + v_lane;

      // S = Q·Kᵀ (16 × 64 per warp): s[nt] = C fragment of positions 8nt .. 8nt + 7.
      float s[S_TILES][4];
#pragma unroll
      for (int nt = 0; nt < S_TILES; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) s[nt][i] = 0.0f;
#pragma unroll
      for (int ks = 0; ks < KSTEPS; ++ks) {
#pragma unroll
        for (int np = 0; np < S_TILES / 2; ++np) {
          uint32_t b[4];
          ptx::ldmatrix_x4(b, k_tile + (np * 16 * STRIDE + ks * 16) * 2);
          ptx::mma_m16n8k16_bf16(s[2 * np], qa[ks], b[0], b[1]);
          ptx::mma_m16n8k16_bf16(s[2 * np + 1], qa[ks], b[2], b[3]);
        }
      }

      // Online softmax (log2 units). Masks only on the diagonal tiles.
      const bool masked = attn_prefill_tile_masked(j, warp_kv_first);
      float mx[2] = {ATTN_NEG_INF, ATTN_NEG_INF};
#pragma unroll
      for (int nt = 0; nt < S_TILES; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          float x = s[nt][i] * q_scale;
          if (masked && j * BN + nt * 8 + attn_mma_c_col(lane, i) >= lim[i / 2]) x = ATTN_NEG_INF;
          s[nt][i] = x;
          mx[i / 2] = fmaxf(mx[i / 2], x);
        }
      uint32_t pa[S_TILES / 2][4];  // P as A fragments of k-steps 0 .. 3 (positions 16kk ..)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(FULL_WARP_MASK, mx[h], 1));  // the quad shares a row
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(FULL_WARP_MASK, mx[h], 2));
        const float m_new = fmaxf(m[h], mx[h]);
        const float m_ref = m_new == ATTN_NEG_INF ? 0.0f : m_new;  // a row with nothing visible yet
        const float alpha = exp2f(m[h] - m_ref);
        m[h] = m_new;
        l[h] *= alpha;
#pragma unroll
        for (int dt = 0; dt < O_TILES; ++dt) {
          o[dt][2 * h] *= alpha;
          o[dt][2 * h + 1] *= alpha;
        }
#pragma unroll
        for (int nt = 0; nt < S_TILES; ++nt) {
          s[nt][2 * h] = exp2f(s[nt][2 * h] - m_ref);
          s[nt][2 * h + 1] = exp2f(s[nt][2 * h + 1] - m_ref);
          l[h] += s[nt][2 * h];
          l[h] += s[nt][2 * h + 1];
        }
      }
#pragma unroll
      for (int kk = 0; kk < S_TILES / 2; ++kk)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const float* c = s[2 * kk + attn_p_ntile_offset(r)];
          pa[kk][r] = ptx::pack_bf16x2(c[attn_p_c_elem(r, 0)], c[attn_p_c_elem(r, 1)]);
        }

        // O += P·V (16 × HEAD_DIM per warp), V fragments by ldmatrix.trans, 2 dim tiles a load.
#pragma unroll
      for (int kk = 0; kk < S_TILES / 2; ++kk) {
#pragma unroll
        for (int dp = 0; dp < O_TILES / 2; ++dp) {
          uint32_t b[4];
          ptx::ldmatrix_x4_trans(b, v_tile + (kk * 16 * STRIDE + dp * 16) * 2);
          ptx::mma_m16n8k16_bf16(o[2 * dp], pa[kk], b[0], b[1]);
          ptx::mma_m16n8k16_bf16(o[2 * dp + 1], pa[kk], b[2], b[3]);
        }
      }
    }
    __syncthreads();  // every warp is done with buffer j % 2 before tile j + 2 overwrites it
  }
  ptx::cp_async_wait<0>();

  // out = O / l, l summed over the quad (each lane summed its own columns).
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float sum = l[h] + __shfl_xor_sync(FULL_WARP_MASK, l[h], 1);
    sum += __shfl_xor_sync(FULL_WARP_MASK, sum, 2);
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    const int64_t row = wrow0 + attn_mma_c_row(lane, 2 * h);
    if (row >= n_rows) continue;
    __nv_bfloat16* dst =
        out + ((row / GROUP) * n_heads + int64_t{kv_head} * GROUP + row % GROUP) * HEAD_DIM +
        attn_mma_c_col(lane, 2 * h);
#pragma unroll
    for (int dt = 0; dt < O_TILES; ++dt)
      *reinterpret_cast<uint32_t*>(dst + dt * 8) =
          ptx::pack_bf16x2(o[dt][2 * h] * inv, o[dt][2 * h + 1] * inv);
  }
}

template <int HEAD_DIM, int GROUP>
void attn_prefill_run(const __nv_bfloat16* q, const PagedKvView& kv, const int32_t* query_seq,
                      const int32_t* query_kv_len, int n_queries, int n_heads, int max_kv_len,
                      float scale, __nv_bfloat16* out, cudaStream_t stream, int32_t* error_flag) {
  constexpr int SMEM = attn_prefill_smem_bytes(HEAD_DIM);
  auto* kernel = attn_prefill_kernel<HEAD_DIM, GROUP>;
  // Over 48 KB of dynamic shared memory needs an opt-in, once per instantiation (not a stream
  // operation, so it is done before any graph capture by the first, eager call).
  static const bool configured = [&] {
    HLLM_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM));
    return true;
  }();
  (void)configured;
  const auto row_tiles = attn_prefill_row_tiles(n_queries, GROUP);
  const dim3 grid(static_cast<unsigned>(row_tiles), static_cast<unsigned>(kv.n_kv_heads));
  kernel<<<grid, ATTN_PREFILL_THREADS, SMEM, stream>>>(q, kv, query_seq, query_kv_len, n_queries,
                                                       n_heads, max_kv_len, scale * ATTN_LOG2E, out,
                                                       error_flag);
  HLLM_CUDA_CHECK_LAUNCH();
}

template <int HEAD_DIM>
void attn_prefill_dispatch_group(int group, const __nv_bfloat16* q, const PagedKvView& kv,
                                 const int32_t* query_seq, const int32_t* query_kv_len,
                                 int n_queries, int n_heads, int max_kv_len, float scale,
                                 __nv_bfloat16* out, cudaStream_t stream, int32_t* error_flag) {
  switch (group) {
    case 1:
      return attn_prefill_run<HEAD_DIM, 1>(q, kv, query_seq, query_kv_len, n_queries, n_heads,
                                           max_kv_len, scale, out, stream, error_flag);
    case 2:
      return attn_prefill_run<HEAD_DIM, 2>(q, kv, query_seq, query_kv_len, n_queries, n_heads,
                                           max_kv_len, scale, out, stream, error_flag);
    case 4:
      return attn_prefill_run<HEAD_DIM, 4>(q, kv, query_seq, query_kv_len, n_queries, n_heads,
                                           max_kv_len, scale, out, stream, error_flag);
    case 8:
      return attn_prefill_run<HEAD_DIM, 8>(q, kv, query_seq, query_kv_len, n_queries, n_heads,
                                           max_kv_len, scale, out, stream, error_flag);
    default:
      fail("attn_prefill: ", n_heads, " query heads over ", kv.n_kv_heads,
           " KV heads is a GQA group of ", group, "; supported groups: 1, 2, 4, 8");
  }
}

}  // namespace detail

// No workspace: each block owns whole rows, so nothing is merged across blocks.
inline size_t attn_prefill_workspace_bytes(int n_queries, int n_heads, int head_dim) {
  if (n_queries < 0 || n_heads < 1 || head_dim < 1)
    fail("attn_prefill_workspace_bytes: n_queries ", n_queries, ", n_heads ", n_heads,
         ", head_dim ", head_dim, " (need n_queries >= 0, the others >= 1)");
  return 0;
}

// Causal attention of a chunk of n_queries new tokens of ONE sequence (see the top of the file):
// query t at position start + t sees positions 0 .. start + t, start = query_kv_len[0] - 1 and the
// block-table row query_seq[0] read on the device. max_kv_len is a host bound on start +
// n_queries (positions past it are not seen, and error_flag, when not null, gets
// KERNEL_ERROR_KV_LEN_ABOVE_MAX). workspace is unused (may be null). No allocation, no sync after
// the first call of each (head_dim, group): capturable into a CUDA graph.
inline void launch_attn_prefill(const __nv_bfloat16* q, const PagedKvView& kv,
                                const int32_t* query_seq, const int32_t* query_kv_len,
                                int n_queries, int n_heads, int max_kv_len, float scale,
                                float* workspace, size_t workspace_bytes, __nv_bfloat16* out,
                                cudaStream_t stream, int32_t* error_flag = nullptr) {
  (void)workspace;
  (void)workspace_bytes;
  if (n_queries < 0 || n_heads < 1 || kv.n_kv_heads < 1 || n_heads % kv.n_kv_heads != 0)
    fail("attn_prefill: n_queries ", n_queries, ", n_heads ", n_heads, ", n_kv_heads ",
         kv.n_kv_heads, " (need n_queries >= 0, n_heads a positive multiple of n_kv_heads)");
  if (kv.head_dim != 128 && kv.head_dim != 64)
    fail("attn_prefill: head_dim ", kv.head_dim, " is not supported (supported: 64, 128)");
  if (kv.n_kv_heads > 65535)
    fail("attn_prefill: n_kv_heads ", kv.n_kv_heads, " exceeds the grid limit 65535");
  if (kv.block_size < 1 || kv.max_blocks_per_seq < 1)
    fail("attn_prefill: block_size ", kv.block_size, " and max_blocks_per_seq ",
         kv.max_blocks_per_seq, " must be >= 1");
  const int64_t capacity = int64_t{kv.block_size} * kv.max_blocks_per_seq;
  if (max_kv_len < 1 || max_kv_len > capacity || max_kv_len > (1 << 30))
    fail("attn_prefill: max_kv_len ", max_kv_len, " must be in 1 .. ",
         capacity < (1 << 30) ? capacity : (1 << 30),
         " (block_size · max_blocks_per_seq, and < 2^30)");
  if (int64_t{n_queries} * n_heads > INT_MAX)
    fail("attn_prefill: ", n_queries, " queries × ", n_heads, " heads exceed 2^31 rows");
  if (!std::isfinite(scale)) fail("attn_prefill: scale ", scale, " is not finite");
  if (n_queries == 0) return;
  if (q == nullptr || out == nullptr || query_seq == nullptr || query_kv_len == nullptr ||
      kv.k == nullptr || kv.v == nullptr || kv.block_tables == nullptr)
    fail("attn_prefill: null q, out, query_seq, query_kv_len, kv pool or block table");
  for (const void* p : {static_cast<const void*>(q), static_cast<const void*>(out),
                        static_cast<const void*>(kv.k), static_cast<const void*>(kv.v)}) {
    if (reinterpret_cast<uintptr_t>(p) % VEC_BYTES != 0)
      fail("attn_prefill: q, out and the KV pools must be 16-byte aligned");
  }
  if (reinterpret_cast<uintptr_t>(error_flag) % alignof(int32_t) != 0)
    fail("attn_prefill: error_flag must be 4-byte aligned");
  const int group = n_heads / kv.n_kv_heads;
  if (kv.head_dim == 128) {
    detail::attn_prefill_dispatch_group<128>(group, q, kv, query_seq, query_kv_len, n_queries,
                                             n_heads, max_kv_len, scale, out, stream, error_flag);
  } else {
    detail::attn_prefill_dispatch_group<64>(group, q, kv, query_seq, query_kv_len, n_queries,
                                            n_heads, max_kv_len, scale, out, stream, error_flag);
  }
}

}  // namespace hllm::cuda
