// SPDX-License-Identifier: Apache-2.0
// k-bit codes packed as one little-endian bit stream (ALGORITHMS.md §1.5): code i occupies
// stream bits [i·k, (i+1)·k), lowest bit first; 3-bit packs 8 codes into 3 bytes.
#pragma once

#include <cstdint>
#include <span>

#include "qlr/core/error.hpp"
#include "qlr/core/types.hpp"

namespace qlr {

/// True for the code widths qlr packs: 1, 2, 3, 4 and 8 bits.
constexpr bool is_packable_width(int bits) noexcept {
  return bits == 1 || bits == 2 || bits == 3 || bits == 4 || bits == 8;
}

/// Bytes that hold `count` codes of `bits` bits: ⌈count·bits/8⌉ (K = 172 at 3 bits: 65).
constexpr index_t packed_size(int bits, index_t count) noexcept { return (count * bits + 7) / 8; }

namespace detail {

/// Packs codes[0, count) into out[0, packed_size): unchecked, codes must be < 2^bits.
inline void pack_codes_unchecked(int bits, const std::uint8_t* codes, index_t count,
                                 std::uint8_t* out) noexcept {
  const index_t bytes = packed_size(bits, count);
  if (bits == 8) {
    for (index_t i = 0; i < count; ++i) out[i] = codes[i];
    return;
  }
  for (index_t b = 0; b < bytes; ++b) out[b] = 0;  // unused high bits of the last byte stay 0
  if (bits == 4) {
    for (index_t i = 0; i < count; ++i)
      out[i >> 1] = static_cast<std::uint8_t>(out[i >> 1] | (codes[i] << ((i & 1) * 4)));
    return;
  }
  for (index_t i = 0; i < count; ++i) {
    const index_t bit = i * bits;
    const auto window = static_cast<unsigned>(codes[i]) << (bit & 7);
    out[bit >> 3] = static_cast<std::uint8_t>(out[bit >> 3] | (window & 0xffu));
    if ((bit & 7) + bits > 8)  // only 3-bit codes straddle a byte boundary
      out[(bit >> 3) + 1] = static_cast<std::uint8_t>(out[(bit >> 3) + 1] | (window >> 8));
  }
}

/// Unpacks `count` codes from `packed` (packed_size(bits, count) bytes): unchecked.
inline void unpack_codes_unchecked(int bits, const std::uint8_t* packed, index_t count,
                                   std::uint8_t* codes) noexcept {
  if (bits == 8) {
    for (index_t i = 0; i < count; ++i) codes[i] = packed[i];
    return;
  }
  const unsigned mask = (1u << bits) - 1u;
  if (bits == 4) {
    for (index_t i = 0; i < count; ++i)
      codes[i] = static_cast<std::uint8_t>((packed[i >> 1] >> ((i & 1) * 4)) & mask);
    return;
  }
  const index_t bytes = packed_size(bits, count);
  for (index_t i = 0; i < count; ++i) {
    const index_t bit = i * bits;
    const index_t byte = bit >> 3;
    unsigned window = packed[byte];
    if (byte + 1 < bytes) window |= static_cast<unsigned>(packed[byte + 1]) << 8;
    codes[i] = static_cast<std::uint8_t>((window >> (bit & 7)) & mask);
  }
}

}  // namespace detail

/// Packs `codes` (each < 2^bits) into `out`, which must hold packed_size(bits, codes.size())
/// bytes. Throws for an unsupported width, a short output or an out-of-range code.
inline void pack_codes(int bits, std::span<const std::uint8_t> codes, std::span<std::uint8_t> out) {
  QLR_CHECK(is_packable_width(bits), unsupported, "pack_codes: bits = {}; expected 1, 2, 3, 4 or 8",
            bits);
  const auto count = static_cast<index_t>(codes.size());
  QLR_CHECK(static_cast<index_t>(out.size()) >= packed_size(bits, count), shape_mismatch,
            "pack_codes: out.size() = {}; expected at least {} bytes for {} codes of {} bits",
            out.size(), packed_size(bits, count), count, bits);
  for (index_t i = 0; i < count; ++i) {
    QLR_CHECK(codes[i] >> bits == 0, invalid_argument,
              "pack_codes: codes[{}] = {}; expected a value below 2^{} = {}", i, codes[i], bits,
              1 << bits);
  }
  detail::pack_codes_unchecked(bits, codes.data(), count, out.data());
}

/// Unpacks codes.size() codes of `bits` bits from `packed`. Throws for an unsupported width
/// or a packed span shorter than packed_size(bits, codes.size()).
inline void unpack_codes(int bits, std::span<const std::uint8_t> packed,
                         std::span<std::uint8_t> codes) {
  QLR_CHECK(is_packable_width(bits), unsupported,
            "unpack_codes: bits = {}; expected 1, 2, 3, 4 or 8", bits);
  const auto count = static_cast<index_t>(codes.size());
  QLR_CHECK(static_cast<index_t>(packed.size()) >= packed_size(bits, count), shape_mismatch,
            "unpack_codes: packed.size() = {}; expected at least {} bytes for {} codes of {} bits",
            packed.size(), packed_size(bits, count), count, bits);
  detail::unpack_codes_unchecked(bits, packed.data(), count, codes.data());
}

}  // namespace qlr
