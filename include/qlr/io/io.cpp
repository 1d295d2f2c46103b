// SPDX-License-Identifier: Apache-2.0
// Part of qlr::compiled: the one copy in a program of the safetensors and PEFT readers and
// writers. Compiled by the consumer's build from the installed sources (docs/building.md).
#include "qlr/io/peft.hpp"
#include "qlr/io/safetensors.hpp"

namespace qlr::io {

QLR_IO_SAFETENSORS_FUNCTIONS()
QLR_IO_PEFT_FUNCTIONS()

}  // namespace qlr::io
