// Dense weights in row panels: how the CPU backend stores a bf16 / f16 / f32 matrix W[out, in]
// (Backend::upload_linear). The rows are cut into panels of DENSE_PANEL_ROWS = 16, and each panel is
// stored input-major, so the 16 rows' weights of one input k are one contiguous run (32 B in bf16):
//
//   panels[p][k][i] = W[16p + i, k]        p < ceil(out / 16); rows at or past `out` are zeros
//
//            k ──►                                   panel p in memory:
//   W  [r16p    .............]  ┐                    k=0: W[16p..16p+15, 0]
//      [r16p+1  .............]  │ panel p            k=1: W[16p..16p+15, 1]
//      [ ...                 ]  │                    ...
//      [r16p+15 .............]  ┘
//
// The CPU kernels (cpu/matmul_panels.hpp) put the 16 rows in vector lanes and broadcast x[t, k], so
// every output is one FMA chain over k = 0 .. in-1 whatever the number of tokens: a prompt gives
// the same bits prefilled whole, in chunks, or token by token, with no horizontal sums anywhere.
#pragma once

#include <algorithm>
#include <cstdint>

namespace hllm {

inline constexpr int64_t DENSE_PANEL_ROWS = 16;

inline constexpr int64_t dense_panel_count(int64_t out) {
  return (out + DENSE_PANEL_ROWS - 1) / DENSE_PANEL_ROWS;
}

// Elements of the panel storage of an [out, in] matrix (the last panel padded with zero rows).
inline constexpr int64_t dense_panels_elements(int64_t out, int64_t in) {
  return dense_panel_count(out) * DENSE_PANEL_ROWS * in;
}

// Where W[row, k] lives in the panel storage.
inline constexpr int64_t dense_panel_index(int64_t row, int64_t k, int64_t in) {
  return (row / DENSE_PANEL_ROWS) * DENSE_PANEL_ROWS * in + k * DENSE_PANEL_ROWS +
         row % DENSE_PANEL_ROWS;
}

// Packs panels [panel_begin, panel_end) of the row-major rows[out, in] into `panels` (the whole
// storage, dense_panels_elements(out, in) long). Disjoint panel ranges may be packed in parallel.
// Reads each row once, writing 16 interleaved output streams.
template <typename T>
void pack_dense_panels(const T* rows, int64_t out, int64_t in, int64_t panel_begin,
                       int64_t panel_end, T* panels) {
  for (int64_t p = panel_begin; p < panel_end; ++p) {
    T* panel = panels + p * DENSE_PANEL_ROWS * in;
    for (int64_t i = 0; i < DENSE_PANEL_ROWS; ++i) {
      const int64_t row = p * DENSE_PANEL_ROWS + i;
      if (row >= out) {
        for (int64_t k = 0; k < in; ++k) panel[k * DENSE_PANEL_ROWS + i] = T{};
        continue;
      }
      const T* src = rows + row * in;
      for (int64_t k = 0; k < in; ++k) panel[k * DENSE_PANEL_ROWS + i] = src[k];
    }
  }
}

// Row `row` of the panel storage as it was in the row-major matrix: dst[k] = convert(W[row, k]).
template <typename T, typename Out, typename Convert>
void unpack_dense_panel_row(const T* panels, int64_t in, int64_t row, Out* dst, Convert convert) {
  const T* src = panels + dense_panel_index(row, 0, in);
  for (int64_t k = 0; k < in; ++k) dst[k] = convert(src[k * DENSE_PANEL_ROWS]);
}

}  // namespace hllm
