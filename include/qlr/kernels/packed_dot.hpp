// SPDX-License-Identifier: Apache-2.0
// The integer kernels' (W8A8, W4A8, W4A4) prepacked weights: panels of 16 output rows whose
// codes are interleaved 4 K-bytes per 32-bit lane, the operand layout of VNNI's vpdpbusd,
// and the quantized activations they multiply.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <vector>

#include "qlr/core/aligned.hpp"
#include "qlr/core/bit_pack.hpp"
#include "qlr/core/config.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/format.hpp"
#include "qlr/core/half.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr/core/types.hpp"
#include "qlr/core/view.hpp"

namespace qlr::kernels {

/// Output rows per panel: one 512-bit register of int32 sums, one per row.
inline constexpr index_t panel_rows = 16;

// Layout. Rows are grouped in panels of 16 (the last one padded with code 0 and scale 0);
// K is padded with code 0 to a whole block (below). Every 64-byte line of a panel holds 4
// bytes per row, byte 4r + j of row r: lane r of a vpdpbusd is row r, and the 4 activation
// bytes it multiplies are one broadcast 32-bit word. A "quad" is 4 columns, one code per
// byte lane j; a kernel decodes a quad of all 16 rows from its line(s) into 64 bytes of
// codes and multiplies them by the token's 4 bytes of those columns.
//
//   INT8, quad q: line q, the whole byte.
//   INT4, quad q: line ⌊q/2⌋, bits 4·(q mod 2) … +3 (low nibble, then high).
//   INT2, quad q: line ⌊q/4⌋, bits 2·(q mod 4) … +1.
//   INT3, quads 8b … 8b + 7 in a block of three lines: code = low | high << 2, the low two
//         bits as INT2 in lines 3b and 3b + 1 (quads 0–3, 4–7), the high bit of quad q in
//         bit q of line 3b + 2 (bit planes: no code straddles a byte).
//
// A block is what a kernel's K loop steps by: 8 columns of INT8 (two lines) or INT4 (one
// line), 16 of INT2 (one line), 32 of INT3 (three lines); K is padded to a whole block, and
// a GEMV reads the panels as one forward stream.
//
// Per (panel, group), 16 of each: the scale s (f16 when the format stores f16 scales, else
// f32), the integer zero zi = round(z) (a byte; int32 when one lies outside [0, 255]) and,
// for floating zero points only, the offset d = z − zi (exact: both are floats within 1 of z, so
// zi + d gives z back bit for bit). With dot = Σ_{i∈group} u_i·q_i (int32, exact) and
// qsum = Σ_{i∈group} q_i, one group adds
//
//   acc ← fma(s, float(dot − zi·qsum), acc) ;  acc ← fma(−(s·d), float(qsum), acc)
//
// so the large integer zero term cancels exactly before any rounding. A row's output is
// y = fma(acc, s_x, Σ_j B·t) + bias, with s_x the token's scale (kernels/detail/epilogue.hpp).
//
// FP32 activations run on the same kernels as INT8 "limbs" (detail::LimbActivations): each
// (token, group) slice of x is written as x ≈ c·(q0 + 2^−8·q1 + 2^−16·q2) with q0, q1, q2
// int8 and c = max|x|/127 of the slice, so that |x − x̂| ≤ 2^−22·max|x|, FP32's resolution
// at the slice's largest value. The three limbs are three activation rows with their own
// group scales c·2^−8j; a token's output is acc_0 + (acc_1 + acc_2). vpdpbusd then does
// 64 multiply-adds where an FMA does 16, and a W4 GEMV stays memory-bound.

/// Whether the integer kernels take `bits`-bit weight codes.
[[nodiscard]] constexpr bool is_dot_width(int bits) noexcept {
  return bits == 2 || bits == 3 || bits == 4 || bits == 8;
}
/// Columns of one block (the K loop's step) of `bits`-bit codes.
[[nodiscard]] constexpr index_t block_cols(int bits) noexcept {
  return bits == 3 ? 32 : bits == 2 ? 16 : 8;
}
/// Bytes of one block of a panel: 16 rows × block_cols(bits) codes of `bits` bits.
[[nodiscard]] constexpr index_t block_bytes(int bits) noexcept {
  return panel_rows * block_cols(bits) * bits / 8;
}
/// Quads (4-column steps) per block.
[[nodiscard]] constexpr int block_quads(int bits) noexcept {
  return static_cast<int>(block_cols(bits) / 4);
}

/// The code of row r, column c (< block_cols(Bits)) of the block at `block`.
template <int Bits>
QLR_ALWAYS_INLINE unsigned block_code(const std::uint8_t* block, index_t r, index_t c) noexcept {
  const index_t q = c / 4, at = 4 * r + c % 4;
  if constexpr (Bits == 3) {
    const unsigned low = (block[(q / 4) * 64 + at] >> (2 * (q % 4))) & 3u;
    return low | ((block[128 + at] >> q) & 1u) << 2;
  } else {
    constexpr index_t per_line = 8 / Bits;  // quads per line
    return (block[(q / per_line) * 64 + at] >> (Bits * (q % per_line))) & ((1u << Bits) - 1);
  }
}

/// Writes code u (< 2^Bits) at row r, column c of a zeroed block: block_code's inverse.
template <int Bits>
void set_block_code(std::uint8_t* block, index_t r, index_t c, unsigned u) noexcept {
  const index_t q = c / 4, at = 4 * r + c % 4;
  if constexpr (Bits == 3) {
    block[(q / 4) * 64 + at] |= static_cast<std::uint8_t>((u & 3u) << (2 * (q % 4)));
    block[128 + at] |= static_cast<std::uint8_t>((u >> 2) << q);
  } else {
    constexpr index_t per_line = 8 / Bits;
    block[(q / per_line) * 64 + at] |= static_cast<std::uint8_t>(u << (Bits * (q % per_line)));
  }
}

/// Calls f.template operator()<Bits>() for the run-time width `bits` (2, 3, 4 or 8).
template <class F>
QLR_ALWAYS_INLINE decltype(auto) with_dot_width(int bits, F&& f) {
  switch (bits) {
    case 2:
      return f.template operator()<2>();
    case 3:
      return f.template operator()<3>();
    case 4:
      return f.template operator()<4>();
    default:
      return f.template operator()<8>();
  }
}

/// What an integer kernel needs of its weights: plain pointers and sizes, no templates.
struct DotWeightView {
  const std::uint8_t* codes = nullptr;    ///< panels × panel_bytes()
  const void* scales = nullptr;           ///< panels × groups × 16: float, or f16 bits
  const void* zeros = nullptr;            ///< panels × groups × 16, round(z): uint8 or int32
  const float* zero_offsets = nullptr;    ///< panels × groups × 16, z − round(z); or null
  index_t rows = 0;                       ///< N
  index_t cols = 0;                       ///< K
  index_t padded_cols = 0;                ///< K rounded up to a whole block
  index_t panels = 0;                     ///< ⌈N/16⌉
  index_t group_size = 0;                 ///< columns per group; the last ends at padded_cols
  index_t groups = 0;                     ///< groups per row
  int bits = 0;                           ///< 2, 3, 4 or 8
  bool half_scales = false;               ///< scales are binary16 bit patterns
  bool wide_zeros = false;                ///< zeros are int32 (else uint8)
  const float* levels = nullptr;          ///< codebook (NF4): ŵ = s·levels[u], no zeros

