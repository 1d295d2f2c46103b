// SPDX-License-Identifier: Apache-2.0
// qlr's layer file read back bit for bit (bases, biases, adapters and their state, forward
// outputs); a damaged file is a qlr::Error; real PEFT adapters attached to quantized layers.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "qlr/adapter/dora.hpp"
#include "qlr/adapter/lora_quant.hpp"
#include "qlr/adapter/lora.hpp"
#include "qlr/adapter/low_rank.hpp"
#include "qlr/adapter/qa_lora.hpp"
#include "qlr/adapter/quantized_low_rank.hpp"
#include "qlr/io/peft.hpp"
#include "qlr/io/safetensors.hpp"
#include "qlr/layers/layer_file.hpp"
#include "qlr/layers/peft.hpp"
#include "qlr/quant/spec.hpp"
#include "qlr_test_support.hpp"

namespace {

using qlr::index_t;
using qlr::Matrix;
namespace layers = qlr::layers;
namespace adapter = qlr::adapter;

using qlr::test::bitwise_equal;

}  // namespace

TEST_CASE("save_layers / load_layers: bases, adapters and outputs come back bit for bit",
          "[layers][io]") {
  std::mt19937 rng(31);
  const index_t n = 40, k = 128, m = 6;
  std::map<std::string, layers::AnyLinear> saved;
  {
    layers::AnyLinear l = layers::make_linear(qlr::test::gaussian(rng, n, k),
                                              layers::parse_linear_spec("int4-asym-g32-fz-f16+a8"));
    l.set_bias(qlr::test::gaussian(rng, n, 1));
    l.attach("lora", adapter::Lora(qlr::test::gaussian(rng, 4, k, 0.1f), qlr::test::gaussian(rng, n, 4, 0.1f), 8,
                                   adapter::Scaling::rank_stabilized));
    l.attach("qa", adapter::QaLora(qlr::test::gaussian(rng, 2, k / 32), qlr::test::gaussian(rng, n, 2, 0.1f), 4,
                                   k, 32, adapter::Pooling::sum));
    l.set_scale("qa", 0.3f);
    saved.emplace("model.layers.0.q_proj", std::move(l));
  }
  {
    layers::AnyLinear l = layers::make_linear(qlr::test::gaussian(rng, n, k),
                                              layers::parse_linear_spec("nf4-g64+rht11"));
    l.attach("eora", adapter::LowRank(qlr::test::gaussian(rng, 3, k, 0.1f), qlr::test::gaussian(rng, n, 3, 0.1f)),
             layers::Basis::rotated);
    l.attach("off", adapter::LowRank(qlr::test::gaussian(rng, 2, k), qlr::test::gaussian(rng, n, 2)));
    l.set_enabled("off", false);
    // Quantized factors in two blocks of different formats (LoRAQuant's shape): the file
    // keeps their codes, not their dequantization.
    const adapter::LowRank term(qlr::test::gaussian(rng, 6, k, 0.1f), qlr::test::gaussian(rng, n, 6, 0.1f));
    const Matrix bt = term.b().transpose();
    const auto hi = qlr::quant::parse_quant_spec("int4-asym-g32");
    const auto lo = qlr::quant::parse_quant_spec("int2-sym-g32");
    std::vector<adapter::ComponentBlock> blocks;
    blocks.push_back({0, 2, qlr::quant::quantize(term.a().topRows(2), hi), qlr::quant::quantize(bt.topRows(2), hi)});
    blocks.push_back({2, 6, qlr::quant::quantize(term.a().bottomRows(4), lo), qlr::quant::quantize(bt.bottomRows(4), lo)});
    l.attach("loraquant", adapter::QuantizedLowRank(std::move(blocks), 0.75));
    saved.emplace("model.layers.0.o_proj", std::move(l));
  }
  {
    layers::AnyLinear l = layers::make_linear(qlr::test::gaussian(rng, n, k),
                                              layers::parse_linear_spec("int8-sym-pc+rht5"));
    const Matrix w0 = l.dequantized_weight();
    l.attach("dora", adapter::Dora(qlr::test::gaussian(rng, 2, k, 0.1f), qlr::test::gaussian(rng, n, 2, 0.1f),
                                   adapter::Dora::initial_magnitude(w0), 4));
    saved.emplace("model.layers.1.v_proj", std::move(l));
  }
  const qlr::test::TempFolder folder("layer-file");
  const auto path = folder / "layers.safetensors";
  layers::save_layers(path, saved);
  const auto loaded = layers::load_layers(path);
  REQUIRE(loaded.size() == saved.size());
  const Matrix x = qlr::test::gaussian(rng, m, k);
  for (const auto& [name, original] : saved) {
    CAPTURE(name);
    const layers::AnyLinear& back = loaded.at(name);
    CHECK(layers::to_string(back.spec()) == layers::to_string(original.spec()));
    const auto parts = [](const qlr::quant::AnyQuantizedMatrix& q) {
      return std::visit([](const auto& mq) { return mq.parts(); }, q);
    };
    const qlr::QuantizedParts a = parts(original.base()), b = parts(back.base());
    CHECK(a.codes == b.codes);
    CHECK(std::memcmp(a.scales.data(), b.scales.data(), a.scales.size() * sizeof(float)) == 0);
    CHECK(a.zeros.size() == b.zeros.size());
    CHECK((a.zeros.empty() ||
           std::memcmp(a.zeros.data(), b.zeros.data(), a.zeros.size() * sizeof(float)) == 0));
    CHECK(a.codebook == b.codebook);
    CHECK((a.zero_mode == b.zero_mode && a.scale_type == b.scale_type && a.group_size == b.group_size));
    CHECK(back.adapter_names() == original.adapter_names());
    for (const layers::AttachedAdapter& held : original.adapters()) {
      const auto* q = std::get_if<adapter::QuantizedLowRank>(&held.adapter);
      if (q == nullptr) continue;
      const auto back_adapters = back.adapters();
      const auto it = std::find_if(back_adapters.begin(), back_adapters.end(),
                                   [&](const layers::AttachedAdapter& other) { return other.name == held.name; });
      REQUIRE(it != back_adapters.end());
      const auto copy = std::get<adapter::QuantizedLowRank>(it->adapter);
      REQUIRE(copy.blocks().size() == q->blocks().size());
      CHECK(copy.scale() == q->scale());
      for (std::size_t i = 0; i < q->blocks().size(); ++i) {
        CHECK((copy.blocks()[i].begin == q->blocks()[i].begin && copy.blocks()[i].end == q->blocks()[i].end));
        CHECK(parts(copy.blocks()[i].a_rows).codes == parts(q->blocks()[i].a_rows).codes);
        CHECK(parts(copy.blocks()[i].bt_rows).codes == parts(q->blocks()[i].bt_rows).codes);
        CHECK(parts(copy.blocks()[i].bt_rows).zeros == parts(q->blocks()[i].bt_rows).zeros);
        CHECK(copy.blocks()[i].a_rows.index() == q->blocks()[i].a_rows.index());  // same format
      }
      CHECK(bitwise_equal(copy.a(), q->a()));
    }
    CHECK(bitwise_equal(back.forward(x), original.forward(x)));
  }
  std::filesystem::remove(path);
}

