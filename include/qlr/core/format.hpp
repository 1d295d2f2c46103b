// SPDX-License-Identifier: Apache-2.0
// QuantizedMatrix: the canonical, ISA-neutral storage of a group-quantized weight, shared by
// the quantizers that make it, the kernels that pack it and the files that store it.
#pragma once

#include <cmath>
#include <concepts>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "qlr/core/bit_pack.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/half.hpp"
#include "qlr/core/numeric.hpp"
#include "qlr/core/types.hpp"

namespace qlr {

/// How a code maps back to a real value.
enum class Encoding : std::uint8_t {
  int_sym,   ///< ŵ = s·(u − 2^(b−1)): signed code stored offset-binary, no zero point
  int_asym,  ///< ŵ = s·(u − Z): unsigned code and a zero point per group
  codebook,  ///< ŵ = s·table[u]: the code indexes a sorted table of 2^b values (NF4)
};

/// How an asymmetric zero point is stored.
enum class ZeroMode : std::uint8_t {
  integer,   ///< Z is an integer in [0, 2^b − 1] (GPTQ, AWQ); costs b bits per group
  floating,  ///< Z is any float (QA-LoRA merges write into it); costs one scale's bits
};

/// Compile-time description of a quantized format: code width and encoding.
template <int Bits, Encoding E>
struct QuantFormat {
  static constexpr int bits = Bits;           ///< bits per code
  static constexpr Encoding encoding = E;     ///< how codes decode
};

/// A QuantFormat whose code width qlr can pack.
template <class F>
concept QuantFormatType = requires {
  { F::bits } -> std::convertible_to<int>;
  { F::encoding } -> std::convertible_to<Encoding>;
} && is_packable_width(F::bits);

/// Short lower-case name of an encoding ("sym", "asym", "codebook").
constexpr const char* to_string(Encoding e) noexcept {
  switch (e) {
    case Encoding::int_sym: return "sym";
    case Encoding::int_asym: return "asym";
    case Encoding::codebook: return "codebook";
  }
  return "?";
}

/// The group size actually used for rows of `cols` elements: 0 or g ≥ cols is one group
/// per row ("per-channel"). Throws for g < 0.
inline index_t effective_group_size(index_t group_size, index_t cols, const char* entity) {
  QLR_CHECK(group_size >= 0, invalid_argument,
            "{}: group_size = {}; expected 0 (one group per row) or a positive size", entity,
            group_size);
  return group_size == 0 || group_size >= cols ? cols : group_size;
}

/// Number of groups in a row of `cols` elements: ⌈cols/g⌉ (the last may be ragged).
constexpr index_t group_count(index_t cols, index_t group_size) noexcept {
  return (cols + group_size - 1) / group_size;
}

/// Storage cost per weight of a `rows`×`cols` matrix of `bits`-bit codes in groups of
/// `group_size`: the codes, one scale per group at its ScaleType width and, for int_asym,
/// one zero per group (`bits` wide when integer, a scale's width when floating). 0 when empty.
constexpr double storage_bits_per_parameter(int bits, Encoding encoding, index_t rows,
                                            index_t cols, index_t group_size, ScaleType scale_type,
                                            ZeroMode zero_mode) noexcept {
  if (rows == 0 || cols == 0) return 0.0;
  const double per_group =
      scale_bits(scale_type) +
      (encoding != Encoding::int_asym    ? 0.0
       : zero_mode == ZeroMode::integer ? static_cast<double>(bits)
                                        : static_cast<double>(scale_bits(scale_type)));
  return bits + per_group * static_cast<double>(group_count(cols, group_size)) /
                    static_cast<double>(cols);
}

/// The parts a QuantizedMatrix is built from (by a quantizer, a merge or a file reader).
struct QuantizedParts {
  index_t rows = 0;                 ///< N, output features
  index_t cols = 0;                 ///< K, input features
  index_t group_size = 0;           ///< g in [1, K]; the last group of a row may be shorter
  std::vector<std::uint8_t> codes;  ///< rows × row_stride bytes, each row one bit stream
  std::vector<float> scales;        ///< rows × groups, row-major, all > 0
  std::vector<float> zeros;         ///< rows × groups for int_asym, else empty
  std::vector<float> codebook;      ///< 2^bits ascending values for codebook, else empty
  ZeroMode zero_mode = ZeroMode::integer;  ///< storage of zeros (int_asym only)
  ScaleType scale_type = ScaleType::f32;   ///< storage type scales were rounded to
};

/// Parts of a rows×cols matrix in groups of `group_size` with the given storage types and no
/// values yet: what a packed form fills in when it unpacks.
inline QuantizedParts empty_parts(index_t rows, index_t cols, index_t group_size,
                                  ScaleType scale_type, ZeroMode zero_mode) {
  QuantizedParts parts;
  parts.rows = rows;
  parts.cols = cols;
  parts.group_size = group_size;
  parts.scale_type = scale_type;
  parts.zero_mode = zero_mode;
  return parts;
}

/// A weight W (N×K) quantized group-wise: packed codes, a scale per group and, for
/// asymmetric formats, a zero point per group. Immutable once built; every invariant is
/// checked by the constructor, so kernels can trust it.
template <QuantFormatType Format>
class QuantizedMatrix {
 public:
  using format = Format;                                 ///< the compile-time format
  static constexpr int bits = Format::bits;              ///< bits per code
  static constexpr Encoding encoding = Format::encoding; ///< how codes decode
  static constexpr int max_code = (1 << bits) - 1;       ///< largest unsigned code

