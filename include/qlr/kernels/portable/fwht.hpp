// SPDX-License-Identifier: Apache-2.0
// Portable fast Walsh–Hadamard transform: the SIMD paths' passes over vectors of 4 floats,
// which every target has (SSE2 on x86-64, NEON on arm64).
#pragma once

#include <utility>
#include <cstdint>

#include "qlr/core/config.hpp"
#include "qlr/core/types.hpp"
#include "qlr/kernels/reference/fwht.hpp"

namespace qlr::kernels::portable {

inline constexpr int fwht_width = 4;       ///< floats per 128-bit vector
inline constexpr int fwht_max_levels = 3;  ///< 8 vectors: half of x86-64's 16 xmm

#include "qlr/kernels/detail/fwht_passes.inc"

}  // namespace qlr::kernels::portable
