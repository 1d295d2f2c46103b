// SPDX-License-Identifier: Apache-2.0
// The layers module: where quantizers, rotations, adapters and kernels meet — QuantizedLinear,
// its runtime twin AnyLinear, qlr's layer file and the PEFT glue.
#pragma once

#include "qlr/layers/any_linear.hpp"
#include "qlr/layers/layer_file.hpp"
#include "qlr/layers/peft.hpp"
#include "qlr/layers/policies.hpp"
#include "qlr/layers/quantized_linear.hpp"
#include "qlr/layers/rotated_activations.hpp"
