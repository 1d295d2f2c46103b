// SPDX-License-Identifier: Apache-2.0
// The weight-only kernels' prepacked layout of a group-quantized INT4/INT8 matrix, built once
// from a QuantizedMatrix, and the plain view of it that crosses the dispatch boundary.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "qlr/core/bit_pack.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/format.hpp"
#include "qlr/core/types.hpp"

namespace qlr::kernels {

/// Codes per block: the unit the kernels load (one 16-byte INT4 or 32-byte INT8 load).
inline constexpr index_t block_codes = 32;

// Layout of one output row, K codes padded with code 0 to B = ⌈K/32⌉ blocks of 32:
//
//   INT4, 16 bytes per block          INT8, 32 bytes per block
//   byte j = code j      (bits 0-3)   byte j = code j
//          | code j + 16 (bits 4-7)
//
//   row o:  [block 0][block 1] … [block B−1]      rows follow each other, o = 0 … N−1
//
// Splitting a block into its low and high nibbles gives codes 0-15 and 16-31 in order, so a
// kernel widens 16 bytes into two vectors of consecutive codes with one shift. The padded
// codes meet activations the kernel reads as 0 past K, so they add nothing. A block never
// straddles two groups: the group size is a multiple of 32 or the whole row.
//
// Beside the codes, per (row, group): scale s and zero z (2^(b−1) for symmetric formats),
// so that ŵ = s·(u − z), the value dequantize() gives.

/// What a kernel needs of a packed weight: plain pointers and sizes, no templates.
struct PackedView {
  const std::uint8_t* codes = nullptr;  ///< rows × row_bytes
  const float* scales = nullptr;        ///< rows × groups
  const float* zeros = nullptr;         ///< rows × groups (2^(b−1) for symmetric formats)
  index_t rows = 0;                     ///< N
  index_t cols = 0;                     ///< K
  index_t blocks = 0;                   ///< blocks per row, ⌈K/32⌉
  index_t blocks_per_group = 0;         ///< g/32, or `blocks` for one group per row
  index_t groups = 0;                   ///< groups per row
  int bits = 0;                         ///< 4 or 8

  /// Bytes per packed row.
  [[nodiscard]] index_t row_bytes() const noexcept { return blocks * block_codes * bits / 8; }
  /// The packed codes of row `o`.
  [[nodiscard]] const std::uint8_t* row(index_t o) const noexcept {
    return codes + o * row_bytes();
  }
};

/// A QuantizedMatrix<Format> repacked for the weight-only kernels (INT4 or INT8, symmetric
/// or asymmetric). Owns its buffers; view() hands them to a kernel.
template <QuantFormatType Format>
class PackedWeights {
 public:
  static_assert(Format::bits == 4 || Format::bits == 8,
                "the weight-only kernels take INT4 or INT8 codes");
  static_assert(Format::encoding == Encoding::int_asym || Format::encoding == Encoding::int_sym,
                "the weight-only kernels take integer codes with a scale (and zero) per group");

  /// Repacks `q`. Throws when its group size is neither a multiple of 32 nor the whole row.
  explicit PackedWeights(const QuantizedMatrix<Format>& q)
      : rows_(q.rows()), cols_(q.cols()), group_size_(q.group_size()) {
    QLR_CHECK(group_size_ % block_codes == 0 || group_size_ == cols_, unsupported,
              "kernels::PackedWeights: group_size = {}; expected a multiple of {} or the whole "
              "row (K = {})",
              group_size_, block_codes, cols_);
    const index_t blocks = (cols_ + block_codes - 1) / block_codes;
    const index_t row_bytes = blocks * block_codes * Format::bits / 8;
    codes_.assign(static_cast<std::size_t>(rows_ * row_bytes), 0);
    std::vector<std::uint8_t> row_codes(static_cast<std::size_t>(blocks * block_codes), 0);
    for (index_t o = 0; o < rows_; ++o) {
      unpack_codes(Format::bits, q.row_codes(o),
                   std::span(row_codes).first(static_cast<std::size_t>(cols_)));
      std::uint8_t* out = codes_.data() + o * row_bytes;
      for (index_t b = 0; b < blocks; ++b) {
        const std::uint8_t* c = row_codes.data() + b * block_codes;
        if constexpr (Format::bits == 4) {
          for (index_t j = 0; j < 16; ++j)
            out[b * 16 + j] = static_cast<std::uint8_t>(c[j] | (c[j + 16] << 4));
        } else {
          for (index_t j = 0; j < block_codes; ++j) out[b * block_codes + j] = c[j];
        }
      }
    }
    scales_.assign(q.scales().begin(), q.scales().end());
    if constexpr (Format::encoding == Encoding::int_asym)
      zeros_.assign(q.zeros().begin(), q.zeros().end());
    else
      zeros_.assign(scales_.size(), static_cast<float>(1 << (Format::bits - 1)));
    zero_mode_ = q.zero_mode();
    scale_type_ = q.scale_type();
  }

  /// The view a kernel reads.
  [[nodiscard]] PackedView view() const noexcept {
    const index_t blocks = (cols_ + block_codes - 1) / block_codes;
    const index_t groups = group_count(cols_, group_size_);
    return {codes_.data(), scales_.data(), zeros_.data(), rows_,
            cols_,         blocks,         group_size_ == cols_ ? blocks : group_size_ / block_codes,
            groups,        Format::bits};
  }

  [[nodiscard]] index_t rows() const noexcept { return rows_; }  ///< N
  [[nodiscard]] index_t cols() const noexcept { return cols_; }  ///< K
  /// Bytes of packed codes, what a GEMV streams from memory.
  [[nodiscard]] std::size_t code_bytes() const noexcept { return codes_.size(); }

  /// The canonical QuantizedMatrix back, byte for byte (the layout's round-trip test).
  [[nodiscard]] QuantizedMatrix<Format> unpack() const {
    const PackedView v = view();
    QuantizedParts p;
    p.rows = rows_;
    p.cols = cols_;
    p.group_size = group_size_;
    p.codes.resize(static_cast<std::size_t>(rows_ * packed_size(Format::bits, cols_)));
    std::vector<std::uint8_t> row_codes(static_cast<std::size_t>(v.blocks * block_codes));
    for (index_t o = 0; o < rows_; ++o) {
      const std::uint8_t* in = v.row(o);
      for (index_t b = 0; b < v.blocks; ++b) {
        std::uint8_t* c = row_codes.data() + b * block_codes;
        if constexpr (Format::bits == 4) {
          for (index_t j = 0; j < 16; ++j) {
            c[j] = in[b * 16 + j] & 0x0f;
            c[j + 16] = static_cast<std::uint8_t>(in[b * 16 + j] >> 4);
          }
        } else {
          for (index_t j = 0; j < block_codes; ++j) c[j] = in[b * block_codes + j];
        }
      }
      qlr::detail::pack_codes_unchecked(
          Format::bits, row_codes.data(), cols_,
          p.codes.data() + o * packed_size(Format::bits, cols_));
    }
    p.scales = scales_;
    if constexpr (Format::encoding == Encoding::int_asym) p.zeros = zeros_;
    p.zero_mode = zero_mode_;
    p.scale_type = scale_type_;
    return QuantizedMatrix<Format>(std::move(p));
  }

 private:
  index_t rows_;
  index_t cols_;
  index_t group_size_;
  std::vector<std::uint8_t> codes_;
  std::vector<float> scales_;
  std::vector<float> zeros_;
  ZeroMode zero_mode_ = ZeroMode::integer;
  ScaleType scale_type_ = ScaleType::f32;
};

}  // namespace qlr::kernels
