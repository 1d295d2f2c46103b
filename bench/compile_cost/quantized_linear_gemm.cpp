// SPDX-License-Identifier: Apache-2.0
// Compile-cost probe (bench/compile_cost.sh): a unit that uses one compile-time layer type,
// QuantizedLinear<quant::IntSym<4>>, and the integer GEMM.
#include <qlr/kernels/gemm.hpp>
#include <qlr/layers/quantized_linear.hpp>
#include <qlr/quant/int_group.hpp>

#include <cstdio>

int main() {
  const qlr::Matrix w = qlr::Matrix::Random(64, 128);
  const qlr::quant::IntSym<4> quantizer({.group_size = 32});
  const qlr::layers::QuantizedLinear<qlr::quant::IntSym<4>> layer(w, quantizer);
  const qlr::kernels::DotWeights packed(quantizer.quantize(w));
  qlr::Matrix x = qlr::Matrix::Random(3, 128), y(3, 64);
  qlr::kernels::gemm(packed, qlr::ConstMatrixView{x.data(), 3, 128, 128},
                     qlr::MatrixView{y.data(), 3, 64, 64});
  std::printf("%f %f\n", layer.forward(x)(0, 0), y(0, 0));
}