  /// Bytes per panel.
  [[nodiscard]] index_t panel_bytes() const noexcept { return panel_rows * padded_cols * bits / 8; }
  /// The codes of panel `p`.
  [[nodiscard]] const std::uint8_t* panel(index_t p) const noexcept {
    return codes + p * panel_bytes();
  }
  /// The code of row `o`, padded column `i`: one scalar read, for the reference and unpacking.
  [[nodiscard]] unsigned code(index_t o, index_t i) const noexcept {
    const std::uint8_t* block = panel(o / panel_rows) + (i / block_cols(bits)) * block_bytes(bits);
    return with_dot_width(
        bits, [&]<int B>() { return block_code<B>(block, o % panel_rows, i % block_cols(B)); });
  }
  /// The scale at parameter offset `at` (a scalar read, for the reference and decoding).
  [[nodiscard]] float scale(index_t at) const noexcept {
    return half_scales ? half_bits_to_float(static_cast<const std::uint16_t*>(scales)[at])
                       : static_cast<const float*>(scales)[at];
  }
  /// The integer zero round(z) at parameter offset `at`.
  [[nodiscard]] std::int32_t zero(index_t at) const noexcept {
    return wide_zeros ? static_cast<const std::int32_t*>(zeros)[at]
                      : static_cast<const std::uint8_t*>(zeros)[at];
  }
  /// Offset of group `l`'s 16 parameters of panel `p` in scales, zeros, zero_offsets.
  [[nodiscard]] index_t params(index_t p, index_t l) const noexcept {
    return (p * groups + l) * panel_rows;
  }
  /// First and one-past-last padded column of group `l`.
  [[nodiscard]] index_t group_begin(index_t l) const noexcept { return l * group_size; }
  [[nodiscard]] index_t group_end(index_t l) const noexcept {
    return l + 1 == groups ? padded_cols : (l + 1) * group_size;
  }
};

namespace detail {
/// 4 floats, 4 int32 and 4 bytes as GCC vectors: SSE2 or NEON registers, no ISA region.
using Floats4 = float __attribute__((vector_size(16)));
using Ints4 = std::int32_t __attribute__((vector_size(16)));
using Bytes4 = std::uint8_t __attribute__((vector_size(4)));

/// s·(u − z) for 4 codes u.
QLR_ALWAYS_INLINE Floats4 decode4(Ints4 u, float s, float z) noexcept {
  return s * (__builtin_convertvector(u, Floats4) - z);
}
}  // namespace detail

/// The codes of row r, quad q (columns 4q … 4q + 3) of a block, as 4 int32 lanes.
QLR_ALWAYS_INLINE detail::Ints4 quad_lanes(const std::uint8_t* block, int bits, index_t r,
                                           index_t q) noexcept {
  const auto word = [&](index_t line) {
    detail::Bytes4 bytes;
    std::memcpy(&bytes, block + line * 64 + 4 * r, sizeof bytes);
    return __builtin_convertvector(bytes, detail::Ints4);
  };
  if (bits == 3)
    return ((word(q / 4) >> static_cast<int>(2 * (q % 4))) & 3) |
           ((word(2) >> static_cast<int>(q)) & 1) << 2;
  const index_t per_line = 8 / bits;  // quads per line
  return (word(q / per_line) >> static_cast<int>(bits * (q % per_line))) & ((1 << bits) - 1);
}

/// Writes Ŵ[n0 + t, k0 + j] for t < rows, j < cols into out[t·stride + j]: ŵ = s·(u − z)
/// with z = round(z) + offset, the value quant::dequantize gives bit for bit. k0 is a
/// multiple of 4 and the block lies inside N × K.
inline void decode_tile(const DotWeightView& w, index_t n0, index_t rows, index_t k0, index_t cols,
                        float* out, index_t stride) noexcept {
  const index_t end = k0 + cols, block = block_cols(w.bits);
  for (index_t o = n0; o < n0 + rows; ++o) {
    const std::uint8_t* panel = w.panel(o / panel_rows);
    const index_t r = o % panel_rows;
    float* row = out + (o - n0) * stride - k0;  // row[i] is column i
    for (index_t i = k0; i < end;) {
      const index_t l = i / w.group_size;
      const index_t stop = std::min(end, w.group_end(l));
      const index_t at = w.params(o / panel_rows, l) + r;
      const float s = w.scale(at);
      if (w.levels != nullptr) {  // NF4: s·levels[u], as quant::dequantize
        for (; i + 4 <= stop; i += 4) {
          const detail::Ints4 u =
              quad_lanes(panel + (i / block) * block_bytes(w.bits), w.bits, r, (i % block) / 4);
          for (int j = 0; j < 4; ++j) row[i + j] = s * w.levels[u[j]];
        }
        for (; i < stop; ++i) row[i] = s * w.levels[w.code(o, i)];
        continue;
      }
      const float z =
          static_cast<float>(w.zero(at)) + (w.zero_offsets != nullptr ? w.zero_offsets[at] : 0.0f);
      // Whole quads (groups start at multiples of 32), 4 lanes at a time.
      for (; i + 4 <= stop; i += 4) {
        const detail::Floats4 v = detail::decode4(
            quad_lanes(panel + (i / block) * block_bytes(w.bits), w.bits, r, (i % block) / 4), s,
            z);
        std::memcpy(row + i, &v, sizeof v);
      }
      for (; i < stop; ++i) row[i] = s * (static_cast<float>(w.code(o, i)) - z);
    }
  }
}

/// The activations a kernel reads: codes padded with zeros to the weights' padded columns,
/// and the sums of each row's codes over each weight group. Built by gemm() from
/// ActivationCodes (one row per token, a scale per token) or from FP32 activations (`limbs`
/// rows per token, a scale per row and group).
struct DotActivationView {
  const std::int8_t* codes = nullptr;        ///< rows × padded_cols
  const float* scales = nullptr;             ///< one per token; null for limbs
  const std::int32_t* group_sums = nullptr;  ///< rows × groups
  const float* group_scales = nullptr;       ///< rows × groups for limbs; else null
  index_t rows = 0;                          ///< M·limbs
  index_t padded_cols = 0;                   ///< the weights' padded_cols
  index_t groups = 0;                        ///< the weights' groups per row
  int limbs = 1;                             ///< rows per token: 1, or 3 for FP32 activations

