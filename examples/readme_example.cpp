// SPDX-License-Identifier: Apache-2.0
// The code example of README.md, compiled and run by the tests; tests/readme_sync.cmake
// checks that the README shows exactly the code below this header.

#include <qlr/kernels.hpp>
#include <qlr/quant.hpp>

#include <cstdio>
#include <random>
#include <vector>

int main() {
  // Your engine's weight, out_features × in_features row-major, viewed without a copy.
  const qlr::index_t n = 4096, k = 4096;
  std::vector<float> buffer(static_cast<std::size_t>(n * k));
  std::mt19937 rng(0);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (float& v : buffer) v = normal(rng);
  const qlr::ConstMatrixMap w(buffer.data(), n, k, Eigen::OuterStride<>(k));

  // Compile-time policy: INT4, asymmetric, groups of 128 input columns, f16 scales.
  const auto q = qlr::quant::IntAsym<4>({.group_size = 128, .scale_type = qlr::ScaleType::f16})
                     .quantize(w);
  std::printf("int4 g128: %.5f bits/param, relative error %.4f\n", q.bits_per_parameter(),
              qlr::quant::relative_frobenius_error(w, qlr::quant::dequantize(q)));

  // The same kind of choice made at run time, from a flag or a config file.
  const auto nf4 = qlr::quant::quantize(w, qlr::quant::parse_quant_spec("nf4-g64"));
  std::printf("nf4: %.2f bits/param\n", qlr::quant::bits_per_parameter(nf4));

  // W4A8: INT4 weights packed once for the integer kernels, 16 tokens quantized to INT8
  // per token, Y (16×N) = X̂·Ŵᵀ on the best SIMD path of this CPU.
  const qlr::kernels::DotWeights packed(qlr::quant::IntSym<4>({.group_size = 128}).quantize(w));
  const auto x = qlr::quant::quantize_per_token(w.topRows(16), {.bits = 8});
  std::vector<float> y(static_cast<std::size_t>(16 * n));
  qlr::kernels::gemm(packed, x.view(), qlr::MatrixView{y.data(), 16, n, n});
  std::printf("w4a8 on %s: y[0][0] = %.4f\n", qlr::kernels::to_string(qlr::kernels::best_isa()),
              y[0]);
}