TEST_CASE("load_layers: a damaged or foreign file is a qlr::Error", "[layers][io]") {
  const qlr::test::TempFolder folder("layer-file");
  const auto path = folder / "foreign.safetensors";
  qlr::io::SafetensorsWriter foreign;
  foreign.add("w", Matrix::Ones(2, 2));
  foreign.write(path);
  CHECK_THROWS_WITH(layers::load_layers(path), Catch::Contains("metadata qlr.format = ''; expected 'qlr-layers/1'"));
  qlr::io::SafetensorsWriter partial;
  partial.set_metadata("qlr.format", "qlr-layers/1");
  partial.set_metadata("qlr.layers", "a");
  partial.set_metadata("qlr.layer.a.spec", "int4-asym-g32");
  partial.write(path);
  CHECK_THROWS_WITH(layers::load_layers(path), Catch::Contains("tensor \"a.codes\" not found"));
  std::filesystem::remove(path);
  std::map<std::string, layers::AnyLinear> bad;
  bad.emplace("a,b", layers::make_linear(Matrix::Ones(4, 64), layers::parse_linear_spec("int4")));
  CHECK_THROWS_WITH(layers::save_layers(path, bad), Catch::Contains("layer name 'a,b'"));
}

TEST_CASE("load_layers: damaged metadata of quantized factors is a qlr::Error", "[layers][io]") {
  std::mt19937 rng(37);
  const index_t n = 24, k = 64;
  layers::AnyLinear l = layers::make_linear(qlr::test::gaussian(rng, n, k), layers::parse_linear_spec("int4-sym-g32"));
  const adapter::Lora lora(qlr::test::gaussian(rng, 2, k), qlr::test::gaussian(rng, n, 2), 4);
  l.attach("q", adapter::QuantizedLowRank::quantize(lora, qlr::quant::parse_quant_spec("int4-asym-g32")));
  std::map<std::string, layers::AnyLinear> saved;
  saved.emplace("l", std::move(l));
  const qlr::test::TempFolder folder("layer-file");
  const auto path = folder / "qlr.safetensors";
  layers::save_layers(path, saved);
  // The same tensors with one metadata value replaced.
  const auto rewrite = [&](const std::string& key, const std::string& value) {
    const auto damaged = folder / "damaged.safetensors";
    const qlr::io::SafetensorsFile file(path);
    qlr::io::SafetensorsWriter out;
    for (const qlr::io::TensorView& t : file.tensors()) out.add(t.name, t.dtype, t.shape, t.bytes);
    for (const auto& [mk, mv] : file.metadata()) out.set_metadata(mk, mk == key ? value : mv);
    out.write(damaged);
    return damaged;
  };
  CHECK_THROWS_WITH(layers::load_layers(rewrite("qlr.adapter.l/q.block0.A.encoding", "int5")),
                    Catch::Contains("metadata \"qlr.adapter.l/q.block0.A.encoding\" = 'int5'; expected"));
  CHECK_THROWS_WITH(layers::load_layers(rewrite("qlr.adapter.l/q.blocks", "0")),
                    Catch::Contains("metadata \"qlr.adapter.l/q.blocks\" = 0; expected 1 to 64"));
  CHECK_THROWS_WITH(layers::load_layers(rewrite("qlr.adapter.l/q.block0.end", "3")),
                    Catch::Contains("blocks[0].a_rows is 2x64; expected 3x64"));
  CHECK(layers::load_layers(path).at("l").adapter_names() == std::vector<std::string>{"q"});
}

