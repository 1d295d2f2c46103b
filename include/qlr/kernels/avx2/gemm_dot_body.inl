// SPDX-License-Identifier: Apache-2.0
// The 256-bit integer GEMM (W2/W3/W4/W8 × INT8 or INT4 codes) shared by the AVX2 and AVX-VNNI paths. Not a
// header: avx2/gemm_dot.hpp and avx_vnni/gemm_dot.hpp each include it inside their own ISA
// region and namespace, with QLR_DOT_VNNI set to 0 or 1, so each copy is compiled with
// exactly its ISA's flags (Highway's foreach_target idea, without its machinery).
//
// A panel is two ymm halves of 8 rows. With VNNI, vpdpbusd adds 4 u8×s8 products per lane.
// Without it, INT4 uses vpmaddubsw, which saturates at ±32767 but here sees at most
// 15·128·2 = 3840 per pair and adds two such pairs (7680), then vpmaddwd with ones; INT8
// codes reach 255, where vpmaddubsw could saturate (2·255·128 > 32767), so they are
// widened to int16 and multiplied by vpmaddwd, exact.

namespace detail_dot {

/// The 4 activation bytes at `x`, in every 32-bit lane.
QLR_ALWAYS_INLINE __m256i broadcast4(const std::int8_t* x) noexcept {
  std::int32_t word;
  std::memcpy(&word, x, sizeof word);
  return _mm256_set1_epi32(word);
}

#if QLR_DOT_VNNI
/// acc + the 8 row sums of 4 u8×s8 products; vpdpbusd does not saturate.
QLR_ALWAYS_INLINE __m256i dot4(__m256i acc, __m256i u, __m256i x) noexcept {
  return _mm256_dpbusd_avx_epi32(acc, u, x);
}
#endif

/// INT4 without VNNI: acc + the row sums of two 4-column steps, one vpmaddwd for both.
QLR_ALWAYS_INLINE __m256i dot4x2(__m256i acc, __m256i u0, __m256i x0, __m256i u1,
                                 __m256i x1) noexcept {
  const __m256i pairs =
      _mm256_add_epi16(_mm256_maddubs_epi16(u0, x0), _mm256_maddubs_epi16(u1, x1));
  return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}

/// INT8 without VNNI: 16 codes widened to int16 times x's 4 bytes as int16, 4 times over:
/// lanes (2r, 2r + 1) hold row r's two pair sums.
QLR_ALWAYS_INLINE __m256i dot_pairs(__m256i acc, const std::uint8_t* codes, __m256i x16) noexcept {
  const __m256i u16 =
      _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes)));
  return _mm256_add_epi32(acc, _mm256_madd_epi16(u16, x16));
}

/// The `Bits`-bit field at bit Shift·Bits of every byte of v.
template <int Bits, int Shift>
QLR_ALWAYS_INLINE __m256i field(__m256i v) noexcept {
  const __m256i shifted = Shift == 0 ? v : _mm256_srli_epi16(v, Shift * Bits);
  return _mm256_and_si256(shifted, _mm256_set1_epi8(static_cast<char>((1 << Bits) - 1)));
}

/// The INT2 or INT3 codes of quad Q (4 columns) of 8 rows, one byte each, from the half
/// lines at `half` (packed_dot.hpp's layout: INT3's low bits as INT2, its high bits in the
/// third line).
template <int Bits, int Q>
QLR_ALWAYS_INLINE __m256i quad_codes(const std::uint8_t* half) noexcept {
  const auto line = [half](int n) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(half + 64 * n));
  };
  if constexpr (Bits == 3) {
    const __m256i high =
        Q >= 2 ? _mm256_srli_epi16(line(2), Q - 2) : _mm256_slli_epi16(line(2), 2 - Q);
    return _mm256_or_si256(field<2, Q % 4>(line(Q / 4)),
                           _mm256_and_si256(high, _mm256_set1_epi8(4)));
  } else {
    return field<Bits, Q % 4>(line(0));
  }
}

