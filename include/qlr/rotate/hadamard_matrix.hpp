// SPDX-License-Identifier: Apache-2.0
// Hadamard matrices of the orders an LLM needs (ALGORITHMS.md §4.1): Sylvester 2^k, Paley I
// and II over GF(q) for q a prime or a prime power p^e (e ≤ 3), Williamson-type tables for
// 156 and 172 (no Paley construction reaches them), and tables a user registers. A size
// n = K·2^k is then rotated as H_K ⊗ H_{2^k}: the fast transform on 2^k, a K×K mix.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "qlr/core/error.hpp"
#include "qlr/core/types.hpp"

namespace qlr::rotate {

/// A K×K matrix of ±1 with H·Hᵀ = K·I, row-major.
struct HadamardMatrix {
  index_t order = 0;              ///< K
  std::vector<std::int8_t> sign;  ///< K×K entries, each +1 or −1
  std::string construction;       ///< how it was made, e.g. "Paley I, q = 11"

  /// Entry (i, j).
  [[nodiscard]] int operator()(index_t i, index_t j) const noexcept {
    return sign[static_cast<std::size_t>(i * order + j)];
  }
};

namespace detail {

/// p when q = p^e for a prime p (e ≥ 1), else 0.
constexpr int prime_base(int q) noexcept {
  if (q < 2) return 0;
  int p = 2;
  while (p * p <= q && q % p != 0) ++p;
  if (q % p != 0) return q;  // q itself is prime
  for (int r = q; r > 1; r /= p)
    if (r % p != 0) return 0;
  return p;
}

/// GF(q), q = p^e with e ≤ 3: elements are indexed Σ a_i·p^i (polynomial basis), reduced
/// modulo the monic irreducible x^e + Σ c_i·x^i of smallest index Σ c_i·p^i, so that every
/// implementation numbers the field, and so builds the Paley matrices, the same way.
class GaloisField {
 public:
  /// The field of order q; requires prime_base(q) != 0 and q ≤ p³.
  explicit GaloisField(int q) : q_(q), p_(prime_base(q)) {
    for (int r = q; r > 1; r /= p_) ++e_;
    if (e_ > 1) modulus_ = smallest_irreducible();
    square_.assign(static_cast<std::size_t>(q_), false);
    for (int a = 1; a < q_; ++a) square_[static_cast<std::size_t>(mul(a, a))] = true;
  }

  /// The order q.
  [[nodiscard]] int order() const noexcept { return q_; }
  /// c_0 … c_{e−1} of the modulus x^e + Σ c_i·x^i; empty for a prime field.
  [[nodiscard]] const std::vector<int>& modulus() const noexcept { return modulus_; }
  /// a − b.
  [[nodiscard]] int sub(int a, int b) const noexcept {
    int out = 0;
    for (int i = 0, w = 1; i < e_; ++i, w *= p_, a /= p_, b /= p_)
      out += ((a % p_ - b % p_ + p_) % p_) * w;
    return out;
  }
  /// The quadratic character χ(a): 0 for a = 0, +1 for a nonzero square, −1 otherwise.
  [[nodiscard]] int chi(int a) const noexcept {
    return a == 0 ? 0 : (square_[static_cast<std::size_t>(a)] ? 1 : -1);
  }

