// SPDX-License-Identifier: Apache-2.0
// Applies an in-place row transform to a batch, checking each row as it is loaded: the good
// path reads every row once (a transform of a batch larger than the caches is bound by
// memory), and a NaN/Inf leaves the batch as it was.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <utility>
#include <vector>

#include "qlr/core/error.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/parallel.hpp"

namespace qlr::rotate::detail {

/// forward(row, scratch) on every row of m, split over qlr's threads, `scratch_floats` of
/// scratch per task. Throws, naming `entity` and the first row holding a NaN or an
/// infinity, after inverse(row, scratch) has undone every row already transformed (exact
/// up to FP32 rounding, the transforms being orthogonal).
template <class Forward, class Inverse>
void apply_rows_checked(MatrixRef m, index_t scratch_floats, const Forward& forward,
                        const Inverse& inverse, const char* entity) {
  const index_t n = m.cols();
  const auto finite = [n](const float* row) {  // exponent bits all set: NaN or ±Inf
    std::uint32_t bad = 0;
    for (index_t i = 0; i < n; ++i) {
      std::uint32_t bits;
      std::memcpy(&bits, row + i, sizeof bits);
      bad |= static_cast<std::uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
    }
    return bad == 0;
  };
  std::mutex mutex;
  std::vector<std::pair<index_t, index_t>> done;  // [begin, end) ranges transformed
  index_t bad_row = m.rows();
  parallel_for(m.rows(), 4, [&](index_t begin, index_t end) {
    std::vector<float> scratch(static_cast<std::size_t>(scratch_floats));
    index_t r = begin;
    for (; r < end && finite(m.row(r).data()); ++r) forward(m.row(r).data(), scratch.data());
    const std::lock_guard lock(mutex);
    done.emplace_back(begin, r);
    if (r < end) bad_row = std::min(bad_row, r);
  });
  if (bad_row == m.rows()) return;
  std::vector<float> scratch(static_cast<std::size_t>(scratch_floats));
  for (const auto& [begin, end] : done)
    for (index_t r = begin; r < end; ++r) inverse(m.row(r).data(), scratch.data());
  qlr::detail::fail(Errc::invalid_argument,
                    "{}: row {} holds a NaN or an infinity; expected finite values", entity,
                    bad_row);
}

}  // namespace qlr::rotate::detail
