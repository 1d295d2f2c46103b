// SPDX-License-Identifier: Apache-2.0
// Portable weight-only GEMM: plain C++ the compiler vectorizes for whatever ISA the
// translation unit targets (SSE2 on x86-64 by default, NEON on arm64).
#pragma once

#include <cstdint>

#include "qlr/core/types.hpp"
#include "qlr/core/view.hpp"
#include "qlr/kernels/detail/epilogue.hpp"
#include "qlr/kernels/detail/tiling.hpp"
#include "qlr/kernels/packed.hpp"

namespace qlr::kernels::portable {
namespace detail_wq {

/// This path's tiles, for the shared driver (kernels/detail/tiling.hpp).
struct Tiles {
  /// Panel `p` × tokens [m, m + Tokens) over all of K. Each block's 32 weights are decoded
  /// once into floats, then dotted with every token in 32 fixed lanes.
  template <int Bits, int Tokens>
  static void tile(const PackedView& w, ConstMatrixView x, MatrixView y, const Epilogue& e,
                   index_t p, index_t m) noexcept {
    constexpr index_t lanes = block_codes;
    float sums[Tokens][wq_panel_rows];
    for (index_t r = 0; r < wq_panel_rows; ++r) {
      const index_t n = p * wq_panel_rows + r;
      float acc[Tokens][lanes] = {};
      for (index_t l = 0, b = 0; l < w.groups; ++l) {
        const float s = w.scales[w.params(n, l)];
        const float z = w.zeros[w.params(n, l)];
        const index_t group_end =
            b + w.blocks_per_group < w.blocks ? b + w.blocks_per_group : w.blocks;
        for (; b < group_end; ++b) {
          const std::uint8_t* chunk = w.chunk(p, b / 4, r);
          const index_t j = b % 4;
          float w_hat[lanes];
          for (index_t i = 0; i < lanes; ++i) {
            const unsigned u = Bits == 8
                                   ? chunk[j * lanes + i]
                                   : ((chunk[2 * i] | (chunk[2 * i + 1] << 8)) >> (4 * j)) & 0x0fu;
            w_hat[i] = s * (static_cast<float>(u) - z);
          }
          const index_t valid = w.cols - b * lanes < lanes ? w.cols - b * lanes : lanes;
          for (int t = 0; t < Tokens; ++t) {
            const float* xt = x.row(m + t) + b * lanes;
            if (valid == lanes) {
              for (index_t i = 0; i < lanes; ++i) acc[t][i] += w_hat[i] * xt[i];
            } else {
              for (index_t i = 0; i < valid; ++i) acc[t][i] += w_hat[i] * xt[i];
            }
          }
        }
      }
      for (int t = 0; t < Tokens; ++t) {
        float sum = 0.0f;
        for (index_t i = 0; i < lanes; ++i) sum += acc[t][i];
        sums[t][r] = sum;
      }
    }
    const kernels::detail::TileRows tile = kernels::detail::tile_rows(w.rows, p, wq_panel_rows);
    for (int t = 0; t < Tokens; ++t) {
      float side[wq_panel_rows] = {};
      kernels::detail::add_low_rank<wq_panel_rows>(e, m + t, tile.n0, tile.count, side);
      kernels::detail::store_wq_panel(sums[t], side, w, y, e, p, m + t);
    }
  }
};

}  // namespace detail_wq

/// y[m, n] for all m and the rows n of panels [panel_begin, panel_end).
inline void gemm_wq_f32(const PackedView& w, ConstMatrixView x, MatrixView y, const Epilogue& e,
                        index_t panel_begin, index_t panel_end) noexcept {
  kernels::detail::gemm_wq_with_tiles<detail_wq::Tiles, 8>(w, x, y, e, panel_begin, panel_end);
}

}  // namespace qlr::kernels::portable