/// dot[c] += the row sums of quads [Q0, Q0 + 4) of INT2 or INT3 codes (≤ 7) times the
/// activations at x (column 4·Q0 of the block). With VNNI one vpdpbusd per quad, into chains
/// alternately; without, the four vpmaddubsw pair sums (each ≤ 7·128·2) add in int16 without
/// saturating (≤ 7168) and one vpmaddwd widens them.
template <int Bits, int Q0, int Chains>
QLR_ALWAYS_INLINE void add_four_quads(__m256i (&dot)[Chains], const __m256i (&u)[4],
                                      const std::int8_t* x) noexcept {
#if QLR_DOT_VNNI
  for (int q = 0; q < 4; ++q) dot[q % Chains] = dot4(dot[q % Chains], u[q], broadcast4(x + 4 * q));
#else
  __m256i pairs = _mm256_maddubs_epi16(u[0], broadcast4(x));
  for (int q = 1; q < 4; ++q)
    pairs = _mm256_add_epi16(pairs, _mm256_maddubs_epi16(u[q], broadcast4(x + 4 * q)));
  dot[Q0 / 4 % Chains] = _mm256_add_epi32(dot[Q0 / 4 % Chains],
                                          _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
#endif
}

/// Every quad of half h (rows 8h … 8h + 7) of the INT2 or INT3 block at column i, for
/// `Tokens` tokens from m: four quads decoded at a time and shared by the tokens.
template <int Bits, int Q0 = 0, int Tokens, int Chains>
QLR_ALWAYS_INLINE void add_narrow_block(__m256i (&dot)[Tokens][2][Chains], int h,
                                        const std::uint8_t* block, const DotActivationView& a,
                                        index_t m, index_t i) noexcept {
  if constexpr (Q0 < block_quads(Bits)) {
    const std::uint8_t* half = block + 32 * h;
    const __m256i u[4] = {quad_codes<Bits, Q0>(half), quad_codes<Bits, Q0 + 1>(half),
                          quad_codes<Bits, Q0 + 2>(half), quad_codes<Bits, Q0 + 3>(half)};
    for (int t = 0; t < Tokens; ++t)
      add_four_quads<Bits, Q0>(dot[t][h], u, a.row(m + t) + i + 4 * Q0);
    add_narrow_block<Bits, Q0 + 4>(dot, h, block, a, m, i);
  }
}

/// The 8 scales of parameter offset `at` (f16 or f32, packed_dot.hpp).
QLR_ALWAYS_INLINE __m256 load_scales(const DotWeightView& w, index_t at) noexcept {
  return w.half_scales ? _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(
                             static_cast<const std::uint16_t*>(w.scales) + at)))
                       : _mm256_loadu_ps(static_cast<const float*>(w.scales) + at);
}

/// part[t][C mod 4] += levels[u]·x for column C of 8 rows' 4-bit codes and each token, then
/// the later columns. The 16 levels are two vpermps tables; bit 3 of the code, shifted to
/// the sign, picks one.
template <int C = 0, int Tokens>
QLR_ALWAYS_INLINE void add_level_columns(__m256 (&part)[Tokens][4], __m256i codes, __m256 low,
                                         __m256 high, const float* x,
                                         index_t token_floats) noexcept {
  if constexpr (C < 8) {
    const __m256i index = C == 0 ? codes : _mm256_srli_epi32(codes, 8 * (C % 4) + 4 * (C / 4));
    const __m256 level =
        _mm256_blendv_ps(_mm256_permutevar8x32_ps(low, index),
                         _mm256_permutevar8x32_ps(high, index),
                         _mm256_castsi256_ps(_mm256_slli_epi32(index, 28)));
    for (int t = 0; t < Tokens; ++t)
      part[t][C % 4] =
          _mm256_fmadd_ps(level, _mm256_set1_ps(x[t * token_floats + C]), part[t][C % 4]);
    add_level_columns<C + 1>(part, codes, low, high, x, token_floats);
  }
}

/// Whether this copy widens INT8 (no VNNI): its two chains then hold rows 0-3 and 4-7 as
/// pair sums instead of two halves of the same rows' sums.
inline constexpr bool widens_int8 = QLR_DOT_VNNI == 0;

