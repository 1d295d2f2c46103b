// SPDX-License-Identifier: Apache-2.0
// AdamW (ALGORITHMS.md §8.4, PyTorch's semantics) over a ParameterList: FP32 moments per
// parameter, bias correction from step 1, decoupled weight decay, and a state file
// (safetensors) that restores bitwise. A step with a NaN or Inf gradient changes nothing.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qlr/core/aligned.hpp"
#include "qlr/core/config.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/numeric.hpp"
#include "qlr/core/types.hpp"
#include "qlr/io/safetensors.hpp"
#include "qlr/kernels/adamw.hpp"
#include "qlr/kernels/isa.hpp"
#include "qlr/train/parameter.hpp"

namespace qlr::train {

/// AdamW's hyper-parameters other than the learning rate, which each step takes.
struct AdamWOptions {
  double beta1 = 0.9;          ///< β1 ∈ [0, 1)
  double beta2 = 0.999;        ///< β2 ∈ [0, 1)
  double eps = 1e-8;           ///< ε ≥ 0, added to √v̂
  double weight_decay = 0.0;   ///< λ ≥ 0 (0 for adapters: HF Trainer's default)
};

/// The AdamW optimizer of one ParameterList: its moments, its step count and its options.
class AdamW {
 public:
  /// Zero moments for every parameter of `params`. Throws for options out of range or a
  /// malformed list (train::check_parameters).
  explicit AdamW(const ParameterList& params, AdamWOptions options = {},
                 kernels::Isa isa = kernels::best_isa())
      : options_(options), step_fn_(kernels::adamw_step_for(isa)) {
    constexpr const char* entity = "train::AdamW";
    check_options(options_, entity);
    check_parameters(params, entity);
    state_.reserve(params.size());
    for (const Parameter& p : params)
      state_.push_back({p.name, p.shape, AlignedVector<float>(p.value.size(), 0.0f),
                        AlignedVector<float>(p.value.size(), 0.0f)});
  }

  /// Steps taken (t of the last step; 0 before the first).
  [[nodiscard]] std::int64_t steps() const noexcept { return step_; }
  /// The hyper-parameters.
  [[nodiscard]] const AdamWOptions& options() const noexcept { return options_; }
  /// m of parameter `i` (in the list's order).
  [[nodiscard]] std::span<const float> first_moment(std::size_t i) const { return state_.at(i).m; }
  /// v of parameter `i`.
  [[nodiscard]] std::span<const float> second_moment(std::size_t i) const {
    return state_.at(i).v;
  }

  /// One step at learning rate `lr` over `params`, the list this optimizer was made for.
  /// lr = 0 moves only the moments (a warmup's first step). Throws for an lr that is negative
  /// or not finite, a list whose names or sizes differ,
  /// and a NaN or Inf gradient (naming the parameter and element) — changing nothing.
  QLR_COMPILED_FUNCTION
  void step(const ParameterList& params, double lr);

  /// Writes the moments, the step count and the options to `path` atomically (safetensors:
  /// "<name>.exp_avg" and "<name>.exp_avg_sq" per parameter, F32). Throws Errc::io.
  QLR_COMPILED_FUNCTION
  void save(const std::filesystem::path& path) const;

  /// Restores a state that save() wrote. Throws — changing nothing — unless it holds the
  /// moments of exactly this optimizer's parameters, with the same shapes.
  QLR_COMPILED_FUNCTION
  void load(const std::filesystem::path& path);

 private:
  struct Moments {
    std::string name;
    std::vector<std::int64_t> shape;
    AlignedVector<float> m, v;  // huge pages for large tensors: 4 KB pages cost the step ~30 %
  };
  static void check_options(const AdamWOptions& o, const char* entity) {
    QLR_CHECK(o.beta1 >= 0.0 && o.beta1 < 1.0, invalid_argument,
              "{}: beta1 = {}; expected a value in [0, 1)", entity, o.beta1);
    QLR_CHECK(o.beta2 >= 0.0 && o.beta2 < 1.0, invalid_argument,
              "{}: beta2 = {}; expected a value in [0, 1)", entity, o.beta2);
    QLR_CHECK(o.eps >= 0.0 && std::isfinite(o.eps), invalid_argument,
              "{}: eps = {}; expected a finite value >= 0", entity, o.eps);
    QLR_CHECK(o.weight_decay >= 0.0 && std::isfinite(o.weight_decay), invalid_argument,
              "{}: weight_decay = {}; expected a finite value >= 0", entity, o.weight_decay);
  }

