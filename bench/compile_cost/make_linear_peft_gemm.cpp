// SPDX-License-Identifier: Apache-2.0
// Compile-cost probe (bench/compile_cost.sh): a consumer unit that builds a runtime layer,
// loads a PEFT adapter and calls the integer GEMM: what an engine's loader file does.
#include <qlr/io/peft.hpp>
#include <qlr/kernels/gemm.hpp>
#include <qlr/layers/any_linear.hpp>
#include <qlr/quant/int_group.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  const qlr::Matrix w = qlr::Matrix::Random(64, 128);
  auto layer = qlr::layers::make_linear(
      w, qlr::layers::parse_linear_spec(argc > 2 ? argv[2] : "int4-asym-g32"));
  if (argc > 1) std::printf("%zu modules\n", qlr::io::load_peft_adapter(argv[1]).modules.size());
  const qlr::kernels::DotWeights packed(qlr::quant::IntSym<4>({.group_size = 32}).quantize(w));
  qlr::Matrix x = qlr::Matrix::Random(3, 128), y(3, 64);
  qlr::kernels::gemm(packed, qlr::ConstMatrixView{x.data(), 3, 128, 128},
                     qlr::MatrixView{y.data(), 3, 64, 64});
  std::printf("%f %f\n", layer.forward(x)(0, 0), y(0, 0));
}