  /// Row `m`'s padded codes.
  [[nodiscard]] const std::int8_t* row(index_t m) const noexcept { return codes + m * padded_cols; }
  /// The factor row `m`'s group `l` multiplies the weight scale by (1 without group scales).
  [[nodiscard]] float group_scale(index_t m, index_t l) const noexcept {
    return group_scales != nullptr ? group_scales[m * groups + l] : 1.0f;
  }
};

/// The FP32 activations the levels kernel (NF4) reads: rows padded with zeros to the weights'
/// padded columns, and for dequantized codes the per-token scale the output is multiplied by.
struct LevelActivationView {
  const float* x = nullptr;       ///< rows × padded_cols
  const float* scales = nullptr;  ///< one per token (codes as floats), or null (FP32 x)
  index_t rows = 0;               ///< M
  index_t padded_cols = 0;        ///< the weights' padded_cols

  /// Token `m`'s padded activations.
  [[nodiscard]] const float* row(index_t m) const noexcept { return x + m * padded_cols; }
  /// The view the shared epilogue reads (a token's scale, one row per token).
  [[nodiscard]] DotActivationView epilogue_rows() const noexcept {
    return {nullptr, scales, nullptr, nullptr, rows, padded_cols, 0, 1};
  }
};

/// The widest group, in padded columns, whose int32 dot products cannot overflow for any
/// codes: (2^bits − 1)·128·L < 2^31.
[[nodiscard]] constexpr index_t max_dot_group_length(int bits) noexcept {
  const index_t code_max = (index_t{1} << bits) - 1;
  return (index_t{1} << 31) / (code_max * 128) - 8;
}

/// Whether DotWeights packs codes of `bits` bits and `encoding`: INT2/3/4/8 integer codes (the
/// integer kernels) or 4-bit codebook codes (NF4, the levels kernel).
[[nodiscard]] constexpr bool is_packable(int bits, Encoding encoding) noexcept {
  return encoding == Encoding::codebook ? bits == 4 : is_dot_width(bits);
}

/// A QuantizedMatrix<Format> (INT2, INT3, INT4 or INT8, symmetric or asymmetric, integer or
/// floating zero points; or NF4) repacked for qlr's SIMD kernels. Owns its buffers; view()
/// lends them.
template <QuantFormatType Format>
class DotWeights {
 public:
  static_assert(is_packable(Format::bits, Format::encoding),
                "qlr's SIMD kernels take INT2, INT3, INT4 or INT8 integer codes, or NF4");
  /// Whether the codes index a table of levels (NF4) rather than count from a zero point.
  static constexpr bool codebook = Format::encoding == Encoding::codebook;

