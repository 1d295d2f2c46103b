// SPDX-License-Identifier: Apache-2.0
// Quantization chosen at run time (a flag, a config file): a QuantSpec maps onto the closed
// set of compiled quantizer policies, and AnyQuantizedMatrix holds whichever one it made.
#pragma once

#include <charconv>
#include <string>
#include <string_view>
#include <variant>

#include "qlr/core/error.hpp"
#include "qlr/core/format.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/quant/dequantize.hpp"
#include "qlr/quant/int_group.hpp"
#include "qlr/quant/nf4.hpp"

namespace qlr::quant {

/// A quantizer chosen at run time. For NF4 (encoding = codebook, bits = 4) the group size
/// is the absmax block size and only scale_type among the other options applies.
struct QuantSpec {
  int bits = 4;                            ///< 2, 3, 4 or 8 (4 for NF4)
  Encoding encoding = Encoding::int_asym;  ///< int_sym, int_asym or codebook (NF4)
  IntOptions options = {};                 ///< group size, range search, zero and scale storage
};

/// Any quantized matrix the runtime path can produce.
using AnyQuantizedMatrix =
    std::variant<QuantizedMatrix<IntSym<2>::format>, QuantizedMatrix<IntSym<3>::format>,
                 QuantizedMatrix<IntSym<4>::format>, QuantizedMatrix<IntSym<8>::format>,
                 QuantizedMatrix<IntAsym<2>::format>, QuantizedMatrix<IntAsym<3>::format>,
                 QuantizedMatrix<IntAsym<4>::format>, QuantizedMatrix<IntAsym<8>::format>,
                 QuantizedMatrix<Nf4::format>>;

namespace detail {
template <int Bits>
AnyQuantizedMatrix quantize_int_bits(ConstMatrixRef w, const QuantSpec& spec) {
  if (spec.encoding == Encoding::int_sym) return IntSym<Bits>(spec.options).quantize(w);
  return IntAsym<Bits>(spec.options).quantize(w);
}
}  // namespace detail

/// Quantizes `w` (N×K) as `spec` says. Throws for a width or encoding qlr has no policy for.
inline AnyQuantizedMatrix quantize(ConstMatrixRef w, const QuantSpec& spec) {
  if (spec.encoding == Encoding::codebook) {
    QLR_CHECK(spec.bits == 4, unsupported,
              "quant::quantize: bits = {} with encoding = codebook; expected 4 (NF4)", spec.bits);
    return Nf4({.block_size = spec.options.group_size, .scale_type = spec.options.scale_type})
        .quantize(w);
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
inline Matrix dequantize(const AnyQuantizedMatrix& q) {
  return std::visit([](const auto& m) { return dequantize(m); }, q);
}

/// Storage bits per weight, metadata included (QuantizedMatrix::bits_per_parameter).
inline double bits_per_parameter(const AnyQuantizedMatrix& q) {
  return std::visit([](const auto& m) { return m.bits_per_parameter(); }, q);
}

/// The spec's canonical name, which parse_quant_spec reads back: "int4-asym-g128",
/// "int3-sym-g32-clip", "nf4-g64", "int8-sym-pc-f16".
inline std::string to_string(const QuantSpec& spec) {
  std::string name = spec.encoding == Encoding::codebook ? std::string("nf4")
                                                         : "int" + std::to_string(spec.bits);
  if (spec.encoding != Encoding::codebook) name += spec.encoding == Encoding::int_sym ? "-sym" : "-asym";
  name += spec.options.group_size == 0 ? std::string("-pc")
                                       : "-g" + std::to_string(spec.options.group_size);
  if (spec.encoding != Encoding::codebook) {
    if (spec.options.range == Range::mse_clip) name += "-clip";
    if (spec.encoding == Encoding::int_asym && spec.options.zero_mode == ZeroMode::floating)
      name += "-fz";
  }
  if (spec.options.scale_type == ScaleType::f16) name += "-f16";
  return name;
}

/// Reads a spec from dash-separated words: a format (int2, int3, int4, int8, nf4), then any
/// of sym | asym, g<size> | pc (one group per row), clip (MSE clip search), fz (float
/// zeros), f16 (f16 scales). Defaults: asym, g128 (g64 for nf4), RTN, f32 scales.
inline QuantSpec parse_quant_spec(std::string_view text) {
  constexpr const char* entity = "quant::parse_quant_spec";
  QuantSpec spec;
  std::string_view rest = text;
  const auto next_word = [&rest] {
    const auto dash = rest.find('-');
    const std::string_view word = rest.substr(0, dash);
    rest = dash == std::string_view::npos ? std::string_view() : rest.substr(dash + 1);
    return word;
  };
  const std::string_view head = next_word();
  if (head == "nf4") {
    spec.encoding = Encoding::codebook;
    spec.options.group_size = 64;
  } else if (head == "int2" || head == "int3" || head == "int4" || head == "int8") {
    spec.bits = head[3] - '0';
  } else {
    qlr::detail::fail(Errc::invalid_argument,
                 "{}: format '{}' in '{}'; expected int2, int3, int4, int8 or nf4", entity, head,
                 text);
  }
  const bool integer = spec.encoding != Encoding::codebook;
  while (!rest.empty()) {
    const std::string_view word = next_word();
    QLR_CHECK(!word.empty(), invalid_argument, "{}: empty option in '{}'; expected dash-separated words",
              entity, text);
    index_t g = 0;
    const auto [end, ec] =
        word.size() > 1 ? std::from_chars(word.data() + 1, word.data() + word.size(), g)
                        : std::from_chars_result{word.data(), std::errc::invalid_argument};
    if (word.front() == 'g' && ec == std::errc() && end == word.data() + word.size() && g > 0) {
      spec.options.group_size = g;
    } else if (word == "pc") {
      spec.options.group_size = 0;
    } else if (word == "f16") {
      spec.options.scale_type = ScaleType::f16;
    } else if (integer && word == "sym") {
      spec.encoding = Encoding::int_sym;
    } else if (integer && word == "asym") {
      spec.encoding = Encoding::int_asym;
    } else if (integer && word == "clip") {
      spec.options.range = Range::mse_clip;
    } else if (integer && word == "fz") {
      spec.options.zero_mode = ZeroMode::floating;
    } else {
      qlr::detail::fail(Errc::invalid_argument,
                   "{}: option '{}' in '{}'; expected {}", entity, word, text,
                   integer ? "sym, asym, g<size>, pc, clip, fz or f16" : "g<size>, pc or f16");
    }
  }
  return spec;
}

}  // namespace qlr::quant
