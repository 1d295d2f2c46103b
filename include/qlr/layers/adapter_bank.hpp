// SPDX-License-Identifier: Apache-2.0
// The adapters of a layer, kept apart from its base: names, bases, run-time state, the
// stacked Bᵀ the kernels' epilogue reads, and the low-rank half of every forward. Nothing
// here depends on the base's format, rotation or kernel, so it is compiled once per unit,
// not once per layer type (STYLE.md §2.9); a layer hands it what it needs of the base
// (its dense weight for DoRA's norms) through a callback.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "qlr/adapter/dora.hpp"
#include "qlr/adapter/lora.hpp"
#include "qlr/adapter/low_rank.hpp"
#include "qlr/adapter/qa_lora.hpp"
#include "qlr/adapter/quantized_low_rank.hpp"
#include "qlr/core/config.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/view.hpp"

namespace qlr::layers {

/// Which basis an adapter reads: the layer's input x, or the rotated Qᵀ·x its base sees
/// (an adapter trained after rotation, RoLoRA). Equal for an unrotated layer.
enum class Basis { original, rotated };

/// Any adapter a layer can hold.
using AnyAdapter = std::variant<adapter::Lora, adapter::Dora, adapter::LowRank,
                                adapter::QuantizedLowRank, adapter::QaLora>;

/// Whether `A` is one of AnyAdapter's alternatives.
template <class A>
inline constexpr bool is_any_adapter_alternative =
    std::is_same_v<A, adapter::Lora> || std::is_same_v<A, adapter::Dora> ||
    std::is_same_v<A, adapter::LowRank> || std::is_same_v<A, adapter::QuantizedLowRank> ||
    std::is_same_v<A, adapter::QaLora>;

/// An adapter as a layer holds it: the adapter, the basis it reads and its run-time state.
struct AttachedAdapter {
  std::string name;               ///< the name it was attached under
  AnyAdapter adapter;             ///< the adapter itself
  Basis basis = Basis::original;  ///< the basis it reads
  bool enabled = true;            ///< whether forwards use it
  float scale = 1.0f;             ///< run-time multiplier of its update
};

/// The dequantized base weight (N×K) in a basis: what DoRA's norms are computed on.
using BaseWeight = std::function<Matrix(Basis)>;

namespace detail {

/// The low-rank half of one forward: t (M×R) and the tokens' slices, which the epilogue
/// reads beside the bank's stacked Bᵀ. Lives for the duration of the forward.
struct LowRankPlan {
  Matrix t;                          ///< (M, R): each token's s·A·x, per adapter
  std::vector<LowRankSlice> slices;  ///< per token, or empty: every token uses all R rows
  LowRankTerm term;                  ///< the epilogue's view of bt and t
  bool active = false;               ///< whether the epilogue adds a low-rank term

  /// The epilogue: `bias` (N values or empty) and this plan's term.
  [[nodiscard]] Epilogue epilogue(const Vector& bias) const noexcept {
    return {bias.size() != 0 ? bias.data() : nullptr, active ? &term : nullptr};
  }
};

}  // namespace detail

/// The named adapters of one N×K layer. Non-template: every layer type shares this code.
class AdapterBank {
 public:
  /// The adapter id of a row that uses no adapter, in a multi-adapter forward.
  static constexpr index_t no_adapter = -1;

  /// An empty bank for a layer of `out_features` N and `in_features` K.
  AdapterBank(index_t out_features, index_t in_features) : n_(out_features), k_(in_features) {}

  /// Attaches `a` under `name`, enabled, reading `basis`; `base` gives the base weight if
  /// `a` is DoRA. `entity` names the layer in errors. Throws for a taken name or an adapter
  /// whose shape is not N×K.
  QLR_COMPILED_FUNCTION
  void attach(std::string name, AnyAdapter a, Basis basis, const BaseWeight& base,
              const char* entity);

  /// Removes adapter `name`. Ids of the adapters attached after it drop by one.
  QLR_COMPILED_FUNCTION
  void detach(std::string_view name);

  /// Enables or disables adapter `name`: a disabled adapter takes no part in any forward.
  QLR_COMPILED_FUNCTION
  void set_enabled(std::string_view name, bool enabled);

