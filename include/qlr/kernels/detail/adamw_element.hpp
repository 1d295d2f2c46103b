// SPDX-License-Identifier: Apache-2.0
// AdamW's step on one element (ALGORITHMS.md §8.4, PyTorch's order of operations), written
// once for a float and for an xsimd batch of floats, so every path does the same FP32 steps.
#pragma once

#include <cmath>

#include "qlr/core/config.hpp"

namespace qlr::kernels {

/// The scalars of one AdamW step t, rounded once to FP32, as every path uses them.
struct AdamWConstants {
  float decay = 1.0f;             ///< 1 − η·λ (decoupled weight decay)
  float beta1 = 0.9f;             ///< β1
  float one_minus_beta1 = 0.1f;   ///< 1 − β1
  float beta2 = 0.999f;           ///< β2
  float one_minus_beta2 = 0.001f; ///< 1 − β2
  float step_size = 0.0f;         ///< η / (1 − β1^t)
  float bias2_sqrt = 1.0f;        ///< √(1 − β2^t)
  float eps = 1e-8f;              ///< ε, added after the bias correction
};

namespace detail {

/// θ ← θ·(1 − ηλ); m ← β1·m + (1 − β1)·g; v ← β2·v + (1 − β2)·g²;
/// θ ← θ − η/(1 − β1^t) · m / (√v / √(1 − β2^t) + ε). T is float or an xsimd batch.
template <class T>
QLR_ALWAYS_INLINE void adamw_element(T& theta, const T& g, T& m, T& v,
                                     const AdamWConstants& c) noexcept {
  using std::sqrt;  // xsimd's sqrt by argument-dependent lookup for a batch
  theta = theta * T(c.decay);
  m = T(c.beta1) * m + T(c.one_minus_beta1) * g;
  v = T(c.beta2) * v + T(c.one_minus_beta2) * (g * g);
  const T denom = sqrt(v) / T(c.bias2_sqrt) + T(c.eps);
  theta = theta - T(c.step_size) * (m / denom);
}

}  // namespace detail
}  // namespace qlr::kernels