TEST_CASE("save_adapters / load_adapters: adapters without a base come back bit for bit",
          "[layers][io]") {
  std::mt19937 rng(39);
  const index_t n = 48, k = 160, r = 6;
  const Matrix a = qlr::test::gaussian(rng, r, k, 0.05f), b = qlr::test::gaussian(rng, n, r, 0.05f);
  std::map<std::string, layers::AnyAdapter> saved;
  saved.emplace("base_model.model.h.0.attn.c_attn", adapter::Lora(a, b, 12));
  saved.emplace("dora", adapter::Dora(a, b, qlr::test::gaussian(rng, n, 1).col(0).cwiseAbs(), 4));
  saved.emplace("eora", adapter::LowRank(a, b));
  saved.emplace("qa", adapter::QaLora(qlr::test::gaussian(rng, r, k / 32), b, 6, k, 32, adapter::Pooling::sum));
  // LoRAQuant: a 3-bit block of leading components and a binary block of the rest.
  const adapter::LoraQuantized lq =
      adapter::lora_quant(a, b, 2.0, {.energy = 0.5, .high_bits = 3, .group_size = 32});
  REQUIRE(lq.adapter.blocks().size() == 2);
  saved.emplace("loraquant", lq.adapter);
  const qlr::test::TempFolder folder("layer-file");
  const auto path = folder / "adapters.safetensors";
  layers::save_adapters(path, saved);
  const auto loaded = layers::load_adapters(path);
  REQUIRE(loaded.size() == saved.size());
  for (const auto& [name, held] : saved) {
    CAPTURE(name);
    const layers::AnyAdapter& back = loaded.at(name);
    REQUIRE(back.index() == held.index());
    std::visit(
        [&]<class A>(const A& original) {
          const A& read = std::get<A>(back);
          CHECK(bitwise_equal(read.a(), original.a()));
          CHECK(bitwise_equal(read.b(), original.b()));
          if constexpr (std::is_same_v<A, adapter::QuantizedLowRank>) {
            CHECK(read.scale() == original.scale());
            CHECK(read.bits_per_parameter() == original.bits_per_parameter());
            CHECK(bitwise_equal(read.delta(), original.delta()));
          } else if constexpr (std::is_same_v<A, adapter::LowRank>) {
            CHECK(read.rank() == original.rank());
          } else {
            CHECK(read.alpha() == original.alpha());
            CHECK(read.scale() == original.scale());
          }
        },
        held);
  }
  // The two formats do not read each other.
  CHECK_THROWS_WITH(layers::load_layers(path),
                    Catch::Contains("qlr.format = 'qlr-adapters/1'; expected 'qlr-layers/1'"));
  std::map<std::string, layers::AnyAdapter> bad;
  bad.emplace("a/b", adapter::LowRank(a, b));
  CHECK_THROWS_WITH(layers::save_adapters(path, bad), Catch::Contains("adapter name 'a/b'"));
  // A file whose recorded width disagrees with its tensors.
  const qlr::io::SafetensorsFile file(path);
  qlr::io::SafetensorsWriter out;
  for (const qlr::io::TensorView& t : file.tensors()) out.add(t.name, t.dtype, t.shape, t.bytes);
  for (const auto& [mk, mv] : file.metadata())
    out.set_metadata(mk, mk == "qlr.adapter.eora.in_features" ? "161" : mv);
  const auto damaged = folder / "adapters-damaged.safetensors";
  out.write(damaged);
  CHECK_THROWS_WITH(layers::load_adapters(damaged),
                    Catch::Contains("adapter 'eora' reads 160 inputs; metadata "
                                    "\"qlr.adapter.eora.in_features\" says 161"));
}

