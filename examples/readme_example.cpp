// SPDX-License-Identifier: Apache-2.0
// The code example of README.md, compiled and run by the tests; tests/readme_sync.cmake
// checks that the README shows exactly the code below this header.

#include <qlr/adapter/lora.hpp>
#include <qlr/layers/quantized_linear.hpp>
#include <qlr/quant/int_group.hpp>

#include <cstdio>

int main() {
  using qlr::Matrix;
  // Your FP32 weight W (N×K = 1024×4096) and 8 tokens of input X (8×K).
  const Matrix w = Matrix::Random(1024, 4096) * 0.02f, x = Matrix::Random(8, 4096);
  // The base weight becomes INT4, symmetric, one scale per group of 128 input columns.
  qlr::layers::QuantizedLinear<qlr::quant::IntSym<4>> layer(
      w, qlr::quant::IntSym<4>({.group_size = 128}));
  // A rank-16 LoRA beside it: ΔW = (α/r)·B·A with A (16×K), B (N×16), α = 32.
  const Matrix a = Matrix::Random(16, 4096) * 0.02f, b = Matrix::Random(1024, 16) * 0.02f;
  layer.attach("chat", qlr::adapter::Lora(a, b, /*alpha=*/32));
  // Y = X·(Ŵ + ΔW)ᵀ: one INT4 GEMM with the LoRA in its epilogue, on this CPU's best SIMD path.
  const Matrix y = layer.forward(x);
  const Matrix fp32 = x * (w + 2.0f * b * a).transpose();      // the unquantized layer
  const Matrix oracle = x * layer.dense_weight().transpose();  // Ŵ + ΔW, dequantized
  std::printf("%td→%td int4 g128 + LoRA r16: relative difference %.3f to FP32, %.0e to oracle\n",
              layer.in_features(), layer.out_features(), (y - fp32).norm() / fp32.norm(),
              (y - oracle).norm() / oracle.norm());
}
