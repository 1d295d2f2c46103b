// SPDX-License-Identifier: Apache-2.0
// A QuantizedLinear whose kernel has no path for its weight format (NF4 on the SIMD kernels,
// which take INT4/INT8 integer codes) must fail to compile naming the KernelFor concept.
#include "qlr/layers/quantized_linear.hpp"
#include "qlr/quant/nf4.hpp"

int main() {
  const qlr::Matrix w = qlr::Matrix::Ones(4, 64);
#ifdef QLR_SHOULD_FAIL
  qlr::layers::QuantizedLinear<qlr::quant::Nf4, qlr::rotate::Identity,
                               qlr::layers::FloatActivations, qlr::layers::SimdKernels>
      layer(w);
#else
  qlr::layers::QuantizedLinear<qlr::quant::Nf4> layer(w);  // AutoKernel: the dense kernel
#endif
  return layer.out_features() == 4 ? 0 : 1;
}
