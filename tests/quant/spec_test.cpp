// SPDX-License-Identifier: Apache-2.0
// The runtime QuantSpec: names round-trip, the runtime path equals the compile-time policy,
// and unsupported widths and unknown words are errors.
#include <catch2/catch.hpp>

#include <limits>
#include <random>
#include <string>

#include "qlr/quant/spec.hpp"
#include "qlr_test_support.hpp"

using qlr::Matrix;
using qlr::quant::parse_quant_spec;
using qlr::quant::QuantSpec;

TEST_CASE("parse_quant_spec: canonical names round-trip", "[quant][spec]") {
  for (const char* name : {"int4-asym-g128", "int3-sym-g32-clip", "int2-asym-g64-clip-fz",
                           "int8-sym-pc-f16", "nf4-g64", "nf4-g128-f16", "int4-asym-pc",
                           "int4-asym-g32-fz-nz-f16"}) {
    CAPTURE(name);
    CHECK(qlr::quant::to_string(parse_quant_spec(name)) == name);
  }
  CHECK(qlr::quant::to_string(parse_quant_spec("int4")) == "int4-asym-g128");
  CHECK(qlr::quant::to_string(parse_quant_spec("nf4")) == "nf4-g64");
}

TEST_CASE("quantize(QuantSpec): the same bytes as the compile-time policy", "[quant][spec]") {
  std::mt19937 rng(2);
  const Matrix w = qlr::test::heavy_tailed(rng, 8, 96);
  const auto any = qlr::quant::quantize(w, parse_quant_spec("int3-sym-g32-clip"));
  const auto typed = qlr::quant::IntSym<3>(
      {.group_size = 32, .range = qlr::quant::Range::mse_clip}).quantize(w);
  const auto* held = std::get_if<qlr::QuantizedMatrix<qlr::quant::IntSym<3>::format>>(&any);
  REQUIRE(held != nullptr);
  CHECK(held->parts().codes == typed.parts().codes);
  CHECK(held->parts().scales == typed.parts().scales);
  CHECK(qlr::quant::dequantize(any) == qlr::quant::dequantize(typed));
  CHECK(qlr::quant::bits_per_parameter(any) == typed.bits_per_parameter());
  const auto nf4 = qlr::quant::quantize(w, parse_quant_spec("nf4"));
  REQUIRE(std::holds_alternative<qlr::QuantizedMatrix<qlr::quant::Nf4::format>>(nf4));
  CHECK(std::get<qlr::QuantizedMatrix<qlr::quant::Nf4::format>>(nf4).group_size() == 64);
  // A default-constructed NF4 spec means the published format: blocks of 64.
  const auto nf4_default = qlr::quant::quantize(w, QuantSpec{.encoding = qlr::Encoding::codebook});
  CHECK(std::get<qlr::QuantizedMatrix<qlr::quant::Nf4::format>>(nf4_default).group_size() == 64);
  Matrix bad = w;
  bad(5, 7) = -std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH(qlr::quant::quantize(bad, parse_quant_spec("int4-g32")),
                    Catch::Contains("element (5, 7) = -inf"));
}

TEST_CASE("quantize(QuantSpec): unsupported widths are a qlr::Error at run time", "[quant][spec]") {
  const Matrix w = Matrix::Ones(2, 8);
  for (const int bits : {0, 1, 5, 16}) {
    CAPTURE(bits);
    try {
      (void)qlr::quant::quantize(w, QuantSpec{.bits = bits});
      FAIL("no exception");
    } catch (const qlr::Error& e) {
      CHECK(e.code() == qlr::Errc::unsupported);
      CHECK_THAT(e.what(), Catch::Contains("bits = " + std::to_string(bits) +
                                           "; expected 2, 3, 4 or 8"));
    }
  }
  CHECK_THROWS_WITH(
      qlr::quant::quantize(w, QuantSpec{.bits = 3, .encoding = qlr::Encoding::codebook}),
      Catch::Contains("expected 4 (NF4)"));
}

TEST_CASE("parse_quant_spec: unknown words name themselves", "[quant][spec]") {
  CHECK_THROWS_WITH(parse_quant_spec("int5"), Catch::Contains("format 'int5'"));
  CHECK_THROWS_WITH(parse_quant_spec("int4-g0"), Catch::Contains("option 'g0'"));
  CHECK_THROWS_WITH(parse_quant_spec("int4-gx"), Catch::Contains("option 'gx'"));
  CHECK_THROWS_WITH(parse_quant_spec("int4--sym"), Catch::Contains("empty word"));
  CHECK_THROWS_WITH(parse_quant_spec("int4-"), Catch::Contains("empty word"));
  CHECK_THROWS_WITH(parse_quant_spec("int4-sym-asym"), Catch::Contains("'sym' and 'asym'"));
  CHECK_THROWS_WITH(parse_quant_spec("int4-g32-pc"), Catch::Contains("'g32' and 'pc'"));
  CHECK_THROWS_WITH(parse_quant_spec("int4-nz"), Catch::Contains("expected it with asym and fz"));
  CHECK_THROWS_WITH(parse_quant_spec("nf4-sym"), Catch::Contains("option 'sym'"));
  CHECK_THROWS_WITH(parse_quant_spec(""), Catch::Contains("format ''"));
}
