// SPDX-License-Identifier: Apache-2.0
// The GEMM entry points: Y = X·Ŵᵀ + epilogue for a DotWeights, with FP32 X (weight-only,
// X split exactly into INT8 limbs) or per-token quantized X (W8A8, W4A8, W4A4), on the path
// `isa` (the best this CPU has by default), split over qlr's threads by output column, and by
// token when a layer has few columns.
#pragma once

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "qlr/core/error.hpp"
#include "qlr/core/format.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr/core/view.hpp"
#include "qlr/kernels/avx2/gemm_dot.hpp"
#include "qlr/kernels/avx512_vnni/gemm_dot.hpp"
#include "qlr/kernels/avx_vnni/gemm_dot.hpp"
#include "qlr/kernels/detail/check_views.hpp"
#include "qlr/kernels/isa.hpp"
#include "qlr/kernels/packed_dot.hpp"
#include "qlr/kernels/portable/gemm_dot.hpp"
#include "qlr/kernels/reference/gemm_dot.hpp"

namespace qlr::kernels {

/// An integer GEMM path: y[m, n] for all m and the rows n of panels [panel_begin,
/// panel_end). Never throws: its arguments are checked once, by gemm().
using GemmDotFn = void (*)(const DotWeightView& w, const DotActivationView& a, MatrixView y,
                           const Epilogue& e, index_t panel_begin, index_t panel_end) noexcept;

/// A levels (NF4) GEMM path: y[m, n] for all m and the rows n of panels [panel_begin,
/// panel_end), ŵ = s·levels[u] times FP32 activations. Never throws.
using GemmLevelsFn = void (*)(const DotWeightView& w, const LevelActivationView& a, MatrixView y,
                              const Epilogue& e, index_t panel_begin, index_t panel_end) noexcept;

// Every path's body, X(namespace): compiled in each unit that calls gemm() for the code widths
// it runs, or once per program in qlr::compiled (qlr/kernels/kernels.cpp), whose users see
// these declarations. The levels (NF4) kernel of avx_vnni is avx2's.
#if QLR_ARCH_X86
#  define QLR_GEMM_DOT_PATHS(X) X(reference) X(portable) X(avx2) X(avx_vnni) X(avx512_vnni)
#  define QLR_GEMM_LEVELS_PATHS(X) X(reference) X(portable) X(avx2) X(avx512_vnni)
#else
#  define QLR_GEMM_DOT_PATHS(X) X(reference) X(portable)
#  define QLR_GEMM_LEVELS_PATHS(X) X(reference) X(portable)
#endif
#define QLR_GEMM_DOT_WIDTH(prefix, path, bits)                                              \
  prefix template void path::gemm_dot<bits>(const DotWeightView&, const DotActivationView&, \
                                            MatrixView, const Epilogue&, index_t,           \
                                            index_t) noexcept;
#define QLR_GEMM_DOT_WIDTHS(prefix, path) \
  QLR_GEMM_DOT_WIDTH(prefix, path, 2)     \
  QLR_GEMM_DOT_WIDTH(prefix, path, 3)     \
  QLR_GEMM_DOT_WIDTH(prefix, path, 4) QLR_GEMM_DOT_WIDTH(prefix, path, 8)
#define QLR_GEMM_DOT_SIGNATURE(path) QLR_GEMM_DOT_WIDTHS(, path)
#define QLR_GEMM_LEVELS_SIGNATURE(path)                                                           \
  template void path::gemm_levels<>(const DotWeightView&, const LevelActivationView&, MatrixView, \
                                    const Epilogue&, index_t, index_t) noexcept;
#if defined(QLR_COMPILED)
#  define QLR_GEMM_DOT_EXTERN(path) QLR_GEMM_DOT_WIDTHS(extern, path)
QLR_GEMM_DOT_PATHS(QLR_GEMM_DOT_EXTERN)
#  undef QLR_GEMM_DOT_EXTERN
#  define QLR_GEMM_LEVELS_EXTERN(path) extern QLR_GEMM_LEVELS_SIGNATURE(path)
QLR_GEMM_LEVELS_PATHS(QLR_GEMM_LEVELS_EXTERN)
#  undef QLR_GEMM_LEVELS_EXTERN
#endif

/// The integer GEMM of path `isa` for `Bits`-bit codes. A template, so that a unit
/// instantiates the widths it runs only. Throws Errc::unsupported when this CPU cannot run it.
template <int Bits>
GemmDotFn gemm_dot_for(Isa isa) {
  require_supported(isa, "kernels::gemm");
  switch (isa) {
    case Isa::reference:
      return &reference::gemm_dot<Bits>;
#if QLR_ARCH_X86
    case Isa::avx2:
      return &avx2::gemm_dot<Bits>;
    case Isa::avx_vnni:
      return &avx_vnni::gemm_dot<Bits>;
    case Isa::avx512_vnni:
      return &avx512_vnni::gemm_dot<Bits>;
#endif
    default:
      return &portable::gemm_dot<Bits>;
  }
}

/// The levels (NF4) GEMM of path `isa`: a template only so that units without NF4 do not
/// instantiate it. Throws Errc::unsupported when this CPU cannot run it.
template <int = 0>
GemmLevelsFn gemm_levels_for(Isa isa) {
  require_supported(isa, "kernels::gemm");
  switch (isa) {
    case Isa::reference:
      return &reference::gemm_levels<>;
#if QLR_ARCH_X86
    case Isa::avx2:
    case Isa::avx_vnni:  // AVX-VNNI adds integer dot products only: avx2's levels kernel
      return &avx2::gemm_levels<>;
    case Isa::avx512_vnni:
      return &avx512_vnni::gemm_levels<>;
#endif
    default:
      return &portable::gemm_levels<>;
  }
}

namespace detail {
/// Throws unless `lr` fits an output of `n` columns and `m` tokens: bt is R×N, t has a row
/// per token, and each token's slice lies inside bt and t.
inline void check_low_rank(const LowRankTerm& lr, index_t n, index_t m) {
  constexpr const char* entity = "kernels::gemm";
  QLR_CHECK(lr.bt.data != nullptr && lr.t.data != nullptr && lr.bt.cols == n && lr.t.rows == m &&
                lr.bt.stride >= lr.bt.cols && lr.t.stride >= lr.t.cols,
            shape_mismatch,
            "{}: low-rank Bt is {}x{}, t is {}x{}; expected Bt R x (N = {}) and t (M = {}) x r",
            entity, lr.bt.rows, lr.bt.cols, lr.t.rows, lr.t.cols, n, m);
  if (lr.slices == nullptr) {
    QLR_CHECK(lr.t.cols == lr.bt.rows, shape_mismatch,
              "{}: low-rank t has {} columns; expected one per row of Bt ({}) when no token "
              "picks a slice",
              entity, lr.t.cols, lr.bt.rows);
    return;
  }
  for (index_t i = 0; i < m; ++i) {
    const LowRankSlice& s = lr.slices[i];
    QLR_CHECK(s.first >= 0 && s.rank >= 0 && s.first + s.rank <= lr.bt.rows && s.rank <= lr.t.cols,
              shape_mismatch,
              "{}: low-rank slice of token {} = rows [{}, {}) of Bt; expected rows inside [0, {}) "
              "and a rank <= t's {} columns",
              entity, i, s.first, s.first + s.rank, lr.bt.rows, lr.t.cols);
  }
}

/// Throws unless x (M×K) and y (M×N) fit `w` and the epilogue's operands fit both.
inline void check_gemm_args(const DotWeightView& w, ConstMatrixView x, MatrixView y,
                            const Epilogue& e) {
  constexpr const char* entity = "kernels::gemm";
  check_token_views(entity, {"x", x, w.cols, "in_features K"}, {"y", y, w.rows, "out_features N"});
  if (e.low_rank != nullptr) check_low_rank(*e.low_rank, w.rows, x.rows);
}

/// Throws unless the activations a (M×K codes, M scales) and y (M×N) fit `w`, the
/// epilogue's operands fit both, and every code and scale is in range.
inline void check_gemm_dot_args(const DotWeightView& w, const ActivationCodes& a, MatrixView y,
                                const Epilogue& e) {
  constexpr const char* entity = "kernels::gemm";
  QLR_CHECK(a.codes != nullptr && a.scales != nullptr && y.data != nullptr, invalid_argument,
            "{}: x.codes = {}, x.scales = {}, y.data = {}; expected non-null buffers", entity,
            static_cast<const void*>(a.codes), static_cast<const void*>(a.scales),
            static_cast<const void*>(y.data));
  QLR_CHECK(a.bits == 8 || a.bits == 4, unsupported, "{}: x.bits = {}; expected 8 or 4", entity,
            a.bits);
  QLR_CHECK(a.stride >= a.cols, invalid_argument,
            "{}: x.stride = {}; expected a stride >= the row length {}", entity, a.stride, a.cols);
  // The epilogue's checks and the shape checks are the weight-only GEMM's.
  check_gemm_args(w, ConstMatrixView{y.data, a.rows, a.cols, a.stride}, y, e);
  const int code_min = a.bits == 8 ? -128 : -8;
  const int code_max = a.bits == 8 ? 127 : 7;
  for (index_t m = 0; m < a.rows; ++m) {
    QLR_CHECK(std::isfinite(a.scales[m]), invalid_argument,
              "{}: x.scales[{}] = {}; expected a finite activation scale", entity, m, a.scales[m]);
    if (a.bits == 8) continue;  // every int8 is an INT8 code
    for (index_t i = 0; i < a.cols; ++i) {
      const int code = a.codes[m * a.stride + i];
      QLR_CHECK(code >= code_min && code <= code_max, invalid_argument,
                "{}: x code ({}, {}) = {}; expected an INT4 code in [{}, {}]", entity, m, i, code,
                code_min, code_max);
    }
  }
}

/// Panels per parallel task: at least 4 (64 outputs), and enough that a task's
/// 16·K·M multiply-adds (≥ 2^18, some 10 µs) outweigh handing it to another thread. A
/// decode step of one token then runs a small layer on the calling thread alone.
inline index_t panels_per_task(index_t k, index_t m) noexcept {
  constexpr index_t min_multiply_adds = index_t{1} << 18;
  const index_t per_panel = std::max<index_t>(1, panel_rows * k * m);
  return std::max<index_t>(4, (min_multiply_adds + per_panel - 1) / per_panel);
}

/// Runs `kernel` over every panel and token, in parallel. Few panel tasks (a narrow layer
/// over many tokens, as in training) split the tokens too, so that every thread works; each
/// output is computed the same way in any split, so the bytes do not depend on it.
inline void run_gemm(GemmDotFn kernel, const DotWeightView& v, const DotActivationView& a,
                     MatrixView y, const Epilogue& e) {
  const index_t tokens = y.rows, per_task = panels_per_task(v.cols, tokens);
  const index_t panel_tasks = (v.panels + per_task - 1) / per_task;
  const index_t work = panel_rows * v.panels * v.cols * tokens;
  const index_t token_parts = std::clamp<index_t>(
      std::min<index_t>(2 * num_threads() / panel_tasks, work >> 18), 1, (tokens + 31) / 32);
  if (token_parts == 1) {
    parallel_for(v.panels, per_task,
                 [&](index_t begin, index_t end) { kernel(v, a, y, e, begin, end); });
    return;
  }
  const index_t per_part = (tokens + token_parts - 1) / token_parts;
  parallel_for(token_parts * panel_tasks, 1, [&](index_t begin, index_t end) {
    for (index_t task = begin; task < end; ++task) {
      const index_t m0 = (task / panel_tasks) * per_part;
      const index_t rows = std::min(per_part, tokens - m0);
      if (rows <= 0) continue;
      const index_t p0 = (task % panel_tasks) * per_task;
      // Tokens [m0, m0 + rows): the same views, from row m0.
      DotActivationView part = a;
      part.codes += m0 * a.limbs * a.padded_cols;
      part.group_sums += m0 * a.limbs * a.groups;
      if (part.group_scales != nullptr) part.group_scales += m0 * a.limbs * a.groups;
      if (part.scales != nullptr) part.scales += m0;
      part.rows = rows * a.limbs;
      MatrixView y_part = y;
      y_part.data += m0 * y.stride;
      y_part.rows = rows;
      Epilogue e_part = e;
      LowRankTerm low_rank;
      if (e.low_rank != nullptr) {
        low_rank = *e.low_rank;
        low_rank.t.data += m0 * low_rank.t.stride;
        low_rank.t.rows = rows;
        if (low_rank.slices != nullptr) low_rank.slices += m0;
        e_part.low_rank = &low_rank;
      }
      kernel(v, part, y_part, e_part, p0, std::min(p0 + per_task, v.panels));
    }
  });
}
/// Runs the levels kernel over every panel, in parallel (outputs split by panel).
inline void run_levels(GemmLevelsFn kernel, const DotWeightView& v, const LevelActivationView& a,
                       MatrixView y, const Epilogue& e) {
  parallel_for(v.panels, panels_per_task(v.cols, y.rows),
               [&](index_t begin, index_t end) { kernel(v, a, y, e, begin, end); });
}

/// Pads x (FP32, or per-token codes) as Format's kernel reads it and runs that kernel on path
/// `isa`: the levels kernel for a codebook (NF4), the integer one otherwise (FP32 x as limbs).
template <class Format, class X>
void run_packed(const DotWeightView& v, const X& x, MatrixView y, const Epilogue& e, Isa isa) {
  if constexpr (Format::encoding == Encoding::codebook) {
    const LevelActivations padded(x, v);
    run_levels(gemm_levels_for(isa), v, padded.view(), y, e);
  } else {
    using Padded =
        std::conditional_t<std::is_same_v<X, ConstMatrixView>, LimbActivations, DotActivations>;
    const Padded padded(x, v);
    run_gemm(gemm_dot_for<Format::bits>(isa), v, padded.view(), y, e);
  }
}
}  // namespace detail

/// Y (M×N) = X·Ŵᵀ, then the epilogue, for FP32 activations X (M×K) on the integer kernels:
/// X is split into INT8 limbs (packed_dot.hpp), |x − x̂| ≤ 2^−22·max|x| over each weight
/// group, and every product is summed exactly in int32. Bitwise identical on every path and
/// for any thread count. Throws for mismatched shapes or a non-finite activation.
template <QuantFormatType Format>
void gemm(const DotWeights<Format>& w, ConstMatrixView x, MatrixView y, const Epilogue& e = {},
          Isa isa = best_isa()) {
  const DotWeightView v = w.view();
  detail::check_gemm_args(v, x, y, e);
  detail::run_packed<Format>(v, x, y, e, isa);
}

/// Y (M×N) = X̂·Ŵᵀ, then the epilogue, for per-token quantized activations X̂ = s_x·q (M×K):
/// each group's products summed exactly in int32, group scales applied in FP32. Bitwise
/// identical on every path and for any thread count. Throws for mismatched shapes, codes
/// outside x.bits' range or a non-finite activation scale.
template <QuantFormatType Format>
void gemm(const DotWeights<Format>& w, const ActivationCodes& x, MatrixView y,
          const Epilogue& e = {}, Isa isa = best_isa()) {
  const DotWeightView v = w.view();
  detail::check_gemm_dot_args(v, x, y, e);
  detail::run_packed<Format>(v, x, y, e, isa);
}

}  // namespace qlr::kernels
