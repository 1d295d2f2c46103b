// SPDX-License-Identifier: Apache-2.0
// Rotation policies (RoLoRA / QuaRot, ALGORITHMS.md §4): an orthogonal Q of size n and the
// rotated basis h̃ = Qᵀ·h. Because (W·Q)(Qᵀ·x) = W·x, a layer whose weight is rotated on its
// input side offline and whose activations are rotated online computes the same output,
// while Qᵀ·x has spread its outlier channels over all n coordinates — which is what lets
// the activations be quantized to 4 or 8 bits. Each policy says how to apply Qᵀ and Q to a
// row; everything else (weights on either side, batches, rotate-then-quantize) is generic.
#pragma once

#include <concepts>
#include <cstdint>
#include <random>
#include <vector>

#include "qlr/core/error.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/rotate/detail/apply_rows.hpp"
#include "qlr/rotate/hadamard_transform.hpp"

namespace qlr::rotate {

/// A rotation policy: size(), and Qᵀ (rotate) and Q (unrotate) applied in place to one row
/// of size() finite floats with scratch_size() floats of scratch, without checks.
template <class R>
concept RotationPolicy = requires(const R& r, float* x, float* scratch) {
  { r.size() } -> std::same_as<index_t>;
  { r.scratch_size() } -> std::same_as<index_t>;
  { r.rotate(x, scratch) } noexcept;
  { r.unrotate(x, scratch) } noexcept;
};

/// Q = I: the policy of a layer that is not rotated.
class Identity {
 public:
  /// The identity of size n ≥ 1.
  explicit Identity(index_t n) : n_(n) {
    QLR_CHECK(n >= 1, invalid_argument, "rotate::Identity: n = {}; expected a size >= 1", n);
  }
  /// n.
  [[nodiscard]] index_t size() const noexcept { return n_; }
  /// 0: nothing to keep.
  [[nodiscard]] index_t scratch_size() const noexcept { return 0; }
  /// x unchanged.
  void rotate(float*, float*) const noexcept {}
  /// x unchanged.
  void unrotate(float*, float*) const noexcept {}

 private:
  index_t n_;
};

/// Q = Ĥ_nᵀ, so Qᵀ·x = Ĥ_n·x: the fast transform of n = K·2^k.
class Hadamard {
 public:
  /// The normalized Hadamard rotation of size n (see hadamard_factor for the sizes).
  explicit Hadamard(index_t n, kernels::Isa isa = kernels::best_isa()) : transform_(n, isa) {}
  /// n.
  [[nodiscard]] index_t size() const noexcept { return transform_.size(); }
  /// Floats of scratch a row needs.
  [[nodiscard]] index_t scratch_size() const noexcept { return transform_.scratch_size(); }
  /// x ← Ĥ·x.
  void rotate(float* x, float* scratch) const noexcept { transform_.apply(x, scratch, false); }
  /// x ← Ĥᵀ·x.
  void unrotate(float* x, float* scratch) const noexcept { transform_.apply(x, scratch, true); }

 private:
  HadamardTransform transform_;
};

/// The random ±1 signs σ of size n from `seed`, the same on every platform:
/// std::mt19937_64, σ_i = −1 when the top bit of the i-th draw is set (ALGORITHMS.md §4.2).
inline std::vector<float> random_signs(index_t n, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::vector<float> signs(static_cast<std::size_t>(n));
  for (float& s : signs) s = (gen() >> 63) != 0 ? -1.0f : 1.0f;
  return signs;
}

/// Q = D·Ĥ_nᵀ with D = diag(σ), random signs from a seed: Qᵀ·x = Ĥ·(σ ⊙ x). The signs
/// make the spread of an outlier independent of where it sits.
class RandomizedHadamard {
 public:
  /// The randomized Hadamard rotation of size n with the signs of `seed`.
  RandomizedHadamard(index_t n, std::uint64_t seed, kernels::Isa isa = kernels::best_isa())
      : transform_(n, isa), signs_(random_signs(n, seed)) {}
  /// n.
  [[nodiscard]] index_t size() const noexcept { return transform_.size(); }
  /// Floats of scratch a row needs.
  [[nodiscard]] index_t scratch_size() const noexcept { return transform_.scratch_size(); }
  /// x ← Ĥ·(σ ⊙ x).
  void rotate(float* x, float* scratch) const noexcept {
    for (index_t i = 0; i < size(); ++i) x[i] *= signs_[static_cast<std::size_t>(i)];
    transform_.apply(x, scratch, false);
  }
  /// x ← σ ⊙ (Ĥᵀ·x).
  void unrotate(float* x, float* scratch) const noexcept {
    transform_.apply(x, scratch, true);
    for (index_t i = 0; i < size(); ++i) x[i] *= signs_[static_cast<std::size_t>(i)];
  }

 private:
  HadamardTransform transform_;
  std::vector<float> signs_;
};

namespace detail {
/// Throws unless `got` equals the policy's size.
inline void check_size(index_t got, index_t n, const char* entity, const char* what) {
  QLR_CHECK(got == n, shape_mismatch, "{}: {} = {}; expected the rotation's size n = {}", entity,
            what, got, n);
}

/// Applies rotate (or, `inverse`, unrotate) to every row of m; for NaN/Inf, throws with m
/// as it was.
template <RotationPolicy R>
void for_each_row(const R& r, MatrixRef m, bool inverse, const char* entity) {
  detail::check_size(m.cols(), r.size(), entity, "row length");
  const auto rotate = [&](float* x, float* scratch) { r.rotate(x, scratch); };
  const auto unrotate = [&](float* x, float* scratch) { r.unrotate(x, scratch); };
  if (inverse)
    apply_rows_checked(m, r.scratch_size(), unrotate, rotate, entity);
  else
    apply_rows_checked(m, r.scratch_size(), rotate, unrotate, entity);
}
}  // namespace detail

/// Each row x of `x` (M×n) ← Qᵀ·x: activations into the rotated basis. Throws for a row
/// length other than n, or for a NaN/Inf, leaving x as it was.
template <RotationPolicy R>
void rotate_rows(const R& r, MatrixRef x) {
  detail::for_each_row(r, x, false, "rotate::rotate_rows");
}

/// Each row y of `y` (M×n) ← Q·y: back from the rotated basis.
template <RotationPolicy R>
void unrotate_rows(const R& r, MatrixRef y) {
  detail::for_each_row(r, y, true, "rotate::unrotate_rows");
}

/// W (N×n) ← W·Q, for a layer that reads the rotated basis: (W·Q)(Qᵀ·x) = W·x. Row i of
/// W·Q is (Qᵀ·w_i)ᵀ, so this rotates W's rows.
template <RotationPolicy R>
void rotate_weight_input(const R& r, MatrixRef w) {
  detail::for_each_row(r, w, false, "rotate::rotate_weight_input");
}

/// W (n×K) ← Qᵀ·W, for a layer that writes into the rotated basis: (Qᵀ·W)·x = Qᵀ·(W·x).
/// Rotates W's columns (through a transposed copy). A bias b gets rotate_rows on its 1×n.
template <RotationPolicy R>
void rotate_weight_output(const R& r, MatrixRef w) {
  detail::check_size(w.rows(), r.size(), "rotate::rotate_weight_output", "rows of W");
  Matrix columns = w.transpose();
  detail::for_each_row(r, MatrixRef(columns), false, "rotate::rotate_weight_output");
  w = columns.transpose();
}

}  // namespace qlr::rotate
