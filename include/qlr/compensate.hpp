// SPDX-License-Identifier: Apache-2.0
// Calibration-based compression: the streaming input covariance of a layer, GPTQ and EoRA.
// Heavy (Eigen's Cholesky, eigen and SVD solvers): an engine that only runs layers skips it.
#pragma once

#include "qlr/compensate/calibration.hpp"
#include "qlr/compensate/eora.hpp"
#include "qlr/compensate/gptq.hpp"
