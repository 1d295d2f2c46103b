// SPDX-License-Identifier: Apache-2.0
// The Adapter role: a low-rank side path y += B·t, t = project(x), that a quantized layer
// fuses into its kernel's epilogue, and the rule saying which base formats it may sit beside.
#pragma once

#include <concepts>

#include "qlr/core/matrix.hpp"
#include "qlr/core/types.hpp"

namespace qlr::adapter {

/// A low-rank side path y += B·t with t = project(x): what QuantizedLinear fuses into its
/// kernel's epilogue.
template <class A>
concept Adapter = requires(const A& a, ConstMatrixRef x, MatrixRef t) {
  { a.in_features() } -> std::same_as<index_t>;       // K of the layer it fits
  { a.out_features() } -> std::same_as<index_t>;      // N
  { a.rank() } -> std::same_as<index_t>;              // r, columns of t
  a.project(x, t);                                    // t (M×r) = s·A·pool(x), FP32: before B
  { a.up() } -> std::convertible_to<ConstMatrixRef>;  // B (N×r), FP32 (dequantized if stored so)
  { a.delta() } -> std::same_as<Matrix>;              // dense ΔW (N×K), input basis, for merges
};

/// An adapter that can sit beside a base of quantized format `Format` (QA-LoRA needs int_asym
/// zero points).
template <class A, class Format>
concept AdapterFor = Adapter<A> && requires {
  requires A::template compatible_with<Format>;  // its rule for this base (QA-LoRA: int_asym zeros)
};

}  // namespace qlr::adapter
