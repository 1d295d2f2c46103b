// SPDX-License-Identifier: Apache-2.0
// Part of qlr::compiled: the one copy in a program of make_linear and its compositions, the
// adapter bank's forward half and the layer file. Compiled by the consumer's build from the
// installed sources (docs/building.md); units that define QLR_COMPILED see only declarations.
#include "qlr/layers/adapter_bank.hpp"
#include "qlr/layers/any_linear.hpp"
#include "qlr/layers/layer_file.hpp"

namespace qlr::layers {

#define QLR_COMPOSITION_INSTANCE(B, E, A, K)                                          \
  template AnyLinear                                                                  \
  detail::make_composed<QuantFormat<B, Encoding::E>, detail::activations_of<A>, K>(   \
      const quant::AnyQuantizedMatrix&, AnyRotation, const LinearSpec&);
QLR_LINEAR_COMPOSITIONS(QLR_COMPOSITION_INSTANCE)
#undef QLR_COMPOSITION_INSTANCE

QLR_MAKE_LINEAR_FUNCTIONS()
QLR_ADAPTER_BANK_FUNCTIONS()
QLR_LAYER_FILE_FUNCTIONS()

}  // namespace qlr::layers
