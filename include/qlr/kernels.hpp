// SPDX-License-Identifier: Apache-2.0
// Module header of qlr's kernels: ISA detection and dispatch, the prepacked weight layout,
// the INT4/INT8 GEMM/GEMV for FP32 activations (weight-only) and for INT8/INT4 codes
// (W8A8, W4A8, W4A4), the fast Walsh–Hadamard transform and the per-token row quantizer.
#pragma once

#include "qlr/kernels/activation.hpp"
#include "qlr/kernels/fwht.hpp"
#include "qlr/kernels/gemm.hpp"
#include "qlr/kernels/isa.hpp"
#include "qlr/kernels/packed_dot.hpp"