  AdamWOptions options_;
  kernels::AdamWStepFn step_fn_;
  std::vector<Moments> state_;
  std::int64_t step_ = 0;
};

template <int>
void AdamW::step(const ParameterList& params, double lr) {
  constexpr const char* entity = "train::AdamW::step";
  // 0 is a schedule's value (the first step of HF's warmup, the end of a cosine): the moments
  // move and the parameters stay, as in PyTorch. A peak rate must be > 0 (the schedules check).
  QLR_CHECK(lr >= 0.0 && std::isfinite(lr), invalid_argument,
            "{}: lr = {}; expected a finite learning rate >= 0", entity, lr);
  QLR_CHECK(params.size() == state_.size(), invalid_argument,
            "{}: {} parameters; expected the {} this optimizer was made for", entity,
            params.size(), state_.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    const Parameter& p = params[i];
    QLR_CHECK(p.name == state_[i].name && p.value.size() == state_[i].m.size() &&
                  p.grad.size() == p.value.size(),
              invalid_argument,
              "{}: parameter {} is \"{}\" with {} values; expected \"{}\" with {}", entity, i,
              p.name, p.value.size(), state_[i].name, state_[i].m.size());
    if (all_finite(p.grad.data(), static_cast<index_t>(p.grad.size()))) [[likely]]
      continue;
    for (std::size_t j = 0; j < p.grad.size(); ++j)
      QLR_CHECK(std::isfinite(p.grad[j]), invalid_argument,
                "{}: gradient of \"{}\" [{}] = {}; expected a finite value (nothing changed)",
                entity, p.name, j, p.grad[j]);
  }
  const std::int64_t t = step_ + 1;
  const auto td = static_cast<double>(t);
  const AdamWOptions& o = options_;
  const kernels::AdamWConstants c{
      .decay = static_cast<float>(1.0 - lr * o.weight_decay),
      .beta1 = static_cast<float>(o.beta1),
      .one_minus_beta1 = static_cast<float>(1.0 - o.beta1),
      .beta2 = static_cast<float>(o.beta2),
      .one_minus_beta2 = static_cast<float>(1.0 - o.beta2),
      .step_size = static_cast<float>(lr / (1.0 - std::pow(o.beta1, td))),
      .bias2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(o.beta2, td))),
      .eps = static_cast<float>(o.eps)};
  for (std::size_t i = 0; i < params.size(); ++i) {
    Moments& s = state_[i];
    step_fn_(c, static_cast<index_t>(s.m.size()), params[i].value.data(), params[i].grad.data(),
             s.m.data(), s.v.data());
  }
  step_ = t;
}

namespace detail {
/// The metadata keys of an AdamW state file, and the value of its "format" key.
inline constexpr std::string_view adamw_format = "qlr.adamw.v1";
/// A double as the shortest text that reads back bit for bit.
inline std::string exact_text(double x) {
  char text[32];
  const auto end = std::to_chars(text, text + sizeof(text), x).ptr;
  return std::string(text, end);
}
/// "2, 3": a shape for messages.
inline std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string out;
  for (const std::int64_t d : shape) out += (out.empty() ? "" : ", ") + std::to_string(d);
  return out;
}
/// The double in `text` (written by exact_text); throws Errc::corrupt_file otherwise.
inline double parse_exact(const std::string& text, std::string_view key, const char* entity) {
  std::size_t used = 0;
  double x = std::numeric_limits<double>::quiet_NaN();
  try {
    x = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  QLR_CHECK(used == text.size() && !text.empty(), corrupt_file,
            "{}: metadata \"{}\" = \"{}\"; expected a number", entity, key, text);
  return x;
}
}  // namespace detail

