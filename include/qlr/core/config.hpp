// SPDX-License-Identifier: Apache-2.0
// Compiler and platform macros shared by every qlr header; the only place that tests the
// preprocessor for the target architecture.
#pragma once

#include <cstdio>
#include <cstdlib>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#  define QLR_ARCH_X86 1
#else
#  define QLR_ARCH_X86 0
#endif

#define QLR_ALWAYS_INLINE inline __attribute__((always_inline))
#define QLR_NOINLINE __attribute__((noinline))
/// A pointer that no other pointer of the function reaches: lets short loops vectorize
/// without run-time overlap checks.
#define QLR_RESTRICT __restrict__
/// Fully unrolls the next loop over a tile's registers, so that arrays of vectors stay in
/// registers instead of on the stack (GCC does not always do it alone).
#define QLR_UNROLL _Pragma("GCC unroll 16")

/// Internal invariant check: on in Debug and sanitizer builds, compiled out under NDEBUG.
/// Never used on user input: that is what QLR_CHECK (core/error.hpp) is for.
#ifdef NDEBUG
#  define QLR_ASSERT(cond) static_cast<void>(0)
#else
#  define QLR_ASSERT(cond)                                                              \
    ((cond) ? static_cast<void>(0)                                                      \
            : (std::fprintf(stderr, "%s:%d: qlr internal invariant failed: %s\n", __FILE__, \
                            __LINE__, #cond),                                           \
               std::abort()))
#endif

/// Opens a region whose functions are compiled for an ISA (e.g. "avx2,fma,f16c") without
/// compiling the whole translation unit for it, so one binary carries every path and picks
/// one at run time. Include every header *before* the region. GCC 12 flags its own AVX-512
/// intrinsics as maybe-uninitialized (GCC PR 105593): silenced inside the region only.
#define QLR_ISA_BEGIN(target_list)                                  \
  _Pragma("GCC push_options") _Pragma(QLR_STRINGIFY(GCC target(target_list))) \
      _Pragma("GCC diagnostic push")                                \
          _Pragma("GCC diagnostic ignored \"-Wuninitialized\"")     \
              _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"")
/// Closes a QLR_ISA_BEGIN region.
#define QLR_ISA_END _Pragma("GCC diagnostic pop") _Pragma("GCC pop_options")
#define QLR_STRINGIFY(x) #x

/// Opens the definition of a function whose one copy qlr::compiled can hold: a function
/// template with nothing to deduce, so that a unit built with QLR_COMPILED can declare it
/// extern (explicit instantiation declaration) instead of compiling it. Its callers do not
/// see the difference; the same tokens are compiled in either mode. It also makes a unit pay
/// only for the bodies it calls: GCC instantiates the Eigen expressions of an inline
/// function's body wherever the header is included (one eigensolver: 3.4 s per unit), a
/// template's only when it is used. A member function is declared with it in the class and
/// defined outside (`template <int> R C::f(...)`): GCC still instantiates an extern
/// template's in-class (inline) body when optimizing, an out-of-class one it does not.
#define QLR_COMPILED_FUNCTION template <int = 0>

// QLR_COMPILED is defined by the CMake target qlr::compiled for the units that link it:
// they declare the kernels' bodies, make_linear's compositions and every QLR_COMPILED_FUNCTION
// instead of compiling them, and the .cpp files beside the headers (kernels/kernels.cpp,
// quant/quant.cpp, io/io.cpp, layers/layers.cpp, compensate/compensate.cpp, train/train.cpp)
// define them once. A unit built with QLR_COMPILED in a program without those files fails to
// link on this name first.
#if defined(QLR_COMPILED)
namespace qlr::detail {
/// Defined in qlr/kernels/kernels.cpp: link qlr::compiled, or build without QLR_COMPILED.
extern const int QLR_COMPILED_requires_linking_qlr_compiled;
[[gnu::used]] static const int* const qlr_compiled_is_linked =
    &QLR_COMPILED_requires_linking_qlr_compiled;
}  // namespace qlr::detail
#endif
