// SPDX-License-Identifier: Apache-2.0
// The scalar fast Walsh–Hadamard transform, radix 2 exactly as ALGORITHMS.md §4.1 writes it:
// the oracle of the SIMD paths, which perform the same butterflies and so agree bit for bit.
#pragma once

#include "qlr/core/types.hpp"

namespace qlr::kernels::reference {

/// x ← scale·H·x in place for the Sylvester H of order n = 2^log2n (natural order).
inline void fwht(float* x, int log2n, float scale) noexcept {
  const index_t n = index_t{1} << log2n;
  for (index_t h = 1; h < n; h *= 2)
    for (index_t i = 0; i < n; i += 2 * h)
      for (index_t j = i; j < i + h; ++j) {
        const float a = x[j];
        const float b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
  if (scale != 1.0f)
    for (index_t i = 0; i < n; ++i) x[i] *= scale;
}

/// out (K×P, row-major) = scale·H·X for X (K×P) and H (K×K) of ±1, given as `h_rows` (H
/// row-major) and `h_cols` (Hᵀ row-major, H's columns): the dense mix of a K·2^k transform.
/// Every output sums its K terms in order j = 0 … K−1, as the SIMD paths do.
inline void hadamard_mix(const float* h_rows, const float* h_cols, index_t k, const float* x,
                         index_t p, float* out, float scale) noexcept {
  static_cast<void>(h_cols);
  for (index_t i = 0; i < k; ++i)
    for (index_t c = 0; c < p; ++c) {
      float acc = 0.0f;
      for (index_t j = 0; j < k; ++j) acc += h_rows[i * k + j] * x[j * p + c];
      out[i * p + c] = acc * scale;
    }
}

}  // namespace qlr::kernels::reference
