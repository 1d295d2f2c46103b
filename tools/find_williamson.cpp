// SPDX-License-Identifier: Apache-2.0
// Finds Williamson matrices of odd order m: symmetric circulant ±1 matrices A, B, C, D with
// A² + B² + C² + D² = 4m·I, from which the Williamson array builds a Hadamard matrix of
// order 4m. qlr's tables for orders 156 (m = 39) and 172 (m = 43), which no Paley
// construction reaches, were found by this program; it prints their first rows.
//
//   g++ -O3 -march=native -std=c++20 tools/find_williamson.cpp -o find_williamson
//   ./find_williamson 43
//
// Method: a symmetric circulant is fixed by its first row a_0 … a_h (h = (m−1)/2), and
// A² + … + D² = 4m·I holds iff the periodic autocorrelations of the four rows sum to 0 at
// every shift 1 … h. Equivalently their power spectra (real, since the rows are symmetric)
// sum to 4m at every frequency, so no single row, and no pair, may exceed 4m anywhere: that
// prunes most rows before pairing. Pairs (A, B) and (C, D) are sorted by the hash of their
// summed autocorrelation (negated for C, D) and joined. The row sums s satisfy
// s_A² + … + s_D² = 4m; the cheapest decompositions are tried first.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <map>
#include <vector>

