// SPDX-License-Identifier: Apache-2.0
// QuantizedLowRank: factors stored as quantized component blocks. INT8 factors reconstruct
// ΔW within the product bound, bits per parameter follow the storage formula, blocks of
// different formats stack in order, and bad blocks are refused.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "adapter_test_util.hpp"
#include "qlr/adapter/concept.hpp"
#include "qlr/adapter/lora.hpp"
#include "qlr/adapter/merge.hpp"
#include "qlr/adapter/quantized_low_rank.hpp"
#include "qlr/quant/spec.hpp"
#include "qlr_test_support.hpp"

using qlr::index_t;
using qlr::Matrix;
using qlr::MatrixD;
using qlr::adapter::ComponentBlock;
using qlr::adapter::Lora;
using qlr::adapter::LowRank;
using qlr::adapter::QuantizedLowRank;
using qlr::quant::parse_quant_spec;
using qlr::test::gaussian;
using qlr::test::relative_error;
using qlr::test::to_double;

static_assert(qlr::adapter::Adapter<QuantizedLowRank>);
static_assert(
    qlr::adapter::AdapterFor<QuantizedLowRank, qlr::QuantFormat<3, qlr::Encoding::int_sym>>);

TEST_CASE("QuantizedLowRank: INT8 factors reconstruct the update within the product bound",
          "[adapter][quantized_low_rank]") {
  std::mt19937 rng(31);
  const index_t n = 96, k = 128, r = 8;
  const Lora lora(gaussian(rng, r, k), gaussian(rng, n, r), 16.0);
  const QuantizedLowRank q = QuantizedLowRank::quantize(lora, parse_quant_spec("int8-asym-g32"));
  CHECK(q.rank() == r);
  CHECK(q.in_features() == k);
  CHECK(q.out_features() == n);
  CHECK(q.scale() == lora.scale());
  REQUIRE(q.blocks().size() == 1);
  CHECK(q.blocks()[0].begin == 0);
  CHECK(q.blocks()[0].end == r);
  // ‖B̂Â − BA‖ ≤ ‖B̂ − B‖·‖Â‖ + ‖B‖·‖Â − A‖ (Frobenius norms are submultiplicative).
  const MatrixD a = to_double(lora.a()), b = to_double(lora.b());
  const MatrixD a_hat = to_double(q.a()), b_hat = to_double(q.b());
  const double bound = (b_hat - b).norm() * a_hat.norm() + b.norm() * (a_hat - a).norm();
  CHECK((b_hat * a_hat - b * a).norm() <= bound * (1 + 1e-12));
  // INT8 in groups of 32 keeps each factor within ~0.5 %: ΔW within 1 %.
  const double delta_error = relative_error(to_double(lora.delta()), to_double(q.delta()));
  CHECK(delta_error < 1e-2);
  CHECK(delta_error > 0.0);
  // The side path is s·x·Âᵀ through B̂.
  const Matrix x = gaussian(rng, 4, k);
  Matrix t(4, r);
  q.project(x, t);
  CHECK(relative_error(static_cast<double>(q.scale()) * to_double(x) * a_hat.transpose(),
                       to_double(t)) < 1e-6);
  CHECK(&q.up() == &q.b());
  CHECK(relative_error(to_double(q.delta()) + to_double(Matrix::Ones(n, k)),
                       to_double(qlr::adapter::merge(Matrix::Ones(n, k), q))) < 1e-6);
}

