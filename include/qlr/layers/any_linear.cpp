// SPDX-License-Identifier: Apache-2.0
// Part of qlr::compiled: the one copy of make_linear's compositions in a program. Compiled by
// the consumer's build from the installed sources (docs/building.md); units that define
// QLR_COMPILED see only their declarations.
#include "qlr/layers/any_linear.hpp"

namespace qlr::layers {

#define QLR_COMPOSITION_INSTANCE(B, E, A, K)                                          \
  template AnyLinear                                                                  \
  detail::make_composed<QuantFormat<B, Encoding::E>, detail::activations_of<A>, K>(   \
      const quant::AnyQuantizedMatrix&, AnyRotation, const LinearSpec&);
QLR_LINEAR_COMPOSITIONS(QLR_COMPOSITION_INSTANCE)
#undef QLR_COMPOSITION_INSTANCE

}  // namespace qlr::layers
