// SPDX-License-Identifier: Apache-2.0
// Module header of qlr's kernels: ISA detection and dispatch, the prepacked weight layouts,
// the weight-only INT4/INT8 GEMM/GEMV and the integer W8A8/W4A8/W4A4 GEMM/GEMV.
#pragma once

#include "qlr/kernels/fwht.hpp"
#include "qlr/kernels/gemm.hpp"
#include "qlr/kernels/isa.hpp"
#include "qlr/kernels/packed.hpp"
#include "qlr/kernels/packed_dot.hpp"
