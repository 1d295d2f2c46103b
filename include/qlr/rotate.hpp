// SPDX-License-Identifier: Apache-2.0
// The rotate module: Hadamard matrices and transforms of any LLM size, the rotation
// policies (Identity, Hadamard, RandomizedHadamard, RandomOrthogonal) and the RMSNorm fold.
#pragma once

#include "qlr/rotate/hadamard_matrix.hpp"
#include "qlr/rotate/hadamard_transform.hpp"
#include "qlr/rotate/random_orthogonal.hpp"
#include "qlr/rotate/rms_norm.hpp"
#include "qlr/rotate/rotation.hpp"