  /// Repacks `q`. Throws when its group size is neither a multiple of 32 nor the whole row,
  /// or when a group is so long that its int32 dot products could overflow.
  explicit DotWeights(const QuantizedMatrix<Format>& q)
      : rows_(q.rows()),
        cols_(q.cols()),
        group_size_(q.group_size()),
        scale_type_(q.scale_type()),
        zero_mode_(q.zero_mode()) {
    constexpr const char* entity = "kernels::DotWeights";
    QLR_CHECK(group_size_ % 32 == 0 || group_size_ == cols_, unsupported,
              "{}: group_size = {}; expected a multiple of 32 or the whole row (K = {})", entity,
              group_size_, cols_);
    padded_cols_ = (cols_ + block_cols(Format::bits) - 1) / block_cols(Format::bits) *
                   block_cols(Format::bits);
    groups_ = group_count(cols_, group_size_);
    const index_t longest = groups_ == 1 ? padded_cols_ : group_size_;
    QLR_CHECK(codebook || longest <= max_dot_group_length(Format::bits), unsupported,
              "{}: a group spans {} columns; expected at most {} for {}-bit codes, beyond which "
              "int32 dot products can overflow (use a smaller group size)",
              entity, longest, max_dot_group_length(Format::bits), Format::bits);
    panels_ = (rows_ + panel_rows - 1) / panel_rows;
    pack_codes(q);
    pack_parameters(q, longest);
  }

