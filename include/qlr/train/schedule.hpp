// SPDX-License-Identifier: Apache-2.0
// Learning-rate schedules (ALGORITHMS.md §8.4): constant (QA-LoRA), with or without a linear
// warmup, and linear warmup then cosine decay (RoLoRA), with Hugging Face's step convention: the
// i-th optimizer step, i = 0, 1, …, runs at lr(i), so a warmup starts from 0.
#pragma once

#include <cmath>
#include <cstdint>
#include <numbers>

#include "qlr/core/error.hpp"

namespace qlr::train {

/// The same learning rate at every step (HF's "constant").
struct ConstantSchedule {
  double peak = 2e-4;  ///< the learning rate

  /// The learning rate of step `i` (from 0).
  [[nodiscard]] double operator()(std::int64_t /*i*/) const noexcept { return peak; }
};

/// Linear warmup from 0 to `peak` over `warmup` steps, then `peak` (HF's
/// get_constant_schedule_with_warmup; `qlr finetune`'s default).
struct WarmupConstantSchedule {
  double peak = 2e-4;       ///< the learning rate after the warmup
  std::int64_t warmup = 0;  ///< steps of linear warmup

  /// The learning rate of step `i` (from 0).
  [[nodiscard]] double operator()(std::int64_t i) const noexcept {
    return i < warmup ? peak * static_cast<double>(i) / static_cast<double>(warmup) : peak;
  }
};

/// Linear warmup from 0 to `peak` over `warmup` steps, then a half cosine from `peak` to 0 at
/// step `total` (HF's get_cosine_schedule_with_warmup, one half cycle).
struct WarmupCosineSchedule {
  double peak = 2e-4;          ///< the learning rate at the end of the warmup
  std::int64_t warmup = 0;     ///< steps of linear warmup
  std::int64_t total = 1;      ///< steps in all; the rate reaches 0 there

  /// Throws unless peak is positive and finite and 0 ≤ warmup ≤ total, total ≥ 1.
  void check() const {
    constexpr const char* entity = "train::WarmupCosineSchedule";
    QLR_CHECK(peak > 0.0 && std::isfinite(peak), invalid_argument,
              "{}: peak = {}; expected a finite learning rate > 0", entity, peak);
    QLR_CHECK(total >= 1 && warmup >= 0 && warmup <= total, invalid_argument,
              "{}: warmup = {}, total = {}; expected 0 <= warmup <= total and total >= 1",
              entity, warmup, total);
  }

  /// The learning rate of step `i` (from 0); 0 from step `total` on.
  [[nodiscard]] double operator()(std::int64_t i) const noexcept {
    if (i < warmup) return peak * static_cast<double>(i) / static_cast<double>(warmup);
    const double span = static_cast<double>(total - warmup > 1 ? total - warmup : 1);
    const double progress = static_cast<double>(i - warmup) / span;
    if (progress >= 1.0) return 0.0;
    return peak * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
  }
};

}  // namespace qlr::train
