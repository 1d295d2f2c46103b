// SPDX-License-Identifier: Apache-2.0
// Umbrella header: all of qlr. Engines that care about compile time include one module
// header (qlr/core.hpp, qlr/quant.hpp, qlr/io.hpp) instead.
#pragma once

#include "qlr/adapter.hpp"
#include "qlr/compensate.hpp"
#include "qlr/core.hpp"
#include "qlr/io.hpp"
#include "qlr/kernels.hpp"
#include "qlr/layers.hpp"
#include "qlr/model.hpp"
#include "qlr/quant.hpp"
#include "qlr/rotate.hpp"
#include "qlr/version.hpp"
