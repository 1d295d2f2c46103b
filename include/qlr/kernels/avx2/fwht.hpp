// SPDX-License-Identifier: Apache-2.0
// AVX2 fast Walsh–Hadamard transform: 8 floats per vector and 8 vectors per pass (the 16
// ymm registers hold no more).
#pragma once

#include <utility>
#include <cstdint>

#include "qlr/core/config.hpp"
#include "qlr/core/types.hpp"
#include "qlr/kernels/reference/fwht.hpp"

#if QLR_ARCH_X86

QLR_ISA_BEGIN("avx2,fma,f16c")

namespace qlr::kernels::avx2 {

inline constexpr int fwht_width = 8;       ///< floats per ymm
inline constexpr int fwht_max_levels = 3;  ///< 8 of the 16 ymm hold a pass's vectors

#  include "qlr/kernels/detail/fwht_vector_lanes.inc"
#  include "qlr/kernels/detail/fwht_passes.inc"

}  // namespace qlr::kernels::avx2

QLR_ISA_END
#endif
