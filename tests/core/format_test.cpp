// SPDX-License-Identifier: Apache-2.0
// QuantizedMatrix: its constructor refuses parts that break the format, and its
// bits-per-parameter count is exact (ALGORITHMS.md §10, T10.1).
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "qlr/core/format.hpp"

using qlr::Encoding;
using qlr::QuantFormat;
using qlr::QuantizedMatrix;
using qlr::QuantizedParts;

namespace {
using Int4Asym = QuantFormat<4, Encoding::int_asym>;
using Int3Sym = QuantFormat<3, Encoding::int_sym>;
using Nf4Format = QuantFormat<4, Encoding::codebook>;

/// Valid parts of a rows×cols INT-b matrix with group size g, all codes zero.
QuantizedParts parts(int bits, qlr::index_t rows, qlr::index_t cols, qlr::index_t g, bool zeros) {
  QuantizedParts p;
  p.rows = rows;
  p.cols = cols;
  p.group_size = g;
  p.codes.assign(static_cast<std::size_t>(rows * qlr::packed_size(bits, cols)), 0);
  p.scales.assign(static_cast<std::size_t>(rows * qlr::group_count(cols, g)), 0.5f);
  if (zeros) p.zeros.assign(p.scales.size(), 8.0f);
  return p;
}
}  // namespace

TEST_CASE("QuantizedMatrix: bits per parameter, metadata included (T10.1)", "[core][format]") {
  auto p = parts(4, 3, 256, 128, true);
  p.scale_type = qlr::ScaleType::f16;
  CHECK(QuantizedMatrix<Int4Asym>(p).bits_per_parameter() == 4.15625);  // 4 + (16 + 4)/128
  p.scale_type = qlr::ScaleType::f32;
  CHECK(QuantizedMatrix<Int4Asym>(p).bits_per_parameter() == 4.28125);  // 4 + (32 + 4)/128
  p.zero_mode = qlr::ZeroMode::floating;
  CHECK(QuantizedMatrix<Int4Asym>(p).bits_per_parameter() == 4.5);      // 4 + (32 + 32)/128

  auto ragged = parts(3, 2, 172, 32, false);  // 6 groups per row, the last of 12
  ragged.scale_type = qlr::ScaleType::f16;
  CHECK(QuantizedMatrix<Int3Sym>(ragged).bits_per_parameter() == Approx(3.0 + 6.0 * 16 / 172));

  auto per_channel = parts(3, 2, 4096, 4096, false);
  per_channel.scale_type = qlr::ScaleType::f16;
  CHECK(QuantizedMatrix<Int3Sym>(per_channel).bits_per_parameter() == 3.0 + 16.0 / 4096);

  auto nf4 = parts(4, 2, 128, 64, false);
  nf4.codebook = {-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7};
  CHECK(QuantizedMatrix<Nf4Format>(nf4).bits_per_parameter() == 4.5);
}

TEST_CASE("QuantizedMatrix: refuses parts that break the format", "[core][format]") {
  using M = QuantizedMatrix<Int4Asym>;
  const auto good = parts(4, 3, 10, 4, true);
  CHECK_NOTHROW(M(good));

  auto p = good;
  p.rows = 0;
  CHECK_THROWS_WITH(M(p), Catch::Contains("shape = (0, 10)"));
  p = good;
  p.group_size = 11;
  CHECK_THROWS_WITH(M(p), Catch::Contains("group_size = 11"));
  p = good;
  p.codes.pop_back();
  CHECK_THROWS_WITH(M(p), Catch::Contains("codes.size() = 14; expected 15"));
  p = good;
  p.scales.push_back(1.0f);
  CHECK_THROWS_WITH(M(p), Catch::Contains("scales.size() = 10; expected 9"));
  p = good;
  p.zeros.clear();
  CHECK_THROWS_WITH(M(p), Catch::Contains("zeros.size() = 0; expected 9"));
  p = good;
  p.scales[4] = 0.0f;
  CHECK_THROWS_WITH(M(p), Catch::Contains("scales[4] = 0"));
  p = good;
  p.scales[1] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(M(p), Catch::Contains("scales[1] = nan"));
  p = good;
  p.scale_type = qlr::ScaleType::f16;
  CHECK_NOTHROW(M(p));  // 0.5 is an f16 value
  p.scales[3] = 0.1f;   // f32 precision is not
  CHECK_THROWS_WITH(M(p), Catch::Contains("scales[3] = 0.1; expected a finite f16 value"));
  p = good;
  p.zeros[2] = 16.0f;
  CHECK_THROWS_WITH(M(p), Catch::Contains("zeros[2] = 16"));
  p = good;
  p.zeros[2] = 2.5f;
  CHECK_THROWS_WITH(M(p), Catch::Contains("zeros[2] = 2.5"));
  p.zero_mode = qlr::ZeroMode::floating;  // a float zero may be fractional
  CHECK_NOTHROW(M(p));
  p = good;
  p.codes[4] = 0xf0;  // row 0 is 10 nibbles = 5 bytes: byte 4 is full, no unused bits
  CHECK_NOTHROW(M(p));
  auto odd = parts(4, 2, 9, 3, true);  // 9 nibbles: the high nibble of byte 4 is unused
  odd.codes[4] = 0x10;
  CHECK_THROWS_WITH(M(odd), Catch::Contains("row 0 last code byte = 0x10"));

  auto nf4 = parts(4, 1, 8, 8, false);
  nf4.codebook.assign(16, 0.0f);
  CHECK_THROWS_WITH(QuantizedMatrix<Nf4Format>(nf4), Catch::Contains("codebook[1] = 0"));
  nf4.codebook.clear();
  CHECK_THROWS_WITH(QuantizedMatrix<Nf4Format>(nf4), Catch::Contains("codebook.size() = 0"));
}

TEST_CASE("effective_group_size: 0 and g >= K mean one group per row; g < 0 is an error",
          "[core][format]") {
  CHECK(qlr::effective_group_size(0, 172, "t") == 172);
  CHECK(qlr::effective_group_size(256, 172, "t") == 172);
  CHECK(qlr::effective_group_size(32, 172, "t") == 32);
  CHECK(qlr::group_count(172, 32) == 6);
  CHECK_THROWS_WITH(qlr::effective_group_size(-1, 172, "t"), Catch::Contains("group_size = -1"));
}
