// SPDX-License-Identifier: Apache-2.0
// The layer tests' one compiled copy of make_linear's 21 compositions (any_linear.hpp's
// QLR_SEPARATE_MAKE_LINEAR mode): the units that call make_linear or load_layers only
// declare it, which also keeps that mode tested.
#define QLR_MAKE_LINEAR_IMPLEMENTATION
#include "qlr/layers/any_linear.hpp"
