// A CPU emulation of the CUDA FlashAttention-2 prefill kernel's exact blockwise algorithm
// (kernels/hllm/cuda/attn_prefill.cuh), lane by lane, over the schedule and fragment maps of
// layout/attn_prefill_tiles.hpp, so the schedule, the fragment placement and the online-softmax
// numerics are tested where no GPU is at hand (tests/attn_prefill_tiles_test.cpp compares it with
// cpu::attention_paged).
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
#include "hllm/layout/attn_prefill_tiles.hpp"
#include "hllm/layout/paged_kv.hpp"

namespace hllm {

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
