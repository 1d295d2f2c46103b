// SPDX-License-Identifier: Apache-2.0
// Part of qlr::compiled: the one copy in a program of the solvers (the calibration
// covariance, its eigenspace, EoRA and the SVD baseline, run-time GPTQ, LoRAQuant). Compiled
// by the consumer's build from the installed sources (docs/building.md); units that define
// QLR_COMPILED see only declarations.
#include "qlr/adapter/lora_quant.hpp"
#include "qlr/compensate/calibration.hpp"
#include "qlr/compensate/eora.hpp"
#include "qlr/compensate/gptq.hpp"

namespace qlr::compensate {

QLR_CALIBRATION_FUNCTIONS()
QLR_EORA_FUNCTIONS()
QLR_GPTQ_FUNCTIONS()

}  // namespace qlr::compensate

namespace qlr::adapter {

QLR_LORA_QUANT_FUNCTIONS()

}  // namespace qlr::adapter
