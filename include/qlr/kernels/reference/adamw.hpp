// SPDX-License-Identifier: Apache-2.0
// AdamW's element-wise step as a scalar loop: the oracle of the other paths.
#pragma once

#include <cmath>

#include "qlr/core/config.hpp"
#include "qlr/core/types.hpp"
#include "qlr/kernels/detail/adamw_constants.hpp"

namespace qlr::kernels::reference {

/// √x, for adamw_element.
inline float vsqrt(float x) noexcept {
  return std::sqrt(x);
}

#include "qlr/kernels/detail/adamw_element.inc"

/// One AdamW step over n parameters: theta, m and v updated in place from the gradient g.
inline void adamw_step(const AdamWConstants& c, index_t n, float* theta, const float* g,
                       float* m, float* v) noexcept {
  for (index_t i = 0; i < n; ++i) adamw_element(theta[i], g[i], m[i], v[i], c);
}

}  // namespace qlr::kernels::reference
