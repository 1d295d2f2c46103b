// SPDX-License-Identifier: Apache-2.0
// The Quantizer role: a policy value that turns an FP32 weight into a QuantizedMatrix of its
// compile-time format. Group size and range search are runtime options of the policy.
#pragma once

#include <concepts>

#include "qlr/core/format.hpp"
#include "qlr/core/matrix.hpp"

namespace qlr::quant {

/// Code widths of the integer group quantizers; others are rejected at compile time.
template <int Bits>
concept SupportedIntBits = Bits == 2 || Bits == 3 || Bits == 4 || Bits == 8;

/// A quantizer policy: names its QuantFormat and quantizes a weight W (N×K) into it.
template <class Q>
concept Quantizer = requires(const Q& q, ConstMatrixRef w) {
  typename Q::format;                          // the QuantFormat<bits, encoding> it produces
  requires QuantFormatType<typename Q::format>;  // a packable width and an Encoding
  { q.quantize(w) } -> std::same_as<QuantizedMatrix<typename Q::format>>;  // W (N×K) → codes
};

/// Quantizes `w` (N×K) with policy `q`: the same as q.quantize(w).
template <Quantizer Q>
QuantizedMatrix<typename Q::format> quantize(ConstMatrixRef w, const Q& q) {
  return q.quantize(w);
}

}  // namespace qlr::quant
