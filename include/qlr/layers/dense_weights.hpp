// SPDX-License-Identifier: Apache-2.0
// The dense kernel's weight: a QuantizedMatrix held as compactly as it is stored (codes as
// one bit stream per row, f16 scales as 16 bits, integer zeros as bytes) and decoded a tile
// of rows at a time into FP32 scratch for Eigen's product. Any format (INT2/INT3, NF4) runs
// this way without the layer ever holding an FP32 copy of its weight.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "qlr/core/format.hpp"
#include "qlr/core/half.hpp"
#include "qlr/core/types.hpp"
#include "qlr/quant/dequantize.hpp"

namespace qlr::layers {

namespace detail {

/// Per-group floats at the width their ScaleType stores: 16 bits for f16, else 32.
class GroupFloats {
 public:
  GroupFloats() = default;
  /// Keeps `values`, which are exact in `type`.
  GroupFloats(std::span<const float> values, ScaleType type) {
    if (type == ScaleType::f16) {
      half_.reserve(values.size());
      for (const float v : values) half_.push_back(float_to_half_bits(v));
    } else {
      full_.assign(values.begin(), values.end());
    }
  }
  /// Value `i`.
  [[nodiscard]] float operator[](std::size_t i) const noexcept {
    return full_.empty() ? half_bits_to_float(half_[i]) : full_[i];
  }
  /// Number of values.
  [[nodiscard]] std::size_t size() const noexcept { return full_.empty() ? half_.size() : full_.size(); }
  /// Bytes held.
  [[nodiscard]] std::size_t bytes() const noexcept {
    return sizeof(std::uint16_t) * half_.capacity() + sizeof(float) * full_.capacity();
  }

 private:
  std::vector<std::uint16_t> half_;
  std::vector<float> full_;
};

}  // namespace detail

/// A QuantizedMatrix<Format> in the dense kernel's compact form: what it stores, no more.
template <QuantFormatType Format>
class DenseWeights {
 public:
  /// Takes `q`'s contents.
  explicit DenseWeights(const QuantizedMatrix<Format>& q)
      : rows_(q.rows()),
        cols_(q.cols()),
        group_size_(q.group_size()),
        scale_type_(q.scale_type()),
        zero_mode_(q.zero_mode()),
        codes_(q.codes().begin(), q.codes().end()),
        scales_(q.scales(), q.scale_type()),
        codebook_(q.codebook().begin(), q.codebook().end()) {
    if constexpr (Format::encoding == Encoding::int_asym) {
      if (zero_mode_ == ZeroMode::integer) {
        integer_zeros_.reserve(q.zeros().size());
        for (const float z : q.zeros()) integer_zeros_.push_back(static_cast<std::uint8_t>(z));
      } else {
        float_zeros_ = detail::GroupFloats(q.zeros(), scale_type_);
      }
    }
  }

  [[nodiscard]] index_t rows() const noexcept { return rows_; }  ///< N
  [[nodiscard]] index_t cols() const noexcept { return cols_; }  ///< K

  /// Rows [n0, n0 + count) of Ŵ into out (count×K, row-major).
  void decode_rows(index_t n0, index_t count, float* out) const noexcept {
    const index_t groups = group_count(cols_, group_size_);
    const index_t stride = packed_size(Format::bits, cols_);
    for (index_t o = n0; o < n0 + count; ++o) {
      const auto at = static_cast<std::size_t>(o * groups);
      quant::detail::decode_row(
          Format::bits, codes_.data() + o * stride, cols_, group_size_,
          codebook_.empty() ? nullptr : codebook_.data(),
          [&](index_t l) { return scales_[at + static_cast<std::size_t>(l)]; },
          [&](index_t l) { return zero(at + static_cast<std::size_t>(l)); },
          out + (o - n0) * cols_);
    }
  }

  /// The canonical matrix back, bit for bit.
  [[nodiscard]] QuantizedMatrix<Format> unpack() const {
    QuantizedParts parts;
    parts.rows = rows_;
    parts.cols = cols_;
    parts.group_size = group_size_;
    parts.scale_type = scale_type_;
    parts.zero_mode = zero_mode_;
    parts.codes = codes_;
    parts.codebook = codebook_;
    for (std::size_t i = 0; i < scales_.size(); ++i) parts.scales.push_back(scales_[i]);
    if constexpr (Format::encoding == Encoding::int_asym)
      for (std::size_t i = 0; i < scales_.size(); ++i) parts.zeros.push_back(zero(i));
    return QuantizedMatrix<Format>(std::move(parts));
  }

  /// Bytes this object holds.
  [[nodiscard]] std::size_t memory_bytes() const noexcept {
    return sizeof(*this) + codes_.capacity() + scales_.bytes() + integer_zeros_.capacity() +
           float_zeros_.bytes() + sizeof(float) * codebook_.capacity();
  }
  /// The storage cost per weight of the matrix it holds (QuantizedMatrix::bits_per_parameter).
  [[nodiscard]] double bits_per_parameter() const noexcept {
    return storage_bits_per_parameter(Format::bits, Format::encoding, rows_, cols_, group_size_,
                                      scale_type_, zero_mode_);
  }

 private:
  [[nodiscard]] float zero(std::size_t i) const noexcept {
    if constexpr (Format::encoding != Encoding::int_asym)
      return static_cast<float>(1 << (Format::bits - 1));
    else
      return integer_zeros_.empty() ? float_zeros_[i] : static_cast<float>(integer_zeros_[i]);
  }

  index_t rows_;
  index_t cols_;
  index_t group_size_;
  ScaleType scale_type_;
  ZeroMode zero_mode_;
  std::vector<std::uint8_t> codes_;          // rows × ⌈K·bits/8⌉, as QuantizedMatrix
  detail::GroupFloats scales_;               // rows × groups
  std::vector<std::uint8_t> integer_zeros_;  // rows × groups: int_asym, ZeroMode::integer
  detail::GroupFloats float_zeros_;          // rows × groups: int_asym, ZeroMode::floating
  std::vector<float> codebook_;              // 2^bits values: codebook encoding
};

}  // namespace qlr::layers
