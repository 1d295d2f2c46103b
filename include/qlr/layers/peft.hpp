// SPDX-License-Identifier: Apache-2.0
// PEFT adapters (io::load_peft_adapter) as qlr adapters: a module's lora_A/lora_B with its
// alpha and scaling become an adapter::Lora, with a magnitude an adapter::Dora. PEFT stores A
// as (r, in) and B as (out, r) for every layer type, so the adapter never changes; a GPT-2
// Conv1D base (fan_in_fan_out) is stored (in, out) and must be transposed into the layer's
// (N, K) before it is quantized.
#pragma once

#include <string>
#include <string_view>

#include "qlr/adapter/dora.hpp"
#include "qlr/adapter/lora.hpp"
#include "qlr/core/error.hpp"
#include "qlr/io/peft.hpp"
#include "qlr/layers/any_linear.hpp"

namespace qlr::layers {

/// Module `m` of an adapter with config `config` as a LoRA or (with a magnitude) a DoRA.
/// Throws for a QA-LoRA config: its pooling needs the base's group layout (attach an
/// adapter::QaLora built from the factors instead).
inline AnyAdapter to_adapter(const io::PeftModule& m, const io::PeftConfig& config) {
  QLR_CHECK(!config.use_qalora, unsupported,
            "layers::to_adapter: module '{}' is QA-LoRA (use_qalora); expected LoRA or DoRA — build "
            "an adapter::QaLora with the base's group size",
            m.name);
  const adapter::Scaling scaling =
      config.use_rslora ? adapter::Scaling::rank_stabilized : adapter::Scaling::standard;
  if (m.magnitude) return adapter::Dora(m.a, m.b, *m.magnitude, m.alpha, scaling);
  return adapter::Lora(m.a, m.b, m.alpha, scaling);
}

/// Attaches module `module` of `adapter` to `layer` under `name`. Throws for a module the
/// adapter does not have, naming it.
inline void attach_peft(AnyLinear& layer, const io::PeftAdapter& adapter, std::string_view module,
                        std::string name) {
  const io::PeftModule* m = adapter.find(module);
  QLR_CHECK(m != nullptr, invalid_argument,
            "layers::attach_peft: module '{}' is not in the adapter; expected one of its {} modules",
            module, adapter.modules.size());
  layer.attach(std::move(name), to_adapter(*m, adapter.config));
}

}  // namespace qlr::layers
