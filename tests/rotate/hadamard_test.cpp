// SPDX-License-Identifier: Apache-2.0
// Hadamard matrices (ALGORITHMS.md §4.1, oracles T4.1–T4.2): every construction is Hadamard
// exactly in integers, in the preference order, and K·2^k products are Hadamard too. The
// fast transform's tests are online_test.cpp's.
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "qlr/core/error.hpp"
#include "qlr/rotate/hadamard_matrix.hpp"
#include "qlr/rotate/hadamard_transform.hpp"
#include "qlr_test_support.hpp"
#include "rotate_test_util.hpp"

using qlr::index_t;
using qlr::Matrix;
using qlr::MatrixD;
namespace rotate = qlr::rotate;

TEST_CASE("Hadamard: every order qlr builds satisfies H*H^T = K*I exactly", "[rotate][hadamard]") {
  // The list, the Paley orders of ALGORITHMS.md §4.1, and doublings.
  for (const index_t k : {1, 2, 4, 8, 12, 20, 24, 28, 36, 40, 44, 52, 56, 60, 108, 140, 148, 156,
                          172, 312, 344}) {
    CAPTURE(k);
    const rotate::HadamardMatrix h = rotate::find_hadamard(k);
    REQUIRE(h.order == k);
    CHECK(rotate::detail::is_hadamard(h));
  }
  // and every order the error message offers
  for (const index_t k : rotate::constructible_orders()) {
    CAPTURE(k);
    CHECK(rotate::detail::is_hadamard(rotate::find_hadamard(k)));
  }
}

TEST_CASE("Hadamard: constructions follow the preference order of ALGORITHMS.md", "[rotate][hadamard]") {
  CHECK(rotate::find_hadamard(12).construction == "Paley I, q = 11");
  CHECK(rotate::find_hadamard(28).construction == "Paley II, q = 13");  // prime before GF(27)
  CHECK(rotate::find_hadamard(36).construction == "Paley II, q = 17");
  CHECK(rotate::find_hadamard(52).construction == "Paley II, q = 25");  // GF(25), x^2 + 2
  CHECK(rotate::find_hadamard(344).construction == "Paley I, q = 343");  // GF(343), x^3 + 2
  CHECK(rotate::find_hadamard(172).construction == "Williamson, m = 43");
  CHECK(rotate::find_hadamard(156).construction == "Williamson, m = 39");
  CHECK(rotate::find_hadamard(40).construction == "2 x (Paley I, q = 19)");
  // Paley I is H = I + S with S skew: H + H^T = 2I.
  const rotate::HadamardMatrix h12 = rotate::find_hadamard(12);
  for (index_t i = 0; i < 12; ++i)
    for (index_t j = 0; j < 12; ++j) CHECK(h12(i, j) + h12(j, i) == (i == j ? 2 : 0));
}

TEST_CASE("Hadamard: GF(p^e) uses the smallest monic irreducible modulus", "[rotate][hadamard]") {
  // The moduli ALGORITHMS.md §4.1 names, as c_0 … c_{e−1} of x^e + Σ c_i x^i; they fix how
  // every implementation numbers the field, and so which Paley matrix it builds.
  CHECK(rotate::detail::GaloisField(25).modulus() == std::vector<int>{2, 0});      // x² + 2
  CHECK(rotate::detail::GaloisField(27).modulus() == std::vector<int>{1, 2, 0});   // x³ + 2x + 1
  CHECK(rotate::detail::GaloisField(343).modulus() == std::vector<int>{2, 0, 0});  // x³ + 2
  CHECK(rotate::detail::GaloisField(11).modulus().empty());
  // Half of the nonzero elements of a field of odd order are squares.
  for (const int q : {25, 27, 49, 121, 125, 343}) {
    CAPTURE(q);
    const rotate::detail::GaloisField field(q);
    int squares = 0;
    for (int a = 1; a < q; ++a) squares += field.chi(a) == 1 ? 1 : 0;
    CHECK(squares == (q - 1) / 2);
    CHECK(field.chi(0) == 0);
  }
}

