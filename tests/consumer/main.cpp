// SPDX-License-Identifier: Apache-2.0
// Consumer check: the installed headers compile and link against the installed package's
// dependencies, and a quantize → dequantize round trip works.
#include <qlr/qlr.hpp>

#include <cstdio>

int main() {
  const qlr::Matrix w = qlr::Matrix::Random(16, 96);
  const auto q = qlr::quant::IntAsym<4>({.group_size = 32}).quantize(w);
  const double error = qlr::quant::relative_frobenius_error(w, qlr::quant::dequantize(q));
  if (!(error > 0.0 && error < 0.2)) {
    std::printf("qlr consumer: unexpected relative error %g\n", error);
    return 1;
  }
  std::printf("qlr consumer: ok (qlr %s, INT4 g32 relative error %.4f, %.4f bits/param)\n",
              qlr::version_string, error, q.bits_per_parameter());
  return 0;
}
