// SPDX-License-Identifier: Apache-2.0
// The scalars of one AdamW step (ALGORITHMS.md §8.4), as every kernel path takes them.
#pragma once

namespace qlr::kernels {

/// The scalars of one AdamW step t, rounded once to FP32, as every path uses them.
struct AdamWConstants {
  float decay = 1.0f;              ///< 1 − η·λ (decoupled weight decay)
  float beta1 = 0.9f;              ///< β1
  float one_minus_beta1 = 0.1f;    ///< 1 − β1
  float beta2 = 0.999f;            ///< β2
  float one_minus_beta2 = 0.001f;  ///< 1 − β2
  float step_size = 0.0f;          ///< η / (1 − β1^t)
  float bias2_sqrt = 1.0f;         ///< √(1 − β2^t)
  float eps = 1e-8f;               ///< ε, added after the bias correction
};

}  // namespace qlr::kernels