namespace {

struct Row {
  std::uint32_t bits;            // a_j = −1 where bit j−1 is set, j = 1 … h; a_0 = +1
  int sum;                       // row sum
  std::vector<double> spectrum;  // power spectrum at frequencies 1 … h
  std::vector<int> autocorrelation;  // periodic, shifts 1 … h
};

int entry(std::uint32_t bits, int j, int m) {
  j = ((j % m) + m) % m;
  if (j == 0) return 1;
  const int folded = j <= m / 2 ? j : m - j;
  return (bits >> (folded - 1) & 1u) != 0 ? -1 : 1;
}

std::uint64_t hash_of(const std::vector<int>& v) {
  std::uint64_t h = 1469598103934665603ull;
  for (const int x : v) h = (h ^ static_cast<std::uint64_t>(x + 1000)) * 1099511628211ull;
  return h;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: find_williamson <odd order m>\n");
    return 1;
  }
  const int m = std::atoi(argv[1]);
  if (m < 3 || m % 2 == 0 || m > 63) {
    std::fprintf(stderr, "find_williamson: m = %d; expected an odd order in [3, 63]\n", m);
    return 1;
  }
  const int h = (m - 1) / 2;
  const double bound = 4.0 * m + 1e-6;
  std::map<int, std::vector<Row>> by_sum;  // |row sum| → rows that pass the spectrum bound
  for (std::uint32_t bits = 0; bits < (1u << h); ++bits) {
    Row r{bits, 0, std::vector<double>(static_cast<std::size_t>(h)), std::vector<int>(static_cast<std::size_t>(h))};
    for (int j = 0; j < m; ++j) r.sum += entry(bits, j, m);
    bool fits = r.sum * r.sum <= 4 * m;
    for (int k = 1; fits && k <= h; ++k) {
      double f = 1.0;
      for (int j = 1; j <= h; ++j) f += 2.0 * entry(bits, j, m) * std::cos(2.0 * M_PI * j * k / m);
      r.spectrum[static_cast<std::size_t>(k - 1)] = f * f;
      fits = f * f <= bound;
    }
    if (!fits) continue;
    for (int s = 1; s <= h; ++s) {
      int c = 0;
      for (int j = 0; j < m; ++j) c += entry(bits, j, m) * entry(bits, j + s, m);
      r.autocorrelation[static_cast<std::size_t>(s - 1)] = c;
    }
    by_sum[std::abs(r.sum)].push_back(std::move(r));
  }
  // Decompositions 4m = s1² + s2² + s3² + s4², odd s1 ≤ s2 ≤ s3 ≤ s4, cheapest first.
  struct Sums {
    int s[4];
    double cost;
  };
  std::vector<Sums> decompositions;
  for (int s1 = 1; s1 * s1 <= 4 * m; s1 += 2)
    for (int s2 = s1; s1 * s1 + s2 * s2 <= 4 * m; s2 += 2)
      for (int s3 = s2; s1 * s1 + s2 * s2 + s3 * s3 <= 4 * m; s3 += 2) {
        const int rest = 4 * m - s1 * s1 - s2 * s2 - s3 * s3;
        const int s4 = static_cast<int>(std::lround(std::sqrt(rest)));
        if (s4 < s3 || s4 * s4 != rest) continue;
        const double cost = static_cast<double>(by_sum[s1].size()) * static_cast<double>(by_sum[s2].size()) +
                            static_cast<double>(by_sum[s3].size()) * static_cast<double>(by_sum[s4].size());
        decompositions.push_back({{s1, s2, s3, s4}, cost});
      }
  std::sort(decompositions.begin(), decompositions.end(),
            [](const Sums& a, const Sums& b) { return a.cost < b.cost; });
  // A pair of rows whose spectra fit together, by the hash of its summed autocorrelation.
  struct Pair {
    std::uint64_t hash;
    std::uint32_t first, second;
  };
  const auto pairs_of = [&](const std::vector<Row>& x, const std::vector<Row>& y, bool same, int sign) {
    std::vector<Pair> out;
    std::vector<int> key(static_cast<std::size_t>(h));
    for (std::size_t a = 0; a < x.size(); ++a)
      for (std::size_t b = same ? a : 0; b < y.size(); ++b) {
        bool fits = true;
        for (int k = 0; fits && k < h; ++k) fits = x[a].spectrum[k] + y[b].spectrum[k] <= bound;
        if (!fits) continue;
        for (int s = 0; s < h; ++s) key[s] = sign * (x[a].autocorrelation[s] + y[b].autocorrelation[s]);
        out.push_back({hash_of(key), static_cast<std::uint32_t>(a), static_cast<std::uint32_t>(b)});
      }
    std::sort(out.begin(), out.end(), [](const Pair& p, const Pair& q) { return p.hash < q.hash; });
    return out;
  };
  for (const Sums& d : decompositions) {
    const auto& ra = by_sum[d.s[0]];
    const auto& rb = by_sum[d.s[1]];
    const auto& rc = by_sum[d.s[2]];
    const auto& rd = by_sum[d.s[3]];
    std::fprintf(stderr, "sums %d %d %d %d: %zu %zu %zu %zu rows\n", d.s[0], d.s[1], d.s[2], d.s[3],
                 ra.size(), rb.size(), rc.size(), rd.size());
    const std::vector<Pair> ab = pairs_of(ra, rb, d.s[0] == d.s[1], 1);
    const std::vector<Pair> cd = pairs_of(rc, rd, d.s[2] == d.s[3], -1);
    std::fprintf(stderr, "  %zu (A, B) and %zu (C, D) pairs\n", ab.size(), cd.size());
    for (std::size_t i = 0, j = 0; i < ab.size() && j < cd.size();) {
      if (ab[i].hash < cd[j].hash) { ++i; continue; }
      if (ab[i].hash > cd[j].hash) { ++j; continue; }
      const Row* rows[4] = {&ra[ab[i].first], &rb[ab[i].second], &rc[cd[j].first], &rd[cd[j].second]};
      bool exact = true;  // the hashes matched: check the autocorrelations themselves
      for (int s = 0; exact && s < h; ++s) {
        int sum = 0;
        for (const Row* r : rows) sum += r->autocorrelation[static_cast<std::size_t>(s)];
        exact = sum == 0;
      }
      if (exact) {
        for (const Row* r : rows) {
          for (int jj = 0; jj < m; ++jj) std::printf("%c", entry(r->bits, jj, m) > 0 ? '+' : '-');
          std::printf("\n");
        }
        return 0;
      }
      ++j;
    }
  }
  std::fprintf(stderr, "find_williamson: no Williamson matrices of order %d\n", m);
  return 1;
}
