// SPDX-License-Identifier: Apache-2.0
// Dequantization of a QuantizedMatrix back to FP32: the semantics every kernel must match.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "qlr/core/bit_pack.hpp"
#include "qlr/core/format.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/parallel.hpp"

namespace qlr::quant {

namespace detail {

/// Decodes columns [begin, end) of one row of codes of width `bits` from `packed` (the whole
/// row) into out[0, end − begin), with scale_of(l) and zero_of(l) for group l (groups of `g`):
/// ŵ = s·(u − z), or s·table[u] when `table` is set. `begin` is a multiple of 8, so that it
/// starts on a byte. Every stored form of a quantized row (QuantizedMatrix, the dense
/// kernel's compact one) decodes through here, so they cannot disagree.
template <class ScaleOf, class ZeroOf>
void decode_row(int bits, const std::uint8_t* packed, index_t begin, index_t end, index_t g,
                const float* table, ScaleOf&& scale_of, ZeroOf&& zero_of, float* out) noexcept {
  // The codes are unpacked into `out` as floats first, then scaled in place.
  std::uint8_t codes[256];
  for (index_t at = begin; at < end; at += 256) {
    const index_t n = std::min<index_t>(256, end - at);
    // Whole bytes only: `at` is a multiple of 8, so its code starts a byte at any width.
    qlr::detail::unpack_codes_unchecked(bits, packed + packed_size(bits, at), n, codes);
    for (index_t i = 0; i < n; ++i) out[at - begin + i] = static_cast<float>(codes[i]);
  }
  for (index_t l = begin / g; l * g < end; ++l) {
    const float s = scale_of(l);
    const index_t first = std::max(begin, l * g) - begin;
    const index_t last = std::min(end, (l + 1) * g) - begin;
    if (table != nullptr) {
      for (index_t i = first; i < last; ++i) out[i] = table[static_cast<std::size_t>(out[i])] * s;
    } else {
      const float z = zero_of(l);
      for (index_t i = first; i < last; ++i) out[i] = s * (out[i] - z);
    }
  }
}

}  // namespace detail

/// Writes row `o` of Ŵ into out[0, K): ŵ = s·(u − Z) (int_asym), s·(u − 2^(b−1)) (int_sym)
/// or s·table[u] (codebook), one f32 rounding per element for integer zeros.
template <QuantFormatType F>
void dequantize_row(const QuantizedMatrix<F>& q, index_t o, float* out) noexcept {
  detail::decode_row(
      F::bits, q.row_codes(o).data(), 0, q.cols(), q.group_size(),
      F::encoding == Encoding::codebook ? q.codebook().data() : nullptr,
      [&](index_t l) { return q.scale(o, l); },
      [&](index_t l) {
        return F::encoding == Encoding::int_asym ? q.zero(o, l)
                                                 : static_cast<float>(1 << (F::bits - 1));
      },
      out);
}

/// Ŵ (N×K) in FP32.
template <QuantFormatType F>
Matrix dequantize(const QuantizedMatrix<F>& q) {
  Matrix w(q.rows(), q.cols());
  parallel_for(q.rows(), 8, [&](index_t begin, index_t end) {
    for (index_t o = begin; o < end; ++o) dequantize_row(q, o, w.row(o).data());
  });
  return w;
}

}  // namespace qlr::quant
