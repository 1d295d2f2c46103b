// SPDX-License-Identifier: Apache-2.0
// Portable integer GEMM (W2/W3/W4/W8 × INT8 or INT4 codes; weight-only as INT8 limbs): plain C++
// over the 16 lanes of a panel, which the compiler vectorizes for whatever ISA the translation unit
// targets.
#pragma once

#include <cmath>
#include <cstdint>

#include "qlr/core/config.hpp"
#include "qlr/core/types.hpp"
#include "qlr/core/view.hpp"
#include "qlr/kernels/detail/tiling.hpp"
#include "qlr/kernels/packed_dot.hpp"

namespace qlr::kernels::portable {
namespace detail_dot {

/// This path's tiles, for the shared driver (kernels/detail/tiling.hpp).
struct Tiles {
  /// Panels [p, p + Panels) × tokens [m, m + Tokens) over all of K.
  template <int Bits, int Panels, int Tokens>
  static void dot_tile(const DotWeightView& w, const DotActivationView& a, MatrixView y,
                       const Epilogue& e, index_t p, index_t m) noexcept {
    constexpr index_t lanes = panel_rows;
    constexpr index_t cols = block_cols(Bits);
    for (int pp = 0; pp < Panels; ++pp) {
      const std::uint8_t* panel = w.panel(p + pp);
      float acc[Tokens][lanes] = {};
      for (index_t l = 0; l < w.groups; ++l) {
        std::int32_t dot[Tokens][lanes] = {};
        for (index_t i = w.group_begin(l); i < w.group_end(l); i += cols) {
          const std::uint8_t* block = panel + (i / cols) * block_bytes(Bits);
          for (index_t c = 0; c < cols; c += 4) {  // one quad: 4 columns of every row
            std::int32_t u[lanes][4];
            for (index_t r = 0; r < lanes; ++r)
              for (index_t j = 0; j < 4; ++j)
                u[r][j] = static_cast<std::int32_t>(block_code<Bits>(block, r, c + j));
            for (int t = 0; t < Tokens; ++t) {
              const std::int8_t* x = a.row(m + t) + i + c;
              for (index_t r = 0; r < lanes; ++r)
                dot[t][r] += u[r][0] * x[0] + u[r][1] * x[1] + u[r][2] * x[2] + u[r][3] * x[3];
            }
          }
        }
        const index_t at = w.params(p + pp, l);
        float scales[lanes];
        std::int32_t zeros[lanes];
        for (index_t r = 0; r < lanes; ++r) {
          scales[r] = w.scale(at + r);
          zeros[r] = w.zero(at + r);
        }
        for (int t = 0; t < Tokens; ++t) {
          const std::int32_t group_sum = a.group_sums[(m + t) * a.groups + l];
          const float c = a.group_scale(m + t, l);
          for (index_t r = 0; r < lanes; ++r) {
            const std::int32_t exact = dot[t][r] - zeros[r] * group_sum;
            acc[t][r] = std::fma(scales[r] * c, static_cast<float>(exact), acc[t][r]);
            if (w.zero_offsets != nullptr)
              acc[t][r] = std::fma(-(scales[r] * w.zero_offsets[at + r]) * c,
                                   static_cast<float>(group_sum), acc[t][r]);
          }
        }
      }
      finish_panel<Tokens>(acc, w, a, y, e, p + pp, m);
    }
  }

  /// The levels (NF4) sums of panel p × tokens [m, m + Tokens), in the reference's order.
  template <int Tokens>
  static void level_tile(const DotWeightView& w, const LevelActivationView& a, MatrixView y,
                         const Epilogue& e, index_t p, index_t m) noexcept {
    constexpr index_t lanes = panel_rows;
    const std::uint8_t* panel = w.panel(p);
    float acc[Tokens][lanes] = {};
    for (index_t l = 0; l < w.groups; ++l) {
      float part[Tokens][4][lanes] = {};
      for (index_t i = w.group_begin(l); i < w.group_end(l); i += 8) {
        const std::uint8_t* line = panel + 8 * i;  // 8 columns of 4-bit codes
        for (index_t c = 0; c < 8; ++c) {
          float level[lanes];
          for (index_t r = 0; r < lanes; ++r)
            level[r] = w.levels[(line[4 * r + c % 4] >> (4 * (c / 4))) & 15u];
          for (int t = 0; t < Tokens; ++t) {
            const float x = a.row(m + t)[i + c];
            for (index_t r = 0; r < lanes; ++r)
              part[t][c % 4][r] = std::fma(level[r], x, part[t][c % 4][r]);
          }
        }
      }
      const index_t at = w.params(p, l);
      for (int t = 0; t < Tokens; ++t)
        for (index_t r = 0; r < lanes; ++r)
          acc[t][r] = std::fma(w.scale(at + r),
                               (part[t][0][r] + part[t][1][r]) + (part[t][2][r] + part[t][3][r]),
                               acc[t][r]);
    }
    finish_panel<Tokens>(acc, w, a.epilogue_rows(), y, e, p, m);
  }

  /// Writes panel `p`'s outputs for tokens [m, m + Tokens) from their sums: out of line, one
  /// copy per row count for every code width (avx512_vnni/gemm_dot.hpp says why).
  template <int Tokens>
  QLR_NOINLINE static void finish_panel(const float (&acc)[Tokens][panel_rows],
                                        const DotWeightView& w, const DotActivationView& a,
                                        MatrixView y, const Epilogue& e, index_t p,
                                        index_t m) noexcept {
    kernels::detail::store_panel_rows(
        acc,
        [&](index_t token, int tokens, index_t n0, index_t count, float(*side)[panel_rows]) {
          for (int t = 0; t < tokens; ++t)
            kernels::detail::add_low_rank<panel_rows>(e, token + t, n0, count, side[t]);
        },
        w, a, y, e, p, m);
  }

};  // struct Tiles

}  // namespace detail_dot

/// y[m, n] for all tokens m and the rows n of panels [panel_begin, panel_end) of `Bits`-bit
/// codes (w.bits == Bits).
template <int Bits>
void gemm_dot(const DotWeightView& w, const DotActivationView& a, MatrixView y, const Epilogue& e,
              index_t panel_begin, index_t panel_end) noexcept {
  kernels::detail::gemm_dot_with_tiles<detail_dot::Tiles, Bits, 1, 4>(w, a, y, e, panel_begin,
                                                                      panel_end);
}

/// The levels (NF4) GEMM on this path (reference/gemm_levels' sequence).
template <int = 0>
void gemm_levels(const DotWeightView& w, const LevelActivationView& a, MatrixView y,
                 const Epilogue& e, index_t panel_begin, index_t panel_end) noexcept {
  kernels::detail::gemm_levels_with_tiles<detail_dot::Tiles, 4>(w, a, y, e, panel_begin, panel_end);
}

}  // namespace qlr::kernels::portable
