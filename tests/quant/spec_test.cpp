// SPDX-License-Identifier: Apache-2.0
// The runtime QuantSpec: names round-trip, the runtime path equals the compile-time policy,
// and unsupported widths and unknown words are errors.
#include <catch2/catch.hpp>

#include <random>
#include <string>

#include "qlr/quant/spec.hpp"
#include "qlr_test_support.hpp"

using qlr::Matrix;
using qlr::quant::parse_quant_spec;
using qlr::quant::QuantSpec;

TEST_CASE("parse_quant_spec: canonical names round-trip", "[quant][spec]") {
  for (const char* name : {"int4-asym-g128", "int3-sym-g32-clip", "int2-asym-g64-clip-fz",
                           "int8-sym-pc-f16", "nf4-g64", "nf4-g128-f16", "int4-asym-pc"}) {
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
  CHECK(std::holds_alternative<qlr::QuantizedMatrix<qlr::quant::Nf4::format>>(nf4));
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
  CHECK_THROWS_WITH(parse_quant_spec("int4--sym"), Catch::Contains("empty option"));
  CHECK_THROWS_WITH(parse_quant_spec("nf4-sym"), Catch::Contains("option 'sym'"));
  CHECK_THROWS_WITH(parse_quant_spec(""), Catch::Contains("format ''"));
}