 private:
  /// a·b modulo the field's modulus.
  [[nodiscard]] int mul(int a, int b) const noexcept {
    std::vector<int> x = digits(a), y = digits(b), prod(static_cast<std::size_t>(2 * e_), 0);
    for (int i = 0; i < e_; ++i)
      for (int j = 0; j < e_; ++j)
        prod[static_cast<std::size_t>(i + j)] += x[static_cast<std::size_t>(i)] * y[static_cast<std::size_t>(j)];
    // x^e = −Σ c_i x^i: fold the high powers down, highest first.
    for (int d = 2 * e_ - 2; d >= e_; --d) {
      const int c = prod[static_cast<std::size_t>(d)] % p_;
      prod[static_cast<std::size_t>(d)] = 0;
      for (int i = 0; i < e_; ++i)
        prod[static_cast<std::size_t>(d - e_ + i)] -= c * modulus_[static_cast<std::size_t>(i)];
    }
    int out = 0;
    for (int i = e_ - 1; i >= 0; --i) out = out * p_ + ((prod[static_cast<std::size_t>(i)] % p_) + p_) % p_;
    return out;
  }
  [[nodiscard]] std::vector<int> digits(int a) const {
    std::vector<int> d(static_cast<std::size_t>(e_));
    for (int i = 0; i < e_; ++i, a /= p_) d[static_cast<std::size_t>(i)] = a % p_;
    return d;
  }
  /// For e ≤ 3 a polynomial is irreducible iff it has no root in GF(p).
  [[nodiscard]] std::vector<int> smallest_irreducible() const {
    for (int index = 0;; ++index) {
      std::vector<int> c = digits(index);
      bool has_root = false;
      for (int x = 0; x < p_ && !has_root; ++x) {
        long value = 1;  // x^e
        for (int i = 0; i < e_; ++i) value *= x;
        for (int i = 0, power = 1; i < e_; ++i, power *= x) value += static_cast<long>(c[static_cast<std::size_t>(i)]) * power;
        has_root = value % p_ == 0;
      }
      if (!has_root) return c;
    }
  }

  int q_;
  int p_;
  int e_ = 0;
  std::vector<int> modulus_;  // c_0 … c_{e−1} of x^e + Σ c_i x^i
  std::vector<bool> square_;  // square_[a]: a is a nonzero square
};

/// The prime power q behind a Paley construction of order `order`, or 0: Paley I needs
/// q = order − 1 ≡ 3 (mod 4), Paley II q = order/2 − 1 ≡ 1 (mod 4). Primes are preferred
/// over prime powers, then Paley I over Paley II (ALGORITHMS.md §4.1).
struct PaleyChoice {
  int q = 0;           ///< the field order, 0 when no construction applies
  bool second = false; ///< Paley II
};
inline PaleyChoice choose_paley(index_t order) noexcept {
  const auto fits = [](long q, int residue, bool prime_only) {
    if (q < 3 || q > (1 << 20) || q % 4 != residue) return false;
    const int p = prime_base(static_cast<int>(q));
    if (p == 0 || (prime_only && p != q)) return false;
    long e = 0;
    for (long r = q; r > 1; r /= p) ++e;
    return e <= 3;
  };
  const long q1 = static_cast<long>(order) - 1;
  const long q2 = order % 2 == 0 ? static_cast<long>(order) / 2 - 1 : -1;
  if (fits(q1, 3, true)) return {static_cast<int>(q1), false};
  if (fits(q2, 1, true)) return {static_cast<int>(q2), true};
  if (fits(q1, 3, false)) return {static_cast<int>(q1), false};
  if (fits(q2, 1, false)) return {static_cast<int>(q2), true};
  return {};
}

/// Paley I (q ≡ 3 mod 4, order q + 1) or Paley II (q ≡ 1 mod 4, order 2(q + 1)). Row and
/// column 0 are the added ones; a + 1 is the field element of index a.
inline HadamardMatrix paley(PaleyChoice choice) {
  const GaloisField field(choice.q);
  const int q = choice.q;
  const int m = q + 1;
  // The (skew or symmetric) conference core: c(0, 0) = 0, first row 1, Jacobsthal below.
  const auto core = [&](int i, int j) -> int {
    if (i == 0 && j == 0) return 0;
    if (i == 0) return 1;
    if (j == 0) return choice.second ? 1 : -1;
    return field.chi(field.sub(i - 1, j - 1));
  };
  HadamardMatrix h;
  if (!choice.second) {  // H = I + S
    h.order = m;
    h.sign.resize(static_cast<std::size_t>(m * m));
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < m; ++j)
        h.sign[static_cast<std::size_t>(i * m + j)] = static_cast<std::int8_t>(core(i, j) + (i == j ? 1 : 0));
    h.construction = "Paley I, q = " + std::to_string(q);
    return h;
  }
  // Each entry of the symmetric core becomes a 2×2 block: 0 → [[1,−1],[−1,−1]],
  // ±1 → ±[[1,1],[1,−1]].
  h.order = 2 * m;
  h.sign.resize(static_cast<std::size_t>(h.order * h.order));
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < m; ++j) {
      const int c = core(i, j);
      for (int a = 0; a < 2; ++a)
        for (int b = 0; b < 2; ++b) {
          const int value = c == 0 ? (a == 0 && b == 0 ? 1 : -1) : c * (a == 1 && b == 1 ? -1 : 1);
          h.sign[static_cast<std::size_t>((2 * i + a) * h.order + 2 * j + b)] = static_cast<std::int8_t>(value);
        }
    }
  h.construction = "Paley II, q = " + std::to_string(q);
  return h;
}

