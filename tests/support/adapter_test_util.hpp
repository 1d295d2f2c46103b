// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the adapter tests: double-precision references and error checks.
#pragma once

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <span>

#include "qlr/core/error.hpp"
#include "qlr/core/matrix.hpp"

/// The call throws qlr::Error and its message contains `text` (the argument it names).
#define CHECK_QLR_ERROR(expr, text)     \
  do {                                  \
    CHECK_THROWS_AS(expr, qlr::Error);  \
    CHECK_THROWS_WITH(expr, Catch::Contains(text)); \
  } while (false)

namespace qlr::test {

/// The matrix in double.
inline MatrixD to_double(const Matrix& m) { return m.cast<double>(); }

/// ‖ref − approx‖_F / ‖ref‖_F in double.
inline double relative_error(const MatrixD& ref, const MatrixD& approx) {
  return (ref - approx).norm() / ref.norm();
}

/// True when both spans hold the same bytes (floats compared bit for bit).
template <class T>
bool same_bytes(std::span<const T> a, std::span<const T> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size_bytes()) == 0;
}

}  // namespace qlr::test
