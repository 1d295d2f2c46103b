// SPDX-License-Identifier: Apache-2.0
// RoLoRA / QuaRot rotations of a llama2.c checkpoint (ALGORITHMS.md §4.3): the RMSNorm gains
// folded into the layers that read them, the residual stream rotated by R1 (merged into the
// embedding, every block's input and output weights and the classifier, so it costs nothing
// at run time) and the MLP's hidden vector rotated by R4 (online before down_proj, merged into
// down_proj's input side). The FP32 network computes the same function; its linear layers
// now see activations whose outlier channels are spread over every coordinate, which is
// what lets W4A4 and W4A8 keep their accuracy.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "qlr/core/error.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/io/llama2c.hpp"
#include "qlr/rotate/random_orthogonal.hpp"
#include "qlr/rotate/rms_norm.hpp"
#include "qlr/rotate/rotation.hpp"

namespace llama {

/// The orthogonal matrix used for R1 and R4.
enum class RotationKind : std::uint8_t {
  none,                 ///< the checkpoint as it is
  hadamard,             ///< the normalized Walsh–Hadamard matrix Ĥ
  randomized_hadamard,  ///< Ĥ with random signs (QuaRot, RoLoRA)
  random_orthogonal,    ///< a Haar-random Q (dense: O(n²) per token online)
};

/// The kind's command-line name: none, hadamard, randomized-hadamard, random-orthogonal.
inline std::string_view to_string(RotationKind kind) {
  switch (kind) {
    case RotationKind::hadamard: return "hadamard";
    case RotationKind::randomized_hadamard: return "randomized-hadamard";
    case RotationKind::random_orthogonal: return "random-orthogonal";
    case RotationKind::none: break;
  }
  return "none";
}

/// Reads a name to_string writes. Throws naming the text otherwise.
inline RotationKind parse_rotation_kind(std::string_view text) {
  for (const RotationKind k : {RotationKind::none, RotationKind::hadamard,
                               RotationKind::randomized_hadamard, RotationKind::random_orthogonal})
    if (text == to_string(k)) return k;
  qlr::detail::fail(qlr::Errc::invalid_argument,
                    "llama::parse_rotation_kind: '{}'; expected none, hadamard, "
                    "randomized-hadamard or random-orthogonal",
                    text);
}

/// One rotation of a kind other than none, as a qlr rotation policy. Its members are
/// defined in llama.cpp, compiled once for the engine: their bodies instantiate every
/// rotation's transforms (4.8 s of parsing in each unit that includes this header).
class StreamRotation {
 public:
  /// The rotation of `kind` (not none) and size n; `seed` picks the signs or the matrix.
  StreamRotation(RotationKind kind, qlr::index_t n, std::uint64_t seed);

  /// n.
  [[nodiscard]] qlr::index_t size() const noexcept;
  /// Floats of scratch a row needs.
  [[nodiscard]] qlr::index_t scratch_size() const noexcept;
  /// x ← Qᵀ·x.
  void rotate(float* x, float* scratch) const noexcept;
  /// x ← Q·x.
  void unrotate(float* x, float* scratch) const noexcept;

 private:
  using Any = std::variant<qlr::rotate::Hadamard, qlr::rotate::RandomizedHadamard,
                           qlr::rotate::RandomOrthogonal>;

  static Any make(RotationKind kind, qlr::index_t n, std::uint64_t seed);

  Any r_;
};

/// Rotates `m` in place with R1 (size dim) and R4 (size hidden_dim): folds the RMSNorm
/// gains (the classifier untied first when it shares the embedding, which reads no norm),
/// then E ← E·R1; q, k, v, gate, up, classifier W ← W·R1; o and down W ← R1ᵀ·W; and down
/// W ← W·R4, whose input the engine rotates online with rotate_rows(r4, ·).
/// Throws for rotations of the wrong sizes, changing nothing.
template <qlr::rotate::RotationPolicy R1, qlr::rotate::RotationPolicy R4>
void rotate_checkpoint(qlr::io::Llama2cModel& m, const R1& r1, const R4& r4) {
  constexpr const char* entity = "llama::rotate_checkpoint";
  QLR_CHECK(r1.size() == m.config.dim && r4.size() == m.config.hidden_dim, shape_mismatch,
            "{}: rotations of sizes {} and {}; expected dim = {} and hidden_dim = {}", entity,
            r1.size(), r4.size(), m.config.dim, m.config.hidden_dim);
  if (m.config.shared_classifier) {
    m.classifier = m.token_embedding;
    m.config.shared_classifier = false;
  }
  using qlr::rotate::rotate_weight_input, qlr::rotate::rotate_weight_output;
  for (qlr::io::Llama2cLayer& l : m.layers) {
    qlr::rotate::fold_rms_norm(l.attention_norm, {l.wq, l.wk, l.wv});
    qlr::rotate::fold_rms_norm(l.ffn_norm, {l.w1, l.w3});
    for (qlr::Matrix* w : {&l.wq, &l.wk, &l.wv, &l.w1, &l.w3}) rotate_weight_input(r1, *w);
    rotate_weight_output(r1, l.wo);
    rotate_weight_output(r1, l.w2);
    rotate_weight_input(r4, l.w2);
  }
  qlr::rotate::fold_rms_norm(m.final_norm, {m.classifier});
  rotate_weight_input(r1, m.classifier);
  rotate_weight_input(r1, m.token_embedding);  // row e ← R1ᵀ·e: the stream starts rotated
}

}  // namespace llama
