// SPDX-License-Identifier: Apache-2.0
// The kernel paths qlr has, which of them this CPU can run, and the one Auto picks: the
// best supported path, capped by the QLR_ISA environment variable (read once).
#pragma once

#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "qlr/core/config.hpp"
#include "qlr/core/cpu.hpp"
#include "qlr/core/error.hpp"

namespace qlr::kernels {

/// A kernel path, from the plainest to the widest.
enum class Isa {
  reference,    ///< scalar oracle: double accumulation, one element at a time
  portable,     ///< the unit's own ISA: xsimd (FWHT, token codes), auto-vectorized GEMM
  avx2,         ///< AVX2 + FMA intrinsics (256-bit)
  avx_vnni,     ///< AVX2 + the VEX-encoded 256-bit u8×s8 dot products (AVX-VNNI)
  avx512_vnni,  ///< AVX-512 F/BW/VL + VNNI (512-bit)
};

/// Every path, from the plainest to the widest.
inline constexpr Isa all_isas[] = {Isa::reference, Isa::portable, Isa::avx2, Isa::avx_vnni,
                                   Isa::avx512_vnni};

/// Name of a path as QLR_ISA spells it: reference, portable, avx2, avx_vnni, avx512_vnni.
constexpr const char* to_string(Isa isa) noexcept {
  switch (isa) {
    case Isa::reference:
      return "reference";
    case Isa::portable:
      return "portable";
    case Isa::avx2:
      return "avx2";
    case Isa::avx_vnni:
      return "avx_vnni";
    case Isa::avx512_vnni:
      return "avx512_vnni";
  }
  return "?";
}

/// The path named `name`. Throws for an unknown name, listing the known ones.
inline Isa parse_isa(std::string_view name) {
  for (const Isa isa : all_isas)
    if (name == to_string(isa)) return isa;
  qlr::detail::fail(Errc::invalid_argument,
                    "kernels::parse_isa: isa = '{}'; expected reference, portable, avx2, avx_vnni "
                    "or avx512_vnni",
                    name);
}

/// True when this CPU can run `isa`.
inline bool is_supported(Isa isa) noexcept {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::reference:
    case Isa::portable:
      return true;
    case Isa::avx2:
      return QLR_ARCH_X86 && f.avx2 && f.fma && f.f16c;
    case Isa::avx_vnni:
      return QLR_ARCH_X86 && f.avx2 && f.fma && f.f16c && f.avx_vnni;
    case Isa::avx512_vnni:
      return QLR_ARCH_X86 && f.avx2 && f.fma && f.avx512f && f.avx512bw && f.avx512vl &&
             f.avx512vnni;
  }
  return false;
}

/// Throws Errc::unsupported, naming `entity` (the caller), unless this CPU can run path `isa`.
inline void require_supported(Isa isa, const char* entity) {
  QLR_CHECK(is_supported(isa), unsupported, "{}: isa = {}; expected a path this CPU supports",
            entity, to_string(isa));
}

/// Every path this CPU can run, reference first: what tests and benchmarks iterate over.
inline std::vector<Isa> available_isas() {
  std::vector<Isa> out;
  for (const Isa isa : all_isas)
    if (is_supported(isa)) out.push_back(isa);
  return out;
}

namespace detail {
inline Isa detect_best_isa() {
  Isa best = Isa::portable;
  for (const Isa isa : all_isas)
    if (isa != Isa::reference && is_supported(isa)) best = isa;
  if (const char* cap = std::getenv("QLR_ISA"); cap != nullptr && *cap != '\0') {
    const Isa wanted = parse_isa(cap);
    QLR_CHECK(is_supported(wanted), unsupported,
              "QLR_ISA = '{}'; expected a path this CPU supports (best here: {})", cap,
              to_string(best));
    best = wanted;
  }
  return best;
}
}  // namespace detail

/// The path Auto uses: the widest this CPU supports, or QLR_ISA's choice. Decided once;
/// throws (on every call) when QLR_ISA names an unknown or unsupported path.
inline Isa best_isa() {
  static const Isa best = detail::detect_best_isa();
  return best;
}

}  // namespace qlr::kernels
