// SPDX-License-Identifier: Apache-2.0
// Every trainable tensor of a set of layers as one list of (name, shape, value, gradient):
// what the optimizer, the gradient clipper, the checkpoint writer and the PEFT exporter
// iterate, whatever the model. Names follow PEFT's keys.
#pragma once

#include <cmath>
#include <cstdint>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "qlr/core/error.hpp"
#include "qlr/core/types.hpp"

namespace qlr::train {

/// One trainable tensor, viewed: the layer that owns it holds its value and gradient.
struct Parameter {
  std::string name;                 ///< PEFT's key, e.g. "…q_proj.lora_A.weight"
  std::vector<std::int64_t> shape;  ///< as saved: {r, K} for A, {N} for a DoRA magnitude
  std::span<float> value;           ///< the values, row-major
  std::span<float> grad;            ///< ∂loss/∂value, the same layout
};

/// Every trainable tensor of a model, in a fixed order.
using ParameterList = std::vector<Parameter>;

/// Throws unless every parameter has a unique, non-empty name and a value and a gradient of
/// the size its shape says. `entity` names the caller in the message.
inline void check_parameters(const ParameterList& params, const char* entity) {
  std::set<std::string> names;
  for (const Parameter& p : params) {
    QLR_CHECK(!p.name.empty(), invalid_argument, "{}: a parameter has an empty name; expected a "
              "PEFT key", entity);
    QLR_CHECK(names.insert(p.name).second, invalid_argument,
              "{}: parameter \"{}\" is listed twice; expected unique names", entity, p.name);
    std::int64_t numel = 1;
    for (const std::int64_t d : p.shape) {
      QLR_CHECK(d >= 1, shape_mismatch, "{}: parameter \"{}\" has a dimension {}; expected >= 1",
                entity, p.name, d);
      numel *= d;
    }
    QLR_CHECK(std::ssize(p.value) == numel && std::ssize(p.grad) == numel, shape_mismatch,
              "{}: parameter \"{}\" has {} values and {} gradients; expected {} each (its shape)",
              entity, p.name, p.value.size(), p.grad.size(), numel);
  }
}

/// Every gradient ← 0.
inline void zero_gradients(const ParameterList& params) noexcept {
  for (const Parameter& p : params)
    for (float& g : p.grad) g = 0.0f;
}

/// Every gradient ← factor·gradient: 1/k after accumulating k micro-batches.
inline void scale_gradients(const ParameterList& params, float factor) noexcept {
  for (const Parameter& p : params)
    for (float& g : p.grad) g *= factor;
}

/// √(Σ g²) over every gradient, summed in double.
inline double gradient_norm(const ParameterList& params) noexcept {
  double sum = 0.0;
  for (const Parameter& p : params)
    for (const float g : p.grad) sum += static_cast<double>(g) * g;
  return std::sqrt(sum);
}

/// Scales every gradient by max_norm / (norm + 1e-6) when that is below 1 (PyTorch's
/// clip_grad_norm_) and returns the norm before clipping. Throws for a max_norm that is not
/// positive and finite, and for a non-finite norm (a NaN or Inf gradient), changing nothing.
inline double clip_gradient_norm(const ParameterList& params, double max_norm) {
  constexpr const char* entity = "train::clip_gradient_norm";
  QLR_CHECK(max_norm > 0.0 && std::isfinite(max_norm), invalid_argument,
            "{}: max_norm = {}; expected a finite value > 0", entity, max_norm);
  const double norm = gradient_norm(params);
  QLR_CHECK(std::isfinite(norm), invalid_argument,
            "{}: the gradients' norm is {}; expected finite gradients", entity, norm);
  const double factor = max_norm / (norm + 1e-6);
  if (factor < 1.0) scale_gradients(params, static_cast<float>(factor));
  return norm;
}

}  // namespace qlr::train
