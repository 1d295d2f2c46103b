// SPDX-License-Identifier: Apache-2.0
// Part of qlr::compiled: the one copy in a program of the FP32 trainable layer (its forward,
// backward and adapter bookkeeping cost a consumer unit about 6 s at -O2) and of AdamW's
// step, save and load. Compiled by the consumer's build from the installed sources
// (docs/building.md); units that define QLR_COMPILED see only declarations.
#include "qlr/train/adamw.hpp"
#include "qlr/train/linear.hpp"

namespace qlr::train {

QLR_TRAINABLE_LINEAR_INSTANCES()
QLR_ADAMW_FUNCTIONS()

}  // namespace qlr::train
