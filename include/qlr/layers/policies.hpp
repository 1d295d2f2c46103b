// SPDX-License-Identifier: Apache-2.0
// The two roles of QuantizedLinear that have no module of their own: how activations enter
// the GEMM (FP32, or quantized per token to INT8/INT4) and which kernel runs it (qlr's SIMD
// kernels on a path chosen at run time, or a product of the weight decoded tile by tile for
// formats no SIMD kernel takes). Each role has its concept; a policy that does not fit
// fails at the layer's declaration with the concept's name.
#pragma once

#include <algorithm>
#include <concepts>
#include <type_traits>

#include "qlr/core/format.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr/core/view.hpp"
#include "qlr/kernels/detail/epilogue.hpp"
#include "qlr/kernels/gemm.hpp"
#include "qlr/kernels/input_grad.hpp"
#include "qlr/kernels/isa.hpp"
#include "qlr/layers/dense_weights.hpp"
#include "qlr/quant/activation.hpp"

namespace qlr::layers {

/// Activations enter the GEMM as FP32: the weight-only (decoding) path, W4/W8 × FP32.
struct FloatActivations {
  static constexpr int bits = 0;  ///< not quantized
};

/// Activations quantized per token to `Bits` (8: W8A8/W4A8, 4: W4A4) just before the GEMM.
template <int Bits>
struct TokenActivations {
  static_assert(Bits == 8 || Bits == 4, "per-token activations are INT8 or INT4");
  static constexpr int bits = Bits;  ///< code width
  float clip = 1.0f;                 ///< range clip·max|x| per token, in (0, 1]
};

/// INT8 per-token activations.
using Int8Activations = TokenActivations<8>;
/// INT4 per-token activations (after a rotation has spread the outliers).
using Int4Activations = TokenActivations<4>;

/// An activation policy: `bits` is 0 (FP32) or the per-token code width 8 or 4.
template <class A>
concept ActivationPolicy = requires {
  { A::bits } -> std::convertible_to<int>;   // 0: FP32 activations; 8 or 4: per-token codes
  requires A::bits == 0 || A::bits == 8 || A::bits == 4;  // the widths qlr's kernels take
};

/// Whether qlr's SIMD kernels pack `bits`-bit codes of `encoding`: INT2, INT3, INT4 or INT8
/// integer codes with a scale (and zero), or NF4.
constexpr bool is_simd_packable(int bits, Encoding encoding) noexcept {
  return kernels::is_packable(bits, encoding);
}
/// The weight formats qlr's SIMD kernels pack (is_simd_packable).
template <class Format>
inline constexpr bool simd_packable = is_simd_packable(Format::bits, Format::encoding);

/// qlr's SIMD kernels (kernels::gemm) on the best path of this CPU, or the one QLR_ISA names.
/// Weights are packed once, as DotWeights, for FP32 activations and for codes alike.
struct SimdKernels {
  /// Formats with a SIMD path: INT2/INT3/INT4/INT8 integer codes and NF4, any activation policy.
  template <class Format, class Act>
  static constexpr bool supports = simd_packable<Format>;

  /// The packed weight this kernel runs.
  template <class Format, class Act>
  using packed = kernels::DotWeights<Format>;

  /// Packs `q` for activations `Act`.
  template <class Act, class Format>
  static packed<Format, Act> pack(const QuantizedMatrix<Format>& q) {
    return packed<Format, Act>(q);
  }

  /// Y = X·Ŵᵀ + epilogue for FP32 activations.
  template <class Format>
  static void gemm(const kernels::DotWeights<Format>& w, ConstMatrixView x, MatrixView y,
                   const Epilogue& e) {
    kernels::gemm(w, x, y, e);
  }

  /// Y = X̂·Ŵᵀ + epilogue for per-token codes.
  template <class Format>
  static void gemm(const kernels::DotWeights<Format>& w, const ActivationCodes& x, MatrixView y,
                   const Epilogue& e) {
    kernels::gemm(w, x, y, e);
  }

  /// dX = dY·Ŵ (kernels::input_grad).
  template <class Format>
  static void input_grad(const kernels::DotWeights<Format>& w, ConstMatrixView dy, MatrixView dx) {
    const kernels::DotWeightView v = w.view();
    kernels::input_grad(kernels::weight_tiles(v), dy, dx);
  }
};

/// The quantized weight decoded a tile of rows at a time into FP32 scratch and multiplied
/// through Eigen: any format, and the oracle the SIMD compositions are
/// tested against. Codes are dequantized (x̂ = s_x·q) first, so it computes what the
/// integer kernels approximate.
struct DenseKernel {
  /// Every format and activation policy.
  template <class Format, class Act>
  static constexpr bool supports = true;

