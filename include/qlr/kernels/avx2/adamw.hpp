// SPDX-License-Identifier: Apache-2.0
// AdamW's element-wise step on AVX2: 8 floats per vector. The step's square root and
// division bound SSE2's 4 lanes below the memory's rate; 8 lanes reach it.
#pragma once

#include <immintrin.h>

#include <cmath>

#include "qlr/core/config.hpp"
#include "qlr/core/types.hpp"
#include "qlr/kernels/detail/adamw_constants.hpp"

#if QLR_ARCH_X86

QLR_ISA_BEGIN("avx2,fma,f16c")

namespace qlr::kernels::avx2 {

/// √x, for adamw_element.
inline float vsqrt(float x) noexcept { return std::sqrt(x); }
/// √x lane by lane, for adamw_element.
inline __m256 vsqrt(__m256 x) noexcept { return _mm256_sqrt_ps(x); }

/// 8 floats from p, for adamw_vectors.
inline __m256 vload(const float* p, __m256 /*tag*/) noexcept {
  return _mm256_loadu_ps(p);
}
/// x to p, for adamw_vectors.
inline void vstore(float* p, __m256 x) noexcept {
  _mm256_storeu_ps(p, x);
}

#  include "qlr/kernels/detail/adamw_element.inc"

/// One AdamW step over n parameters: theta, m and v updated in place from the gradient g.
inline void adamw_step(const AdamWConstants& c, index_t n, float* theta, const float* g,
                       float* m, float* v) noexcept {
  adamw_vectors<__m256, 8>(c, n, theta, g, m, v);
}

}  // namespace qlr::kernels::avx2

QLR_ISA_END
#endif
