// SPDX-License-Identifier: Apache-2.0
// Runtime CPU feature detection, queried once per process: the kernels pick their ISA path
// from it, so one binary runs on machines with and without AVX-512.
#pragma once

#include <string>

#include "qlr/core/config.hpp"

namespace qlr {

/// The x86 SIMD features qlr's kernels can use (all false on other architectures).
struct CpuFeatures {
  bool avx2 = false;        ///< 256-bit integer SIMD
  bool fma = false;         ///< fused multiply-add (FMA3)
  bool f16c = false;        ///< f16 ⇄ f32 conversion instructions
  bool avx512f = false;     ///< AVX-512 Foundation
  bool avx512bw = false;    ///< AVX-512 byte and word instructions
  bool avx512vl = false;    ///< AVX-512 on 128/256-bit registers
  bool avx512vnni = false;  ///< 512-bit u8×s8 dot products (vpdpbusd)
  bool avx_vnni = false;    ///< VEX-encoded 256-bit u8×s8 dot products (AVX-VNNI)
};

namespace detail {
inline CpuFeatures detect_cpu_features() noexcept {
  CpuFeatures f;
#if QLR_ARCH_X86
  // libgcc's __builtin_cpu_supports also checks that the OS saves the wide registers (XCR0).
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.f16c = __builtin_cpu_supports("f16c");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512vnni = __builtin_cpu_supports("avx512vnni");
  f.avx_vnni = __builtin_cpu_supports("avxvnni");
#endif
  return f;
}
}  // namespace detail

/// Features of the CPU this process runs on, detected on first call.
inline const CpuFeatures& cpu_features() noexcept {
  static const CpuFeatures features = detail::detect_cpu_features();
  return features;
}

/// Space-separated names of the features present, e.g. "avx2 fma f16c avx512f …".
inline std::string to_string(const CpuFeatures& f) {
  std::string out;
  const auto add = [&out](bool present, const char* name) {
    if (!present) return;
    if (!out.empty()) out += ' ';
    out += name;
  };
  add(f.avx2, "avx2");
  add(f.fma, "fma");
  add(f.f16c, "f16c");
  add(f.avx512f, "avx512f");
  add(f.avx512bw, "avx512bw");
  add(f.avx512vl, "avx512vl");
  add(f.avx512vnni, "avx512vnni");
  add(f.avx_vnni, "avx_vnni");
  return out.empty() ? std::string("none") : out;
}

}  // namespace qlr
