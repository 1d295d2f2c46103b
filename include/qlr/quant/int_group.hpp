// SPDX-License-Identifier: Apache-2.0
// Group-wise integer quantizers (ALGORITHMS.md §2.1–2.4): per output row, groups of g input
// columns share a scale (and, asymmetric, a zero point); RTN or a per-group clip search.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "qlr/core/config.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/format.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/numeric.hpp"
#include "qlr/quant/concept.hpp"
#include "qlr/quant/detail/quantize_rows.hpp"

namespace qlr::quant {

/// How a group's range is chosen.
enum class Range : std::uint8_t {
  min_max,   ///< round to nearest over the group's full range (RTN)
  mse_clip,  ///< the shrink of the range with the smallest Σ|ŵ − w|^norm (never worse than RTN)
};

/// Grid of the clip search: ratios p = 1 − i/grid for i < ⌊max_shrink·grid⌋ (GPTQ's --w_clip).
struct ClipSearch {
  int grid = 100;           ///< steps per unit of p
  double max_shrink = 0.8;  ///< how far p may fall: p = 1.00 … 0.21 by default
  double norm = 2.4;        ///< error exponent e (2.0 is plain MSE)
};

/// Options of the integer group quantizers. Only the group size usually changes.
struct IntOptions {
  index_t group_size = 128;               ///< g; 0 (or g ≥ K) is one group per row
  Range range = Range::min_max;           ///< RTN or clip search
  ClipSearch clip = {};                   ///< used when range == mse_clip
  ZeroMode zero_mode = ZeroMode::integer; ///< asymmetric only
  bool include_zero = true;               ///< asymmetric only: widen the range to contain 0
  ScaleType scale_type = ScaleType::f32;  ///< type scales are rounded to before coding
};

namespace detail {

/// Everything that fixes the grid of one format, with the code width known at run time.
struct IntCoding {
  int bits;
  bool symmetric;
  ZeroMode zero_mode;
  bool include_zero;
  ScaleType scale_type;

