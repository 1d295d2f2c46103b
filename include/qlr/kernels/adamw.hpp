// SPDX-License-Identifier: Apache-2.0
// AdamW's element-wise step (ALGORITHMS.md §8.4) of every path behind one function pointer,
// chosen like the GEMM kernels' (kernels/isa.hpp).
#pragma once

#include "qlr/core/error.hpp"
#include "qlr/core/types.hpp"
#include "qlr/kernels/detail/adamw_element.hpp"
#include "qlr/kernels/isa.hpp"
#include "qlr/kernels/portable/adamw.hpp"
#include "qlr/kernels/reference/adamw.hpp"

namespace qlr::kernels {

/// One AdamW step over n parameters, in place. Never throws: the caller checks the inputs.
using AdamWStepFn = void (*)(const AdamWConstants& c, index_t n, float* theta, const float* g,
                             float* m, float* v) noexcept;

/// The AdamW step of path `isa`. Throws Errc::unsupported when this CPU cannot run it.
inline AdamWStepFn adamw_step_for(Isa isa) {
  QLR_CHECK(is_supported(isa), unsupported,
            "kernels::adamw_step_for: isa = {}; expected a path this CPU supports",
            to_string(isa));
  // Memory-bound at 4 floats a step: the x86 paths run the portable one (the unit's ISA).
  return isa == Isa::reference ? &reference::adamw_step : &portable::adamw_step;
}

}  // namespace qlr::kernels
