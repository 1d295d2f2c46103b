// SPDX-License-Identifier: Apache-2.0
// AdamW's element-wise step on AVX-512: 16 floats per vector.
#pragma once

#include <immintrin.h>

#include <cmath>

#include "qlr/core/config.hpp"
#include "qlr/core/types.hpp"
#include "qlr/kernels/detail/adamw_constants.hpp"

#if QLR_ARCH_X86

QLR_ISA_BEGIN("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")

namespace qlr::kernels::avx512_vnni {

/// √x, for adamw_element.
inline float vsqrt(float x) noexcept { return std::sqrt(x); }
/// √x lane by lane, for adamw_element.
inline __m512 vsqrt(__m512 x) noexcept { return _mm512_sqrt_ps(x); }

/// 16 floats from p, for adamw_vectors.
inline __m512 vload(const float* p, __m512 /*tag*/) noexcept {
  return _mm512_loadu_ps(p);
}
/// x to p, for adamw_vectors.
inline void vstore(float* p, __m512 x) noexcept {
  _mm512_storeu_ps(p, x);
}

#  include "qlr/kernels/detail/adamw_element.inc"

/// One AdamW step over n parameters: theta, m and v updated in place from the gradient g.
inline void adamw_step(const AdamWConstants& c, index_t n, float* theta, const float* g,
                       float* m, float* v) noexcept {
  adamw_vectors<__m512, 16>(c, n, theta, g, m, v);
}

}  // namespace qlr::kernels::avx512_vnni

QLR_ISA_END
#endif