  /// Multiplies adapter `name`'s update by `scale` (1 as attached; 0 silences it).
  QLR_COMPILED_FUNCTION
  void set_scale(std::string_view name, float scale, const BaseWeight& base);

  /// Recomputes DoRA's factors after the base changed (a merge into its zero points).
  QLR_COMPILED_FUNCTION
  void base_changed(const BaseWeight& base);

  /// The id of adapter `name` for a multi-adapter forward. Throws for an unknown name.
  [[nodiscard]] index_t id(std::string_view name) const {
    for (std::size_t i = 0; i < attached_.size(); ++i)
      if (attached_[i].name == name) return static_cast<index_t>(i);
    std::string all;
    for (const AttachedAdapter& a : attached_) all += (all.empty() ? "'" : ", '") + a.name + "'";
    qlr::detail::fail(Errc::invalid_argument,
                      "layers::QuantizedLinear: adapter '{}' is not attached; expected one of [{}]",
                      name, all);
  }

  /// The names of the attached adapters, in id order.
  [[nodiscard]] std::vector<std::string> names() const {
    std::vector<std::string> all;
    for (const AttachedAdapter& a : attached_) all.push_back(a.name);
    return all;
  }

  /// Every attached adapter with its state, in id order: a view, valid until the bank changes.
  [[nodiscard]] std::span<const AttachedAdapter> adapters() const noexcept { return attached_; }

  /// Adapter `name` as attached.
  [[nodiscard]] const AttachedAdapter& get(std::string_view name) const {
    return attached_[static_cast<std::size_t>(id(name))];
  }

  /// Whether an enabled adapter reads the rotated basis (a forward then rotates x for it).
  [[nodiscard]] bool reads_rotated_basis() const noexcept {
    return std::any_of(attached_.begin(), attached_.end(), [](const AttachedAdapter& a) {
      return a.enabled && a.basis == Basis::rotated;
    });
  }

  /// The low-rank half of a forward in which every enabled adapter adds to every row of x
  /// (M×K); `rotated_x` is Qᵀ·x when reads_rotated_basis(), else unused. Throws when a DoRA
  /// adapter is enabled beside others (it rescales the whole output).
  QLR_COMPILED_FUNCTION
  [[nodiscard]] detail::LowRankPlan plan(ConstMatrixRef x, const Matrix* rotated_x) const;

  /// The low-rank half of a forward in which row i of x uses adapter adapter_of_row[i] (an
  /// id, or no_adapter). Throws for an id out of range or a disabled adapter.
  QLR_COMPILED_FUNCTION
  [[nodiscard]] detail::LowRankPlan plan(ConstMatrixRef x, const Matrix* rotated_x,
                                         std::span<const index_t> adapter_of_row) const;

  /// w (N×K, original basis) with every enabled adapter's update added, DoRA's rows
  /// rescaled; `unrotate` takes a rotated-basis update back to the original basis.
  QLR_COMPILED_FUNCTION
  void add_updates(Matrix& w, const std::function<void(Matrix&)>& unrotate) const;

  /// Bytes held: the adapters, their names, DoRA factors and the stacked Bᵀ.
  QLR_COMPILED_FUNCTION
  [[nodiscard]] std::size_t memory_bytes() const noexcept;

 private:
  // What a forward needs beside an AttachedAdapter.
  struct State {
    Vector output_scale;  // DoRA: m/‖W + scale·s·B·A‖ per row; empty otherwise
    index_t first = 0;    // first row of bt_ while enabled
  };

  static index_t rank_of(const AttachedAdapter& a) {
    return std::visit([](const auto& held) { return held.rank(); }, a.adapter);
  }

  [[nodiscard]] std::optional<std::size_t> enabled_dora() const {
    for (std::size_t i = 0; i < attached_.size(); ++i)
      if (attached_[i].enabled && states_[i].output_scale.size() != 0) return i;
    return std::nullopt;
  }

  // DoRA's factor depends on the base in the adapter's basis and on the runtime scale
  // (n = ‖W + scale·s·B·A‖): computed when either changes, never per forward.
  QLR_COMPILED_FUNCTION
  static void refresh_output_scale(const AnyAdapter& a, Basis basis, float scale, State& state,
                                   const BaseWeight& base);

