// SPDX-License-Identifier: Apache-2.0
// Portable weight-only GEMM: plain C++ the compiler vectorizes for whatever ISA the
// translation unit targets (SSE2 on x86-64 by default, NEON on arm64).
#pragma once

#include <cstdint>

#include "qlr/core/types.hpp"
#include "qlr/core/view.hpp"
#include "qlr/kernels/detail/epilogue.hpp"
#include "qlr/kernels/packed.hpp"

namespace qlr::kernels::portable {

/// y[m, n] for all m and n ∈ [n_begin, n_end): x is M×K, y is M×N. Each block's 32 weights
/// are decoded once into floats, then dotted with every token in 32 fixed lanes.
inline void gemm_wq_f32(const PackedView& w, ConstMatrixView x, MatrixView y, const Epilogue& e,
                        index_t n_begin, index_t n_end) noexcept {
  constexpr index_t lanes = block_codes;
  constexpr index_t max_tokens = 8;
  for (index_t n = n_begin; n < n_end; ++n) {
    const std::uint8_t* row = w.row(n);
    for (index_t m0 = 0; m0 < x.rows; m0 += max_tokens) {
      const index_t tokens = x.rows - m0 < max_tokens ? x.rows - m0 : max_tokens;
      float acc[max_tokens][lanes] = {};
      for (index_t b = 0; b < w.blocks; ++b) {
        const index_t l = b / w.blocks_per_group;
        const float s = w.scales[n * w.groups + l];
        const float z = w.zeros[n * w.groups + l];
        float w_hat[lanes];
        for (index_t j = 0; j < lanes; ++j) {
          const unsigned u = w.bits == 8 ? row[b * lanes + j]
                                         : (row[b * 16 + (j % 16)] >> (j < 16 ? 0 : 4)) & 0x0fu;
          w_hat[j] = s * (static_cast<float>(u) - z);
        }
        const index_t valid = w.cols - b * lanes < lanes ? w.cols - b * lanes : lanes;
        for (index_t t = 0; t < tokens; ++t) {
          const float* xt = x.row(m0 + t) + b * lanes;
          if (valid == lanes) {
            for (index_t j = 0; j < lanes; ++j) acc[t][j] += w_hat[j] * xt[j];
          } else {
            for (index_t j = 0; j < valid; ++j) acc[t][j] += w_hat[j] * xt[j];
          }
        }
      }
      for (index_t t = 0; t < tokens; ++t) {
        float sum = 0.0f;
        for (index_t j = 0; j < lanes; ++j) sum += acc[t][j];
        y.row(m0 + t)[n] = detail::finish_output(e, sum, m0 + t, n);
      }
    }
  }
}

}  // namespace qlr::kernels::portable