TEST_CASE("Hadamard: K*2^k products are Hadamard for n up to 2048", "[rotate][hadamard]") {
  for (const index_t k : {1, 12, 20, 28, 172}) {
    const rotate::HadamardMatrix hk = rotate::find_hadamard(k);
    REQUIRE(hk.order == k);
    for (int log2p = 0; k << log2p <= 2048; log2p += 3) {
      CAPTURE(k, log2p);
      // In float, exactly: the entries are ±1 and every sum of n ≤ 2048 of them is an integer
      // below 2^24. Float halves the time of the n³ product (seconds under ASan).
      const Matrix h = qlr::test::kronecker_hadamard(hk, log2p).cast<float>();
      const index_t n = h.rows();
      CHECK((h * h.transpose() - static_cast<float>(n) * Matrix::Identity(n, n))
                .cwiseAbs()
                .maxCoeff() == 0.0f);
    }
  }
}

TEST_CASE("Hadamard: sizes factor as ALGORITHMS.md chooses, and the rest are refused", "[rotate][hadamard]") {
  CHECK(rotate::hadamard_factor(4096).order == 1);
  CHECK(rotate::hadamard_factor(4096).log2_pow2 == 12);
  CHECK(rotate::hadamard_factor(11008).order == 172);  // LLaMA-2-7B's MLP: 172·64
  CHECK(rotate::hadamard_factor(11008).log2_pow2 == 6);
  CHECK(rotate::hadamard_factor(172).order == 172);  // stories260K's MLP
  CHECK(rotate::hadamard_factor(14336).order == 28);  // Llama-3-8B: 28·512
  CHECK(rotate::hadamard_factor(13824).order == 108);
  CHECK(rotate::hadamard_factor(40).order == 20);  // 20·2: the Sylvester part is the fast one
  CHECK(rotate::hadamard_factor(1).order == 1);
  CHECK(rotate::hadamard_factor(188 * 8).order == 752);  // 188 = 4·47 has none; 752 = Paley I, q = 751
  for (const index_t bad : {0, -4, 3, 6, 94, 188}) {  // 188·8 = 752·2 has Paley I, q = 751
    CAPTURE(bad);
    CHECK_THROWS_AS(rotate::hadamard_factor(bad), qlr::Error);
  }
  CHECK_THROWS_WITH(rotate::hadamard_factor(188),
                    Catch::Contains("n = 188") && Catch::Contains("172") && Catch::Contains("registered"));
  CHECK_THROWS_WITH(rotate::HadamardTransform(0), Catch::Contains("n = 0"));
}

TEST_CASE("Hadamard: registered tables are validated and then used", "[rotate][hadamard]") {
  rotate::HadamardMatrix not_hadamard{4, std::vector<std::int8_t>(16, 1), ""};
  CHECK_THROWS_WITH(rotate::register_hadamard(not_hadamard), Catch::Contains("not Hadamard"));
  rotate::HadamardMatrix wrong_size{4, std::vector<std::int8_t>(15, 1), ""};
  CHECK_THROWS_AS(rotate::register_hadamard(wrong_size), qlr::Error);
  // Order 16 is otherwise a doubling; a registered table (rows of 2 x 8, reversed) wins.
  rotate::HadamardMatrix table = rotate::find_hadamard(16);
  std::vector<std::int8_t> reversed(table.sign.size());
  for (index_t i = 0; i < 16; ++i)
    for (index_t j = 0; j < 16; ++j) reversed[static_cast<std::size_t>(i * 16 + j)] = table.sign[static_cast<std::size_t>((15 - i) * 16 + j)];
  table.sign = reversed;
  table.construction.clear();
  rotate::register_hadamard(table);
  const rotate::HadamardMatrix used = rotate::find_hadamard(16);
  CHECK(used.construction == "registered table");
  CHECK(used.sign == reversed);
}
