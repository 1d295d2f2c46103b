// SPDX-License-Identifier: Apache-2.0
// quantize() with a policy that does not model the Quantizer concept must fail to compile
// naming the concept.
#include "qlr/quant/concept.hpp"
#include "qlr/quant/int_group.hpp"

struct NotAQuantizer {
  using format = qlr::QuantFormat<4, qlr::Encoding::int_asym>;
  int quantize(qlr::ConstMatrixRef) const { return 0; }  // returns no QuantizedMatrix
};

int main() {
  const qlr::Matrix w = qlr::Matrix::Ones(2, 8);
#ifdef QLR_SHOULD_FAIL
  const auto q = qlr::quant::quantize(w, NotAQuantizer{});
#else
  const auto q = qlr::quant::quantize(w, qlr::quant::IntAsym<4>());
#endif
  return q.rows() == 2 ? 0 : 1;
}
