// SPDX-License-Identifier: Apache-2.0
// Bit packing (ALGORITHMS.md §1.5, T1.1–T1.2): known byte patterns, round trips for every
// width and length, zeroed tail bits, and the errors at the boundary.
#include <catch2/catch.hpp>

#include <cstdint>
#include <random>
#include <vector>

#include "qlr/core/bit_pack.hpp"

using qlr::index_t;

namespace {
std::vector<std::uint8_t> pack(int bits, const std::vector<std::uint8_t>& codes) {
  std::vector<std::uint8_t> out(static_cast<std::size_t>(
      qlr::packed_size(bits, static_cast<index_t>(codes.size()))));
  qlr::pack_codes(bits, codes, out);
  return out;
}
}  // namespace

TEST_CASE("pack_codes: published byte patterns (T1.1)", "[core][bit_pack]") {
  CHECK(pack(3, {1, 2, 3, 4, 5, 6, 7, 0}) == std::vector<std::uint8_t>{0xD1, 0x58, 0x1F});
  CHECK(pack(4, {1, 2, 3, 4}) == std::vector<std::uint8_t>{0x21, 0x43});
  CHECK(pack(2, {1, 2, 3, 0}) == std::vector<std::uint8_t>{0x39});
  CHECK(pack(1, {1, 0, 1, 1, 0, 0, 0, 1, 1}) == std::vector<std::uint8_t>{0x8D, 0x01});
  CHECK(pack(8, {0, 255, 17}) == std::vector<std::uint8_t>{0, 255, 17});
}

TEST_CASE("packed_size: row stride is ceil(K*b/8) (T1.2)", "[core][bit_pack]") {
  CHECK(qlr::packed_size(3, 172) == 65);
  CHECK(qlr::packed_size(4, 172) == 86);
  CHECK(qlr::packed_size(2, 5) == 2);
  CHECK(qlr::packed_size(3, 8) == 3);
  CHECK(qlr::packed_size(8, 7) == 7);
}

TEST_CASE("unpack_codes: inverts pack_codes for every width and length 1..67", "[core][bit_pack]") {
  const int bits = GENERATE(1, 2, 3, 4, 8);
  const std::uint32_t seed = GENERATE(1u, 2u);
  CAPTURE(bits, seed);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> code(0, (1 << bits) - 1);
  for (index_t n = 1; n <= 67; ++n) {
    CAPTURE(n);
    std::vector<std::uint8_t> codes(static_cast<std::size_t>(n));
    for (auto& c : codes) c = static_cast<std::uint8_t>(code(rng));
    if (n >= (1 << bits)) {  // every code value appears at least once
      for (int v = 0; v < (1 << bits); ++v) codes[static_cast<std::size_t>(v)] = static_cast<std::uint8_t>(v);
    }
    const auto packed = pack(bits, codes);
    REQUIRE(static_cast<index_t>(packed.size()) == qlr::packed_size(bits, n));
    const int tail = static_cast<int>((n * bits) % 8);
    if (tail != 0) CHECK((packed.back() >> tail) == 0);  // unused high bits are zero
    std::vector<std::uint8_t> back(codes.size());
    qlr::unpack_codes(bits, packed, back);
    REQUIRE(back == codes);
  }
}

TEST_CASE("pack_codes: rejects bad widths, short buffers and out-of-range codes", "[core][bit_pack]") {
  std::vector<std::uint8_t> codes{1, 2, 3};
  std::vector<std::uint8_t> out(4);
  CHECK_THROWS_WITH(qlr::pack_codes(5, codes, out), Catch::Contains("bits = 5"));
  CHECK_THROWS_WITH(qlr::unpack_codes(6, out, codes), Catch::Contains("bits = 6"));
  std::vector<std::uint8_t> small(1);
  CHECK_THROWS_WITH(qlr::pack_codes(8, codes, small), Catch::Contains("out.size() = 1"));
  CHECK_THROWS_WITH(qlr::unpack_codes(8, small, codes), Catch::Contains("packed.size() = 1"));
  codes[2] = 4;
  CHECK_THROWS_WITH(qlr::pack_codes(2, codes, out), Catch::Contains("codes[2] = 4"));
}
