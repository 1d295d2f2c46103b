// SPDX-License-Identifier: Apache-2.0
// Module header of qlr's core: errors, matrix aliases, bit packing, the QuantizedMatrix
// vocabulary, CPU feature detection and thread control.
#pragma once

#include "qlr/core/aligned.hpp"
#include "qlr/core/bit_pack.hpp"
#include "qlr/core/config.hpp"
#include "qlr/core/cpu.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/format.hpp"
#include "qlr/core/half.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/numeric.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr/core/random.hpp"
#include "qlr/core/types.hpp"
