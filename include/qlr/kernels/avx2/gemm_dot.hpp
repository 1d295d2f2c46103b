// SPDX-License-Identifier: Apache-2.0
// AVX2 integer GEMM (W8A8, W4A8, W4A4; weight-only as INT8 limbs), without dot-product
// instructions: the body shared with AVX-VNNI (gemm_dot_body.inl), compiled here for AVX2
// alone.
#pragma once

#include <cstdint>
#include <cstring>

#include "qlr/core/config.hpp"
#include "qlr/core/types.hpp"
#include "qlr/core/view.hpp"
#include "qlr/kernels/avx2/epilogue.hpp"
#include "qlr/kernels/detail/tiling.hpp"
#include "qlr/kernels/packed_dot.hpp"

#if QLR_ARCH_X86
#  include <immintrin.h>

QLR_ISA_BEGIN("avx2,fma,f16c")
namespace qlr::kernels::avx2 {
#  define QLR_DOT_VNNI 0
#  include "qlr/kernels/avx2/gemm_dot_body.inl"
#  undef QLR_DOT_VNNI
}  // namespace qlr::kernels::avx2
QLR_ISA_END
#endif
