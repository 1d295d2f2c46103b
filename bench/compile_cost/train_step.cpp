// SPDX-License-Identifier: Apache-2.0
// Compile-cost probe (bench/compile_cost.sh): a consumer unit that trains a LoRA adapter over
// a frozen base for one step: what a fine-tuning loop's file does.
#include <qlr/train/adamw.hpp>
#include <qlr/train/linear.hpp>

#include <cstdio>

int main() {
  const qlr::Matrix w = qlr::Matrix::Random(64, 128);
  qlr::train::TrainableLinear<float> layer(
      "q_proj", qlr::train::FrozenBase<float>(qlr::train::DenseBase<float>(w, 32)));
  layer.add_adapter("default", {.rank = 4, .alpha = 8});
  qlr::train::AdamW optimizer(layer.parameters());
  const qlr::Matrix x = qlr::Matrix::Random(3, 128);
  const qlr::Matrix y = layer.forward(x, true);
  const qlr::Matrix dx = layer.backward(y);
  optimizer.step(layer.parameters(), 1e-3);
  std::printf("%f\n", dx(0, 0));
}
