// SPDX-License-Identifier: Apache-2.0
// Folding an RMSNorm gain into the linear layers that read the norm (ALGORITHMS.md §4.3):
// RMSNorm(h) = γ ⊙ h / rms(h), so W·RMSNorm(h) = (W·diag(γ))·(h / rms(h)). With γ folded
// and set to 1, the norm commutes with any orthogonal Q (rms(Qᵀh) = rms(h)), which a
// rotation of the residual stream needs.
//
// Valid when every consumer of the norm's output is a linear layer given in `consumers`
// (q, k, v after input_layernorm; gate, up after post_attention_layernorm; the head after
// the final norm) and nothing else reads it. It is not valid for LayerNorm's mean
// subtraction, for a norm output that also feeds a residual, or for a gain shared with a
// tied embedding (untie first: the embedding reads no norm).
#pragma once

#include <initializer_list>
#include <span>

#include "qlr/core/error.hpp"
#include "qlr/core/matrix.hpp"

namespace qlr::rotate {

/// W ← W·diag(γ) for every consumer W (N_i×d), computed in double and stored in FP32; then
/// γ ← 1. Throws, changing nothing, unless every W has d = γ.size() columns and γ and
/// every W are finite.
inline void fold_rms_norm(Eigen::Ref<Vector> gamma, std::span<const MatrixRef> consumers) {
  constexpr const char* entity = "rotate::fold_rms_norm";
  QLR_CHECK(gamma.size() >= 1, shape_mismatch, "{}: gamma has {} values; expected d >= 1",
            entity, gamma.size());
  check_finite(ConstMatrixMap(gamma.data(), 1, gamma.size(), Eigen::OuterStride<>(gamma.size())), entity);
  for (const MatrixRef& w : consumers) {
    QLR_CHECK(w.cols() == gamma.size(), shape_mismatch,
              "{}: a consumer has {} columns; expected d = {} (gamma's size)", entity, w.cols(),
              gamma.size());
    check_finite(w, entity);
  }
  const Eigen::RowVectorXd g = gamma.cast<double>().transpose();
  for (MatrixRef w : consumers) {
    for (index_t i = 0; i < w.rows(); ++i)
      w.row(i) = (w.row(i).cast<double>().array() * g.array()).cast<float>().matrix();
  }
  gamma.setOnes();
}

/// fold_rms_norm for consumers listed in place: fold_rms_norm(gamma, {wq, wk, wv}).
inline void fold_rms_norm(Eigen::Ref<Vector> gamma, std::initializer_list<MatrixRef> consumers) {
  fold_rms_norm(gamma, std::span<const MatrixRef>(consumers.begin(), consumers.size()));
}

}  // namespace qlr::rotate
