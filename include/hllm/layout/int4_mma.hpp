// How the CUDA int4 GEMV (kernels/hllm/cuda/gemv_q4.cuh) feeds hllm's INT4 tiles
// (layout/int4_tiles.hpp) to the bf16 tensor-core instruction
// mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32, as host/device functions so the CPU test
// (tests/int4_mma_layout_test.cpp) emulates exactly what the kernel does.
//
// 1. The mma fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16", .bf16). Lane = 4·g + t
//    (g = groupID = lane / 4, t = threadID_in_group = lane % 4); every register holds 2 bf16,
//    the lower-indexed element in the low 16 bits:
//      A (16 × 16, row-major)   reg 0: row g,     k 2t, 2t+1      reg 2: row g,     k 2t+8, 2t+9
//                               reg 1: row g + 8, k 2t, 2t+1      reg 3: row g + 8, k 2t+8, 2t+9
//      B (16 × 8, column n)     reg 0: column g,  k 2t, 2t+1      reg 1: column g,  k 2t+8, 2t+9
//      C (16 × 8, fp32)         c0, c1: row g, columns 2t, 2t+1;  c2, c3: row g + 8, same columns
//
// 2. A sum over k does not depend on the order of k, so the kernel may put any physical input in
//    any k slot as long as A and B use the same placement and it depends only on (t, k-step, slot)
//    — never on the row or the column. The placement used: lane t owns 16-byte code chunk t of the
//    tile (inputs 32t .. 32t + 31) in all 8 k-steps of the tile. Its two A rows g and g + 8 are
//
//      A row m (0..15) = tile row m % 4 of strip s0 + m / 4      (output o = 4·s0 + m)
//
//    so the lane loads exactly chunk t of its two rows (4 lanes = 64 contiguous bytes).
//
// 3. A chunk is 4 little-endian 32-bit words; word j holds bytes 4j .. 4j+3, and byte b holds input
//    b (low nibble) and input b + 16 (high nibble). One LOP3 turns two nibbles into two bf16:
//      ((word >> shift) & 0x000F000F) | 0x43004300  =  bf16x2 (128 + c_lo, 128 + c_hi)
//    (bf16 0x4300 = 128.0, whose ulp is 1: the low mantissa bits are the code), and one bf16x2
//    subtraction of (128 + zero) gives the exact integers (code − zero) in [-16, 15].
//    The 16 decoded registers of a row, q = 4j + shift / 4:
//      shift 0 -> inputs (4j, 4j+2)        shift 8  -> inputs (4j+1, 4j+3)
//      shift 4 -> inputs (4j+16, 4j+18)    shift 12 -> inputs (4j+17, 4j+19)        (of the chunk)
//    and register q goes to k-step q / 2, slot pair q % 2 (0: slots 2t, 2t+1; 1: slots 2t+8, 2t+9).
//
// 4. B takes the same two inputs from the lane's 32 activations of the chunk, held as 16 words
//    X[i] = (x[2i], x[2i+1]): (x[4j], x[4j+2]) = byte_perm(X[2j], X[2j+1], 0x5410) and
//    (x[4j+1], x[4j+3]) = byte_perm(X[2j], X[2j+1], 0x7632); the +16 inputs use X[2j+8], X[2j+9].
#pragma once

#include <cstdint>

#include "hllm/core/dtype.hpp"
#include "hllm/layout/int4_tiles.hpp"

