// The tile schedule and tensor-core fragment maps of the CUDA FlashAttention-2 prefill kernel
// (kernels/hllm/cuda/attn_prefill.cuh), as HLLM_HOST_DEVICE helpers the kernel calls, plus a CPU
// emulation of that kernel's exact blockwise algorithm, lane by lane, so the schedule, the fragment
// placement and the online-softmax numerics are tested where no GPU is at hand
// (tests/attn_prefill_tiles_test.cpp compares it with cpu::attention_paged).
//
// 1. Rows. A prefill chunk of n_queries queries of ONE sequence, query t at position start + t,
//    sees positions 0 .. kv_len(t) - 1 with kv_len(t) = min(start + t + 1, max_kv_len). Under GQA
//    the GROUP = n_heads / n_kv_heads query heads of one KV head read the same K/V rows, so a
//    block works on one KV head and treats (query, head in group) pairs as its rows:
//
//      row r (0 .. n_queries·GROUP - 1) = query r / GROUP, head kv_head·GROUP + r % GROUP
//
//    (q is [n_queries, n_heads, head_dim], so the GROUP rows of a query are contiguous in memory).
//    Block b takes rows 64b .. 64b + 63 (BLOCK_M), its warp w rows 64b + 16w .. + 15 (one mma
//    row tile); every K/V tile the block loads serves 64 rows, i.e. 64 / GROUP queries × GROUP
//    heads, so K/V bytes are read once per GROUP heads.
//
// 2. Causal schedule. K/V tile j holds positions 64j .. 64j + 63 (BLOCK_N). For rows whose
//    queries run first .. last:
//      tiles visited     j = 0 .. ceil(kv_len(last) / 64) - 1       (tiles past the diagonal
//      skipped) masked tiles      (j + 1)·64 > kv_len(first): some position of the tile lies past
//      the
//                        first row's horizon, so per-element masking (pos >= kv_len(row) -> -inf)
//                        is applied; every other visited tile is fully visible and unmasked.
//    The block loads the tiles of its last query; a warp skips (warp-uniformly) the tiles past
//    its own last query. Positions >= kv_len(block's last query) are zero-filled in shared memory
//    (never read from the pool: the block table there may name no block).
//
// 3. Fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16", .bf16; lane = 4g + t, every 32-bit
//    register holds 2 bf16, the lower-indexed element in the low half):
//      A 16×16   reg r, elem e: row g + 8·(r % 2), col 2t + e + 8·(r / 2)
//      B 16×8    reg r, elem e: k = 2t + e + 8·r, column n = g
//      C 16×8    elem i:        row g + 8·(i / 2), col 2t + i % 2
//    ldmatrix.sync.aligned.m8n8.x4.b16 (PTX ISA, "ldmatrix"): lanes 8i .. 8i + 7 give the row
//    addresses of 8×8 matrix i; lane l receives in reg i the elements (row l/4, cols 2(l%4), +1)
//    of matrix i, or with .trans (rows 2(l%4), +1, col l/4).
//      Q (A of S = Q·Kᵀ):  lane l addresses row (l%8) + 8·((l/8)%2), col 8·(l/16) of the 16×16
//                          block -> regs a0..a3 directly.
//      K (B of S):         smem rows are positions: lane l addresses position (l%8) + 8·(l/16),
//                          dim 8·((l/8)%2) of a 16-position × 16-dim block -> regs
//                          b[n-tile 0][0], b[0][1], b[n-tile 1][0], b[1][1] (B(k, n) = K[n][k]).
//      V (B of O += P·V):  .trans, lane l addresses position (l%8) + 8·((l/8)%2), dim 8·(l/16)
//                          -> b[dim tile 0][0], b[0][1], b[dim tile 1][0], b[1][1].
//      P (A of P·V):       the S accumulators of n-tiles 2kk, 2kk + 1 are the A fragment of
//                          k-step kk: reg r = C elems 2(r%2), 2(r%2)+1 of n-tile 2kk + r/2,
//                          rounded to bf16 (no shuffles: the C and A layouts line up).
//
// 4. Online softmax, per row (a lane holds rows g and g + 8, a quad of 4 lanes shares a row):
//    s = (q·k)·scale·log2 e, m_new = max(m, max over the tile), m_ref = m_new (0 if -inf),
//    α = exp2(m - m_ref), l = α·l + Σ p, O = α·O + P_bf16·V with p = exp2(s - m_ref) in fp32 (l
//    sums the fp32 p, each lane its own columns; the quad sums them at the end), out = O / l.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "hllm/core/dtype.hpp"
#include "hllm/core/error.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/cpu/attention_paged.hpp"
#include "hllm/engine/paged_kv.hpp"

