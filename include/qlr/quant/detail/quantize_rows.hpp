// SPDX-License-Identifier: Apache-2.0
// The frame every weight quantizer shares: validate W, lay out the QuantizedMatrix parts,
// code the rows in parallel and pack them. Quantizers supply only how one row is coded.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "qlr/core/bit_pack.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/format.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/numeric.hpp"
#include "qlr/core/parallel.hpp"

namespace qlr::quant::detail {

/// How the rows of one quantization are laid out.
struct RowLayout {
  index_t group_size;            ///< requested g; 0 or ≥ K is one group per row
  ScaleType scale_type;          ///< storage type of the scales
  ZeroMode zero_mode;            ///< storage of the zero points (int_asym)
  std::vector<float> codebook;   ///< the table of a codebook format, else empty
};

/// Quantizes `w` (N×K) row by row: code_row(o, codes, scales, zeros) codes row o of w into
/// its K unpacked codes, its groups' scales and, for int_asym, its groups' zeros (nullptr
/// otherwise). Rows are independent, so any thread count gives the
/// same bytes. Throws for an empty or non-finite w and for g < 0.
template <QuantFormatType Format, class CodeRow>
QuantizedMatrix<Format> quantize_rows(ConstMatrixRef w, RowLayout layout, const char* entity,
                                      const CodeRow& code_row) {
  require_round_to_nearest(entity);
  QLR_CHECK(w.rows() > 0 && w.cols() > 0, shape_mismatch,
            "{}: w is {}x{}; expected a non-empty matrix", entity, w.rows(), w.cols());
  check_finite(w, entity);

  constexpr bool has_zeros = Format::encoding == Encoding::int_asym;
  QuantizedParts p;
  p.rows = w.rows();
  p.cols = w.cols();
  p.group_size = effective_group_size(layout.group_size, p.cols, entity);
  p.zero_mode = has_zeros ? layout.zero_mode : ZeroMode::integer;
  p.scale_type = layout.scale_type;
  p.codebook = std::move(layout.codebook);
  const index_t groups = group_count(p.cols, p.group_size);
  const index_t stride = packed_size(Format::bits, p.cols);
  p.codes.resize(static_cast<std::size_t>(p.rows * stride));
  p.scales.resize(static_cast<std::size_t>(p.rows * groups));
  if (has_zeros) p.zeros.resize(p.scales.size());

  parallel_for(p.rows, 8, [&](index_t row_begin, index_t row_end) {
    std::vector<std::uint8_t> codes(static_cast<std::size_t>(p.cols));
    for (index_t o = row_begin; o < row_end; ++o) {
      code_row(o, codes.data(), p.scales.data() + o * groups,
               has_zeros ? p.zeros.data() + o * groups : nullptr);
      qlr::detail::pack_codes_unchecked(Format::bits, codes.data(), p.cols,
                                        p.codes.data() + o * stride);
    }
  });
  return QuantizedMatrix<Format>(std::move(p));
}

}  // namespace qlr::quant::detail
