// SPDX-License-Identifier: Apache-2.0
// Part of qlr::compiled: the one copy of every kernel path's body in a program (each path
// compiled inside its own target region, as in the headers). Compiled by the consumer's build
// from the installed sources (docs/building.md).
#include "qlr/kernels/gemm.hpp"
#include "qlr/kernels/input_grad.hpp"

namespace qlr::kernels {
QLR_GEMM_DOT_PATHS(QLR_GEMM_DOT_SIGNATURE)
QLR_GEMM_LEVELS_PATHS(QLR_GEMM_LEVELS_SIGNATURE)
QLR_INPUT_GRAD_PATHS(QLR_INPUT_GRAD_SIGNATURE)
}  // namespace qlr::kernels

// The definition a unit built with QLR_COMPILED refers to (core/config.hpp): without this
// file in the program, the link fails naming it.
namespace qlr::detail {
extern const int QLR_COMPILED_requires_linking_qlr_compiled = 1;
}  // namespace qlr::detail
