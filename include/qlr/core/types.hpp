// SPDX-License-Identifier: Apache-2.0
// Index type and shape vocabulary: M tokens, N out_features, K in_features, g group size.
#pragma once

#include <cstddef>

namespace qlr {

/// Signed index for sizes and loops, the same width as Eigen::Index.
using index_t = std::ptrdiff_t;

}  // namespace qlr
