// SPDX-License-Identifier: Apache-2.0
// A low-rank adapter whose factors are stored quantized: consecutive components j ∈ [j0, j1)
// form a block with its own format (LoRAQuant, ALGORITHMS.md §6, keeps a few components at
// high precision and the rest near 1 bit). Dequantized once; the forward path is FP32.
#pragma once

#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "qlr/adapter/detail/factors.hpp"
#include "qlr/adapter/lora.hpp"
#include "qlr/adapter/low_rank.hpp"
#include "qlr/core/config.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/types.hpp"
#include "qlr/quant/spec.hpp"

namespace qlr::adapter {

/// Components j ∈ [begin, end) of a low-rank adapter, stored quantized: their rows of A and
/// of Bᵀ, so that groups run along K in A and along N in Bᵀ.
struct ComponentBlock {
  index_t begin = 0;                  ///< j0, first component
  index_t end = 0;                    ///< j1, one past the last
  quant::AnyQuantizedMatrix a_rows;   ///< A[j0:j1, :], (j1 − j0)×K
  quant::AnyQuantizedMatrix bt_rows;  ///< Bᵀ[j0:j1, :], (j1 − j0)×N
};

/// ΔW = s·B·A with A and B stored as quantized component blocks; an Adapter on their FP32
/// dequantization.
class QuantizedLowRank {
 public:
  /// Like any low-rank term, it sits beside any base format.
  template <class Format>
  static constexpr bool compatible_with = true;

  /// Takes the blocks, which must cover components 0 … r−1 in order with one K and one N.
  /// Throws for gaps, overlaps, mismatched shapes or r ∉ [1, min(N, K)].
  explicit QuantizedLowRank(std::vector<ComponentBlock> blocks, double scale = 1.0)
      : blocks_(std::move(blocks)), factors_(dequantize_blocks(blocks_, scale)) {}

  /// All of `lora`'s components as one block: A and Bᵀ quantized with `spec` (groups along
  /// K and along N), scale s kept.
  QLR_COMPILED_FUNCTION
  [[nodiscard]] static QuantizedLowRank quantize(const Lora& lora, const quant::QuantSpec& spec) {
    return from_factors(lora.a(), lora.b(), lora.scale(), spec);
  }
  /// All of `term`'s components as one block, quantized with `spec`; scale 1.
  QLR_COMPILED_FUNCTION
  [[nodiscard]] static QuantizedLowRank quantize(const LowRank& term,
                                                 const quant::QuantSpec& spec) {
    return from_factors(term.a(), term.b(), 1.0f, spec);
  }

  [[nodiscard]] index_t in_features() const noexcept { return factors_.in_features(); }  ///< K
  [[nodiscard]] index_t out_features() const noexcept { return factors_.out_features(); }  ///< N
  [[nodiscard]] index_t rank() const noexcept { return factors_.rank(); }  ///< r
  [[nodiscard]] float scale() const noexcept { return factors_.scale(); }  ///< s
  /// The component blocks as stored.
  [[nodiscard]] const std::vector<ComponentBlock>& blocks() const noexcept { return blocks_; }
  [[nodiscard]] const Matrix& a() const noexcept { return factors_.a(); }  ///< Â (r×K), FP32
  [[nodiscard]] const Matrix& b() const noexcept { return factors_.b(); }  ///< B̂ (N×r), FP32
  /// B̂, the Adapter's up-projection.
  [[nodiscard]] const Matrix& up() const noexcept { return factors_.b(); }
  /// Values stored when kept separate: r·(N + K).
  [[nodiscard]] index_t parameter_count() const noexcept {
    return rank() * (out_features() + in_features());
  }
  /// Bytes held: the quantized blocks and their FP32 dequantization, which project reads.
  [[nodiscard]] std::size_t memory_bytes() const noexcept {
    std::size_t bytes = factors_.memory_bytes() + sizeof(blocks_);
    for (const ComponentBlock& block : blocks_) {
      bytes += sizeof(ComponentBlock);
      for (const auto* q : {&block.a_rows, &block.bt_rows})
        bytes += std::visit([](const auto& m) { return m.memory_bytes() - sizeof(m); }, *q);
    }
    return bytes;
  }

