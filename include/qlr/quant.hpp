// SPDX-License-Identifier: Apache-2.0
// Module header of qlr's quantizers: integer group-wise (sym/asym, RTN or clip search), NF4,
// per-token activations, dequantization, error metrics and the runtime QuantSpec.
#pragma once

#include "qlr/quant/activation.hpp"
#include "qlr/quant/binary.hpp"
#include "qlr/quant/concept.hpp"
#include "qlr/quant/dequantize.hpp"
#include "qlr/quant/int_group.hpp"
#include "qlr/quant/metrics.hpp"
#include "qlr/quant/nf4.hpp"
#include "qlr/quant/spec.hpp"
