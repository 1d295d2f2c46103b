// SPDX-License-Identifier: Apache-2.0
// Online rotation fused ahead of the per-token activation quantizer (RoLoRA / QuaRot W4A4,
// W4A8): each token is rotated in a scratch row that stays in cache and coded from there, so
// the rotated activations are never written to memory — the integer GEMM reads the codes.
#pragma once

#include <algorithm>
#include <vector>

#include "qlr/core/matrix.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr/quant/activation.hpp"
#include "qlr/rotate/rotation.hpp"

namespace qlr::layers {

/// Qᵀ·x for every row x of `x` (M×n), quantized per token as quant::quantize_per_token
/// does; `x` is not modified. Throws for a row length other than the rotation's n, bad
/// options, or a row holding NaN/Inf.
template <rotate::RotationPolicy R>
quant::QuantizedActivations rotate_quantize_per_token(const R& rotation, ConstMatrixRef x,
                                                      quant::ActivationOptions options = {}) {
  constexpr const char* entity = "layers::rotate_quantize_per_token";
  QLR_CHECK(x.cols() == rotation.size(), shape_mismatch,
            "{}: x has rows of {} values; expected the rotation's size n = {}", entity, x.cols(),
            rotation.size());
  quant::QuantizedActivations a = quant::detail::prepare_per_token(x.rows(), x.cols(), options, entity);
  parallel_for(a.rows, 4, [&](index_t begin, index_t end) {
    std::vector<float> row(static_cast<std::size_t>(a.cols));
    std::vector<float> scratch(static_cast<std::size_t>(rotation.scratch_size()));
    for (index_t t = begin; t < end; ++t) {
      const auto source = x.row(t);
      std::copy(source.data(), source.data() + a.cols, row.begin());
      rotation.rotate(row.data(), scratch.data());  // NaN/Inf stay non-finite: the scale says so
      a.scales[static_cast<std::size_t>(t)] = quant::detail::quantize_token(
          row.data(), a.cols, a.bits, options.clip, a.codes.data() + t * a.cols);
    }
  });
  quant::detail::check_token_scales(a, entity);
  return a;
}

}  // namespace qlr::layers
