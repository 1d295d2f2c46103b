// SPDX-License-Identifier: Apache-2.0
// The train module: adapters trained on a frozen quantized base (the trainable layer and its
// gradients, initializations, fake quantization, parameters, optimizer, schedules).
#pragma once

#include "qlr/train/adamw.hpp"
#include "qlr/train/fake_quant.hpp"
#include "qlr/train/frozen_base.hpp"
#include "qlr/train/init.hpp"
#include "qlr/train/linear.hpp"
#include "qlr/train/parameter.hpp"
#include "qlr/train/schedule.hpp"
