// SPDX-License-Identifier: Apache-2.0
// The input gradient of a linear layer with a frozen quantized weight: dX (M×K) = dY (M×N)·Ŵ
// (ALGORITHMS.md §8.1). The weight is decoded a tile at a time into FP32 scratch — any
// format, through the WeightTiles it lends — and each path multiplies the tiles with fused
// multiply-adds in weight-row order, so every path (the portable one where its ISA fuses),
// every thread count and every tiling give the same bits.
#pragma once

#include <algorithm>
#include <cmath>

#include "qlr/core/aligned.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/numeric.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr/core/view.hpp"
#include "qlr/kernels/avx2/input_grad.hpp"
#include "qlr/kernels/avx512_vnni/input_grad.hpp"
#include "qlr/kernels/detail/check_views.hpp"
#include "qlr/kernels/detail/input_grad_tile.hpp"
#include "qlr/kernels/isa.hpp"
#include "qlr/kernels/packed_dot.hpp"
#include "qlr/kernels/portable/input_grad.hpp"
#include "qlr/kernels/reference/input_grad.hpp"

namespace qlr::kernels {

// Every path's body, X(namespace): compiled in each unit that calls input_grad(), or once per
// program in qlr::compiled.
#if QLR_ARCH_X86
#  define QLR_INPUT_GRAD_PATHS(X) X(reference) X(portable) X(avx2) X(avx512_vnni)
#else
#  define QLR_INPUT_GRAD_PATHS(X) X(reference) X(portable)
#endif
#define QLR_INPUT_GRAD_SIGNATURE(path) \
  template void path::input_grad_tile<>(const InputGradTile&) noexcept;
#if defined(QLR_COMPILED)
#  define QLR_INPUT_GRAD_EXTERN(path) extern QLR_INPUT_GRAD_SIGNATURE(path)
QLR_INPUT_GRAD_PATHS(QLR_INPUT_GRAD_EXTERN)
#  undef QLR_INPUT_GRAD_EXTERN
#endif

/// The input-gradient tile of path `isa`. Throws Errc::unsupported when this CPU cannot run it.
inline InputGradTileFn input_grad_tile_for(Isa isa) {
  require_supported(isa, "kernels::input_grad_tile_for");
  switch (isa) {
    case Isa::reference:
      return &reference::input_grad_tile<>;
#if QLR_ARCH_X86
    case Isa::avx2:
    case Isa::avx_vnni:  // AVX-VNNI adds integer dot products only: avx2's FMA tile
      return &avx2::input_grad_tile<>;
    case Isa::avx512_vnni:
      return &avx512_vnni::input_grad_tile<>;
#endif
    default:
      return &portable::input_grad_tile<>;
  }
}

/// Whether path `isa` matches the reference bit for bit (every path but portable on an ISA
/// without fused multiply-add, plain SSE2).
[[nodiscard]] constexpr bool input_grad_is_exact(Isa isa) noexcept {
  return isa != Isa::portable || portable::input_grad_fused;
}

namespace detail {
/// Columns of dX per task and weight rows per decoded tile: a 128 × 256 tile is 128 KB of
/// scratch, in L2, and the 32 columns a block reads of it (16 KB) stay in L1 while every
/// token passes over them.
inline constexpr index_t input_grad_cols = 256;
inline constexpr index_t input_grad_rows = 128;
}  // namespace detail

/// dX (M×K) = dY (M×N)·Ŵ on path `isa`: each element one chain of fused multiply-adds over
/// n in order (kernels/detail/input_grad_tile.hpp). Throws for mismatched shapes or a
/// NaN/Inf in dY, naming the first.
inline void input_grad(const WeightTiles& w, ConstMatrixView dy, MatrixView dx,
                       Isa isa = best_isa()) {
  constexpr const char* entity = "kernels::input_grad";
  QLR_CHECK(w.decode != nullptr, invalid_argument, "{}: w.decode is null; expected a decoder",
            entity);
  detail::check_token_views(entity, {"dy", dy, w.rows, "out_features N"},
                            {"dx", dx, w.cols, "in_features K"});
  for (index_t m = 0; m < dy.rows; ++m) {
    if (all_finite(dy.row(m), dy.cols)) continue;
    index_t i = 0;
    while (std::isfinite(dy.row(m)[i])) ++i;
    QLR_CHECK(false, invalid_argument, "{}: dy({}, {}) = {}; expected finite gradients", entity, m,
              i, dy.row(m)[i]);
  }
  const InputGradTileFn tile_fn = input_grad_tile_for(isa);
  using detail::input_grad_cols, detail::input_grad_rows;
  const index_t chunks = (w.cols + input_grad_cols - 1) / input_grad_cols;
  // Few column chunks (a narrow layer): split the tokens too, so both cores work. Any split
  // gives the same bits; each part decodes its own tiles.
  const index_t token_parts =
      std::clamp<index_t>(2 * num_threads() / chunks, 1, (dy.rows + 31) / 32);
  const index_t tokens_per_part = (dy.rows + token_parts - 1) / token_parts;
  parallel_for(chunks * token_parts, 1, [&](index_t begin, index_t end) {
    AlignedVector<float> scratch(static_cast<std::size_t>(input_grad_rows * input_grad_cols));
    for (index_t task = begin; task < end; ++task) {
      const index_t k0 = (task / token_parts) * input_grad_cols;
      const index_t cols = std::min(input_grad_cols, w.cols - k0);
      const index_t m0 = (task % token_parts) * tokens_per_part;
      const index_t rows = std::min(tokens_per_part, dy.rows - m0);
      if (rows <= 0) continue;
      for (index_t n0 = 0; n0 < w.rows; n0 += input_grad_rows) {
        const index_t n = std::min(input_grad_rows, w.rows - n0);
        w.decode(w.weights, n0, n, k0, cols, scratch.data(), input_grad_cols);
        tile_fn({.dy = dy.row(m0) + n0,
                 .dy_stride = dy.stride,
                 .w = scratch.data(),
                 .w_stride = input_grad_cols,
                 .dx = dx.row(m0) + k0,
                 .dx_stride = dx.stride,
                 .rows = rows,
                 .n = n,
                 .cols = cols,
                 .accumulate = n0 > 0});
      }
    }
  });
}

/// The tiles of the weight `w` views (decode_tile in packed_dot.hpp), for input_grad; they
/// point to `w`, which must outlive them.
inline WeightTiles weight_tiles(const DotWeightView& w) noexcept {
  return {&w,
          [](const void* p, index_t n0, index_t rows, index_t k0, index_t cols, float* out,
             index_t stride) noexcept {
            decode_tile(*static_cast<const DotWeightView*>(p), n0, rows, k0, cols, out, stride);
          },
          w.rows, w.cols};
}

}  // namespace qlr::kernels