TEST_CASE("attach_peft: a PEFT QA-LoRA module pools the input as PEFT does", "[layers][io]") {
  std::mt19937 rng(43);
  const index_t n = 20, k = 96, g = 32, r = 3;
  qlr::io::PeftAdapter peft;
  peft.config.use_qalora = true;
  peft.config.qalora_group_size = g;
  qlr::io::PeftModule module;
  module.name = "model.layers.0.mlp.up_proj";
  module.a = qlr::test::gaussian(rng, r, k / g);
  module.b = qlr::test::gaussian(rng, n, r, 0.1f);
  module.rank = r;
  module.alpha = 6;
  module.scale = 2;
  peft.modules.push_back(module);
  layers::AnyLinear layer = layers::make_linear(qlr::test::gaussian(rng, n, k), layers::parse_linear_spec("int4-asym-g32"));
  layers::attach_peft(layer, peft, module.name, "qa");
  // PEFT: lora_B(lora_A(avg_pool1d(x, g) · K/g)) · α/r, written out in double.
  const Matrix x = qlr::test::gaussian(rng, 4, k);
  qlr::MatrixD pooled = qlr::MatrixD::Zero(x.rows(), k / g);
  for (index_t i = 0; i < x.rows(); ++i)
    for (index_t c = 0; c < k; ++c) pooled(i, c / g) += double{x(i, c)} / g * static_cast<double>(k / g);
  const qlr::MatrixD ref = x.cast<double>() * layer.dequantized_weight().cast<double>().transpose() +
                           2.0 * pooled * module.a.cast<double>().transpose() * module.b.cast<double>().transpose();
  CHECK((layer.forward(x).cast<double>() - ref).norm() / ref.norm() < 1e-5);
  layers::AnyLinear sym = layers::make_linear(qlr::test::gaussian(rng, n, k), layers::parse_linear_spec("int4-sym-g32"));
  CHECK_THROWS_WITH(layers::attach_peft(sym, peft, module.name, "qa"), Catch::Contains("QA-LoRA on a sym base"));
  peft.modules.front().magnitude = qlr::Vector::Ones(n);
  CHECK_THROWS_WITH(layers::attach_peft(layer, peft, module.name, "qa2"),
                    Catch::Contains("has a DoRA magnitude and use_qalora"));
}

TEST_CASE("attach_peft: a real PEFT adapter on a quantized layer equals the dense oracle",
          "[layers][io]") {
  const auto folder = std::filesystem::path(QLR_SHARED_DATA_DIR) / "adapters" / "qwen2.5-0.5b-r8";
  if (!std::filesystem::exists(folder)) {
    WARN("adapter folder " << folder << " not found: real PEFT adapter test skipped");
    return;
  }
  const qlr::io::PeftAdapter peft = qlr::io::load_peft_adapter(folder);
  const qlr::io::PeftModule& module = peft.modules.front();
  std::mt19937 rng(41);
  const Matrix w = qlr::test::gaussian(rng, module.b.rows(), module.a.cols(), 0.02f);
  layers::AnyLinear layer = layers::make_linear(w, layers::parse_linear_spec("int4-sym-g128"));
  layers::attach_peft(layer, peft, module.name, "peft");
  const Matrix x = qlr::test::gaussian(rng, 3, w.cols());
  const qlr::MatrixD ref =
      x.cast<double>() * (layer.dequantized_weight().cast<double>() +
                          module.scale * module.b.cast<double>() * module.a.cast<double>())
                             .transpose();
  CHECK((layer.forward(x).cast<double>() - ref).norm() / ref.norm() < 1e-5);
  CHECK_THROWS_WITH(layers::attach_peft(layer, peft, "model.nope", "x"),
                    Catch::Contains("module 'model.nope' is not in the adapter"));
}