template <int>
void AdamW::save(const std::filesystem::path& path) const {
  io::SafetensorsWriter w;
  w.set_metadata("format", std::string(detail::adamw_format));
  w.set_metadata("step", std::to_string(step_));
  w.set_metadata("beta1", detail::exact_text(options_.beta1));
  w.set_metadata("beta2", detail::exact_text(options_.beta2));
  w.set_metadata("eps", detail::exact_text(options_.eps));
  w.set_metadata("weight_decay", detail::exact_text(options_.weight_decay));
  for (const Moments& s : state_) {
    w.add(s.name + ".exp_avg", io::Dtype::f32, s.shape, std::as_bytes(std::span(s.m)));
    w.add(s.name + ".exp_avg_sq", io::Dtype::f32, s.shape, std::as_bytes(std::span(s.v)));
  }
  w.write(path);
}

template <int>
void AdamW::load(const std::filesystem::path& path) {
  constexpr const char* entity = "train::AdamW::load";
  const io::SafetensorsFile file(path);
  const auto& meta = file.metadata();
  const auto value_of = [&](const char* key) -> const std::string& {
    const auto it = meta.find(key);
    QLR_CHECK(it != meta.end(), corrupt_file, "{}: \"{}\" has no metadata \"{}\"; expected an "
              "AdamW state written by train::AdamW::save", entity, path.string(), key);
    return it->second;
  };
  QLR_CHECK(value_of("format") == detail::adamw_format, corrupt_file,
            "{}: \"{}\" has format \"{}\"; expected \"{}\"", entity, path.string(),
            value_of("format"), detail::adamw_format);
  const double step = detail::parse_exact(value_of("step"), "step", entity);
  QLR_CHECK(step >= 0.0 && step < 9e15 && step == std::floor(step), corrupt_file,
            "{}: step = {}; expected a whole number >= 0", entity, value_of("step"));
  AdamWOptions options;
  options.beta1 = detail::parse_exact(value_of("beta1"), "beta1", entity);
  options.beta2 = detail::parse_exact(value_of("beta2"), "beta2", entity);
  options.eps = detail::parse_exact(value_of("eps"), "eps", entity);
  options.weight_decay = detail::parse_exact(value_of("weight_decay"), "weight_decay", entity);
  check_options(options, entity);
  QLR_CHECK(file.tensors().size() == 2 * state_.size(), invalid_argument,
            "{}: \"{}\" holds {} tensors; expected 2 for each of the {} parameters", entity,
            path.string(), file.tensors().size(), state_.size());
  std::vector<Moments> restored = state_;
  for (Moments& s : restored) {
    for (auto [suffix, out] : {std::pair{".exp_avg", &s.m}, std::pair{".exp_avg_sq", &s.v}}) {
      const io::TensorView* t = file.find(s.name + suffix);
      QLR_CHECK(t != nullptr, invalid_argument, "{}: \"{}\" has no tensor \"{}{}\"; expected the "
                "state of the same parameters", entity, path.string(), s.name, suffix);
      QLR_CHECK(t->dtype == io::Dtype::f32 && t->shape == s.shape, invalid_argument,
                "{}: tensor \"{}\" is {} [{}]; expected F32 [{}]", entity, t->name,
                io::to_string(t->dtype), detail::shape_text(t->shape), detail::shape_text(s.shape));
      std::memcpy(out->data(), t->bytes.data(), t->bytes.size());
    }
  }
  state_ = std::move(restored);
  options_ = options;
  step_ = static_cast<std::int64_t>(step);
}

// qlr::compiled (qlr/train/train.cpp) holds the one copy of these in a program.
#define QLR_ADAMW_FUNCTIONS(prefix)                                       \
  prefix template void AdamW::step<>(const ParameterList&, double);       \
  prefix template void AdamW::save<>(const std::filesystem::path&) const; \
  prefix template void AdamW::load<>(const std::filesystem::path&);
#if defined(QLR_COMPILED)
QLR_ADAMW_FUNCTIONS(extern)
#endif

}  // namespace qlr::train
