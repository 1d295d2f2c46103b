// SPDX-License-Identifier: Apache-2.0
// The fast Walsh–Hadamard transform of every path behind one function pointer, chosen like
// the GEMM kernels' (kernels/isa.hpp). Every path computes the reference's butterflies, so
// all agree bit for bit.
#pragma once

#include "qlr/core/error.hpp"
#include "qlr/kernels/avx2/fwht.hpp"
#include "qlr/kernels/avx512_vnni/fwht.hpp"
#include "qlr/kernels/isa.hpp"
#include "qlr/kernels/portable/fwht.hpp"
#include "qlr/kernels/reference/fwht.hpp"

namespace qlr::kernels {

/// x ← scale·H·x in place, H the Sylvester matrix of order 2^log2n. Never throws.
using FwhtFn = void (*)(float* x, int log2n, float scale) noexcept;

/// The transform of path `isa`. Throws Errc::unsupported when this CPU cannot run it.
inline FwhtFn fwht_for(Isa isa) {
  QLR_CHECK(is_supported(isa), unsupported,
            "kernels::fwht_for: isa = {}; expected a path this CPU supports", to_string(isa));
  switch (isa) {
    case Isa::reference:
      return &reference::fwht;
    case Isa::portable:
      return &portable::fwht;
#if QLR_ARCH_X86
    case Isa::avx2:
    case Isa::avx_vnni:  // no dot products here: AVX-VNNI is AVX2's transform
      return &avx2::fwht;
    case Isa::avx512_vnni:
      return &avx512_vnni::fwht;
#else
    default:
      break;
#endif
  }
  return &portable::fwht;
}

}  // namespace qlr::kernels
