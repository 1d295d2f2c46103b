// SPDX-License-Identifier: Apache-2.0
// AVX-VNNI integer GEMM (W8A8, W4A8, W4A4; weight-only as INT8 limbs): the 256-bit body
// shared with AVX2 (avx2/gemm_dot_body.inl), compiled here with the VEX-encoded vpdpbusd.
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

QLR_ISA_BEGIN("avx2,fma,f16c,avxvnni")
namespace qlr::kernels::avx_vnni {
#  define QLR_DOT_VNNI 1
#  include "qlr/kernels/avx2/gemm_dot_body.inl"
#  undef QLR_DOT_VNNI
}  // namespace qlr::kernels::avx_vnni
QLR_ISA_END
#endif
