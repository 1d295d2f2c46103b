// SPDX-License-Identifier: Apache-2.0
// Seeded Gaussian matrices that are the same on every platform (ALGORITHMS.md §4.2): the
// std distributions are implementation-defined, so qlr draws its own from mt19937_64.
#pragma once

#include <cmath>
#include <cstdint>
#include <numbers>
#include <random>

#include "qlr/core/matrix.hpp"
#include "qlr/core/types.hpp"

namespace qlr {

/// G (rows×cols) with i.i.d. N(0, 1) entries from `seed`: Box–Muller on 53-bit uniforms of
/// std::mt19937_64, filled row by row in pairs.
inline MatrixD gaussian_matrix(index_t rows, index_t cols, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  const auto uniform = [&] { return static_cast<double>(gen() >> 11) * 0x1.0p-53; };  // [0, 1)
  MatrixD g(rows, cols);
  double* out = g.data();
  const index_t count = rows * cols;
  for (index_t i = 0; i < count; i += 2) {
    const double radius = std::sqrt(-2.0 * std::log(1.0 - uniform()));  // 1 − u ∈ (0, 1]
    const double angle = 2.0 * std::numbers::pi * uniform();
    out[i] = radius * std::cos(angle);
    if (i + 1 < count) out[i + 1] = radius * std::sin(angle);
  }
  return g;
}

}  // namespace qlr