/// This path's tiles, for the shared driver (kernels/detail/tiling.hpp).
struct Tiles {
  /// Panels [p, p + Panels) × tokens [m, m + Tokens) over all of K.
  template <int Bits, int Panels, int Tokens>
  static void dot_tile(const DotWeightView& w, const DotActivationView& a, MatrixView y,
                       const Epilogue& e, index_t p, index_t m) noexcept {
    constexpr bool pairs = Bits == 8 && widens_int8;
    // Two chains where one token would leave a single dependent chain per half, or where
    // INT8 is widened (one chain per 4 rows). Integer sums are exact, so splitting is free.
    constexpr int Chains = pairs || Tokens == 1 ? 2 : 1;
    const __m256i low_nibbles = _mm256_set1_epi8(0x0f);
    for (int pp = 0; pp < Panels; ++pp) {
      const std::uint8_t* panel = w.panel(p + pp);
      __m256 acc[Tokens][2];
      for (int t = 0; t < Tokens; ++t) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
      for (index_t l = 0; l < w.groups; ++l) {
        __m256i dot[Tokens][2][Chains];
        for (int t = 0; t < Tokens; ++t)
          for (int h = 0; h < 2; ++h)
            for (int c = 0; c < Chains; ++c) dot[t][h][c] = _mm256_setzero_si256();
        const index_t end = w.group_end(l);
        for (index_t i = w.group_begin(l); i < end; i += block_cols(Bits)) {
          const std::uint8_t* src = panel + 2 * Bits * i;  // the block's lines
          for (index_t n = 0; n < block_bytes(Bits) / 64; ++n)
            kernels::detail::prefetch_weight_line(src + 64 * n);
          for (int h = 0; h < 2; ++h) {
            if constexpr (pairs) {
              for (int t = 0; t < Tokens; ++t) {
                for (int s = 0; s < 2; ++s) {
                  const __m256i x16 = _mm256_cvtepi8_epi16(
                      _mm256_castsi256_si128(broadcast4(a.row(m + t) + i + 4 * s)));
                  const std::uint8_t* codes = src + 64 * s + 32 * h;
                  dot[t][h][0] = dot_pairs(dot[t][h][0], codes, x16);
                  dot[t][h][1] = dot_pairs(dot[t][h][1], codes + 16, x16);
                }
              }
            } else if constexpr (Bits == 8) {  // VNNI only: without it INT8 takes `pairs`
#if QLR_DOT_VNNI
              const __m256i first =
                  _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 32 * h));
              const __m256i second =
                  _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 64 + 32 * h));
              for (int t = 0; t < Tokens; ++t) {
                dot[t][h][0] = dot4(dot[t][h][0], first, broadcast4(a.row(m + t) + i));
                dot[t][h][Chains - 1] =
                    dot4(dot[t][h][Chains - 1], second, broadcast4(a.row(m + t) + i + 4));
              }
#endif
            } else if constexpr (Bits != 4) {
              add_narrow_block<Bits>(dot, h, src, a, m, i);
            } else {
              const __m256i codes =
                  _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 32 * h));
              const __m256i low = _mm256_and_si256(codes, low_nibbles);
              const __m256i high = _mm256_and_si256(_mm256_srli_epi16(codes, 4), low_nibbles);
              for (int t = 0; t < Tokens; ++t) {
                const __m256i x0 = broadcast4(a.row(m + t) + i);
                const __m256i x1 = broadcast4(a.row(m + t) + i + 4);
#if QLR_DOT_VNNI
                dot[t][h][0] = dot4(dot[t][h][0], low, x0);
                dot[t][h][Chains - 1] = dot4(dot[t][h][Chains - 1], high, x1);
#else
                dot[t][h][0] = dot4x2(dot[t][h][0], low, x0, high, x1);
#endif
              }
            }
          }
        }
        const index_t at = w.params(p + pp, l);
        for (int h = 0; h < 2; ++h) {
          const index_t lanes = at + 8 * h;  // this half's 8 rows
          const __m256 scale = load_scales(w, lanes);
          const __m256i zero =
              w.wide_zeros
                  ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(
                        static_cast<const std::int32_t*>(w.zeros) + lanes))
                  : _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(
                        static_cast<const std::uint8_t*>(w.zeros) + lanes)));
          for (int t = 0; t < Tokens; ++t) {
            const __m256i group_sum = _mm256_set1_epi32(a.group_sums[(m + t) * a.groups + l]);
            // Limb rows scale each group by their own c; others skip the multiply by 1.
            const bool scaled = a.group_scales != nullptr;
            const __m256 c = _mm256_set1_ps(a.group_scale(m + t, l));
            __m256i sum = dot[t][h][0];
            if constexpr (pairs)  // rows 0-3 and 4-7 as pair sums → rows 0-7 in order
              sum = _mm256_permute4x64_epi64(_mm256_hadd_epi32(dot[t][h][0], dot[t][h][1]), 0xd8);
            else if constexpr (Chains == 2)
              sum = _mm256_add_epi32(dot[t][h][0], dot[t][h][1]);
            const __m256i exact = _mm256_sub_epi32(sum, _mm256_mullo_epi32(zero, group_sum));
            acc[t][h] = _mm256_fmadd_ps(scaled ? _mm256_mul_ps(scale, c) : scale,
                                        _mm256_cvtepi32_ps(exact), acc[t][h]);
            if (w.zero_offsets != nullptr) {
              const __m256 fraction =
                  _mm256_mul_ps(scale, _mm256_loadu_ps(w.zero_offsets + at + 8 * h));
              acc[t][h] = _mm256_fnmadd_ps(scaled ? _mm256_mul_ps(fraction, c) : fraction,
                                           _mm256_cvtepi32_ps(group_sum), acc[t][h]);
            }
          }
        }
      }
      alignas(32) float lanes[Tokens][panel_rows];
      for (int t = 0; t < Tokens; ++t) {
        _mm256_store_ps(lanes[t], acc[t][0]);
        _mm256_store_ps(lanes[t] + 8, acc[t][1]);
      }
      finish_panel<Tokens>(lanes, w, a, y, e, p + pp, m);
    }
  }

  /// The levels (NF4) sums of panel p × tokens [m, m + Tokens), in the reference's order
  /// (reference/gemm_dot.hpp), one half of the panel's rows at a time.
  template <int Tokens>
  static void level_tile(const DotWeightView& w, const LevelActivationView& a, MatrixView y,
                         const Epilogue& e, index_t p, index_t m) noexcept {
    const std::uint8_t* panel = w.panel(p);
    const __m256 low = _mm256_loadu_ps(w.levels), high = _mm256_loadu_ps(w.levels + 8);
    alignas(32) float lanes[Tokens][panel_rows];
    for (int h = 0; h < 2; ++h) {
      __m256 acc[Tokens];
      for (int t = 0; t < Tokens; ++t) acc[t] = _mm256_setzero_ps();
      for (index_t l = 0; l < w.groups; ++l) {
        __m256 part[Tokens][4];
        for (int t = 0; t < Tokens; ++t)
          for (int c = 0; c < 4; ++c) part[t][c] = _mm256_setzero_ps();
        for (index_t i = w.group_begin(l); i < w.group_end(l); i += 8) {
          const std::uint8_t* line = panel + 8 * i;  // 8 columns of 4-bit codes
          if (h == 0) kernels::detail::prefetch_weight_line(line);
          add_level_columns(part,
                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(line + 32 * h)),
                            low, high, a.row(m) + i, a.padded_cols);
        }
        const __m256 scale = load_scales(w, w.params(p, l) + 8 * h);
        for (int t = 0; t < Tokens; ++t)
          acc[t] = _mm256_fmadd_ps(scale,
                                   _mm256_add_ps(_mm256_add_ps(part[t][0], part[t][1]),
                                                 _mm256_add_ps(part[t][2], part[t][3])),
                                   acc[t]);
      }
      for (int t = 0; t < Tokens; ++t) _mm256_store_ps(lanes[t] + 8 * h, acc[t]);
    }
    finish_panel<Tokens>(lanes, w, a.epilogue_rows(), y, e, p, m);
  }

  /// Writes panel `p`'s outputs for tokens [m, m + Tokens) from their sums: out of line, one
  /// copy per row count for every code width (avx512_vnni/gemm_dot.hpp says why).
  template <int Tokens>
  QLR_NOINLINE static void finish_panel(const float (&lanes)[Tokens][panel_rows],
                                        const DotWeightView& w, const DotActivationView& a,
                                        MatrixView y, const Epilogue& e, index_t p,
                                        index_t m) noexcept {
    kernels::detail::store_panel_rows(
        lanes,
        [&](index_t token, int tokens, index_t n0, index_t count, float (*side)[panel_rows]) {
          kernels::avx2::add_low_rank_tokens<panel_rows, Tokens>(e, token, tokens, n0, count, side);
        },
        w, a, y, e, p, m);
  }

};  // struct Tiles

}  // namespace detail_dot

/// y[m, n] for all tokens m and the rows n of panels [panel_begin, panel_end) of `Bits`-bit
/// codes (w.bits == Bits).
template <int Bits>
void gemm_dot(const DotWeightView& w, const DotActivationView& a, MatrixView y,
                     const Epilogue& e, index_t panel_begin, index_t panel_end) noexcept {
  kernels::detail::gemm_dot_with_tiles<detail_dot::Tiles, Bits, 1, 3>(w, a, y, e, panel_begin,
                                                                   panel_end);
}

/// The levels (NF4) GEMM on this path: tiles of a panel × up to 2 tokens (8 chains a half).
template <int = 0>
void gemm_levels(const DotWeightView& w, const LevelActivationView& a, MatrixView y,
                 const Epilogue& e, index_t panel_begin, index_t panel_end) noexcept {
  kernels::detail::gemm_levels_with_tiles<detail_dot::Tiles, 2>(w, a, y, e, panel_begin, panel_end);
}