  /// An empty matrix (0×0).
  QuantizedMatrix() = default;

  /// Takes ownership of `parts` after checking every size and value against the format.
  explicit QuantizedMatrix(QuantizedParts parts) : p_(std::move(parts)) { validate(); }

  [[nodiscard]] index_t rows() const noexcept { return p_.rows; }              ///< N
  [[nodiscard]] index_t cols() const noexcept { return p_.cols; }              ///< K
  [[nodiscard]] index_t group_size() const noexcept { return p_.group_size; }  ///< g
  /// Groups per row, ⌈K/g⌉.
  [[nodiscard]] index_t groups() const noexcept { return group_count(p_.cols, p_.group_size); }
  /// Bytes per packed row, ⌈K·bits/8⌉.
  [[nodiscard]] index_t row_stride() const noexcept { return packed_size(bits, p_.cols); }
  /// How zero points are stored (meaningful for int_asym).
  [[nodiscard]] ZeroMode zero_mode() const noexcept { return p_.zero_mode; }
  /// The type scales (and float zeros) were rounded to.
  [[nodiscard]] ScaleType scale_type() const noexcept { return p_.scale_type; }

  /// All packed codes, rows() × row_stride() bytes.
  [[nodiscard]] std::span<const std::uint8_t> codes() const noexcept { return p_.codes; }
  /// The packed codes of output row `o`.
  [[nodiscard]] std::span<const std::uint8_t> row_codes(index_t o) const noexcept {
    return std::span(p_.codes).subspan(static_cast<std::size_t>(o * row_stride()),
                                       static_cast<std::size_t>(row_stride()));
  }
  /// All scales, rows() × groups() row-major.
  [[nodiscard]] std::span<const float> scales() const noexcept { return p_.scales; }
  /// All zero points (int_asym), rows() × groups() row-major; empty otherwise.
  [[nodiscard]] std::span<const float> zeros() const noexcept { return p_.zeros; }
  /// The decoding table (codebook encoding); empty otherwise.
  [[nodiscard]] std::span<const float> codebook() const noexcept { return p_.codebook; }
  /// Scale of group `l` of row `o`.
  [[nodiscard]] float scale(index_t o, index_t l) const noexcept {
    return p_.scales[static_cast<std::size_t>(o * groups() + l)];
  }
  /// Zero point of group `l` of row `o` (int_asym only).
  [[nodiscard]] float zero(index_t o, index_t l) const noexcept {
    return p_.zeros[static_cast<std::size_t>(o * groups() + l)];
  }

  /// Exact storage cost per weight, metadata included: codes at `bits` each, one scale per
  /// group at its ScaleType width, and for int_asym one zero per group (`bits` wide when
  /// integer, a scale's width when floating). A published fixed codebook (NF4) is not
  /// counted: readers know it. INT4 g128 with f16 scales and integer zeros: 4.15625.
  [[nodiscard]] double bits_per_parameter() const noexcept {
    return storage_bits_per_parameter(bits, encoding, p_.rows, p_.cols, p_.group_size,
                                      p_.scale_type, p_.zero_mode);
  }

