// SPDX-License-Identifier: Apache-2.0
// An integer quantizer of an unsupported width must fail to compile naming SupportedIntBits.
#include "qlr/quant/int_group.hpp"

#ifdef QLR_SHOULD_FAIL
using Quantizer = qlr::quant::IntAsym<5>;
#else
using Quantizer = qlr::quant::IntAsym<4>;
#endif

int main() {
  const Quantizer q;
  return q.options().group_size == 128 ? 0 : 1;
}
