// SPDX-License-Identifier: Apache-2.0
// Finds Williamson matrices of odd order m: symmetric circulant ±1 matrices A, B, C, D with
// A² + B² + C² + D² = 4m·I, from which the Williamson array builds a Hadamard matrix of
// order 4m. qlr's tables for orders 156 (m = 39) and 172 (m = 43), which no Paley
// construction reaches, were found by this program; it prints their first rows.
//
//   g++ -O3 -march=native -std=c++20 tools/find_williamson.cpp -o find_williamson
//   ./find_williamson 43            (or: ./find_williamson 43 5,7,7,7 — one decomposition)
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

/// Padded length of a row's spectrum: h ≤ 31, so one 32-float block per row, checked
/// without branches (vectorized).
constexpr int spectrum_floats = 32;

/// The rows of one |row sum|, struct of arrays so that pairing streams through memory.
struct RowClass {
  std::vector<std::uint32_t> bits;        // a_j = −1 where bit j−1 is set, j = 1 … h; a_0 = +1
  std::vector<float> spectrum;            // rows × 32: power spectrum at 1 … h, then 0
  std::vector<std::int16_t> autocorrelation;  // rows × h: periodic, shifts 1 … h
  [[nodiscard]] std::size_t size() const { return bits.size(); }
};

int entry(std::uint32_t bits, int j, int m) {
  j = ((j % m) + m) % m;
  if (j == 0) return 1;
  const int folded = j <= m / 2 ? j : m - j;
  return (bits >> (folded - 1) & 1u) != 0 ? -1 : 1;
}

/// FNV-1a of a summed autocorrelation.
std::uint64_t hash_of(const int* v, int count) {
  std::uint64_t h = 1469598103934665603ull;
  for (int i = 0; i < count; ++i) h = (h ^ static_cast<std::uint64_t>(v[i] + 1000)) * 1099511628211ull;
  return h;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 && argc != 3) {
    std::fprintf(stderr, "usage: find_williamson <odd order m> [s1,s2,s3,s4]\n");
    return 1;
  }
  int only[4] = {0, 0, 0, 0};  // a single decomposition of 4m to try, if given
  if (argc == 3 && std::sscanf(argv[2], "%d,%d,%d,%d", &only[0], &only[1], &only[2], &only[3]) != 4) {
    std::fprintf(stderr, "find_williamson: sums = '%s'; expected four odd row sums s1,s2,s3,s4\n", argv[2]);
    return 1;
  }
  const int m = std::atoi(argv[1]);
  if (m < 3 || m % 2 == 0 || m > 63) {
    std::fprintf(stderr, "find_williamson: m = %d; expected an odd order in [3, 63]\n", m);
    return 1;
  }
  const int h = (m - 1) / 2;
  const float bound = static_cast<float>(4 * m) + 1e-3f;
  std::map<int, RowClass> by_sum;  // |row sum| → rows that pass the spectrum bound
  std::vector<double> cosines(static_cast<std::size_t>(m));
  for (int j = 0; j < m; ++j) cosines[static_cast<std::size_t>(j)] = std::cos(2.0 * M_PI * j / m);
  for (std::uint32_t bits = 0; bits < (1u << h); ++bits) {
    int sum = 0;
    for (int j = 0; j < m; ++j) sum += entry(bits, j, m);
    if (sum * sum > 4 * m) continue;
    float spectrum[spectrum_floats] = {};
    bool fits = true;
    for (int k = 1; fits && k <= h; ++k) {
      double f = 1.0;
      for (int j = 1; j <= h; ++j) f += 2.0 * entry(bits, j, m) * cosines[static_cast<std::size_t>(j * k % m)];
      spectrum[k - 1] = static_cast<float>(f * f);
      fits = f * f <= bound;
    }
    if (!fits) continue;
    RowClass& c = by_sum[std::abs(sum)];
    c.bits.push_back(bits);
    c.spectrum.insert(c.spectrum.end(), spectrum, spectrum + spectrum_floats);
    for (int s = 1; s <= h; ++s) {
      int a = 0;
      for (int j = 0; j < m; ++j) a += entry(bits, j, m) * entry(bits, j + s, m);
      c.autocorrelation.push_back(static_cast<std::int16_t>(a));
    }
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
        if (only[0] != 0 && (only[0] != s1 || only[1] != s2 || only[2] != s3 || only[3] != s4)) continue;
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
  const auto pairs_of = [&](const RowClass& x, const RowClass& y, bool same, int sign) {
    std::vector<Pair> out;
    std::vector<int> key(static_cast<std::size_t>(h));
    for (std::size_t a = 0; a < x.size(); ++a) {
      const float* sa = x.spectrum.data() + a * spectrum_floats;
      for (std::size_t b = same ? a : 0; b < y.size(); ++b) {
        const float* sb = y.spectrum.data() + b * spectrum_floats;
        int over = 0;  // no branch: the compiler vectorizes the 32 sums
        for (int k = 0; k < spectrum_floats; ++k) over |= sa[k] + sb[k] > bound ? 1 : 0;
        if (over != 0) continue;
        for (int s = 0; s < h; ++s)
          key[static_cast<std::size_t>(s)] = sign * (x.autocorrelation[a * h + s] + y.autocorrelation[b * h + s]);
        out.push_back({hash_of(key.data(), h), static_cast<std::uint32_t>(a), static_cast<std::uint32_t>(b)});
      }
    }
    std::sort(out.begin(), out.end(), [](const Pair& p, const Pair& q) { return p.hash < q.hash; });
    return out;
  };
  const auto print_row = [&](const RowClass& c, std::uint32_t i) {
    for (int j = 0; j < m; ++j) std::printf("%c", entry(c.bits[i], j, m) > 0 ? '+' : '-');
    std::printf("\n");
  };
  for (const Sums& d : decompositions) {
    const RowClass& ra = by_sum[d.s[0]];
    const RowClass& rb = by_sum[d.s[1]];
    const RowClass& rc = by_sum[d.s[2]];
    const RowClass& rd = by_sum[d.s[3]];
    std::fprintf(stderr, "sums %d %d %d %d: %zu %zu %zu %zu rows\n", d.s[0], d.s[1], d.s[2], d.s[3],
                 ra.size(), rb.size(), rc.size(), rd.size());
    const std::vector<Pair> ab = pairs_of(ra, rb, d.s[0] == d.s[1], 1);
    const std::vector<Pair> cd = pairs_of(rc, rd, d.s[2] == d.s[3], -1);
    std::fprintf(stderr, "  %zu (A, B) and %zu (C, D) pairs\n", ab.size(), cd.size());
    for (std::size_t i = 0, j = 0; i < ab.size() && j < cd.size();) {
      if (ab[i].hash < cd[j].hash) { ++i; continue; }
      if (ab[i].hash > cd[j].hash) { ++j; continue; }
      bool exact = true;  // the hashes matched: check the autocorrelations themselves
      for (int s = 0; exact && s < h; ++s)
        exact = ra.autocorrelation[ab[i].first * h + s] + rb.autocorrelation[ab[i].second * h + s] +
                    rc.autocorrelation[cd[j].first * h + s] + rd.autocorrelation[cd[j].second * h + s] == 0;
      if (exact) {
        print_row(ra, ab[i].first);
        print_row(rb, ab[i].second);
        print_row(rc, cd[j].first);
        print_row(rd, cd[j].second);
        return 0;
      }
      ++j;
    }
  }
  std::fprintf(stderr, "find_williamson: no Williamson matrices of order %d%s\n", m,
               only[0] != 0 ? " with those row sums" : "");
  return 1;
}
