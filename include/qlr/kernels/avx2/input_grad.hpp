// SPDX-License-Identifier: Apache-2.0
// AVX2 input-gradient tile: 6 tokens × 16 columns of dX in 12 ymm accumulators, the weight
// row loaded once per block and each dY element broadcast (the classic 6×16 FMA block).
#pragma once

#include <cmath>

#include "qlr/core/config.hpp"
#include "qlr/core/types.hpp"
#include "qlr/kernels/detail/input_grad_tile.hpp"

#if QLR_ARCH_X86
#  include <immintrin.h>

QLR_ISA_BEGIN("avx2,fma,f16c")

namespace qlr::kernels::avx2 {
namespace detail_input_grad {
/// The vector operations of detail/input_grad_block.inc on ymm registers.
struct Lanes {
  using V = __m256;                    ///< 8 floats
  static constexpr index_t width = 8;  ///< floats per vector
  static constexpr int rows = 6;       ///< tokens per block: 12 of 16 ymm accumulate
  static QLR_ALWAYS_INLINE V load(const float* p) noexcept { return _mm256_loadu_ps(p); }
  static QLR_ALWAYS_INLINE void store(float* p, V v) noexcept { _mm256_storeu_ps(p, v); }
  static QLR_ALWAYS_INLINE V broadcast(float s) noexcept { return _mm256_set1_ps(s); }
  static QLR_ALWAYS_INLINE V zero() noexcept { return _mm256_setzero_ps(); }
  static QLR_ALWAYS_INLINE V fma(V a, V b, V c) noexcept { return _mm256_fmadd_ps(a, b, c); }
  static QLR_ALWAYS_INLINE float fma_scalar(float a, float b, float c) noexcept {
    return std::fma(a, b, c);  // one vfmadd with the region's FMA
  }
};

}  // namespace detail_input_grad

#  include "qlr/kernels/detail/input_grad_block.inc"

}  // namespace qlr::kernels::avx2

QLR_ISA_END
#endif
