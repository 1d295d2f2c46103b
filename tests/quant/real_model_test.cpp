// SPDX-License-Identifier: Apache-2.0
// The quantizers on real trained weights: every linear layer of stories260K. The error must
// fall as bits rise and as groups shrink (the vendored copy is in data/stories260K).
#include <catch2/catch.hpp>

#include <cmath>
#include <map>
#include <string>

#include "qlr/io/llama2c.hpp"
#include "qlr/quant/metrics.hpp"
#include "qlr/quant/spec.hpp"
#include "qlr_test_support.hpp"

using qlr::index_t;

namespace {
double error_of(const qlr::Matrix& w, int bits, index_t g, qlr::Encoding encoding) {
  const qlr::quant::QuantSpec spec{.bits = bits, .encoding = encoding,
                                   .options = {.group_size = g}};
  return qlr::quant::relative_frobenius_error(
      w, qlr::quant::dequantize(qlr::quant::quantize(w, spec)));
}
}  // namespace

TEST_CASE("stories260K: quantization error falls with more bits and smaller groups",
          "[quant][real_model]") {
  const auto path = qlr::test::stories260k_path_or_warn("real-weight checks");
  if (!path) return;
  const auto model = qlr::io::load_llama2c(*path);
  const auto weights = model.linear_weights();
  REQUIRE(weights.size() == 35);  // 5 layers × (q, k, v, o, w1, w2, w3)
  const auto encoding = GENERATE(qlr::Encoding::int_asym, qlr::Encoding::int_sym);
  CAPTURE(qlr::to_string(encoding));
  // Summed squared errors over the model, per (bits, g), to compare whole-model trends.
  std::map<std::pair<int, index_t>, double> total;
  for (const auto& [name, w] : weights) {
    CAPTURE(name);
    for (const index_t g : {index_t{0}, index_t{128}, index_t{64}, index_t{32}}) {
      double previous = 1.0;  // the error of Ŵ = 0
      for (const int bits : {2, 3, 4, 8}) {
        CAPTURE(g, bits);
        const double err = error_of(*w, bits, g, encoding);
        // Two bits already beat zero; every further step cuts the error by a clear margin.
        CHECK(err < previous * (bits == 2 ? 1.0 : 0.75));
        previous = err;
        total[{bits, g}] += err * err * w->squaredNorm();
      }
    }
    for (const int bits : {2, 3, 4, 8}) {  // smaller groups fit each matrix better
      CAPTURE(bits);
      CHECK(error_of(*w, bits, 32, encoding) < error_of(*w, bits, 0, encoding));
    }
  }
  for (const int bits : {2, 3, 4, 8}) {
    CAPTURE(bits);
    CHECK(total[{bits, 32}] < total[{bits, 64}]);
    CHECK(total[{bits, 64}] < total[{bits, 128}]);  // the 172-wide w2 splits into 3 vs 2 groups
    CHECK(total[{bits, 128}] <= total[{bits, 0}]);
  }
}
