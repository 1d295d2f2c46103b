// SPDX-License-Identifier: Apache-2.0
// Part of qlr::compiled: the one copy in a program of the run-time quantizer (every format a
// QuantSpec names). Compiled by the consumer's build from the installed sources.
#include "qlr/quant/spec.hpp"

namespace qlr::quant {

QLR_QUANT_SPEC_FUNCTIONS()

}  // namespace qlr::quant