  /// The view a kernel reads.
  [[nodiscard]] DotWeightView view() const noexcept {
    const bool half = scale_type_ == ScaleType::f16, wide = !zeros32_.empty();
    return {codes_.data(),
            half ? static_cast<const void*>(scales16_.data()) : scales32_.data(),
            wide ? static_cast<const void*>(zeros32_.data()) : zeros8_.data(),
            zero_offsets_.empty() ? nullptr : zero_offsets_.data(),
            rows_,
            cols_,
            padded_cols_,
            panels_,
            groups_ == 1 ? padded_cols_ : group_size_,
            groups_,
            Format::bits,
            half,
            wide,
            codebook ? levels_.data() : nullptr};
  }

  [[nodiscard]] index_t rows() const noexcept { return rows_; }  ///< N
  [[nodiscard]] index_t cols() const noexcept { return cols_; }  ///< K
  /// Bytes of packed codes, what a GEMV streams from memory.
  [[nodiscard]] std::size_t code_bytes() const noexcept { return codes_.size(); }
  /// Bytes a GEMV reads besides the codes: scales, zeros, zero offsets and levels.
  [[nodiscard]] std::size_t parameter_bytes() const noexcept {
    return (scales16_.size() * 2 + scales32_.size() * 4 + zeros8_.size() + zeros32_.size() * 4 +
            zero_offsets_.size() * 4 + levels_.size() * 4);
  }
  /// Bytes this object holds: codes, scales, zeros and offsets, and the object itself.
  [[nodiscard]] std::size_t memory_bytes() const noexcept {
    return sizeof(*this) + codes_.size() + parameter_bytes();
  }
  /// The storage cost of the canonical matrix it was packed from, per weight (its
  /// QuantizedMatrix::bits_per_parameter()).
  [[nodiscard]] double bits_per_parameter() const noexcept {
    return storage_bits_per_parameter(Format::bits, Format::encoding, rows_, cols_, group_size_,
                                      scale_type_, zero_mode_);
  }

  /// The canonical matrix back, bit for bit what was packed.
  [[nodiscard]] QuantizedMatrix<Format> unpack() const {
    QuantizedParts parts = empty_parts(rows_, cols_, group_size_, scale_type_, zero_mode_);
    const index_t stride = packed_size(Format::bits, cols_);
    parts.codes.assign(static_cast<std::size_t>(rows_ * stride), 0);
    const DotWeightView v = view();
    std::vector<std::uint8_t> u(static_cast<std::size_t>(cols_));
    for (index_t o = 0; o < rows_; ++o) {
      for (index_t i = 0; i < cols_; ++i)
        u[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v.code(o, i));
      qlr::pack_codes(Format::bits, u,
                      std::span(parts.codes).subspan(static_cast<std::size_t>(o * stride),
                                                     static_cast<std::size_t>(stride)));
    }
    const auto params = static_cast<std::size_t>(rows_ * groups_);
    parts.scales.resize(params);
    if constexpr (Format::encoding == Encoding::int_asym) parts.zeros.resize(params);
    if constexpr (codebook) parts.codebook.assign(levels_.begin(), levels_.end());
    for (index_t o = 0; o < rows_; ++o) {
      for (index_t l = 0; l < groups_; ++l) {
        const auto at = static_cast<std::size_t>(((o / panel_rows) * groups_ + l) * panel_rows +
                                                 o % panel_rows);
        const auto to = static_cast<std::size_t>(o * groups_ + l);
        parts.scales[to] = v.scale(static_cast<index_t>(at));
        if constexpr (Format::encoding == Encoding::int_asym)
          parts.zeros[to] = static_cast<float>(v.zero(static_cast<index_t>(at))) +
                            (zero_offsets_.empty() ? 0.0f : zero_offsets_[at]);
      }
    }
    return QuantizedMatrix<Format>(std::move(parts));
  }

 private:
  void pack_codes(const QuantizedMatrix<Format>& q) {
    const index_t panel_bytes = panel_rows * padded_cols_ * Format::bits / 8;
    codes_.assign(static_cast<std::size_t>(panels_ * panel_bytes), 0);
    std::vector<std::uint8_t> u(static_cast<std::size_t>(padded_cols_), 0);
    for (index_t o = 0; o < rows_; ++o) {
      unpack_codes(Format::bits, q.row_codes(o),
                   std::span(u).first(static_cast<std::size_t>(cols_)));
      std::uint8_t* panel = codes_.data() + (o / panel_rows) * panel_bytes;
      const index_t r = o % panel_rows;
      constexpr index_t block = block_cols(Format::bits);
      for (index_t i = 0; i < padded_cols_; ++i)
        set_block_code<Format::bits>(panel + (i / block) * block_bytes(Format::bits), r, i % block,
                                     u[static_cast<std::size_t>(i)]);
    }
  }

