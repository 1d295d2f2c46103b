// SPDX-License-Identifier: Apache-2.0
// Quantization chosen at run time (a flag, a config file): a QuantSpec maps onto the closed
// set of compiled quantizer policies, and AnyQuantizedMatrix holds whichever one it made.
#pragma once

#include <charconv>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "qlr/core/config.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/format.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/quant/binary.hpp"
#include "qlr/quant/dequantize.hpp"
#include "qlr/quant/int_group.hpp"
#include "qlr/quant/nf4.hpp"

namespace qlr::quant {

/// A quantizer chosen at run time. Integer formats use `options`; NF4 (encoding = codebook,
/// bits = 4) uses `nf4`.
struct QuantSpec {
  int bits = 4;                            ///< 2, 3, 4 or 8 (4 for NF4)
  Encoding encoding = Encoding::int_asym;  ///< int_sym, int_asym or codebook (NF4)
  IntOptions options = {};                 ///< integer formats: group size, range, storage
  Nf4Options nf4 = {};                     ///< NF4: absmax block size and scale type
};

/// The quantizer policy of format F with default options: IntSym/IntAsym of its width, or
/// Nf4 for the codebook.
template <QuantFormatType F>
using DefaultQuantizer = std::conditional_t<
    F::encoding == Encoding::codebook, Nf4,
    std::conditional_t<F::encoding == Encoding::int_sym, IntSym<F::bits>, IntAsym<F::bits>>>;

/// Any quantized matrix the runtime path can produce. Binary (1-bit) codes hold only
/// adapter factors (LoRAQuant); a layer base of them is refused by layers::make_linear.
using AnyQuantizedMatrix =
    std::variant<QuantizedMatrix<IntSym<2>::format>, QuantizedMatrix<IntSym<3>::format>,
                 QuantizedMatrix<IntSym<4>::format>, QuantizedMatrix<IntSym<8>::format>,
                 QuantizedMatrix<IntAsym<2>::format>, QuantizedMatrix<IntAsym<3>::format>,
                 QuantizedMatrix<IntAsym<4>::format>, QuantizedMatrix<IntAsym<8>::format>,
                 QuantizedMatrix<Nf4::format>, QuantizedMatrix<Binary::format>>;

namespace detail {
template <int Bits>
AnyQuantizedMatrix quantize_int_bits(ConstMatrixRef w, const QuantSpec& spec) {
  if (spec.encoding == Encoding::int_sym) return IntSym<Bits>(spec.options).quantize(w);
  return IntAsym<Bits>(spec.options).quantize(w);
}
}  // namespace detail

/// Quantizes `w` (N×K) as `spec` says. Throws for a width or encoding qlr has no policy for.
QLR_COMPILED_FUNCTION
AnyQuantizedMatrix quantize(ConstMatrixRef w, const QuantSpec& spec) {
  if (spec.encoding == Encoding::codebook) {
    QLR_CHECK(spec.bits == 4, unsupported,
              "quant::quantize: bits = {} with encoding = codebook; expected 4 (NF4)", spec.bits);
    return Nf4(spec.nf4).quantize(w);
  }
  switch (spec.bits) {
    case 2: return detail::quantize_int_bits<2>(w, spec);
    case 3: return detail::quantize_int_bits<3>(w, spec);
    case 4: return detail::quantize_int_bits<4>(w, spec);
    case 8: return detail::quantize_int_bits<8>(w, spec);
    default:
      qlr::detail::fail(Errc::unsupported, "quant::quantize: bits = {}; expected 2, 3, 4 or 8",
                   spec.bits);
  }
}

/// Ŵ (N×K) in FP32, whatever the format.
QLR_COMPILED_FUNCTION
Matrix dequantize(const AnyQuantizedMatrix& q) {
  return std::visit([](const auto& m) { return dequantize(m); }, q);
}

/// Storage bits per weight, metadata included (QuantizedMatrix::bits_per_parameter).
inline double bits_per_parameter(const AnyQuantizedMatrix& q) {
  return std::visit([](const auto& m) { return m.bits_per_parameter(); }, q);
}

/// The spec's name, which parse_quant_spec reads back to an equal spec: "int4-asym-g128",
/// "int3-sym-g32-clip", "nf4-g64", "int8-sym-pc-f16". A clip search with a non-default grid
/// has no name and is written as plain "clip".
inline std::string to_string(const QuantSpec& spec) {
  const auto group = [](index_t g) { return g == 0 ? std::string("-pc") : "-g" + std::to_string(g); };
  if (spec.encoding == Encoding::codebook)
    return "nf4" + group(spec.nf4.block_size) +
           (spec.nf4.scale_type == ScaleType::f16 ? "-f16" : "");
  const IntOptions& o = spec.options;
  std::string name = "int" + std::to_string(spec.bits);
  name += spec.encoding == Encoding::int_sym ? "-sym" : "-asym";
  name += group(o.group_size);
  if (o.range == Range::mse_clip) name += "-clip";
  if (spec.encoding == Encoding::int_asym && o.zero_mode == ZeroMode::floating) name += "-fz";
  if (spec.encoding == Encoding::int_asym && !o.include_zero) name += "-nz";
  if (o.scale_type == ScaleType::f16) name += "-f16";
  return name;
}

/// Reads a spec from dash-separated words: a format (int2, int3, int4, int8, nf4), then at
/// most one of each: sym | asym; g<size> | pc (one group per row); clip (MSE clip search);
/// fz (float zeros); nz (range need not contain 0, with fz); f16 (f16 scales). Defaults:
/// asym, g128 (g64 for nf4), RTN, integer zeros, f32 scales.
inline QuantSpec parse_quant_spec(std::string_view text) {
  constexpr const char* entity = "quant::parse_quant_spec";
  QuantSpec spec;
  std::vector<std::string_view> words;
  for (std::size_t begin = 0;;) {
    const std::size_t dash = text.find('-', begin);
    words.push_back(text.substr(begin, dash == std::string_view::npos ? dash : dash - begin));
    if (dash == std::string_view::npos) break;
    begin = dash + 1;
  }
  const std::string_view head = words.front();
  const bool integer = head != "nf4";
  if (!integer) {
    spec.encoding = Encoding::codebook;
  } else if (head == "int2" || head == "int3" || head == "int4" || head == "int8") {
    spec.bits = head[3] - '0';
  } else {
    qlr::detail::fail(Errc::invalid_argument,
                      "{}: format '{}' in '{}'; expected int2, int3, int4, int8 or nf4", entity,
                      head, text);
  }
  // Each word sets one option; a second word for the same option is a contradiction.
  std::string_view seen[5];  // encoding, group, clip, zero storage / range, scale type
  const auto claim = [&](int slot, std::string_view word) {
    QLR_CHECK(seen[slot].empty(), invalid_argument, "{}: '{}' and '{}' in '{}'; expected one of them",
              entity, seen[slot], word, text);
    seen[slot] = word;
  };
  bool no_zero = false;
  for (std::size_t i = 1; i < words.size(); ++i) {
    const std::string_view word = words[i];
    QLR_CHECK(!word.empty(), invalid_argument,
              "{}: empty word in '{}'; expected dash-separated words", entity, text);
    index_t g = 0;
    const auto [end, ec] = std::from_chars(word.data() + 1, word.data() + word.size(), g);
    if (word.size() > 1 && word.front() == 'g' && ec == std::errc() &&
        end == word.data() + word.size() && g > 0) {
      claim(1, word);
      (integer ? spec.options.group_size : spec.nf4.block_size) = g;
    } else if (word == "pc") {
      claim(1, word);
      (integer ? spec.options.group_size : spec.nf4.block_size) = 0;
    } else if (word == "f16") {
      claim(4, word);
      (integer ? spec.options.scale_type : spec.nf4.scale_type) = ScaleType::f16;
    } else if (integer && (word == "sym" || word == "asym")) {
      claim(0, word);
      spec.encoding = word == "sym" ? Encoding::int_sym : Encoding::int_asym;
    } else if (integer && word == "clip") {
      claim(2, word);
      spec.options.range = Range::mse_clip;
    } else if (integer && word == "fz") {
      claim(3, word);
      spec.options.zero_mode = ZeroMode::floating;
    } else if (integer && word == "nz") {
      no_zero = true;
    } else {
      qlr::detail::fail(Errc::invalid_argument, "{}: option '{}' in '{}'; expected {}", entity,
                        word, text,
                        integer ? "sym, asym, g<size>, pc, clip, fz, nz or f16"
                                : "g<size>, pc or f16");
    }
  }
  if (no_zero) {
    QLR_CHECK(spec.encoding == Encoding::int_asym && spec.options.zero_mode == ZeroMode::floating,
              invalid_argument, "{}: 'nz' in '{}'; expected it with asym and fz", entity, text);
    spec.options.include_zero = false;
  }
  return spec;
}

// qlr::compiled (qlr/quant/quant.cpp) holds the one copy of these in a program.
#define QLR_QUANT_SPEC_FUNCTIONS(prefix)                                                     \
  prefix template AnyQuantizedMatrix quantize<>(ConstMatrixRef, const QuantSpec&);          \
  prefix template Matrix dequantize<>(const AnyQuantizedMatrix&);
#if defined(QLR_COMPILED)
QLR_QUANT_SPEC_FUNCTIONS(extern)
#endif

}  // namespace qlr::quant
