// SPDX-License-Identifier: Apache-2.0
// The one compiled copy of make_linear's 21 compositions (any_linear.hpp's
// QLR_SEPARATE_MAKE_LINEAR mode) that qlr's tests, the qlr tool and the model benchmark
// link: the units that call make_linear or load_layers only declare it, so the minute it
// takes to compile is spent once per build, and that mode stays tested.
#define QLR_MAKE_LINEAR_IMPLEMENTATION
#include "qlr/layers/any_linear.hpp"