  /// Scales and zeros per (panel, group), at their storage width: f16 scales as f16, zeros as
  /// bytes unless one lies outside [0, 255]. A floating zero point may lie far outside the
  /// codes' range; |u − round(z)| must still keep a group's int32 dot product in range.
  void pack_parameters(const QuantizedMatrix<Format>& q, index_t longest) {
    if constexpr (codebook) {
      levels_.assign(q.codebook().begin(), q.codebook().end());
      pack_scales(q.scales());
      return;
    }
    constexpr double code_max = (1 << Format::bits) - 1;
    // |u − zi|·128·longest ≤ 2^31 − 1 for every code u ∈ [0, code_max].
    const double reach = std::floor(2147483647.0 / (128.0 * static_cast<double>(longest)));
    const auto count = static_cast<std::size_t>(panels_ * groups_ * panel_rows);
    std::vector<float> scales(count, 0.0f);
    std::vector<std::int32_t> zeros(count, 0);
    bool fractional = false, wide = false;
    std::vector<float> offsets(count, 0.0f);
    for (index_t o = 0; o < rows_; ++o) {
      for (index_t l = 0; l < groups_; ++l) {
        const auto at = static_cast<std::size_t>(((o / panel_rows) * groups_ + l) * panel_rows +
                                                 o % panel_rows);
        const float s = q.scales()[static_cast<std::size_t>(o * groups_ + l)];
        float z = static_cast<float>(1 << (Format::bits - 1));
        if constexpr (Format::encoding == Encoding::int_asym)
          z = q.zeros()[static_cast<std::size_t>(o * groups_ + l)];
        const float zi = std::nearbyint(z);
        QLR_CHECK(zi >= code_max - reach && zi <= reach, unsupported,
                  "kernels::DotWeights: zero point of row {}, group {} = {}; expected round(z) "
                  "in [{}, {}] so that int32 dot products over {} columns cannot overflow",
                  o, l, z, code_max - reach, reach, longest);
        scales[at] = s;
        zeros[at] = static_cast<std::int32_t>(zi);
        offsets[at] = z - zi;  // exact: both are floats within 1 of z
        fractional = fractional || z != zi;
        wide = wide || zi < 0.0f || zi > 255.0f;
      }
    }
    if (fractional) zero_offsets_ = std::move(offsets);
    store_scales(std::move(scales));
    if (wide) {
      zeros32_ = std::move(zeros);
    } else {
      zeros8_.resize(count);
      for (std::size_t i = 0; i < count; ++i) zeros8_[i] = static_cast<std::uint8_t>(zeros[i]);
    }
  }

  index_t rows_;
  index_t cols_;
  index_t group_size_;
  index_t padded_cols_ = 0;
  index_t groups_ = 0;
  index_t panels_ = 0;
  ScaleType scale_type_;
  ZeroMode zero_mode_;
  AlignedVector<std::uint8_t> codes_;  // cache-line aligned: kernels load 64 bytes at a time
  /// The format's scales (row-major N × groups) per (panel, group), padded rows 0.
  void pack_scales(std::span<const float> row_major) {
    std::vector<float> scales(static_cast<std::size_t>(panels_ * groups_ * panel_rows), 0.0f);
    for (index_t o = 0; o < rows_; ++o)
      for (index_t l = 0; l < groups_; ++l)
        scales[static_cast<std::size_t>(((o / panel_rows) * groups_ + l) * panel_rows +
                                        o % panel_rows)] =
            row_major[static_cast<std::size_t>(o * groups_ + l)];
    store_scales(std::move(scales));
  }

  /// Keeps `scales` at the format's width: f16 scales as f16 (exact: they are f16 values).
  void store_scales(std::vector<float> scales) {
    if (scale_type_ == ScaleType::f16) {
      scales16_.resize(scales.size());
      for (std::size_t i = 0; i < scales.size(); ++i) scales16_[i] = float_to_half_bits(scales[i]);
    } else {
      scales32_ = std::move(scales);
    }
  }

  // One of each pair holds the parameters, per view()'s flags.
  std::vector<std::uint16_t> scales16_;
  std::vector<float> scales32_;
  std::vector<std::uint8_t> zeros8_;
  std::vector<std::int32_t> zeros32_;
  std::vector<float> zero_offsets_;
  std::vector<float> levels_;  // the codebook (NF4); empty for integer codes
};

namespace detail {

/// Owns the padded codes and group sums of a DotActivationView.
class DotActivations {
 public:
  DotActivations(const DotActivations&) = delete;  // the view points into this object
  DotActivations& operator=(const DotActivations&) = delete;