  [[nodiscard]] double max_code() const noexcept { return static_cast<double>((1 << bits) - 1); }
  /// Largest positive signed code of the symmetric grid, 2^(b−1) − 1.
  [[nodiscard]] double max_signed() const noexcept {
    return static_cast<double>((1 << (bits - 1)) - 1);
  }
};

/// One group's grid: ŵ = scale·(u − zero). Symmetric grids use the fixed offset 2^(b−1).
struct GroupGrid {
  float scale;
  float zero;
};

/// True when both ends of [lo, hi] lie within half a step of the grid: then every element
/// of the range does, which is the RTN bound |w − ŵ| ≤ s*/2 (T2.3).
inline bool covers(const IntCoding& c, const GroupGrid& g, double lo, double hi) noexcept {
  const double s = g.scale;
  const double z = g.zero;
  return lo / s + z >= -0.5 && hi / s + z <= c.max_code() + 0.5;
}

/// The asymmetric grid of scale `scale` whose zero maps `lo` to code 0 (§2.1).
inline GroupGrid grid_with_zero(const IntCoding& c, float scale, double lo) noexcept {
  const double zero = -lo / static_cast<double>(scale);
  if (c.zero_mode == ZeroMode::integer)  // + 0.0 turns a −0 zero into +0
    return {scale, static_cast<float>(std::clamp(std::nearbyint(zero), 0.0, c.max_code()) + 0.0)};
  return {scale, static_cast<float>(round_to_storage(zero, c.scale_type))};
}

/// Fits the grid to the range [lo, hi] (after any clip) of one group: §2.1–2.3.
inline GroupGrid fit_grid(const IntCoding& c, double lo, double hi, const char* entity) {
  if (c.symmetric) {
    // |w| ≤ a maps to |w/s*| ≤ qp·(1 + 2^-24) < qp + 1/2: always within half a step.
    const double a = std::max(std::abs(lo), std::abs(hi));
    const auto offset = static_cast<float>(1 << (c.bits - 1));
    if (a == 0.0) return {1.0f, offset};  // all-zero group: exact zeros
    return {store_scale(a / c.max_signed(), c.scale_type, entity), offset};
  }
  if (c.include_zero) {
    lo = std::min(lo, 0.0);
    hi = std::max(hi, 0.0);
  }
  if (hi == lo) {
    if (lo == 0.0) return {1.0f, 0.0f};  // all-zero group
    // A constant group c ≠ 0 without include_zero: refit with 0 in range, so c is one end.
    IntCoding widened = c;
    widened.include_zero = true;
    return fit_grid(widened, lo, hi, entity);
  }
  const float scale = store_scale((hi - lo) / c.max_code(), c.scale_type, entity);
  GroupGrid grid = grid_with_zero(c, scale, lo);
  // Rounding s to nearest may shrink the grid below the range by up to qmax·2^-24 steps, and
  // a rounded integer zero can then leave one end just beyond half a step (about 1 group in
  // 10^7): one step up of the scale restores the bound. [ours]
  if (!covers(c, grid, lo, hi)) grid = grid_with_zero(c, next_scale_up(scale, c.scale_type, entity), lo);
  if (!covers(c, grid, lo, hi)) {
    // Only a float zero far beyond qmax gets here (include_zero = false, a group far from
    // 0): storing it rounded the grid away from the range (in f16, Z ≈ 25000 moves by 8
    // steps). Refit with 0 in range, which keeps Z within [0, qmax]. [ours]
    QLR_ASSERT(!c.include_zero);
    IntCoding widened = c;
    widened.include_zero = true;
    return fit_grid(widened, lo, hi, entity);
  }
  return grid;
}

/// The unsigned code of `w` on grid `g`, rounded half to even and clamped to [0, 2^b − 1].
inline std::uint8_t encode(const IntCoding& c, const GroupGrid& g, double w) noexcept {
  const double x = w / static_cast<double>(g.scale);
  // An integer zero is added after rounding (exact); a float zero before (§2.1).
  const double u = c.zero_mode == ZeroMode::integer || c.symmetric
                       ? std::nearbyint(x) + static_cast<double>(g.zero)
                       : std::nearbyint(x + static_cast<double>(g.zero));
  return static_cast<std::uint8_t>(std::clamp(u, 0.0, c.max_code()));
}

/// The value code `u` stands for on grid `g`, in double (exact for integer zeros).
inline double decode(const GroupGrid& g, std::uint8_t u) noexcept {
  return static_cast<double>(g.scale) * (static_cast<double>(u) - static_cast<double>(g.zero));
}

/// Σ |decode(encode(w)) − w|^norm over one group (float weights, or GPTQ's double ones).
template <class T>
double group_error(const IntCoding& c, const GroupGrid& g, const T* w, index_t n,
                   double norm) noexcept {
  double err = 0.0;
  for (index_t i = 0; i < n; ++i) {
    const double d = std::abs(decode(g, encode(c, g, w[i])) - static_cast<double>(w[i]));
    err += norm == 2.0 ? d * d : std::pow(d, norm);
  }
  return err;
}

/// Fits one group of `n` weights, by RTN or by the clip search of §2.4.
template <class T>
GroupGrid fit_group(const IntCoding& c, const IntOptions& opt, const T* w, index_t n,
                    const char* entity) {
  const auto [lo_it, hi_it] = std::minmax_element(w, w + n);
  double lo = static_cast<double>(*lo_it);
  double hi = static_cast<double>(*hi_it);
  if (!c.symmetric && c.include_zero) {  // the clip scales a range that already holds 0
    lo = std::min(lo, 0.0);
    hi = std::max(hi, 0.0);
  }
  GroupGrid best = fit_grid(c, lo, hi, entity);
  if (opt.range == Range::min_max) return best;
  double best_error = group_error(c, best, w, n, opt.clip.norm);
  const auto steps =
      std::max(1, static_cast<int>(std::floor(opt.clip.max_shrink * opt.clip.grid)));
  for (int i = 1; i < steps; ++i) {
    const double p = 1.0 - static_cast<double>(i) / opt.clip.grid;
    const GroupGrid candidate = fit_grid(c, p * lo, p * hi, entity);
    const double error = group_error(c, candidate, w, n, opt.clip.norm);
    if (error < best_error) {  // strict: ties keep the larger p
      best_error = error;
      best = candidate;
    }
  }
  return best;
}

/// Checks the options against the coding and throws with the offending field's name.
inline void validate_options(const IntCoding& c, const IntOptions& opt, const char* entity) {
  QLR_CHECK(c.bits == 2 || c.bits == 3 || c.bits == 4 || c.bits == 8, unsupported,
            "{}: bits = {}; expected 2, 3, 4 or 8", entity, c.bits);
  if (opt.range == Range::mse_clip) {
    QLR_CHECK(opt.clip.grid >= 1, invalid_argument, "{}: clip.grid = {}; expected >= 1", entity,
              opt.clip.grid);
    QLR_CHECK(opt.clip.max_shrink > 0.0 && opt.clip.max_shrink <= 1.0, invalid_argument,
              "{}: clip.max_shrink = {}; expected a value in (0, 1]", entity, opt.clip.max_shrink);
    QLR_CHECK(opt.clip.norm > 0.0 && std::isfinite(opt.clip.norm), invalid_argument,
              "{}: clip.norm = {}; expected a finite value > 0", entity, opt.clip.norm);
  }
  // An integer zero in [0, 2^b − 1] always puts 0 on the grid, so a range that excludes 0
  // cannot be represented: the combination would silently clamp whole groups.
  QLR_CHECK(c.symmetric || c.include_zero || c.zero_mode == ZeroMode::floating, invalid_argument,
            "{}: include_zero = false with zero_mode = integer; expected zero_mode = floating "
            "(an integer zero point cannot represent a range that excludes 0)",
            entity);
}

/// The coding of IntGroup<bits, e> with `opt`: symmetric grids ignore the zero options.
constexpr IntCoding coding_of(int bits, Encoding e, const IntOptions& opt) noexcept {
  const bool symmetric = e == Encoding::int_sym;
  return {bits, symmetric, symmetric ? ZeroMode::integer : opt.zero_mode,
          symmetric || opt.include_zero, opt.scale_type};
}

/// Quantizes every row of `w` (N×K) group-wise into the format's QuantizedMatrix.
template <QuantFormatType Format>
QuantizedMatrix<Format> quantize_int(ConstMatrixRef w, const IntCoding& c, const IntOptions& opt,
                                     const char* entity) {
  validate_options(c, opt, entity);
  const index_t k = w.cols();
  const index_t g = effective_group_size(opt.group_size, k, entity);
  return quantize_rows<Format>(
      w, {opt.group_size, c.scale_type, c.zero_mode, {}}, entity,
      [&](index_t o, std::uint8_t* codes, float* scales, float* zeros) {
        const float* row = w.row(o).data();
        for (index_t l = 0, begin = 0; begin < k; ++l, begin += g) {
          const index_t n = std::min(g, k - begin);
          const GroupGrid grid = fit_group(c, opt, row + begin, n, entity);
          scales[l] = grid.scale;
          if (zeros != nullptr) zeros[l] = grid.zero;
          for (index_t i = begin; i < begin + n; ++i) codes[i] = encode(c, grid, row[i]);
        }
      });
}

}  // namespace detail

/// Group-wise INT-`Bits` quantizer with encoding `E`: int_asym (§2.1, ŵ = s·(u − Z) with a
/// zero point per group) or int_sym (§2.2, s = max|w|/(2^(b−1) − 1), no zero point).
/// Use it through the aliases IntAsym<B> and IntSym<B>.
template <int Bits, Encoding E>
  requires SupportedIntBits<Bits> && (E == Encoding::int_asym || E == Encoding::int_sym)
class IntGroup {
 public:
  using format = QuantFormat<Bits, E>;  ///< what quantize() produces

