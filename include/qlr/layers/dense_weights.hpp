// SPDX-License-Identifier: Apache-2.0
// The dense kernel's weight: a QuantizedMatrix held as compactly as it is stored (codes as
// one bit stream per row, f16 scales as 16 bits, integer zeros as bytes) and decoded a tile
// of rows at a time into FP32 scratch for Eigen's product. Any format (NF4, or any other on
// request) runs this way without the layer ever holding an FP32 copy of its weight.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <utility>
#include <vector>

#include "qlr/core/format.hpp"
#include "qlr/core/half.hpp"
#include "qlr/core/types.hpp"
#include "qlr/kernels/detail/input_grad_tile.hpp"
#include "qlr/quant/dequantize.hpp"

namespace qlr::layers {

namespace detail {

/// Per-group floats at the width their ScaleType stores: 16 bits for f16, else 32 (as two
/// 16-bit halves, so that one vector serves both widths).
class GroupFloats {
 public:
  GroupFloats() = default;
  /// Keeps `values`, which are exact in `type`.
  GroupFloats(std::span<const float> values, ScaleType type) : half_(type == ScaleType::f16) {
    bits_.resize(values.size() * (half_ ? 1 : 2));
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (half_)
        bits_[i] = float_to_half_bits(values[i]);
      else
        std::memcpy(&bits_[2 * i], &values[i], sizeof(float));
    }
  }
  /// Value `i`.
  [[nodiscard]] float operator[](std::size_t i) const noexcept {
    if (half_) return half_bits_to_float(bits_[i]);
    float v;
    std::memcpy(&v, &bits_[2 * i], sizeof(float));
    return v;
  }
  /// Number of values.
  [[nodiscard]] std::size_t size() const noexcept { return half_ ? bits_.size() : bits_.size() / 2; }
  /// Bytes held.
  [[nodiscard]] std::size_t bytes() const noexcept {
    return sizeof(std::uint16_t) * bits_.capacity();
  }

 private:
  std::vector<std::uint16_t> bits_;
  bool half_ = false;
};

/// The codebook of a codebook format, held in place; nothing for the others.
template <QuantFormatType Format>
struct Codebook {
  std::array<float, 1 << Format::bits> values{};  ///< 2^bits ascending values
};
/// Integer formats decode without a table.
template <QuantFormatType Format>
  requires(Format::encoding != Encoding::codebook)
struct Codebook<Format> {};

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
        // Integer zeros (0 … 255) are exact in f16; floating ones keep the scales' type.
        zeros_(q.zeros(), zero_mode_ == ZeroMode::integer ? ScaleType::f16 : scale_type_) {
    if constexpr (Format::encoding == Encoding::codebook)
      std::copy(q.codebook().begin(), q.codebook().end(), codebook_.values.begin());
  }

  [[nodiscard]] index_t rows() const noexcept { return rows_; }  ///< N
  [[nodiscard]] index_t cols() const noexcept { return cols_; }  ///< K

  /// Rows [n0, n0 + count) of Ŵ into out (count×K, row-major).
  void decode_rows(index_t n0, index_t count, float* out) const noexcept {
    decode_tile(n0, count, 0, cols_, out, cols_);
  }

  /// Ŵ[n0 + t, k0 + j] for t < rows, j < cols into out[t·stride + j]; k0 is a multiple of 8.
  void decode_tile(index_t n0, index_t rows, index_t k0, index_t cols, float* out,
                   index_t stride) const noexcept {
    const index_t groups = group_count(cols_, group_size_);
    const index_t row_bytes = packed_size(Format::bits, cols_);
    for (index_t o = n0; o < n0 + rows; ++o) {
      const auto at = static_cast<std::size_t>(o * groups);
      quant::detail::decode_row(
          Format::bits, codes_.data() + o * row_bytes, k0, k0 + cols, group_size_, table(),
          [&](index_t l) { return scales_[at + static_cast<std::size_t>(l)]; },
          [&](index_t l) { return zero(at + static_cast<std::size_t>(l)); },
          out + (o - n0) * stride);
    }
  }

  /// The canonical matrix back, bit for bit.
  [[nodiscard]] QuantizedMatrix<Format> unpack() const {
    QuantizedParts parts = empty_parts(rows_, cols_, group_size_, scale_type_, zero_mode_);
    parts.codes = codes_;
    if constexpr (Format::encoding == Encoding::codebook)
      parts.codebook.assign(codebook_.values.begin(), codebook_.values.end());
    for (std::size_t i = 0; i < scales_.size(); ++i) parts.scales.push_back(scales_[i]);
    if constexpr (Format::encoding == Encoding::int_asym)
      for (std::size_t i = 0; i < scales_.size(); ++i) parts.zeros.push_back(zero(i));
    return QuantizedMatrix<Format>(std::move(parts));
  }

  /// Bytes this object holds.
  [[nodiscard]] std::size_t memory_bytes() const noexcept {
    return sizeof(*this) + codes_.capacity() + scales_.bytes() + zeros_.bytes();
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
      return zeros_[i];
  }

  [[nodiscard]] const float* table() const noexcept {
    if constexpr (Format::encoding == Encoding::codebook)
      return codebook_.values.data();
    else
      return nullptr;
  }

  index_t rows_;
  index_t cols_;
  index_t group_size_;
  ScaleType scale_type_;
  ZeroMode zero_mode_;
  std::vector<std::uint8_t> codes_;  // rows × ⌈K·bits/8⌉, as QuantizedMatrix
  detail::GroupFloats scales_;       // rows × groups
  detail::GroupFloats zeros_;        // rows × groups for int_asym; else empty
  [[no_unique_address]] detail::Codebook<Format> codebook_;  // the table of a codebook format
};

/// The tiles of `w`, for kernels::input_grad; they point to `w`, which must outlive them.
template <QuantFormatType Format>
kernels::WeightTiles weight_tiles(const DenseWeights<Format>& w) noexcept {
  return {&w,
          [](const void* p, index_t n0, index_t rows, index_t k0, index_t cols, float* out,
             index_t stride) noexcept {
            static_cast<const DenseWeights<Format>*>(p)->decode_tile(n0, rows, k0, cols, out,
                                                                     stride);
          },
          w.rows(), w.cols()};
}

}  // namespace qlr::layers