  /// Copies `a` into the weights' zero-padded columns and sums each token's codes per weight group.
  DotActivations(const ActivationCodes& a, const DotWeightView& w)
      : codes_(static_cast<std::size_t>(a.rows * w.padded_cols), 0),
        sums_(static_cast<std::size_t>(a.rows * w.groups), 0),
        view_{codes_.data(), a.scales, sums_.data(), nullptr, a.rows, w.padded_cols, w.groups, 1} {
    for (index_t m = 0; m < a.rows; ++m) {
      const std::int8_t* in = a.codes + m * a.stride;
      std::int8_t* out = codes_.data() + m * w.padded_cols;
      for (index_t i = 0; i < a.cols; ++i) out[i] = in[i];
      for (index_t l = 0; l < w.groups; ++l) {
        std::int32_t sum = 0;
        for (index_t i = w.group_begin(l); i < w.group_end(l); ++i) sum += out[i];
        sums_[static_cast<std::size_t>(m * w.groups + l)] = sum;
      }
    }
  }

  /// The view kernels take; valid while this object lives.
  [[nodiscard]] const DotActivationView& view() const noexcept { return view_; }

 private:
  AlignedVector<std::int8_t> codes_;  // cache-line aligned, like the weights
  std::vector<std::int32_t> sums_;
  DotActivationView view_;
};

/// FP32 activations (M×K) as the integer kernels take them: 3 INT8 limb rows per token,
/// x ≈ c·(q0 + 2^−8·q1 + 2^−16·q2) per weight group, c = max|x|/127 over the group.
class LimbActivations {
 public:
  static constexpr int limbs = 3;  ///< rows per token

  LimbActivations(const LimbActivations&) = delete;  // the view points into this object
  LimbActivations& operator=(const LimbActivations&) = delete;

  /// Splits x; throws Errc::invalid_argument when it holds a NaN or an infinity.
  LimbActivations(ConstMatrixView x, const DotWeightView& w)
      : codes_(static_cast<std::size_t>(limbs * x.rows * w.padded_cols), 0),
        sums_(static_cast<std::size_t>(limbs * x.rows * w.groups), 0),
        scales_(static_cast<std::size_t>(limbs * x.rows * w.groups), 0.0f),
        view_{codes_.data(), nullptr,    sums_.data(), scales_.data(), limbs * x.rows,
              w.padded_cols, w.groups, limbs} {
    std::atomic<index_t> first_bad{x.rows};  // the first token with a NaN or an infinity
    parallel_for(x.rows, 16, [&](index_t begin, index_t end) {
      for (index_t m = begin; m < end; ++m) {
        bool finite = true;
        for (index_t l = 0; l < w.groups; ++l) finite = split(x, w, m, l) && finite;
        if (!finite) {
          index_t seen = first_bad.load();
          while (m < seen && !first_bad.compare_exchange_weak(seen, m)) {
          }
        }
      }
    });
    if (const index_t m = first_bad.load(); m < x.rows) {
      index_t i = 0;
      while (std::isfinite(x.row(m)[i])) ++i;
      QLR_CHECK(false, invalid_argument, "kernels::gemm: x({}, {}) = {}; expected finite activations",
                m, i, x.row(m)[i]);
    }
  }

  /// The view kernels take; valid while this object lives.
  [[nodiscard]] const DotActivationView& view() const noexcept { return view_; }

 private:
  /// Rounds |v| < 2^22 to the nearest integer, ties to even, in any vector ISA: adding and
  /// subtracting 1.5·2^23 leaves no bits below the units (the compiler may not fold it: qlr
  /// never builds with -ffast-math).
  static float round_to_integer(float v) noexcept {
    constexpr float shifter = 12582912.0f;  // 1.5·2^23
    return (v + shifter) - shifter;
  }