  /// Stored bits per adapter value: Σ over blocks of each quantized matrix's
  /// bits_per_parameter (codes, scales and zeros) times its size, over r·(N + K). The one
  /// scale s is not counted: it can be folded into the factors' scales.
  QLR_COMPILED_FUNCTION
  [[nodiscard]] double bits_per_parameter() const {
    double bits = 0.0;
    for (const ComponentBlock& block : blocks_) {
      const auto rows = static_cast<double>(block.end - block.begin);
      bits += quant::bits_per_parameter(block.a_rows) * rows * static_cast<double>(in_features());
      bits += quant::bits_per_parameter(block.bt_rows) * rows * static_cast<double>(out_features());
    }
    return bits / static_cast<double>(parameter_count());
  }

  /// t (M×r) = s·x·Âᵀ for x (M×K). Throws for wrong shapes or a NaN/Inf in x.
  QLR_COMPILED_FUNCTION
  void project(ConstMatrixRef x, MatrixRef t) const { factors_.project(x, t); }
  /// ΔW (N×K) = s·B̂·Â in FP32.
  QLR_COMPILED_FUNCTION
  [[nodiscard]] Matrix delta() const { return factors_.delta(); }

 private:
  static constexpr const char* entity = "adapter::QuantizedLowRank";

  static std::pair<index_t, index_t> shape_of(const quant::AnyQuantizedMatrix& q) {
    return std::visit([](const auto& m) { return std::pair(m.rows(), m.cols()); }, q);
  }

  /// Checks the blocks' coverage and shapes and dequantizes them into A (r×K), B (N×r).
  static detail::ScaledFactors dequantize_blocks(const std::vector<ComponentBlock>& blocks,
                                                 double scale) {
    QLR_CHECK(!blocks.empty(), invalid_argument, "{}: blocks.size() = 0; expected >= 1", entity);
    const index_t k = shape_of(blocks.front().a_rows).second;
    const index_t n = shape_of(blocks.front().bt_rows).second;
    index_t r = 0;
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      const ComponentBlock& block = blocks[i];
      QLR_CHECK(block.begin == r && block.end > block.begin, invalid_argument,
                "{}: blocks[{}] covers [{}, {}); expected [{}, j1) with j1 > {} (blocks in "
                "order, without gaps)",
                entity, i, block.begin, block.end, r, r);
      const auto [a_rows, a_cols] = shape_of(block.a_rows);
      const auto [b_rows, b_cols] = shape_of(block.bt_rows);
      const index_t width = block.end - block.begin;
      QLR_CHECK(a_rows == width && a_cols == k, shape_mismatch,
                "{}: blocks[{}].a_rows is {}x{}; expected {}x{} (components x in_features)",
                entity, i, a_rows, a_cols, width, k);
      QLR_CHECK(b_rows == width && b_cols == n, shape_mismatch,
                "{}: blocks[{}].bt_rows is {}x{}; expected {}x{} (components x out_features)",
                entity, i, b_rows, b_cols, width, n);
      r = block.end;
    }
    Matrix a(r, k);
    Matrix b(n, r);
    for (const ComponentBlock& block : blocks) {
      const index_t width = block.end - block.begin;
      a.middleRows(block.begin, width) = quant::dequantize(block.a_rows);
      b.middleCols(block.begin, width) = quant::dequantize(block.bt_rows).transpose();
    }
    return {std::move(a), std::move(b), static_cast<float>(scale), entity};
  }

  static QuantizedLowRank from_factors(const Matrix& a, const Matrix& b, float scale,
                                       const quant::QuantSpec& spec) {
    const Matrix bt = b.transpose();  // Bᵀ rows, so groups run along N
    std::vector<ComponentBlock> blocks;
    blocks.push_back({0, a.rows(), quant::quantize(a, spec), quant::quantize(bt, spec)});
    return QuantizedLowRank(std::move(blocks), scale);
  }

  std::vector<ComponentBlock> blocks_;
  detail::ScaledFactors factors_;
};

}  // namespace qlr::adapter