  /// g = 128, RTN, integer zero points, f32 scales.
  IntGroup() = default;
  /// A quantizer with the given options, e.g. IntAsym<4>({.group_size = 32}). Symmetric
  /// quantizers ignore zero_mode and include_zero.
  explicit IntGroup(IntOptions options) : options_(options) {}

  /// The options this policy quantizes with.
  [[nodiscard]] const IntOptions& options() const noexcept { return options_; }

  /// Quantizes `w` (N×K). Throws for an empty w, a NaN/Inf element or invalid options.
  [[nodiscard]] QuantizedMatrix<format> quantize(ConstMatrixRef w) const {
    return detail::quantize_int<format>(
        w, detail::coding_of(Bits, E, options_), options_,
        E == Encoding::int_sym ? "quant::IntSym::quantize" : "quant::IntAsym::quantize");
  }

 private:
  IntOptions options_;
};

/// Asymmetric INT-`Bits` with a zero point per group (§2.1): u ∈ [0, 2^b − 1].
template <int Bits>
using IntAsym = IntGroup<Bits, Encoding::int_asym>;

/// Symmetric INT-`Bits` (§2.2): q ∈ [−2^(b−1), 2^(b−1) − 1], stored offset-binary.
template <int Bits>
using IntSym = IntGroup<Bits, Encoding::int_sym>;

}  // namespace qlr::quant
