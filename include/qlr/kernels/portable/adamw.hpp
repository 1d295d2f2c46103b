// SPDX-License-Identifier: Apache-2.0
// AdamW's element-wise step on xsimd batches of the translation unit's own ISA (SSE2 on
// x86-64 by default, NEON on arm64): the reference's steps, a batch at a time.
#pragma once

#include <cmath>

#include <xsimd/xsimd.hpp>

#include "qlr/core/config.hpp"
#include "qlr/core/types.hpp"
#include "qlr/kernels/detail/adamw_constants.hpp"

namespace qlr::kernels::portable {

/// √x, for adamw_element.
inline float vsqrt(float x) noexcept {
  return std::sqrt(x);
}
/// √x lane by lane, for adamw_element.
template <class Arch>
xsimd::batch<float, Arch> vsqrt(const xsimd::batch<float, Arch>& x) noexcept {
  return xsimd::sqrt(x);
}

#include "qlr/kernels/detail/adamw_element.inc"

/// One AdamW step over n parameters: theta, m and v updated in place from the gradient g.
inline void adamw_step(const AdamWConstants& c, index_t n, float* theta, const float* g,
                       float* m, float* v) noexcept {
  index_t i = 0;
#if XSIMD_WITH_SSE2 || XSIMD_WITH_NEON64
  using V = xsimd::batch<float>;
  constexpr auto width = static_cast<index_t>(V::size);
  for (; i + width <= n; i += width) {
    V t = V::load_unaligned(theta + i), mi = V::load_unaligned(m + i),
      vi = V::load_unaligned(v + i);
    adamw_element(t, V::load_unaligned(g + i), mi, vi, c);
    t.store_unaligned(theta + i);
    mi.store_unaligned(m + i);
    vi.store_unaligned(v + i);
  }
#endif
  for (; i < n; ++i) adamw_element(theta[i], g[i], m[i], v[i], c);
}

}  // namespace qlr::kernels::portable
