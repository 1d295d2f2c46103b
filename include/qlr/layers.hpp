// SPDX-License-Identifier: Apache-2.0
// The layers module: where quantizers, rotations, adapters and kernels meet.
#pragma once

#include "qlr/layers/rotated_activations.hpp"