namespace hllm {

inline constexpr int INT4_MMA_ROWS = 16;          // A rows = 4 strips of 4 tile rows
inline constexpr int INT4_MMA_STRIPS = 4;         // strips per mma row group
inline constexpr int INT4_MMA_K = 16;             // inputs per mma k-step
inline constexpr int INT4_MMA_COLS = 8;           // B columns = batch entries
inline constexpr int INT4_MMA_KSTEPS = 8;         // k-steps per 128-input tile
inline constexpr int INT4_MMA_REGS_PER_ROW = 16;  // decoded bf16x2 registers per row and tile
inline constexpr uint32_t INT4_MMA_NIBBLE_MASK = 0x000F000Fu;
inline constexpr uint32_t INT4_MMA_BIAS = 0x43004300u;  // bf16x2 (128.0, 128.0)

static_assert(INT4_MMA_KSTEPS * INT4_MMA_K == INT4_TILE_K);
static_assert(INT4_MMA_REGS_PER_ROW == 2 * INT4_MMA_KSTEPS);

// ---- The mma.m16n8k16 fragment layout (lane = 4g + t) -------------------------------------------

HLLM_HOST_DEVICE constexpr int int4_mma_group(int lane) { return lane / 4; }
HLLM_HOST_DEVICE constexpr int int4_mma_thread(int lane) { return lane % 4; }

// A register reg (0..3), element e (0, 1): row and k slot.
HLLM_HOST_DEVICE constexpr int int4_mma_a_row(int lane, int reg) {
  return lane / 4 + 8 * (reg % 2);
}
HLLM_HOST_DEVICE constexpr int int4_mma_a_k(int lane, int reg, int e) {
  return 2 * (lane % 4) + e + 8 * (reg / 2);
}
// B register reg (0, 1), element e: k slot; its column is int4_mma_group(lane).
HLLM_HOST_DEVICE constexpr int int4_mma_b_k(int lane, int reg, int e) {
  return 2 * (lane % 4) + e + 8 * reg;
}
// C element i (0..3): row and column.
HLLM_HOST_DEVICE constexpr int int4_mma_c_row(int lane, int i) { return lane / 4 + 8 * (i / 2); }
HLLM_HOST_DEVICE constexpr int int4_mma_c_col(int lane, int i) { return 2 * (lane % 4) + i % 2; }

// ---- Where A row m lives (rows g and g + 8 of a lane: the same tile row, strips 2 apart) --------

HLLM_HOST_DEVICE constexpr int int4_mma_row_strip(int m) { return m / INT4_TILE_ROWS; }
HLLM_HOST_DEVICE constexpr int int4_mma_row_in_tile(int m) { return m % INT4_TILE_ROWS; }

// ---- The decoded registers q (0..15) of one row's 16-byte code chunk ----------------------------

HLLM_HOST_DEVICE constexpr int int4_mma_word(int q) { return q / 4; }         // code word 0..3
HLLM_HOST_DEVICE constexpr int int4_mma_shift(int q) { return 4 * (q % 4); }  // 0, 4, 8, 12
HLLM_HOST_DEVICE constexpr int int4_mma_kstep(int q) { return q / 2; }
HLLM_HOST_DEVICE constexpr int int4_mma_slot_pair(int q) { return q % 2; }  // A reg / 2, B reg
// The register of k-step ks and slot pair h (the inverse of the two above).
HLLM_HOST_DEVICE constexpr int int4_mma_reg_of(int ks, int h) { return 2 * ks + h; }

// Input within the lane's 32-input chunk held by element e (0 low, 1 high) of register q.
HLLM_HOST_DEVICE constexpr int int4_mma_chunk_input(int q, int e) {
  const int shift = int4_mma_shift(q);
  return 4 * int4_mma_word(q) + (shift == 4 || shift == 12 ? 16 : 0) + (shift >= 8 ? 1 : 0) + 2 * e;
}
// Input within the 128-input tile (lane thread t owns chunk t).
HLLM_HOST_DEVICE constexpr int int4_mma_tile_input(int t, int q, int e) {
  return INT4_CHUNK_K * t + int4_mma_chunk_input(q, e);
}

// Two codes of a code word as bf16x2 (128 + c_lo, 128 + c_hi): one LOP3 (+ a shift).
HLLM_HOST_DEVICE constexpr uint32_t int4_mma_decode(uint32_t word, int shift) {
  return ((word >> shift) & INT4_MMA_NIBBLE_MASK) | INT4_MMA_BIAS;
}
// bf16x2 (128 + zero, 128 + zero) for an integer zero point 0..127 (int4 zeros are 0..16): the
// bf16 of 128 + z is 0x4300 + z, since the ulp at 128 is 1.
HLLM_HOST_DEVICE constexpr uint32_t int4_mma_zero_bias(uint32_t zero) {
  return INT4_MMA_BIAS + zero * 0x00010001u;
}

// Activations: the B register for decoded register q, from the lane's 16 activation words
// X[i] = (x[2i], x[2i+1]) of its chunk: byte_perm(X[lo], X[lo + 1], selector).
HLLM_HOST_DEVICE constexpr int int4_mma_x_word(int q) {
  const int shift = int4_mma_shift(q);
  return 2 * int4_mma_word(q) + (shift == 4 || shift == 12 ? 8 : 0);
}
HLLM_HOST_DEVICE constexpr uint32_t int4_mma_x_selector(int q) {
  return int4_mma_shift(q) >= 8 ? 0x7632u : 0x5410u;  // high halves : low halves
}

// __byte_perm(a, b, selector) for the selectors above, on the host (the CPU test's emulation).
constexpr uint32_t int4_mma_byte_perm_host(uint32_t a, uint32_t b, uint32_t selector) {
  const uint64_t bytes = (uint64_t{b} << 32) | a;
  uint32_t out = 0;
  for (int i = 0; i < 4; ++i) {
    const uint32_t pick = (selector >> (4 * i)) & 0x7u;
    out |= static_cast<uint32_t>((bytes >> (8 * pick)) & 0xFFu) << (8 * i);
  }
  return out;
}

}  // namespace hllm
