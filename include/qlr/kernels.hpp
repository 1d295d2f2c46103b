// SPDX-License-Identifier: Apache-2.0
// Module header of qlr's kernels: ISA detection and dispatch, the prepacked weight layout
// and the weight-only INT4/INT8 GEMM/GEMV.
#pragma once

#include "qlr/kernels/gemm.hpp"
#include "qlr/kernels/isa.hpp"
#include "qlr/kernels/packed.hpp"
