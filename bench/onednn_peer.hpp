// SPDX-License-Identifier: Apache-2.0
// oneDNN as the integer GEMM's peer: u8 activations × s8 weights → f32 with per-column
// output scales, the weights reordered once into oneDNN's own (prepacked) layout. Kept in
// its own translation unit so only this file sees dnnl.hpp and OpenMP.
#pragma once

#include <cstdint>
#include <memory>

namespace qlr_bench {

/// One oneDNN matmul primitive of shape M×K · K×N and any number of weight copies.
class OnednnMatmul {
 public:
  /// The primitive for Y (M×N, f32) = X (M×K, u8) · Wᵀ (W: N×K, s8) · scale[n].
  OnednnMatmul(long m, long n, long k, const float* scales);
  ~OnednnMatmul();
  OnednnMatmul(const OnednnMatmul&) = delete;
  OnednnMatmul& operator=(const OnednnMatmul&) = delete;

  /// Reorders a row-major N×K weight into the primitive's layout; returns its index.
  int add_weights(const std::int8_t* weights);
  /// Runs the product with weight copy `index` on `threads` OpenMP threads.
  void run(int index, const std::uint8_t* x, float* y, int threads);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace qlr_bench