  /// Token m, group l: the limbs and their sums and scales. Returns false, leaving them
  /// partly written, when the group holds a NaN or an infinity. Branch-free loops, so that
  /// they vectorize.
  bool split(ConstMatrixView x, const DotWeightView& w, index_t m, index_t l) noexcept {
    const index_t begin = w.group_begin(l);
    const index_t end = w.group_end(l) < x.cols ? w.group_end(l) : x.cols;
    const float* in = x.row(m);
    // max|x| on the bit patterns: for floats without their sign, integer order is value
    // order, NaN and infinity come last, and an integer max vectorizes (a float one may not
    // reorder NaNs).
    std::uint32_t top_bits = 0;
    for (index_t i = begin; i < end; ++i)
      top_bits = std::max(top_bits, std::bit_cast<std::uint32_t>(in[i]) & 0x7fffffffu);
    if (top_bits >= 0x7f800000u) return false;  // an infinity or a NaN
    const float top = std::bit_cast<float>(top_bits);
    if (top == 0.0f) return true;  // codes, sums and scales stay 0
    // c ≥ the smallest normal float, so that the limb scales c·2^−8j lose no bits for any
    // group with max|x| ≥ 2^−100.
    const float c = std::max(top / 127.0f, std::numeric_limits<float>::min());
    std::int8_t* q0 = codes_.data() + (limbs * m) * w.padded_cols;
    std::int8_t* q1 = q0 + w.padded_cols;
    std::int8_t* q2 = q1 + w.padded_cols;
    std::int32_t sum0 = 0, sum1 = 0, sum2 = 0;
    for (index_t i = begin; i < end; ++i) {
      // r = x/c rounds once (2^−24·|r|); each step after it is exact in float: r − u0 and
      // d − u1 are multiples of r's last bit within 0.5, and ·256 is a shift.
      const float r = in[i] / c;  // |r| ≤ 127·(1 + 2^−23)
      float u0 = round_to_integer(r);
      float d = (r - u0) * 256.0f;
      float u1 = round_to_integer(d);
      // d ≥ 127.5 rounds to 128, past int8: carry it into u0, which then is ≤ 126 + 1.
      const float carry = u1 > 127.0f ? 1.0f : 0.0f;
      u0 += carry;
      d -= 256.0f * carry;
      u1 -= 256.0f * carry;
      const float u2 = std::min(round_to_integer((d - u1) * 256.0f), 127.0f);  // ≥ −128
      const auto k0 = static_cast<std::int32_t>(u0);
      const auto k1 = static_cast<std::int32_t>(u1);
      const auto k2 = static_cast<std::int32_t>(u2);
      q0[i] = static_cast<std::int8_t>(k0);
      q1[i] = static_cast<std::int8_t>(k1);
      q2[i] = static_cast<std::int8_t>(k2);
      sum0 += k0;
      sum1 += k1;
      sum2 += k2;
    }
    const std::int32_t sums[limbs] = {sum0, sum1, sum2};
    for (int j = 0; j < limbs; ++j) {
      const auto at = static_cast<std::size_t>((limbs * m + j) * w.groups + l);
      sums_[at] = sums[j];
      scales_[at] = std::ldexp(c, -8 * j);
    }
    return true;
  }

  AlignedVector<std::int8_t> codes_;  // cache-line aligned, like the weights
  std::vector<std::int32_t> sums_;
  std::vector<float> scales_;
  DotActivationView view_;
};

/// Owns the padded FP32 rows of a LevelActivationView.
class LevelActivations {
 public:
  LevelActivations(const LevelActivations&) = delete;  // the view points into this object
  LevelActivations& operator=(const LevelActivations&) = delete;

  /// Copies x (M×K) into zero-padded rows; throws Errc::invalid_argument naming its first
  /// NaN or infinity.
  LevelActivations(ConstMatrixView x, const DotWeightView& w)
      : x_(static_cast<std::size_t>(x.rows * w.padded_cols), 0.0f),
        view_{x_.data(), nullptr, x.rows, w.padded_cols} {
    for (index_t m = 0; m < x.rows; ++m)
      for (index_t i = 0; i < x.cols; ++i) {
        const float v = x.row(m)[i];
        QLR_CHECK(std::isfinite(v), invalid_argument,
                  "kernels::gemm: x({}, {}) = {}; expected finite activations", m, i, v);
        x_[static_cast<std::size_t>(m * w.padded_cols + i)] = v;
      }
  }

  /// Codes q (M×K) as floats, the output scaled by each token's s_x.
  LevelActivations(const ActivationCodes& a, const DotWeightView& w)
      : x_(static_cast<std::size_t>(a.rows * w.padded_cols), 0.0f),
        view_{x_.data(), a.scales, a.rows, w.padded_cols} {
    for (index_t m = 0; m < a.rows; ++m)
      for (index_t i = 0; i < a.cols; ++i)
        x_[static_cast<std::size_t>(m * w.padded_cols + i)] = a.codes[m * a.stride + i];
  }

  /// The view kernels take; valid while this object lives.
  [[nodiscard]] const LevelActivationView& view() const noexcept { return view_; }

 private:
  AlignedVector<float> x_;
  LevelActivationView view_;
};

}  // namespace detail
}  // namespace qlr::kernels
