// SPDX-License-Identifier: Apache-2.0
// The per-token activation quantizer on a kernel path, alone or fused behind an online
// rotation (RoLoRA / QuaRot W4A4, W4A8): with a rotation, each token is rotated in a scratch
// row that stays in cache and coded from there, so the rotated activations are never written
// to memory — the integer GEMM reads the codes. Here, not in quant, because quant may not
// include kernels (STYLE.md §2); quant::quantize_per_token stays the scalar definition.
#pragma once

#include <algorithm>
#include <vector>

#include "qlr/core/matrix.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr/kernels/activation.hpp"
#include "qlr/kernels/isa.hpp"
#include "qlr/quant/activation.hpp"
#include "qlr/rotate/rotation.hpp"

namespace qlr::layers {

/// quant::quantize_per_token(x, options) — the same codes and scales, bit for bit — computed
/// by the row kernel of path `isa`. Throws as quant::quantize_per_token does, naming
/// layers::quantize_activations, and for a path this CPU cannot run.
inline quant::QuantizedActivations quantize_activations(ConstMatrixRef x,
                                                        quant::ActivationOptions options = {},
                                                        kernels::Isa isa = kernels::best_isa()) {
  constexpr const char* entity = "layers::quantize_activations";
  const kernels::QuantizeTokenFn quantize_token = kernels::quantize_token_for(isa);
  quant::QuantizedActivations a =
      quant::detail::prepare_per_token(x.rows(), x.cols(), options, entity);
  parallel_for(a.rows, 16, [&](index_t begin, index_t end) {
    for (index_t t = begin; t < end; ++t) {
      a.scales[static_cast<std::size_t>(t)] = quantize_token(
          x.row(t).data(), a.cols, a.bits, options.clip, a.codes.data() + t * a.cols);
    }
  });
  quant::detail::check_token_scales(a, entity);
  return a;
}

/// Qᵀ·x for every row x of `x` (M×n), quantized per token as quant::quantize_per_token
/// does, by the row kernel of path `isa`; `x` is not modified. Throws for a row length other
/// than the rotation's n, bad options, a row holding NaN/Inf, or a path this CPU cannot run.
template <rotate::RotationPolicy R>
quant::QuantizedActivations rotate_quantize_per_token(const R& rotation, ConstMatrixRef x,
                                                      quant::ActivationOptions options = {},
                                                      kernels::Isa isa = kernels::best_isa()) {
  constexpr const char* entity = "layers::rotate_quantize_per_token";
  QLR_CHECK(x.cols() == rotation.size(), shape_mismatch,
            "{}: x has rows of {} values; expected the rotation's size n = {}", entity, x.cols(),
            rotation.size());
  const kernels::QuantizeTokenFn quantize_token = kernels::quantize_token_for(isa);
  quant::QuantizedActivations a =
      quant::detail::prepare_per_token(x.rows(), x.cols(), options, entity);
  parallel_for(a.rows, 4, [&](index_t begin, index_t end) {
    std::vector<float> row(static_cast<std::size_t>(a.cols));
    std::vector<float> scratch(static_cast<std::size_t>(rotation.scratch_size()));
    for (index_t t = begin; t < end; ++t) {
      const auto source = x.row(t);
      std::copy(source.data(), source.data() + a.cols, row.begin());
      rotation.rotate(row.data(), scratch.data());  // NaN/Inf stay non-finite: the scale says so
      a.scales[static_cast<std::size_t>(t)] =
          quantize_token(row.data(), a.cols, a.bits, options.clip, a.codes.data() + t * a.cols);
    }
  });
  quant::detail::check_token_scales(a, entity);
  return a;
}

}  // namespace qlr::layers
