// SPDX-License-Identifier: Apache-2.0
// AVX-512 input-gradient tile: 8 tokens × 32 columns of dX in 16 zmm accumulators.
#pragma once

#include <cmath>

#include "qlr/core/config.hpp"
#include "qlr/core/types.hpp"
#include "qlr/kernels/detail/input_grad_tile.hpp"

#if QLR_ARCH_X86
#  include <immintrin.h>

QLR_ISA_BEGIN("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")

namespace qlr::kernels::avx512_vnni {
namespace detail_input_grad {
/// The vector operations of detail/input_grad_block.inc on zmm registers.
struct Lanes {
  using V = __m512;                     ///< 16 floats
  static constexpr index_t width = 16;  ///< floats per vector
  static constexpr int rows = 8;        ///< tokens per block: 16 of 32 zmm accumulate
  static QLR_ALWAYS_INLINE V load(const float* p) noexcept { return _mm512_loadu_ps(p); }
  static QLR_ALWAYS_INLINE void store(float* p, V v) noexcept { _mm512_storeu_ps(p, v); }
  static QLR_ALWAYS_INLINE V broadcast(float s) noexcept { return _mm512_set1_ps(s); }
  static QLR_ALWAYS_INLINE V zero() noexcept { return _mm512_setzero_ps(); }
  static QLR_ALWAYS_INLINE V fma(V a, V b, V c) noexcept { return _mm512_fmadd_ps(a, b, c); }
  static QLR_ALWAYS_INLINE float fma_scalar(float a, float b, float c) noexcept {
    return std::fma(a, b, c);  // one vfmadd with the region's FMA
  }
};

}  // namespace detail_input_grad

#  include "qlr/kernels/detail/input_grad_block.inc"

}  // namespace qlr::kernels::avx512_vnni

QLR_ISA_END
#endif
