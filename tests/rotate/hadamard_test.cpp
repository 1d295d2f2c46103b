// SPDX-License-Identifier: Apache-2.0
// Hadamard matrices and the fast transform (ALGORITHMS.md §4.1, oracles T4.1–T4.3): every
// construction is Hadamard exactly in integers, each SIMD path equals the radix-2 reference
// bit for bit, and the transform of n = K·2^k equals the dense Kronecker product.
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "qlr/core/error.hpp"
#include "qlr/kernels/fwht.hpp"
#include "qlr/rotate/hadamard_matrix.hpp"
#include "qlr/rotate/hadamard_transform.hpp"
#include "qlr_test_support.hpp"

using qlr::index_t;
using qlr::Matrix;
using qlr::MatrixD;
namespace kernels = qlr::kernels;
namespace rotate = qlr::rotate;

namespace {

/// H_K ⊗ H_{2^k} in doubles, H_{2^k}[u][i] = (−1)^popcount(u & i).
MatrixD kronecker_hadamard(const rotate::HadamardMatrix& hk, int log2p) {
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

/// (H_K ⊗ H_{2^k})·x, or its transpose times x, in doubles without forming the n×n matrix:
/// with X the K×2^k row-major view of x, (A ⊗ B)·x is A·X·Bᵀ (H_{2^k} is symmetric).
Eigen::VectorXd kronecker_hadamard_times(const rotate::HadamardMatrix& hk, int log2p,
                                         const Eigen::VectorXd& x, bool transpose) {
  const index_t p = index_t{1} << log2p;
  MatrixD a(hk.order, hk.order);
  for (index_t i = 0; i < hk.order; ++i)
    for (index_t j = 0; j < hk.order; ++j) a(i, j) = hk(i, j);
  if (transpose) a.transposeInPlace();
  MatrixD sylvester(p, p);
  for (index_t i = 0; i < p; ++i)
    for (index_t j = 0; j < p; ++j)
      sylvester(i, j) = (__builtin_popcountll(static_cast<unsigned long long>(i & j)) & 1) != 0 ? -1 : 1;
  using RowMajorD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const RowMajorD y = a * Eigen::Map<const RowMajorD>(x.data(), hk.order, p) * sylvester;
  return Eigen::Map<const Eigen::VectorXd>(y.data(), y.size());
}

/// Relative 2-norm error of `got` against `want`.
double relative_error(const Eigen::VectorXd& got, const Eigen::VectorXd& want) {
  return (got - want).norm() / want.norm();
}

}  // namespace

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
      const Matrix h = kronecker_hadamard(hk, log2p).cast<float>();
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

TEST_CASE("FWHT: the worked example and the dense Sylvester product on every path", "[rotate][fwht]") {
  for (const kernels::Isa isa : kernels::available_isas()) {
    CAPTURE(kernels::to_string(isa));
    const kernels::FwhtFn fwht = kernels::fwht_for(isa);
    float x[4] = {1, 2, 3, 4};
    fwht(x, 2, 1.0f);
    CHECK(std::vector<float>(x, x + 4) == std::vector<float>{10, -2, -4, 0});
    std::mt19937 rng(7);
    for (int log2n = 0; log2n <= 10; ++log2n) {
      CAPTURE(log2n);
      const index_t n = index_t{1} << log2n;
      std::uniform_int_distribution<int> small(-8, 8);
      std::vector<float> v(static_cast<std::size_t>(n));
      for (float& e : v) e = static_cast<float>(small(rng));
      const Eigen::VectorXd want = kronecker_hadamard(rotate::find_hadamard(1), log2n) *
                                   Eigen::Map<const Eigen::VectorXf>(v.data(), n).cast<double>();
      fwht(v.data(), log2n, 1.0f);  // integers below 2^24: exact
      CHECK(Eigen::Map<const Eigen::VectorXf>(v.data(), n).cast<double>() == want);
    }
  }
}

TEST_CASE("FWHT: every path equals the radix-2 reference bit for bit, 2 to 2^16", "[rotate][fwht]") {
  std::mt19937 rng(11);
  for (int log2n = 1; log2n <= 16; ++log2n) {
    CAPTURE(log2n);
    const index_t n = index_t{1} << log2n;
    const Matrix x = qlr::test::gaussian(rng, 1, n);
    std::vector<float> want(x.data(), x.data() + n);
    const float scale = 1.0f / std::sqrt(static_cast<float>(n));
    kernels::reference::fwht(want.data(), log2n, scale);
    for (const kernels::Isa isa : kernels::available_isas()) {
      CAPTURE(kernels::to_string(isa));
      std::vector<float> got(x.data(), x.data() + n);
      kernels::fwht_for(isa)(got.data(), log2n, scale);
      CHECK(got == want);
      // Ĥ is orthogonal and symmetric: it keeps the norm, and applied twice gives x back.
      const Eigen::Map<const Eigen::VectorXf> once(got.data(), n);
      CHECK(std::abs(once.norm() - x.norm()) <= 1e-6 * x.norm());
      kernels::fwht_for(isa)(got.data(), log2n, scale);
      CHECK((Eigen::Map<const Eigen::VectorXf>(got.data(), n) - x.row(0).transpose()).norm() <= 1e-6 * x.norm());
    }
  }
}

TEST_CASE("HadamardTransform: K*2^k equals the normalized Kronecker product and the reference path bit for bit", "[rotate][fwht]") {
  std::mt19937 rng(5);
  for (const index_t k : {1, 12, 20, 28, 40, 172, 344}) {
    for (int log2p = 0; log2p <= 6; ++log2p) {
      const index_t n = k << log2p;
      CAPTURE(k, log2p, n);
      const rotate::HadamardFactor factor = rotate::hadamard_factor(n);
      const rotate::HadamardMatrix hk = rotate::find_hadamard(factor.order);
      const double norm = std::sqrt(static_cast<double>(n));
      // The dense product itself once, small enough to build: the factored oracle is its twin.
      if (n <= 512) {
        const MatrixD dense = kronecker_hadamard(hk, factor.log2_pow2);
        const Eigen::VectorXd e = Eigen::VectorXd::LinSpaced(n, -1.0, 2.0);
        CHECK(relative_error(kronecker_hadamard_times(hk, factor.log2_pow2, e, false), dense * e) < 1e-13);
        CHECK(relative_error(kronecker_hadamard_times(hk, factor.log2_pow2, e, true),
                             dense.transpose() * e) < 1e-13);
      }
      const Matrix x = qlr::test::gaussian(rng, 3, n);
      Matrix reference_forward = x;
      Matrix reference_transposed = x;
      rotate::HadamardTransform(n, kernels::Isa::reference).apply_rows(reference_forward, false);
      rotate::HadamardTransform(n, kernels::Isa::reference).apply_rows(reference_transposed, true);
      for (const kernels::Isa isa : kernels::available_isas()) {
        CAPTURE(kernels::to_string(isa));
        const rotate::HadamardTransform transform(n, isa);
        for (const bool transpose : {false, true}) {
          CAPTURE(transpose);
          Matrix y = x;
          transform.apply_rows(y, transpose);
          CHECK(y == (transpose ? reference_transposed : reference_forward));  // bit for bit
          for (index_t r = 0; r < x.rows(); ++r) {
            const Eigen::VectorXd xr = x.row(r).transpose().cast<double>();
            const Eigen::VectorXd want =
                kronecker_hadamard_times(hk, factor.log2_pow2, xr, transpose) / norm;
            CHECK(relative_error(y.row(r).transpose().cast<double>(), want) <= 1e-6);
          }
          transform.apply_rows(y, !transpose);  // the inverse
          CHECK((y - x).norm() <= 1e-6 * x.norm());
        }
      }
    }
  }
}

TEST_CASE("HadamardTransform: 11008 = 172*64 keeps norms and inverts", "[rotate][fwht]") {
  std::mt19937 rng(3);
  const rotate::HadamardTransform transform(11008);
  const Matrix x = qlr::test::gaussian(rng, 5, 11008);
  Matrix y = x;
  transform.apply_rows(y);
  for (index_t r = 0; r < x.rows(); ++r)
    CHECK(std::abs(y.row(r).norm() - x.row(r).norm()) <= 1e-6 * x.row(r).norm());
  transform.apply_rows(y, true);
  CHECK((y - x).norm() <= 1e-6 * x.norm());
}

TEST_CASE("HadamardTransform: bad input is refused and loses nothing", "[rotate][fwht]") {
  const rotate::HadamardTransform transform(64);
  Matrix wrong(2, 63);
  CHECK_THROWS_WITH(transform.apply_rows(wrong), Catch::Contains("rows of 63 values") && Catch::Contains("n = 64"));
  std::mt19937 rng(9);
  for (const float bad : {std::nanf(""), INFINITY}) {
    Matrix x = qlr::test::gaussian(rng, 37, 64);
    x(23, 5) = bad;
    const Matrix before = x;
    CHECK_THROWS_WITH(transform.apply_rows(x), Catch::Contains("row 23") && Catch::Contains("NaN or an infinity"));
    x(23, 5) = 0.0f;  // compare the finite rest: rows already rotated were rotated back
    Matrix expected = before;
    expected(23, 5) = 0.0f;
    CHECK((x - expected).norm() <= 1e-6 * expected.norm());
  }
  Matrix empty(0, 64);
  CHECK_NOTHROW(transform.apply_rows(empty));
}
