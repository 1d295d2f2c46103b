// SPDX-License-Identifier: Apache-2.0
// What the rotate module's tests share: the dense Kronecker Hadamard matrix and LLM-like
// tokens with outlier channels.
#pragma once

#include <random>

#include "qlr/core/matrix.hpp"
#include "qlr/core/types.hpp"
#include "qlr/rotate/hadamard_matrix.hpp"
#include "qlr_test_support.hpp"

namespace qlr::test {

/// H_K ⊗ H_{2^k} in doubles, H_{2^k}[u][i] = (−1)^popcount(u & i).
inline MatrixD kronecker_hadamard(const rotate::HadamardMatrix& hk, int log2p) {
  const index_t p = index_t{1} << log2p;
  const index_t n = hk.order * p;
  MatrixD h(n, n);
  for (index_t i = 0; i < n; ++i)
    for (index_t j = 0; j < n; ++j) {
      const int sylvester = (__builtin_popcountll(static_cast<unsigned long long>((i % p) & (j % p))) & 1) != 0 ? -1 : 1;
      h(i, j) = hk(i / p, j / p) * sylvester;
    }
  return h;
}

/// Tokens of N(0, 1) with 4 fixed outlier channels at ±50, the shape of LLM activations.
inline Matrix tokens_with_outliers(std::mt19937& rng, index_t m, index_t n) {
  Matrix x = qlr::test::gaussian(rng, m, n);
  const index_t channels[] = {7, n / 3, n / 2 + 1, n - 5};
  for (index_t t = 0; t < m; ++t)
    for (const index_t c : channels) x(t, c) = (t + c) % 2 == 0 ? 50.0f : -50.0f;
  return x;
}

}  // namespace qlr::test