/// The first rows of Williamson matrices A, B, C, D of order m ('+' for +1), found by
/// tools/find_williamson.cpp: symmetric circulants with A² + B² + C² + D² = 4m·I.
struct WilliamsonRows {
  int m;
  std::string_view rows[4];
};
inline constexpr WilliamsonRows williamson_tables[] = {
    {39,
     {"++--+++-+--++-+----------+-++--+-+++--+",
      "+---+--++++----+-+-++-+-+----++++--+---",
      "+-++------++--+-+-++++-+-+--++------++-",
      "+---+---+-++-++----++----++-++-+---+---"}},
    {43,
     {"+---++-+++--+-+-+-++----++-+-+-+--+++-++---",
      "+--++-+++----+----++-++-++----+----+++-++--",
      "++-+--++++-+--+-+----------+-+--+-++++--+-+",
      "+-+++-+--++---+++++++--+++++++---++--+-+++-"}},
};

/// The Williamson array [[A, B, C, D], [−B, A, −D, C], [−C, D, A, −B], [−D, −C, B, A]].
inline HadamardMatrix williamson(const WilliamsonRows& w) {
  const int m = w.m;
  static constexpr int block[4][4] = {{0, 1, 2, 3}, {1, 0, 3, 2}, {2, 3, 0, 1}, {3, 2, 1, 0}};
  static constexpr int block_sign[4][4] = {{1, 1, 1, 1}, {-1, 1, -1, 1}, {-1, 1, 1, -1}, {-1, -1, 1, 1}};
  HadamardMatrix h;
  h.order = 4 * m;
  h.sign.resize(static_cast<std::size_t>(h.order * h.order));
  for (int bi = 0; bi < 4; ++bi)
    for (int bj = 0; bj < 4; ++bj) {
      const std::string_view row = w.rows[block[bi][bj]];
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < m; ++j) {  // circulant: entry (i, j) is first-row entry j − i
          const int v = row[static_cast<std::size_t>((j - i + m) % m)] == '+' ? 1 : -1;
          h.sign[static_cast<std::size_t>((bi * m + i) * h.order + bj * m + j)] =
              static_cast<std::int8_t>(block_sign[bi][bj] * v);
        }
    }
  h.construction = "Williamson, m = " + std::to_string(m);
  return h;
}

/// True when h is K×K with entries ±1 and h·hᵀ = K·I (checked exactly, in integers).
inline bool is_hadamard(const HadamardMatrix& h) {
  const index_t k = h.order;
  if (k < 1 || h.sign.size() != static_cast<std::size_t>(k * k)) return false;
  for (const std::int8_t s : h.sign)
    if (s != 1 && s != -1) return false;
  for (index_t i = 0; i < k; ++i)
    for (index_t j = i; j < k; ++j) {
      long dot = 0;
      for (index_t c = 0; c < k; ++c) dot += h(i, c) * h(j, c);
      if (dot != (i == j ? k : 0)) return false;
    }
  return true;
}

/// Tables registered at run time, by order.
struct Registry {
  std::mutex mutex;
  std::map<index_t, HadamardMatrix> tables;
};
inline Registry& registry() {
  static Registry r;
  return r;
}

/// True when a table of order k is registered.
inline bool registered(index_t k) {
  auto& r = registry();
  const std::lock_guard lock(r.mutex);
  return r.tables.count(k) != 0;
}

}  // namespace detail

/// Registers a K×K Hadamard table for orders qlr cannot construct (or to replace one).
/// Throws unless every entry is ±1 and H·Hᵀ = K·I exactly.
inline void register_hadamard(HadamardMatrix h) {
  QLR_CHECK(h.order >= 1 && detail::is_hadamard(h), invalid_argument,
            "rotate::register_hadamard: the {}x{} table is not Hadamard; expected entries +-1 "
            "with H*H^T = {}*I",
            h.order, h.order, h.order);
  if (h.construction.empty()) h.construction = "registered table";
  auto& r = detail::registry();
  const std::lock_guard lock(r.mutex);
  r.tables[h.order] = std::move(h);
}

