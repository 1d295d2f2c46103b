// SPDX-License-Identifier: Apache-2.0
// The weight-only kernels' prepacked layout of a group-quantized INT4/INT8 matrix, built once
// from a QuantizedMatrix, and the plain view of it that crosses the dispatch boundary.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "qlr/core/aligned.hpp"
#include "qlr/core/bit_pack.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/format.hpp"
#include "qlr/core/types.hpp"

namespace qlr::kernels {

/// Codes per block: the unit a group is made of (a group is whole blocks or the whole row).
inline constexpr index_t block_codes = 32;
/// Codes per chunk: 4 blocks, the unit a kernel loads (64 bytes of INT4, 128 of INT8).
inline constexpr index_t chunk_codes = 4 * block_codes;
/// Output rows per weight-only panel: the rows a tile reads side by side.
inline constexpr index_t wq_panel_rows = 4;

// Layout. Rows are grouped in panels of 4 (the last one padded with code 0 and scale 0);
// K is padded with code 0 to C = ⌈K/128⌉ chunks of 128 codes. Chunk c of row r of panel p
// sits at ((p·C + c)·4 + r)·chunk_bytes, so a GEMV reads its weights as one forward stream:
//
//   panel p:  [chunk 0: row 0][row 1][row 2][row 3]  [chunk 1: row 0] … [chunk C−1: row 3]
//
// Inside a chunk, block j = 0…3 holds the codes of columns 128c + 32j + i, i = 0…31:
//
//   INT4, 64 bytes: 16-bit word i = code of block 0 (bits 0-3) | block 1 (bits 4-7)
//                                 | block 2 (bits 8-11) | block 3 (bits 12-15)
//   INT8, 128 bytes: byte 32j + i = code of block j
//
// An INT4 chunk is one 512-bit load. Shifting its words right by 4j brings block j's 32 codes
// to the low nibbles: AVX-512 widens the words to 32-bit lanes once per chunk and indexes a
// 16-entry table s·(u − z) with vpermps, which reads only bits 0-3, so it needs no mask;
// AVX2 masks. The padded codes meet activations that are 0 past K, so they add nothing.
//
// Beside the codes, per (row, group) of the padded rows: scale s and zero z (2^(b−1) for
// symmetric formats), so that ŵ = s·(u − z), the value dequantize() gives.

/// What a kernel needs of a packed weight: plain pointers and sizes, no templates.
struct PackedView {
  const std::uint8_t* codes = nullptr;  ///< panels × chunks × 4 × chunk_bytes()
  const float* scales = nullptr;        ///< padded rows × groups
  const float* zeros = nullptr;         ///< padded rows × groups (2^(b−1) if symmetric)
  index_t rows = 0;                     ///< N
  index_t cols = 0;                     ///< K
  index_t panels = 0;                   ///< ⌈N/4⌉
  index_t chunks = 0;                   ///< chunks per row, ⌈K/128⌉
  index_t blocks = 0;                   ///< blocks per row holding columns < K, ⌈K/32⌉
  index_t blocks_per_group = 0;         ///< g/32, or `blocks` for one group per row
  index_t groups = 0;                   ///< groups per row
  int bits = 0;                         ///< 4 or 8

