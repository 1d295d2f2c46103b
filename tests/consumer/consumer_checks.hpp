// SPDX-License-Identifier: Apache-2.0
// What the consumer program checks, in every unit that includes it (internal linkage, so each
// unit runs its own copy): a runtime layer from make_linear with a PEFT adapter loaded from a
// folder attached, against the layer's dense oracle, and kernels::gemm against the same.
#pragma once

#include <qlr/io/peft.hpp>
#include <qlr/io/safetensors.hpp>
#include <qlr/kernels/gemm.hpp>
#include <qlr/layers/any_linear.hpp>
#include <qlr/quant/int_group.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace {

/// A PEFT LoRA folder (config + safetensors) for one 64×128 module, written under `folder`.
void write_adapter(const std::filesystem::path& folder) {
  std::filesystem::create_directories(folder);
  std::ofstream(folder / "adapter_config.json")
      << R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]})";
  qlr::io::SafetensorsWriter file;
  const std::string name = "base_model.model.layers.0.self_attn.q_proj";
  file.add(name + ".lora_A.weight", qlr::Matrix::Random(4, 128) * 0.1f);
  file.add(name + ".lora_B.weight", qlr::Matrix::Random(64, 4) * 0.1f);
  file.write(folder / "adapter_model.safetensors");
}

/// 0 when every check of unit `unit` passes; prints what failed.
int check_qlr(const char* unit, const std::filesystem::path& scratch) {
  const qlr::Matrix w = qlr::Matrix::Random(64, 128);
  const qlr::Matrix x = qlr::Matrix::Random(3, 128);
  write_adapter(scratch / unit);
  const qlr::io::PeftAdapter adapter = qlr::io::load_peft_adapter(scratch / unit);
  const qlr::io::PeftModule& module = adapter.modules.at(0);

  qlr::layers::AnyLinear layer =
      qlr::layers::make_linear(w, qlr::layers::parse_linear_spec("int4-asym-g32+a8"));
  layer.attach("peft", qlr::adapter::Lora(module.a, module.b, module.alpha));
  const qlr::Matrix y = layer.forward(x);
  // The W4A8 base sees per-token INT8 activations: a few per mille from the FP32 oracle.
  const qlr::Matrix oracle = x * layer.dense_weight().transpose();
  const double layer_error = (y - oracle).norm() / oracle.norm();

  const auto q = qlr::quant::IntSym<4>({.group_size = 32}).quantize(w);
  const qlr::kernels::DotWeights<decltype(q)::format> packed(q);
  qlr::Matrix z(3, 64);
  qlr::kernels::gemm(packed, qlr::ConstMatrixView{x.data(), 3, 128, 128},
                     qlr::MatrixView{z.data(), 3, 64, 64});
  const qlr::Matrix z_oracle = x * qlr::quant::dequantize(q).transpose();
  const double gemm_error = (z - z_oracle).norm() / z_oracle.norm();

  const bool ok = adapter.modules.size() == 1 && layer_error < 0.02 && gemm_error < 1e-5;
  std::printf("qlr consumer (%s): %s (layer %.2e, gemm %.2e, %zu bytes)\n", unit,
              ok ? "ok" : "FAILED", layer_error, gemm_error, layer.memory_bytes());
  return ok ? 0 : 1;
}

}  // namespace