namespace detail {
/// The Williamson table of order k, or null.
inline const WilliamsonRows* williamson_for(index_t k) noexcept {
  for (const auto& w : williamson_tables)
    if (4 * w.m == k) return &w;
  return nullptr;
}

/// True when qlr builds order k without a registered table: 1, 2, Paley, Williamson, or
/// twice such an order (Sylvester doubling).
inline bool constructible(index_t k) noexcept {
  if (k == 1 || k == 2) return true;
  if (k < 4 || k % 4 != 0) return false;
  return choose_paley(k).q != 0 || williamson_for(k) != nullptr ||
         (k % 8 == 0 && constructible(k / 2));
}

/// [[H, H], [H, −H]].
inline HadamardMatrix doubled(const HadamardMatrix& h) {
  const index_t k = h.order;
  HadamardMatrix d{2 * k, std::vector<std::int8_t>(static_cast<std::size_t>(4 * k * k)),
                   "2 x (" + h.construction + ")"};
  for (index_t i = 0; i < 2 * k; ++i)
    for (index_t j = 0; j < 2 * k; ++j) {
      const int sign = i >= k && j >= k ? -1 : 1;
      d.sign[static_cast<std::size_t>(i * 2 * k + j)] = static_cast<std::int8_t>(sign * h(i % k, j % k));
    }
  return d;
}
}  // namespace detail

/// The K×K Hadamard matrix qlr uses for order K — a registered table, else 1, 2, Paley I
/// or II, a Williamson table, or twice a smaller order — or an empty matrix (order 0)
/// when it has none.
inline HadamardMatrix find_hadamard(index_t k) {
  {
    auto& r = detail::registry();
    const std::lock_guard lock(r.mutex);
    if (const auto it = r.tables.find(k); it != r.tables.end()) return it->second;
  }
  if (k == 1) return {1, {1}, "order 1"};
  if (k == 2) return {2, {1, 1, 1, -1}, "Sylvester, order 2"};
  if (!detail::constructible(k)) return {};
  if (const detail::PaleyChoice choice = detail::choose_paley(k); choice.q != 0)
    return detail::paley(choice);
  if (const detail::WilliamsonRows* w = detail::williamson_for(k)) return detail::williamson(*w);
  return detail::doubled(find_hadamard(k / 2));
}

/// How a size n factors for the fast transform: n = order·2^log2_pow2.
struct HadamardFactor {
  index_t order = 1;      ///< K, the size of the dense Hadamard mix (1 for powers of two)
  int log2_pow2 = 0;      ///< k, the fast transform covers 2^k
};

/// The orders qlr builds without a registered table, up to `limit`, leaving out the
/// doublings of a smaller one (K·2^k is covered by K): what an error lists.
inline std::vector<index_t> constructible_orders(index_t limit = 400) {
  std::vector<index_t> out;
  for (index_t k = 4; k <= limit; k += 4)
    if (detail::constructible(k) && !(k % 8 == 0 && detail::constructible(k / 2))) out.push_back(k);
  return out;
}

/// Chooses K for n = m·2^t (m odd): 1 for a power of two, else the first K = m·2^j (j ≥ 2)
/// dividing n that has a table or a construction. Throws for n < 1 or when none has,
/// listing the orders qlr can use.
inline HadamardFactor hadamard_factor(index_t n) {
  QLR_CHECK(n >= 1, invalid_argument, "rotate::hadamard_factor: n = {}; expected a size >= 1", n);
  int t = 0;
  index_t m = n;
  while (m % 2 == 0) m /= 2, ++t;
  if (m == 1) return {1, t};
  for (int j = 2; j <= t; ++j) {
    if (detail::constructible(m << j) || detail::registered(m << j)) return {m << j, t - j};
  }
  std::string orders;
  for (const index_t k : constructible_orders()) orders += (orders.empty() ? "" : ", ") + std::to_string(k);
  qlr::detail::fail(Errc::unsupported,
               "rotate::hadamard_factor: n = {}; expected n = K*2^k with K = 1 or a Hadamard order "
               "qlr has ({} …) or a registered table, and n/K a power of two",
               n, orders);
}

}  // namespace qlr::rotate