  /// Bytes per chunk of one row.
  [[nodiscard]] index_t chunk_bytes() const noexcept { return chunk_codes * bits / 8; }
  /// Chunk `c` of row `r` of panel `p`.
  [[nodiscard]] const std::uint8_t* chunk(index_t p, index_t c, index_t r) const noexcept {
    return codes + ((p * chunks + c) * wq_panel_rows + r) * chunk_bytes();
  }
  /// Offset of the parameters of (row o, group l) in scales and zeros.
  [[nodiscard]] index_t params(index_t o, index_t l) const noexcept { return o * groups + l; }
  /// The code of row o, column i (any column of the padded chunks).
  [[nodiscard]] unsigned code(index_t o, index_t i) const noexcept {
    const std::uint8_t* ch = chunk(o / wq_panel_rows, i / chunk_codes, o % wq_panel_rows);
    const index_t j = i % chunk_codes / block_codes, w = i % block_codes;
    if (bits == 8) return ch[j * block_codes + w];
    const unsigned word = ch[2 * w] | (unsigned{ch[2 * w + 1]} << 8);
    return (word >> (4 * j)) & 0x0fu;
  }
};

/// A QuantizedMatrix<Format> repacked for the weight-only kernels (INT4 or INT8, symmetric
/// or asymmetric, integer or floating zero points). Owns its buffers; view() lends them.
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
    panels_ = (rows_ + wq_panel_rows - 1) / wq_panel_rows;
    chunks_ = (cols_ + chunk_codes - 1) / chunk_codes;
    groups_ = group_count(cols_, group_size_);
    pack_codes(q);
    pack_parameters(q);
    zero_mode_ = q.zero_mode();
    scale_type_ = q.scale_type();
  }

  /// The view a kernel reads.
  [[nodiscard]] PackedView view() const noexcept {
    const index_t blocks = (cols_ + block_codes - 1) / block_codes;
    return {
        codes_.data(), scales_.data(), zeros_.data(),
        rows_,         cols_,          panels_,
        chunks_,       blocks,         group_size_ == cols_ ? blocks : group_size_ / block_codes,
        groups_,       Format::bits};
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
    std::vector<std::uint8_t> row_codes(static_cast<std::size_t>(cols_));
    for (index_t o = 0; o < rows_; ++o) {
      for (index_t i = 0; i < cols_; ++i)
        row_codes[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v.code(o, i));
      qlr::detail::pack_codes_unchecked(Format::bits, row_codes.data(), cols_,
                                        p.codes.data() + o * packed_size(Format::bits, cols_));
    }
    const auto real = static_cast<std::ptrdiff_t>(rows_ * groups_);
    p.scales.assign(scales_.begin(), scales_.begin() + real);
    if constexpr (Format::encoding == Encoding::int_asym)
      p.zeros.assign(zeros_.begin(), zeros_.begin() + real);
    p.zero_mode = zero_mode_;
    p.scale_type = scale_type_;
    return QuantizedMatrix<Format>(std::move(p));
  }

 private:
  void pack_codes(const QuantizedMatrix<Format>& q) {
    constexpr index_t chunk_bytes = chunk_codes * Format::bits / 8;
    codes_.assign(static_cast<std::size_t>(panels_ * chunks_ * wq_panel_rows * chunk_bytes), 0);
    std::vector<std::uint8_t> u(static_cast<std::size_t>(chunks_ * chunk_codes), 0);
    for (index_t o = 0; o < rows_; ++o) {
      unpack_codes(Format::bits, q.row_codes(o),
                   std::span(u).first(static_cast<std::size_t>(cols_)));
      for (index_t c = 0; c < chunks_; ++c) {
        std::uint8_t* out =
            codes_.data() +
            ((o / wq_panel_rows * chunks_ + c) * wq_panel_rows + o % wq_panel_rows) * chunk_bytes;
        for (index_t k = 0; k < chunk_codes; ++k) {
          const std::uint8_t code = u[static_cast<std::size_t>(c * chunk_codes + k)];
          const index_t j = k / block_codes, w = k % block_codes;
          if constexpr (Format::bits == 8)
            out[k] = code;
          else  // word w, nibble j: byte 2w + j/2, low or high half
            out[2 * w + j / 2] |= static_cast<std::uint8_t>(code << (4 * (j % 2)));
        }
      }
    }
  }

  void pack_parameters(const QuantizedMatrix<Format>& q) {
    const auto count = static_cast<std::size_t>(panels_ * wq_panel_rows * groups_);
    const auto real = static_cast<std::size_t>(rows_ * groups_);
    scales_.assign(count, 0.0f);
    zeros_.assign(count, 0.0f);
    std::copy_n(q.scales().begin(), real, scales_.begin());
    if constexpr (Format::encoding == Encoding::int_asym)
      std::copy_n(q.zeros().begin(), real, zeros_.begin());
    else
      std::fill_n(zeros_.begin(), real, static_cast<float>(1 << (Format::bits - 1)));
  }

  index_t rows_;
  index_t cols_;
  index_t group_size_;
  index_t panels_ = 0;
  index_t chunks_ = 0;
  index_t groups_ = 0;
  AlignedVector<std::uint8_t> codes_;  // cache-line aligned: kernels load 64 bytes at a time
  std::vector<float> scales_;
  std::vector<float> zeros_;
  ZeroMode zero_mode_ = ZeroMode::integer;
  ScaleType scale_type_ = ScaleType::f32;
};

}  // namespace qlr::kernels