TEST_CASE("QuantizedLowRank: bits per parameter count every stored bit over r(N+K)",
          "[adapter][quantized_low_rank]") {
  std::mt19937 rng(32);
  const index_t n = 96, k = 128, r = 8;
  const LowRank term(gaussian(rng, r, k), gaussian(rng, n, r));
  // INT8 g32, f32 scales, 8-bit integer zeros: 8 + 40/32 bits for both factors.
  CHECK(QuantizedLowRank::quantize(term, parse_quant_spec("int8-asym-g32")).bits_per_parameter() ==
        8.0 + 40.0 / 32.0);
  // Two blocks: components [0, 2) INT8 g32 f16 scales, [2, 8) INT2 symmetric g64 f16
  // (K = 128 and N = 96: ⌈96/64⌉ = 2 groups on a row of Bᵀ).
  const Matrix bt = term.b().transpose();
  std::vector<ComponentBlock> blocks;
  const auto hi = parse_quant_spec("int8-asym-g32-f16");
  const auto lo = parse_quant_spec("int2-sym-g64-f16");
  blocks.push_back({0, 2, qlr::quant::quantize(term.a().topRows(2), hi),
                    qlr::quant::quantize(bt.topRows(2), hi)});
  blocks.push_back({2, 8, qlr::quant::quantize(term.a().bottomRows(6), lo),
                    qlr::quant::quantize(bt.bottomRows(6), lo)});
  const QuantizedLowRank mixed(std::move(blocks), 0.5);
  const double hi_a = 8.0 + (16.0 + 8.0) * 4.0 / 128.0, hi_b = 8.0 + (16.0 + 8.0) * 3.0 / 96.0;
  const double lo_a = 2.0 + 16.0 * 2.0 / 128.0, lo_b = 2.0 + 16.0 * 2.0 / 96.0;
  const double expected = (2.0 * (hi_a * k + hi_b * n) + 6.0 * (lo_a * k + lo_b * n)) /
                          (static_cast<double>(r) * static_cast<double>(n + k));
  CHECK(mixed.bits_per_parameter() == Approx(expected).epsilon(1e-14));
  CHECK(mixed.scale() == 0.5f);
  // Each block's dequantized rows land in their components.
  CHECK(mixed.a().topRows(2) == qlr::quant::dequantize(mixed.blocks()[0].a_rows));
  CHECK(mixed.a().bottomRows(6) == qlr::quant::dequantize(mixed.blocks()[1].a_rows));
  const Matrix b_low = qlr::quant::dequantize(mixed.blocks()[1].bt_rows).transpose();
  CHECK(mixed.b().rightCols(6) == b_low);
}

TEST_CASE("QuantizedLowRank rejects gaps, overlaps, mismatched shapes and NaN in x",
          "[adapter][quantized_low_rank][errors]") {
  std::mt19937 rng(33);
  const index_t n = 24, k = 40, r = 4;
  const auto spec = parse_quant_spec("int8-asym-g32");
  const Matrix a = gaussian(rng, r, k);
  const Matrix bt = gaussian(rng, r, n);
  const auto block = [&](index_t begin, index_t end, const Matrix& a_rows, const Matrix& bt_rows) {
    return ComponentBlock{begin, end, qlr::quant::quantize(a_rows, spec),
                          qlr::quant::quantize(bt_rows, spec)};
  };
  CHECK_QLR_ERROR(QuantizedLowRank({}), "blocks.size() = 0");
  CHECK_QLR_ERROR(QuantizedLowRank({block(0, 2, a.topRows(2), bt.topRows(2)),
                                    block(3, 4, a.bottomRows(1), bt.bottomRows(1))}),
                  "blocks[1] covers [3, 4); expected [2, j1)");
  CHECK_QLR_ERROR(QuantizedLowRank({block(1, 3, a.topRows(2), bt.topRows(2))}),
                  "blocks[0] covers [1, 3); expected [0, j1)");
  CHECK_QLR_ERROR(QuantizedLowRank({block(0, 3, a.topRows(2), bt.topRows(2))}),
                  "blocks[0].a_rows is 2x40; expected 3x40");
  CHECK_QLR_ERROR(QuantizedLowRank({block(0, 2, a.topRows(2), bt.topRows(2)),
                                    block(2, 4, gaussian(rng, 2, k + 1), bt.bottomRows(2))}),
                  "blocks[1].a_rows is 2x41; expected 2x40");
  CHECK_QLR_ERROR(QuantizedLowRank({block(0, 2, a.topRows(2), bt.topRows(2)),
                                    block(2, 4, a.bottomRows(2), gaussian(rng, 2, n - 1))}),
                  "blocks[1].bt_rows is 2x23; expected 2x24");
  // r ≤ min(N, K): 5 components on N = 4.
  CHECK_QLR_ERROR(QuantizedLowRank({block(0, 5, gaussian(rng, 5, k), gaussian(rng, 5, 4))}),
                  "rank = 5; expected <= min(out_features = 4");
  CHECK_QLR_ERROR(QuantizedLowRank({block(0, r, a, bt)}, std::nan("")), "scale = nan");

  const QuantizedLowRank q({block(0, r, a, bt)});
  Matrix x = gaussian(rng, 3, k);
  Matrix t(3, r);
  CHECK_QLR_ERROR(q.project(gaussian(rng, 3, k + 2), t), "x is 3x42; expected 40 columns");
  for (const float bad : {std::nanf(""), std::numeric_limits<float>::infinity()}) {
    x(2, 7) = bad;
    CHECK_QLR_ERROR(q.project(x, t), "QuantizedLowRank: x: element (2, 7)");
  }
}
