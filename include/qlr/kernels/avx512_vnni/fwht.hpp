// SPDX-License-Identifier: Apache-2.0
// AVX-512 fast Walsh–Hadamard transform: 16 floats per vector and 16 vectors per pass
// (levels in groups of 4, so a 4096-point row takes 2 passes).
#pragma once

#include <utility>
#include <cstdint>

#include "qlr/core/config.hpp"
#include "qlr/core/types.hpp"
#include "qlr/kernels/reference/fwht.hpp"

#if QLR_ARCH_X86

QLR_ISA_BEGIN("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")

namespace qlr::kernels::avx512_vnni {

inline constexpr int fwht_width = 16;      ///< floats per zmm
inline constexpr int fwht_max_levels = 4;  ///< 16 of the 32 zmm hold a pass's vectors

#  include "qlr/kernels/detail/fwht_vector_lanes.inc"
#  include "qlr/kernels/detail/fwht_passes.inc"

}  // namespace qlr::kernels::avx512_vnni

QLR_ISA_END
#endif