  // Floats between rows of bt_: an odd number of 64-byte lines. A tile's epilogue reads r
  // rows at one column; at N = 4096 a stride of N put all of them in one L1 set (rows 16 KB
  // apart), and each call refetched them from L2. Zen 4, 4096² W4A8 LoRA r = 16, M = 64, one
  // thread: time with ÷ without the adapter 1.11–1.15 at stride N, 1.10 padded; r = 64 1.57 → 1.37.
  static index_t low_rank_stride(index_t n) noexcept {
    const index_t lines = (n + 15) / 16;
    return 16 * (lines % 2 == 1 ? lines : lines + 1);
  }

  // Stacks Bᵀ of the enabled adapters, in id order, into bt_ (R×N, rows low_rank_stride
  // apart): the epilogue's operand.
  QLR_COMPILED_FUNCTION
  void restack();

  // x itself for an adapter of the original basis, else Qᵀ·x.
  static ConstMatrixRef input_of(const AttachedAdapter& e, ConstMatrixRef x,
                                 const Matrix* rotated_x) {
    return e.basis == Basis::rotated && rotated_x != nullptr ? ConstMatrixRef(*rotated_x) : x;
  }

  QLR_COMPILED_FUNCTION
  static void project(const AttachedAdapter& e, ConstMatrixRef x, MatrixRef t);

  // Points the plan's term at bt_ and its t; `sliced` keeps its per-token slices.
  void finish(detail::LowRankPlan& p, bool sliced) const {
    if (!sliced) p.slices.clear();
    p.term = LowRankTerm{{bt_.data(), bt_.rows(), n_, bt_.cols()},
                         {p.t.data(), p.t.rows(), p.t.cols(), p.t.cols()},
                         p.slices.empty() ? nullptr : p.slices.data()};
    p.active = (p.t.cols() > 0 && bt_.rows() > 0) || !p.slices.empty();
  }