namespace hllm {

inline constexpr int ATTN_PREFILL_BLOCK_M = 64;  // rows of a block: 4 warps × one 16-row mma tile
inline constexpr int ATTN_PREFILL_BLOCK_N = 64;  // positions of a K/V tile
inline constexpr int ATTN_PREFILL_WARPS = 4;
inline constexpr int ATTN_PREFILL_WARP_M = 16;  // rows of a warp = M of mma.m16n8k16
// bf16 of padding per shared-memory row: a row stride of head_dim + 8 (272 B for 128) puts the 8
// rows one ldmatrix phase reads in 8 different 16-byte bank groups, so it is conflict-free.
inline constexpr int ATTN_PREFILL_SMEM_PAD = 8;
inline constexpr int ATTN_PREFILL_CHUNK = 8;  // bf16 per 16-byte cp.async

static_assert(ATTN_PREFILL_BLOCK_M == ATTN_PREFILL_WARPS * ATTN_PREFILL_WARP_M);

HLLM_HOST_DEVICE constexpr int attn_prefill_smem_stride(int head_dim) {
  return head_dim + ATTN_PREFILL_SMEM_PAD;
}
// Dynamic shared memory of a block: Q tile + double-buffered K and V tiles, bf16.
HLLM_HOST_DEVICE constexpr int attn_prefill_smem_bytes(int head_dim) {
  return (ATTN_PREFILL_BLOCK_M + 4 * ATTN_PREFILL_BLOCK_N) * attn_prefill_smem_stride(head_dim) * 2;
}

// ---- Rows and the causal schedule ---------------------------------------------------------------

HLLM_HOST_DEVICE constexpr int64_t attn_prefill_row_tiles(int64_t n_queries, int group) {
  return (n_queries * group + ATTN_PREFILL_BLOCK_M - 1) / ATTN_PREFILL_BLOCK_M;
}
// Query of row r, clamped to the last query for the padding rows of the last block (they compute
// like the last query and are never stored).
HLLM_HOST_DEVICE constexpr int32_t attn_prefill_row_query(int64_t row, int group,
                                                          int32_t n_queries) {
  return static_cast<int32_t>(std::min<int64_t>(row / group, n_queries - 1));
}
HLLM_HOST_DEVICE constexpr int32_t attn_prefill_kv_len(int32_t start, int32_t query,
                                                       int32_t max_kv_len) {
  return std::min(start + query + 1, max_kv_len);
}
// K/V tiles visited by rows whose last query sees kv_len_last positions.
HLLM_HOST_DEVICE constexpr int32_t attn_prefill_kv_tiles(int32_t kv_len_last) {
  return (kv_len_last + ATTN_PREFILL_BLOCK_N - 1) / ATTN_PREFILL_BLOCK_N;
}
// Whether tile j needs per-element masking for rows whose first query sees kv_len_first positions.
HLLM_HOST_DEVICE constexpr bool attn_prefill_tile_masked(int32_t tile, int32_t kv_len_first) {
  return (tile + 1) * ATTN_PREFILL_BLOCK_N > kv_len_first;
}
// The 16-byte chunk c (0 .. rows·head_dim/8 - 1) of a tile copy: its row and first column. Thread
// i of the block copies chunks i, i + 128, ...: 16 consecutive threads cover one 256-byte row.
HLLM_HOST_DEVICE constexpr int attn_prefill_chunk_row(int c, int head_dim) {
  return c / (head_dim / ATTN_PREFILL_CHUNK);
}
HLLM_HOST_DEVICE constexpr int attn_prefill_chunk_col(int c, int head_dim) {
  return c % (head_dim / ATTN_PREFILL_CHUNK) * ATTN_PREFILL_CHUNK;
}

// ---- mma.m16n8k16 fragments (lane = 4g + t) -----------------------------------------------------

HLLM_HOST_DEVICE constexpr int attn_mma_a_row(int lane, int reg) {
  return lane / 4 + 8 * (reg % 2);
}
HLLM_HOST_DEVICE constexpr int attn_mma_a_col(int lane, int reg, int e) {
  return 2 * (lane % 4) + e + 8 * (reg / 2);
}
HLLM_HOST_DEVICE constexpr int attn_mma_b_k(int lane, int reg, int e) {
  return 2 * (lane % 4) + e + 8 * reg;
}
HLLM_HOST_DEVICE constexpr int attn_mma_b_n(int lane) { return lane / 4; }
HLLM_HOST_DEVICE constexpr int attn_mma_c_row(int lane, int i) { return lane / 4 + 8 * (i / 2); }
HLLM_HOST_DEVICE constexpr int attn_mma_c_col(int lane, int i) { return 2 * (lane % 4) + i % 2; }

// P as an A fragment: reg r of k-step kk is C elements (attn_p_c_elem(r, 0), (r, 1)) of S n-tile
// 2kk + attn_p_ntile_offset(r).
HLLM_HOST_DEVICE constexpr int attn_p_ntile_offset(int reg) { return reg / 2; }
HLLM_HOST_DEVICE constexpr int attn_p_c_elem(int reg, int e) { return 2 * (reg % 2) + e; }

// ---- ldmatrix .x4 source addresses (row, col within the 16×16 block a lane addresses) ----------

// Q (A operand) and V (.trans, B operand): matrices (rows 0-7, cols 0-7), (8-15, 0-7), (0-7, 8-15),
// (8-15, 8-15).
HLLM_HOST_DEVICE constexpr int attn_ldm_a_row(int lane) { return lane % 8 + 8 * ((lane / 8) % 2); }
HLLM_HOST_DEVICE constexpr int attn_ldm_a_col(int lane) { return 8 * (lane / 16); }
// K (B operand, rows = positions = n): matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7),
// (n 8-15, k 8-15).
HLLM_HOST_DEVICE constexpr int attn_ldm_k_row(int lane) { return lane % 8 + 8 * (lane / 16); }
HLLM_HOST_DEVICE constexpr int attn_ldm_k_col(int lane) { return 8 * ((lane / 8) % 2); }
// V (.trans): the same addresses as Q.
HLLM_HOST_DEVICE constexpr int attn_ldm_v_row(int lane) { return attn_ldm_a_row(lane); }
HLLM_HOST_DEVICE constexpr int attn_ldm_v_col(int lane) { return attn_ldm_a_col(lane); }

// ---- CPU emulation of the kernel ---------------------------------------------------------------

namespace cpu {

namespace prefill_detail {

inline constexpr int LANES = 32;

inline uint32_t pack_bf16x2(bf16 lo, bf16 hi) {
  return uint32_t{lo.bits} | uint32_t{hi.bits} << 16;
}
inline float bf16x2_elem(uint32_t pair, int e) {
  return bf16_to_f32(bf16{static_cast<uint16_t>(e == 0 ? pair & 0xFFFFu : pair >> 16)});
}

// ldmatrix.x4 (.trans) as the ISA defines it: addr[l] = (row, col) of the 8 contiguous bf16 lane
// l points at in `smem` (row stride `stride`); out[l][i] = lane l's register i.
inline void ldmatrix_x4(const bf16* smem, int stride, const int (&row)[LANES],
                        const int (&col)[LANES], bool trans, uint32_t (&out)[LANES][4]) {
  for (int l = 0; l < LANES; ++l) {
    for (int i = 0; i < 4; ++i) {
      bf16 e[2];
      for (int k = 0; k < 2; ++k) {
        // Matrix i's row rr is the 8 elements lane 8i + rr points at.
        const int rr = trans ? 2 * (l % 4) + k : l / 4;
        const int cc = trans ? l / 4 : 2 * (l % 4) + k;
        const int src = 8 * i + rr;
        e[k] = smem[row[src] * stride + col[src] + cc];
      }
      out[l][i] = pack_bf16x2(e[0], e[1]);
    }
  }
}

// d += A·B for one mma.m16n8k16 (fp32 accumulation), from the lanes' fragments.
inline void mma_m16n8k16(float (&d)[LANES][4], const uint32_t (&a)[LANES][4],
                         const uint32_t (&b)[LANES][2]) {
  float am[16][16], bm[16][8];
  for (int l = 0; l < LANES; ++l) {
    for (int r = 0; r < 4; ++r)
      for (int e = 0; e < 2; ++e)
        am[attn_mma_a_row(l, r)][attn_mma_a_col(l, r, e)] = bf16x2_elem(a[l][r], e);
    for (int r = 0; r < 2; ++r)
      for (int e = 0; e < 2; ++e)
        bm[attn_mma_b_k(l, r, e)][attn_mma_b_n(l)] = bf16x2_elem(b[l][r], e);
  }
  for (int l = 0; l < LANES; ++l) {
    for (int i = 0; i < 4; ++i) {
      const int r = attn_mma_c_row(l, i), c = attn_mma_c_col(l, i);
      float acc = d[l][i];
      for (int k = 0; k < 16; ++k) acc += am[r][k] * bm[k][c];
      d[l][i] = acc;
    }
  }
}

}  // namespace prefill_detail

// The CUDA kernel's algorithm on the CPU, block by block, warp by warp, lane by lane: shared-memory
// images filled by the kernel's chunk mapping, fragments by emulated ldmatrix, S and O by emulated
// mma, the online softmax per lane with quad reductions, P rounded to bf16. Arguments as
// launch_attn_prefill (host pointers; start_pos given directly = query_kv_len[0] - 1).
inline void attn_prefill_emulate(const bf16* q, const PagedKvView& kv, int32_t seq, int32_t start,
                                 int32_t n_queries, int n_heads, int32_t max_kv_len, float scale,
                                 bf16* out, ThreadPool& pool) {
  using namespace prefill_detail;
  const int head_dim = kv.head_dim, n_kv_heads = kv.n_kv_heads;
  if (n_heads % n_kv_heads != 0 || head_dim % 16 != 0 || n_queries < 1 || max_kv_len < 1)
    fail("attn_prefill_emulate: bad shape");
  const int group = n_heads / n_kv_heads;
  const int stride = attn_prefill_smem_stride(head_dim);
  const int ksteps = head_dim / 16, d_tiles = head_dim / 8;
  constexpr int N_TILES = ATTN_PREFILL_BLOCK_N / 8;
  const float q_scale = scale * ATTN_LOG2E;
  const int32_t* table = kv.block_tables + static_cast<int64_t>(seq) * kv.max_blocks_per_seq;
  const auto* k_pool = static_cast<const bf16*>(kv.k);
  const auto* v_pool = static_cast<const bf16*>(kv.v);
  const int64_t row_tiles = attn_prefill_row_tiles(n_queries, group);
  const int64_t n_rows = int64_t{n_queries} * group;

  pool.parallel_for(row_tiles * n_kv_heads, [&](int64_t task) {
    const int64_t row0 = task / n_kv_heads * ATTN_PREFILL_BLOCK_M;
    const int kv_head = static_cast<int>(task % n_kv_heads);
    std::vector<bf16> sq(size_t(ATTN_PREFILL_BLOCK_M) * stride), sk(size_t(64) * stride),
        sv(size_t(64) * stride);
    // Q tile: chunk mapping, zeros for padding rows.
    for (int c = 0; c < ATTN_PREFILL_BLOCK_M * head_dim / ATTN_PREFILL_CHUNK; ++c) {
      const int r = attn_prefill_chunk_row(c, head_dim), col = attn_prefill_chunk_col(c, head_dim);
      const int64_t row = row0 + r;
      for (int e = 0; e < ATTN_PREFILL_CHUNK; ++e)
        sq[r * stride + col + e] =
            row < n_rows
                ? q[((row / group) * n_heads + int64_t{kv_head} * group + row % group) * head_dim +
                    col + e]
                : bf16{0};
    }
    const int32_t block_last =
        attn_prefill_row_query(row0 + ATTN_PREFILL_BLOCK_M - 1, group, n_queries);
    const int32_t block_kv_len = attn_prefill_kv_len(start, block_last, max_kv_len);
    const int32_t n_tiles = attn_prefill_kv_tiles(block_kv_len);

    struct Warp {
      std::vector<std::array<std::array<uint32_t, 4>, LANES>> qa;  // [kstep][lane][reg]
      std::vector<float> o;                                        // [d_tile][lane][4]
      float m[LANES][2], l[LANES][2];                              // per lane: rows g, g + 8
      int32_t lim[LANES][2];
      int32_t kv_first, kv_last;
    };
    std::vector<Warp> warps(ATTN_PREFILL_WARPS);
    for (int w = 0; w < ATTN_PREFILL_WARPS; ++w) {
      Warp& wp = warps[w];
      const int64_t wrow0 = row0 + w * ATTN_PREFILL_WARP_M;
      wp.kv_first =
          attn_prefill_kv_len(start, attn_prefill_row_query(wrow0, group, n_queries), max_kv_len);
      wp.kv_last = attn_prefill_kv_len(
          start, attn_prefill_row_query(wrow0 + ATTN_PREFILL_WARP_M - 1, group, n_queries),
          max_kv_len);
      wp.qa.resize(ksteps);
      for (int ks = 0; ks < ksteps; ++ks) {
        int row[LANES], col[LANES];
        for (int l = 0; l < LANES; ++l) {
          row[l] = w * ATTN_PREFILL_WARP_M + attn_ldm_a_row(l);
          col[l] = ks * 16 + attn_ldm_a_col(l);
        }
        uint32_t regs[LANES][4];
        ldmatrix_x4(sq.data(), stride, row, col, false, regs);
        for (int l = 0; l < LANES; ++l)
          for (int r = 0; r < 4; ++r) wp.qa[ks][l][r] = regs[l][r];
      }
      wp.o.assign(size_t(d_tiles) * LANES * 4, 0.0f);
      for (int l = 0; l < LANES; ++l)
        for (int h = 0; h < 2; ++h) {
          wp.m[l][h] = ATTN_NEG_INF;
          wp.l[l][h] = 0.0f;
          wp.lim[l][h] = attn_prefill_kv_len(
              start, attn_prefill_row_query(wrow0 + attn_mma_c_row(l, 2 * h), group, n_queries),
              max_kv_len);
        }
    }

    for (int32_t j = 0; j < n_tiles; ++j) {
      // K/V tile j: chunk mapping; positions >= block_kv_len zero-filled.
      for (int c = 0; c < ATTN_PREFILL_BLOCK_N * head_dim / ATTN_PREFILL_CHUNK; ++c) {
        const int r = attn_prefill_chunk_row(c, head_dim),
                  col = attn_prefill_chunk_col(c, head_dim);
        const int32_t pos = j * ATTN_PREFILL_BLOCK_N + r;
        if (pos < block_kv_len) {
          const int64_t off =
              paged_kv_offset(kv, paged_kv_row_in_table(table, kv.block_size, pos), kv_head) + col;
          std::memcpy(&sk[r * stride + col], k_pool + off, 16);
          std::memcpy(&sv[r * stride + col], v_pool + off, 16);
        } else {
          std::fill_n(&sk[r * stride + col], ATTN_PREFILL_CHUNK, bf16{0});
          std::fill_n(&sv[r * stride + col], ATTN_PREFILL_CHUNK, bf16{0});
        }
      }
      for (Warp& wp : warps) {
        if (j >= attn_prefill_kv_tiles(wp.kv_last)) continue;  // past this warp's diagonal
        float s[N_TILES][LANES][4] = {};
        for (int ks = 0; ks < ksteps; ++ks) {
          uint32_t a[LANES][4];
          for (int l = 0; l < LANES; ++l)
            for (int r = 0; r < 4; ++r) a[l][r] = wp.qa[ks][l][r];
          for (int np = 0; np < N_TILES / 2; ++np) {
            int row[LANES], col[LANES];
            for (int l = 0; l < LANES; ++l) {
              row[l] = np * 16 + attn_ldm_k_row(l);
              col[l] = ks * 16 + attn_ldm_k_col(l);
            }
            uint32_t regs[LANES][4], b0[LANES][2], b1[LANES][2];
            ldmatrix_x4(sk.data(), stride, row, col, false, regs);
            for (int l = 0; l < LANES; ++l) {
              b0[l][0] = regs[l][0], b0[l][1] = regs[l][1];
              b1[l][0] = regs[l][2], b1[l][1] = regs[l][3];
            }
            mma_m16n8k16(s[2 * np], a, b0);
            mma_m16n8k16(s[2 * np + 1], a, b1);
          }
        }
        // Scale, mask (diagonal tiles only), each lane's row max, then the quad's (shfl_xor 1, 2).
        const bool masked = attn_prefill_tile_masked(j, wp.kv_first);
        float mx[LANES][2];
        for (int l = 0; l < LANES; ++l) {
          mx[l][0] = mx[l][1] = ATTN_NEG_INF;
          for (int nt = 0; nt < N_TILES; ++nt)
            for (int i = 0; i < 4; ++i) {
              float& x = s[nt][l][i];
              x *= q_scale;
              const int32_t pos = j * ATTN_PREFILL_BLOCK_N + nt * 8 + attn_mma_c_col(l, i);
              if (masked && pos >= wp.lim[l][i / 2]) x = ATTN_NEG_INF;
              mx[l][i / 2] = std::max(mx[l][i / 2], x);
            }
        }
        uint32_t pa[N_TILES / 2][LANES][4];
        for (int l = 0; l < LANES; ++l) {
          for (int h = 0; h < 2; ++h) {
            float quad = ATTN_NEG_INF;
            for (int x = 0; x < 4; ++x) quad = std::max(quad, mx[(l & ~3) + x][h]);
            const float m_new = std::max(wp.m[l][h], quad);
            const float m_ref = m_new == ATTN_NEG_INF ? 0.0f : m_new;
            const float alpha = std::exp2(wp.m[l][h] - m_ref);
            wp.m[l][h] = m_new;
            wp.l[l][h] *= alpha;
            for (int dt = 0; dt < d_tiles; ++dt)
              for (int e = 0; e < 2; ++e) wp.o[(size_t(dt) * LANES + l) * 4 + 2 * h + e] *= alpha;
            for (int nt = 0; nt < N_TILES; ++nt)
              for (int e = 0; e < 2; ++e) {
                float& x = s[nt][l][2 * h + e];
                x = std::exp2(x - m_ref);
                wp.l[l][h] += x;
              }
          }
          for (int kk = 0; kk < N_TILES / 2; ++kk)
            for (int r = 0; r < 4; ++r) {
              const auto& c = s[2 * kk + attn_p_ntile_offset(r)][l];
              pa[kk][l][r] = pack_bf16x2(f32_to_bf16(c[attn_p_c_elem(r, 0)]),
                                         f32_to_bf16(c[attn_p_c_elem(r, 1)]));
            }
        }
        // O += P·V: V fragments by ldmatrix.trans, two dim tiles per load.
        for (int kk = 0; kk < N_TILES / 2; ++kk) {
          for (int dp = 0; dp < d_tiles / 2; ++dp) {
            int row[LANES], col[LANES];
            for (int l = 0; l < LANES; ++l) {
              row[l] = kk * 16 + attn_ldm_v_row(l);
              col[l] = dp * 16 + attn_ldm_v_col(l);
            }
            uint32_t regs[LANES][4], b0[LANES][2], b1[LANES][2];
            ldmatrix_x4(sv.data(), stride, row, col, true, regs);
            for (int l = 0; l < LANES; ++l) {
              b0[l][0] = regs[l][0], b0[l][1] = regs[l][1];
              b1[l][0] = regs[l][2], b1[l][1] = regs[l][3];
            }
            float acc0[LANES][4], acc1[LANES][4];
            for (int l = 0; l < LANES; ++l)
              for (int i = 0; i < 4; ++i) {
                acc0[l][i] = wp.o[(size_t(2 * dp) * LANES + l) * 4 + i];
                acc1[l][i] = wp.o[(size_t(2 * dp + 1) * LANES + l) * 4 + i];
              }
            mma_m16n8k16(acc0, pa[kk], b0);
            mma_m16n8k16(acc1, pa[kk], b1);
            for (int l = 0; l < LANES; ++l)
              for (int i = 0; i < 4; ++i) {
                wp.o[(size_t(2 * dp) * LANES + l) * 4 + i] = acc0[l][i];
                wp.o[(size_t(2 * dp + 1) * LANES + l) * 4 + i] = acc1[l][i];
              }
          }
        }
      }
    }

    // out = O / l, l summed over the quad; rows past n_queries·group are padding.
    for (int w = 0; w < ATTN_PREFILL_WARPS; ++w) {
      const Warp& wp = warps[w];
      for (int l = 0; l < LANES; ++l)
        for (int h = 0; h < 2; ++h) {
          const int64_t row = row0 + w * ATTN_PREFILL_WARP_M + attn_mma_c_row(l, 2 * h);
          if (row >= n_rows) continue;
          const int b = l & ~3;  // the quad, summed as shfl_xor 1 then 2 does
          const float sum = (wp.l[b][h] + wp.l[b + 1][h]) + (wp.l[b + 2][h] + wp.l[b + 3][h]);
          const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
          bf16* o =
              out + ((row / group) * n_heads + int64_t{kv_head} * group + row % group) * head_dim;
          for (int dt = 0; dt < d_tiles; ++dt)
            for (int e = 0; e < 2; ++e)
              o[dt * 8 + attn_mma_c_col(l, 2 * h + e)] =
                  f32_to_bf16(wp.o[(size_t(dt) * LANES + l) * 4 + 2 * h + e] * inv);
        }
    }
  });
}

}  // namespace cpu
}  // namespace hllm