  /// The compact quantized weight, decoded per tile.
  template <class Format, class Act>
  using packed = DenseWeights<Format>;

  /// Keeps `q` as compactly as it is stored.
  template <class Act, class Format>
  static DenseWeights<Format> pack(const QuantizedMatrix<Format>& q) {
    return DenseWeights<Format>(q);
  }

  /// Y = X·Ŵᵀ + epilogue.
  template <class Format>
  static void gemm(const DenseWeights<Format>& w, ConstMatrixView x, MatrixView y,
                   const Epilogue& e) {
    const ConstMatrixMap xs(x.data, x.rows, x.cols, Eigen::OuterStride<>(x.stride));
    // A tile of 64 rows of Ŵ is 256·K bytes of scratch (1 MB at K = 4096): it stays in L2
    // while Eigen reads it for every token.
    constexpr index_t tile = 64;
    parallel_for((w.rows() + tile - 1) / tile, 1, [&](index_t begin, index_t end) {
      Matrix scratch(tile, w.cols());
      Matrix acc(x.rows, tile);  // (M, tile): one buffer per task, not per tile
      for (index_t b = begin; b < end; ++b) {
        const index_t n0 = b * tile;
        const index_t count = std::min(tile, w.rows() - n0);
        w.decode_rows(n0, count, scratch.data());
        acc.leftCols(count).noalias() = xs * scratch.topRows(count).transpose();
        finish_dense_tile(acc.leftCols(count), n0, y, e);
      }
    });
  }

  /// Y = X̂·Ŵᵀ + epilogue, X̂ = s_x·q per token.
  template <class Format>
  static void gemm(const DenseWeights<Format>& w, const ActivationCodes& x, MatrixView y,
                   const Epilogue& e) {
    const Matrix xs = dequantized_activations(x);
    gemm(w, ConstMatrixView{xs.data(), xs.rows(), xs.cols(), xs.cols()}, y, e);
  }

  /// dX = dY·Ŵ (kernels::input_grad on the decoded tiles).
  template <class Format>
  static void input_grad(const DenseWeights<Format>& w, ConstMatrixView dy, MatrixView dx) {
    kernels::input_grad(weight_tiles(w), dy, dx);
  }

 private:
  // The epilogue of outputs [n0, n0 + acc.cols()) for every token.
  static void finish_dense_tile(ConstMatrixRef acc, index_t n0, MatrixView y, const Epilogue& e) {
    for (index_t m = 0; m < acc.rows(); ++m) {
      for (index_t j = 0; j < acc.cols(); ++j) {
        float side = 0.0f;
        kernels::detail::add_low_rank<1>(e, m, n0 + j, 1, &side);
        const float sum = acc(m, j);
        kernels::detail::finish_outputs(e, &sum, &side, nullptr, m, n0 + j, 1,
                                        y.row(m) + n0 + j);
      }
    }
  }

  static Matrix dequantized_activations(const ActivationCodes& x) {
    Matrix xs(x.rows, x.cols);
    for (index_t m = 0; m < x.rows; ++m)
      for (index_t i = 0; i < x.cols; ++i)
        xs(m, i) = x.scales[m] * static_cast<float>(x.codes[m * x.stride + i]);
    return xs;
  }
};

/// The kernel a layer gets by default: qlr's SIMD kernels where they take the format
/// (INT2/INT3/INT4/INT8 integer codes and NF4), the dense one otherwise (binary codes).
struct AutoKernel {};

/// The kernel policy `K` names for weights of `Format`: AutoKernel resolved, others as given.
template <class K, class Format>
using resolved_kernel =
    std::conditional_t<std::is_same_v<K, AutoKernel>,
                       std::conditional_t<simd_packable<Format>, SimdKernels, DenseKernel>, K>;

/// A kernel policy: `supports<Format, Act>`, the type it packs to, pack(), and gemm() for
/// the activations `Act` delivers.
template <class K, class Format, class Act>
concept KernelFor = ActivationPolicy<Act> && requires(const QuantizedMatrix<Format>& q) {
  requires K::template supports<Format, Act>;  // this kernel has a path for the weight format
  { K::template pack<Act>(q) } -> std::same_as<typename K::template packed<Format, Act>>;  // packs once
};

}  // namespace qlr::layers