  index_t n_;
  index_t k_;
  std::vector<AttachedAdapter> attached_;  // in id order; adapters() lends them
  std::vector<State> states_;              // one per attached adapter
  Matrix bt_;                              // R×(N + padding): Bᵀ of the enabled adapters, stacked
  index_t stacked_rank_ = 0;
};

// The members' definitions: templates with nothing to deduce (QLR_COMPILED_FUNCTION), out of
// the class so that a qlr::compiled unit's declarations below keep them out of every other
// unit, even where the optimizer could inline them.

template <int>
void AdapterBank::attach(std::string name, AnyAdapter a, Basis basis, const BaseWeight& base,
                         const char* entity) {
  QLR_CHECK(std::none_of(attached_.begin(), attached_.end(),
                         [&](const AttachedAdapter& held) { return held.name == name; }),
            invalid_argument, "{}: name = '{}'; expected a name no attached adapter has", entity,
            name);
  const auto [n, k] = std::visit(
      [](const auto& held) { return std::pair(held.out_features(), held.in_features()); }, a);
  QLR_CHECK(k == k_ && n == n_, shape_mismatch, "{}: adapter '{}' is {}x{} (N x K); expected {}x{}",
            entity, name, n, k, n_, k_);
  State state;
  refresh_output_scale(a, basis, 1.0f, state, base);
  attached_.push_back({std::move(name), std::move(a), basis});
  states_.push_back(std::move(state));
  restack();
}

template <int>
void AdapterBank::detach(std::string_view name) {
  const index_t at = id(name);
  attached_.erase(attached_.begin() + at);
  states_.erase(states_.begin() + at);
  restack();
}

template <int>
void AdapterBank::set_enabled(std::string_view name, bool enabled) {
  attached_[static_cast<std::size_t>(id(name))].enabled = enabled;
  restack();
}

template <int>
void AdapterBank::set_scale(std::string_view name, float scale, const BaseWeight& base) {
  QLR_CHECK(std::isfinite(scale), invalid_argument,
            "layers::QuantizedLinear::set_scale: scale = {}; expected a finite value", scale);
  const auto at = static_cast<std::size_t>(id(name));
  AttachedAdapter& a = attached_[at];
  a.scale = scale;
  refresh_output_scale(a.adapter, a.basis, a.scale, states_[at], base);
  restack();
}

template <int>
void AdapterBank::base_changed(const BaseWeight& base) {
  for (std::size_t i = 0; i < attached_.size(); ++i)
    refresh_output_scale(attached_[i].adapter, attached_[i].basis, attached_[i].scale, states_[i],
                         base);
  restack();
}

template <int>
detail::LowRankPlan AdapterBank::plan(ConstMatrixRef x, const Matrix* rotated_x) const {
  detail::LowRankPlan p;
  const index_t m = x.rows();
  p.t.resize(m, stacked_rank_);
  for (std::size_t i = 0; i < attached_.size(); ++i) {
    const AttachedAdapter& a = attached_[i];
    if (!a.enabled) continue;
    project(a, input_of(a, x, rotated_x), p.t.middleCols(states_[i].first, rank_of(a)));
  }
  const std::optional<std::size_t> dora = enabled_dora();
  if (dora) {
    const auto enabled = std::count_if(attached_.begin(), attached_.end(),
                                       [](const AttachedAdapter& a) { return a.enabled; });
    QLR_CHECK(enabled == 1, invalid_argument,
              "layers::QuantizedLinear::forward: DoRA adapter '{}' rescales the whole output; "
              "expected it to be the only enabled adapter (or pick adapters per row)",
              attached_[*dora].name);
    p.slices.assign(static_cast<std::size_t>(m),
                    LowRankSlice{0, stacked_rank_, states_[*dora].output_scale.data()});
  }
  finish(p, dora.has_value());
  return p;
}

template <int>
detail::LowRankPlan AdapterBank::plan(ConstMatrixRef x, const Matrix* rotated_x,
                                      std::span<const index_t> adapter_of_row) const {
  constexpr const char* entity = "layers::QuantizedLinear::forward";
  const index_t m = x.rows();
  QLR_CHECK(static_cast<index_t>(adapter_of_row.size()) == m, shape_mismatch,
            "{}: adapter_of_row has {} ids; expected one per row of x (M = {})", entity,
            adapter_of_row.size(), m);
  index_t widest = 0;
  for (index_t i = 0; i < m; ++i) {
    const index_t id = adapter_of_row[static_cast<std::size_t>(i)];
    QLR_CHECK(id == no_adapter || (id >= 0 && id < static_cast<index_t>(attached_.size())),
              invalid_argument, "{}: adapter_of_row[{}] = {}; expected -1 or an id in [0, {})",
              entity, i, id, attached_.size());
    if (id == no_adapter) continue;
    const AttachedAdapter& a = attached_[static_cast<std::size_t>(id)];
    QLR_CHECK(a.enabled, invalid_argument,
              "{}: adapter_of_row[{}] names '{}'; expected an enabled adapter", entity, i, a.name);
    widest = std::max(widest, rank_of(a));
  }
  detail::LowRankPlan p;
  p.t = Matrix::Zero(m, widest);
  p.slices.resize(static_cast<std::size_t>(m));
  std::vector<index_t> rows;
  for (std::size_t id = 0; id < attached_.size(); ++id) {
    const AttachedAdapter& e = attached_[id];
    const State& state = states_[id];
    rows.clear();
    for (index_t i = 0; i < m; ++i)
      if (adapter_of_row[static_cast<std::size_t>(i)] == static_cast<index_t>(id))
        rows.push_back(i);
    if (rows.empty()) continue;
    const ConstMatrixRef in = input_of(e, x, rotated_x);
    Matrix gathered(static_cast<index_t>(rows.size()), in.cols());
    for (std::size_t j = 0; j < rows.size(); ++j)
      gathered.row(static_cast<index_t>(j)) = in.row(rows[j]);
    Matrix part(gathered.rows(), rank_of(e));
    project(e, gathered, part);
    for (std::size_t j = 0; j < rows.size(); ++j) {
      p.t.row(rows[j]).head(part.cols()) = part.row(static_cast<index_t>(j));
      p.slices[static_cast<std::size_t>(rows[j])] = LowRankSlice{
          state.first, rank_of(e), state.output_scale.size() ? state.output_scale.data() : nullptr};
    }
  }
  finish(p, true);
  return p;
}

template <int>
void AdapterBank::add_updates(Matrix& w, const std::function<void(Matrix&)>& unrotate) const {
  for (std::size_t i = 0; i < attached_.size(); ++i) {
    const AttachedAdapter& e = attached_[i];
    if (!e.enabled) continue;
    Matrix delta = std::visit([](const auto& a) { return a.delta(); }, e.adapter) * e.scale;
    if (e.basis == Basis::rotated) unrotate(delta);
    w += delta;
    const Vector& output_scale = states_[i].output_scale;
    if (output_scale.size() != 0) w = output_scale.asDiagonal() * w;
  }
}

template <int>
std::size_t AdapterBank::memory_bytes() const noexcept {
  std::size_t bytes = sizeof(*this) + sizeof(float) * static_cast<std::size_t>(bt_.size());
  for (std::size_t i = 0; i < attached_.size(); ++i) {
    bytes += sizeof(AttachedAdapter) + sizeof(State) + attached_[i].name.capacity() +
             sizeof(float) * static_cast<std::size_t>(states_[i].output_scale.size()) +
             std::visit([](const auto& a) { return a.memory_bytes(); }, attached_[i].adapter);
  }
  return bytes;
}

template <int>
void AdapterBank::refresh_output_scale(const AnyAdapter& a, Basis basis, float scale, State& state,
                                       const BaseWeight& base) {
  if (const auto* dora = std::get_if<adapter::Dora>(&a)) {
    const Matrix w0 = base(basis);
    state.output_scale = scale == 1.0f ? dora->output_scale(w0)
                                       : adapter::Dora(dora->a(), dora->b(), dora->magnitude(),
                                                       dora->alpha() * scale, dora->scaling())
                                             .output_scale(w0);
  }
}

template <int>
void AdapterBank::restack() {
  stacked_rank_ = 0;
  for (std::size_t i = 0; i < attached_.size(); ++i) {
    states_[i].first = stacked_rank_;
    if (attached_[i].enabled) stacked_rank_ += rank_of(attached_[i]);
  }
  bt_ = Matrix::Zero(stacked_rank_, low_rank_stride(n_));
  for (std::size_t i = 0; i < attached_.size(); ++i) {
    if (!attached_[i].enabled) continue;
    std::visit(
        [&](const auto& a) {
          bt_.middleRows(states_[i].first, a.rank()).leftCols(n_) = a.up().transpose();
        },
        attached_[i].adapter);
  }
}

template <int>
void AdapterBank::project(const AttachedAdapter& e, ConstMatrixRef x, MatrixRef t) {
  std::visit([&](const auto& a) { a.project(x, t); }, e.adapter);
  if (e.scale != 1.0f) t *= e.scale;
}

// qlr::compiled (qlr/layers/layers.cpp) holds the one copy of these in a program.
#define QLR_ADAPTER_BANK_FUNCTIONS(prefix)                                                      \
  prefix template void AdapterBank::attach<>(std::string, AnyAdapter, Basis, const BaseWeight&, \
                                             const char*);                                      \
  prefix template detail::LowRankPlan AdapterBank::plan<>(ConstMatrixRef, const Matrix*) const; \
  prefix template detail::LowRankPlan AdapterBank::plan<>(ConstMatrixRef, const Matrix*,        \
                                                          std::span<const index_t>) const;      \
  prefix template void AdapterBank::add_updates<>(Matrix&, const std::function<void(Matrix&)>&) \
      const;                                                                                    \
  prefix template void AdapterBank::detach<>(std::string_view);                                 \
  prefix template void AdapterBank::set_enabled<>(std::string_view, bool);                      \
  prefix template void AdapterBank::set_scale<>(std::string_view, float, const BaseWeight&);    \
  prefix template void AdapterBank::base_changed<>(const BaseWeight&);                          \
  prefix template std::size_t AdapterBank::memory_bytes<>() const noexcept;
#if defined(QLR_COMPILED)
QLR_ADAPTER_BANK_FUNCTIONS(extern)
#endif

}  // namespace qlr::layers
