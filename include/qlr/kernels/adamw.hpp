// SPDX-License-Identifier: Apache-2.0
// AdamW's element-wise step (ALGORITHMS.md §8.4) of every path behind one function pointer,
// chosen like the GEMM kernels' (kernels/isa.hpp).
#pragma once

#include "qlr/core/types.hpp"
#include "qlr/kernels/avx2/adamw.hpp"
#include "qlr/kernels/avx512_vnni/adamw.hpp"
#include "qlr/kernels/detail/adamw_constants.hpp"
#include "qlr/kernels/isa.hpp"
#include "qlr/kernels/portable/adamw.hpp"
#include "qlr/kernels/reference/adamw.hpp"

namespace qlr::kernels {

/// One AdamW step over n parameters, in place. Never throws: the caller checks the inputs.
using AdamWStepFn = void (*)(const AdamWConstants& c, index_t n, float* theta, const float* g,
                             float* m, float* v) noexcept;

/// The AdamW step of path `isa`. Throws Errc::unsupported when this CPU cannot run it.
inline AdamWStepFn adamw_step_for(Isa isa) {
  require_supported(isa, "kernels::adamw_step_for");
  switch (isa) {
    case Isa::reference:
      return &reference::adamw_step;
#if QLR_ARCH_X86
    case Isa::avx2:
    case Isa::avx_vnni:  // AVX-VNNI adds no float arithmetic: avx2's step
      return &avx2::adamw_step;
    case Isa::avx512_vnni:
      return &avx512_vnni::adamw_step;
#endif
    default:
      return &portable::adamw_step;
  }
}

}  // namespace qlr::kernels
