// SPDX-License-Identifier: Apache-2.0
// The fast Walsh–Hadamard transform of every path behind one function pointer, chosen like
// the GEMM kernels' (kernels/isa.hpp). Every path computes the reference's butterflies, so
// all agree bit for bit.
#pragma once

#include "qlr/core/types.hpp"
#include "qlr/kernels/avx2/fwht.hpp"
#include "qlr/kernels/avx512_vnni/fwht.hpp"
#include "qlr/kernels/isa.hpp"
#include "qlr/kernels/portable/fwht.hpp"
#include "qlr/kernels/reference/fwht.hpp"

namespace qlr::kernels {

/// x ← scale·H·x in place, H the Sylvester matrix of order 2^log2n. Never throws.
using FwhtFn = void (*)(float* x, int log2n, float scale) noexcept;

/// out (K×P) = scale·H·X for a K×K ±1 matrix H given by rows and by columns. Never throws.
using HadamardMixFn = void (*)(const float* h_rows, const float* h_cols, index_t k,
                               const float* x, index_t p, float* out, float scale) noexcept;

/// The two kernels of a Walsh–Hadamard transform of size K·2^k on one path.
struct HadamardKernels {
  Isa isa;              ///< the path
  FwhtFn fwht;          ///< the fast transform of 2^k
  HadamardMixFn mix;    ///< the dense K×K mix
};

/// The transform kernels of path `isa`. Throws Errc::unsupported when this CPU cannot run it.
inline HadamardKernels hadamard_kernels_for(Isa isa) {
  require_supported(isa, "kernels::hadamard_kernels_for");
  switch (isa) {
    case Isa::reference:
      return {isa, &reference::fwht, &reference::hadamard_mix};
    case Isa::portable:
      return {isa, &portable::fwht, &portable::hadamard_mix};
#if QLR_ARCH_X86
    case Isa::avx2:
    case Isa::avx_vnni:  // no dot products here: AVX-VNNI is AVX2's transform
      return {isa, &avx2::fwht, &avx2::hadamard_mix};
    case Isa::avx512_vnni:
      return {isa, &avx512_vnni::fwht, &avx512_vnni::hadamard_mix};
#else
    default:
      break;
#endif
  }
  return {Isa::portable, &portable::fwht, &portable::hadamard_mix};
}

/// The fast transform of path `isa` (hadamard_kernels_for(isa).fwht).
inline FwhtFn fwht_for(Isa isa) { return hadamard_kernels_for(isa).fwht; }

}  // namespace qlr::kernels
