// SPDX-License-Identifier: Apache-2.0
// A QuantizedLinear whose kernel has no path for its weight format (here a kernel policy that
// takes INT8 codes only, given NF4) must fail to compile naming the KernelFor concept.
#include "qlr/layers/quantized_linear.hpp"
#include "qlr/quant/int_group.hpp"
#include "qlr/quant/nf4.hpp"

/// qlr's SIMD kernels, restricted to INT8 weights.
struct Int8Only : qlr::layers::SimdKernels {
  template <class Format, class Act>
  static constexpr bool supports = Format::bits == 8;
};

int main() {
  const qlr::Matrix w = qlr::Matrix::Ones(4, 64);
#ifdef QLR_SHOULD_FAIL
  qlr::layers::QuantizedLinear<qlr::quant::Nf4, qlr::rotate::Identity,
                               qlr::layers::FloatActivations, Int8Only>
      layer(w);
#else
  qlr::layers::QuantizedLinear<qlr::quant::IntSym<8>, qlr::rotate::Identity,
                               qlr::layers::FloatActivations, Int8Only>
      layer(w);
#endif
  return layer.out_features() == 4 ? 0 : 1;
}
