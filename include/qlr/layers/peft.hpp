// SPDX-License-Identifier: Apache-2.0
// PEFT adapters (io::load_peft_adapter) as qlr adapters: a module's lora_A/lora_B with its
// alpha and scaling become an adapter::Lora, with a magnitude an adapter::Dora, with
// use_qalora an adapter::QaLora (on an asymmetric base only, as any QA-LoRA). PEFT stores A
// as (r, in) and B as (out, r) for every layer type, so the adapter never changes; a GPT-2
// Conv1D base (fan_in_fan_out) is stored (in, out) and must be transposed into the layer's
// (N, K) before it is quantized.
#pragma once

#include <string>
#include <string_view>

#include "qlr/adapter/dora.hpp"
#include "qlr/adapter/lora.hpp"
#include "qlr/adapter/qa_lora.hpp"
#include "qlr/core/config.hpp"
#include "qlr/core/error.hpp"
#include "qlr/io/peft.hpp"
#include "qlr/layers/any_linear.hpp"

namespace qlr::layers {

/// Module `m` of an adapter with config `config` as a LoRA, (with a magnitude) a DoRA, or
/// (use_qalora) a QA-LoRA whose input is pooled as PEFT pools it: the group mean times the
/// number of groups, g = qalora_group_size, over `in_features` inputs (0: A's columns × g,
/// PEFT's K). Throws for DoRA with QA-LoRA, or A's columns other than ⌈K/g⌉.
QLR_COMPILED_FUNCTION
AnyAdapter to_adapter(const io::PeftModule& m, const io::PeftConfig& config,
                      index_t in_features = 0) {
  const adapter::Scaling scaling =
      config.use_rslora ? adapter::Scaling::rank_stabilized : adapter::Scaling::standard;
  if (config.use_qalora) {
    QLR_CHECK(!m.magnitude, unsupported,
              "layers::to_adapter: module '{}' has a DoRA magnitude and use_qalora; expected one "
              "of the two",
              m.name);
    const index_t k = in_features != 0 ? in_features : m.a.cols() * config.qalora_group_size;
    return adapter::QaLora(m.a, m.b, m.alpha, k, config.qalora_group_size, adapter::Pooling::peft,
                           scaling);
  }
  if (m.magnitude) return adapter::Dora(m.a, m.b, *m.magnitude, m.alpha, scaling);
  return adapter::Lora(m.a, m.b, m.alpha, scaling);
}

/// Attaches module `module` of `adapter` to `layer` under `name`. Throws for a module the
/// adapter does not have, naming it.
QLR_COMPILED_FUNCTION
void attach_peft(AnyLinear& layer, const io::PeftAdapter& adapter, std::string_view module,
                 std::string name) {
  const io::PeftModule* m = adapter.find(module);
  QLR_CHECK(m != nullptr, invalid_argument,
            "layers::attach_peft: module '{}' is not in the adapter; expected one of its {} modules",
            module, adapter.modules.size());
  layer.attach(std::move(name), to_adapter(*m, adapter.config, layer.in_features()));
}

}  // namespace qlr::layers