  /// Bytes held: codes, scales, zeros, codebook and the object itself.
  [[nodiscard]] std::size_t memory_bytes() const noexcept {
    return sizeof(*this) + p_.codes.capacity() +
           sizeof(float) * (p_.scales.capacity() + p_.zeros.capacity() + p_.codebook.capacity());
  }

  /// The parts, for writers and for tests that corrupt them on purpose.
  [[nodiscard]] const QuantizedParts& parts() const noexcept { return p_; }

 private:
  void validate() const {
    constexpr const char* entity = "QuantizedMatrix";
    QLR_CHECK(p_.rows > 0 && p_.cols > 0, shape_mismatch,
              "{}: shape = ({}, {}); expected rows > 0 and cols > 0", entity, p_.rows, p_.cols);
    QLR_CHECK(p_.group_size >= 1 && p_.group_size <= p_.cols, invalid_argument,
              "{}: group_size = {}; expected 1 <= group_size <= cols = {}", entity,
              p_.group_size, p_.cols);
    const auto expect_size = [&](const char* name, std::size_t have, index_t want) {
      QLR_CHECK(have == static_cast<std::size_t>(want), shape_mismatch,
                "{}: {}.size() = {}; expected {}", entity, name, have, want);
    };
    const index_t params = p_.rows * groups();
    expect_size("codes", p_.codes.size(), p_.rows * row_stride());
    expect_size("scales", p_.scales.size(), params);
    expect_size("zeros", p_.zeros.size(), encoding == Encoding::int_asym ? params : 0);
    expect_size("codebook", p_.codebook.size(), encoding == Encoding::codebook ? 1 << bits : 0);
    // Codes were computed from the scales as stored (ALGORITHMS.md §1.2): a scale or float
    // zero that its ScaleType cannot hold would be rounded again on export.
    const auto storable = [&](float v) {
      return p_.scale_type == ScaleType::f32 || round_to_half(v) == v;
    };
    const char* type_name = p_.scale_type == ScaleType::f16 ? "f16" : "f32";
    for (std::size_t i = 0; i < p_.scales.size(); ++i) {
      QLR_CHECK(std::isfinite(p_.scales[i]) && p_.scales[i] > 0.0f && storable(p_.scales[i]),
                invalid_argument, "{}: scales[{}] = {}; expected a finite {} value > 0", entity,
                i, p_.scales[i], type_name);
    }
    for (std::size_t i = 0; i < p_.zeros.size(); ++i) {
      const float z = p_.zeros[i];
      const bool ok = p_.zero_mode == ZeroMode::integer
                          ? z >= 0.0f && z <= static_cast<float>(max_code) && z == std::nearbyint(z)
                          : std::isfinite(z) && storable(z);
      QLR_CHECK(ok, invalid_argument, "{}: zeros[{}] = {}; expected {}", entity, i, z,
                p_.zero_mode == ZeroMode::integer ? "an integer in [0, 2^bits - 1]"
                                                  : "a finite value of the scale type");
    }
    for (std::size_t i = 0; i < p_.codebook.size(); ++i) {
      QLR_CHECK(std::isfinite(p_.codebook[i]) && (i == 0 || p_.codebook[i - 1] < p_.codebook[i]),
                invalid_argument, "{}: codebook[{}] = {}; expected finite, strictly ascending",
                entity, i, p_.codebook[i]);
    }
    // The stream's unused high bits must be zero (ALGORITHMS.md §1.5): a reader that finds
    // them set has the wrong width or a corrupt file.
    const int tail_bits = static_cast<int>((p_.cols * bits) % 8);
    if (tail_bits != 0) {
      const auto unused_mask = static_cast<std::uint8_t>(0xffu << tail_bits);
      for (index_t o = 0; o < p_.rows; ++o) {
        const std::uint8_t last = row_codes(o).back();
        QLR_CHECK((last & unused_mask) == 0, invalid_argument,
                  "{}: row {} last code byte = {:#04x}; expected its unused high bits to be 0",
                  entity, o, last);
      }
    }
  }

  QuantizedParts p_;
};

}  // namespace qlr
