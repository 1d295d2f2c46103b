// SPDX-License-Identifier: Apache-2.0
// The engine's trainable model (examples/llama/train.hpp): whole-model gradients of every
// adapter tensor in double against central differences, on a random tiny Llama (GQA,
// untied classifier, two blocks, d = 32) over an FP32, an INT4 and a rotated INT4 base; the
// float model against its double twin; B = 0 reproduces the engine's NLL bit for bit on the
// real model; recomputed activations give the same gradients; bad input.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <optional>
#include <random>
#include <string>
#include <variant>
#include <vector>

#include <catch2/catch.hpp>

#include "llama/train.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr/io/peft.hpp"
#include "qlr/model/tokenizer.hpp"
#include "qlr/train/adamw.hpp"
#include "qlr_test_support.hpp"
#include "stories.hpp"

namespace {

using qlr::index_t;
using qlr::Matrix;
using qlr::MatrixD;
using llama::Batch;
using llama::TrainableModel;
using llama::TrainOptions;

/// A random Llama: d = 32, hidden 64, 2 blocks, 4 heads over 2 KV heads, vocab 24, context
/// 8, its own classifier, RMSNorm gains away from 1.
qlr::io::Llama2cModel tiny_llama() {
  qlr::io::Llama2cModel m;
  m.config = {32, 64, 2, 4, 2, 24, 8, false};
  std::mt19937 rng(5);
  const auto random = [&](index_t rows, index_t cols, float sigma) {
    return qlr::test::gaussian(rng, rows, cols, sigma);
  };
  const auto gains = [&](index_t n) -> qlr::Vector {
    return (1.0f + 0.5f * random(n, 1, 1.0f).array().tanh()).matrix();
  };
  const int d = 32, h = 64, kv = m.config.kv_dim(), v = 24;
  m.token_embedding = random(v, d, 1.0f);
  for (int l = 0; l < 2; ++l)
    m.layers.push_back({gains(d), random(d, d, 0.3f), random(kv, d, 0.3f), random(kv, d, 0.3f),
                        random(d, d, 0.3f), gains(d), random(h, d, 0.3f), random(d, h, 0.2f),
                        random(h, d, 0.3f)});
  m.final_norm = gains(d);
  m.classifier = random(v, d, 0.4f);
  return m;
}

/// `sequences` random sequences of `length` + 1 tokens (vocabulary of 24).
Batch random_batch(index_t sequences, index_t length, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> id(0, 23);
  Batch b{{}, {}, sequences, length};
  for (index_t i = 0; i < sequences * (length + 1); ++i) b.tokens.push_back(id(rng));
  return b;
}

/// Sets every adapter's A and B (and DoRA's m) to random values, so that every gradient is
/// non-zero.
template <class T>
void randomize_adapters(TrainableModel<T>& model, std::uint32_t seed) {
  std::mt19937 rng(seed);
  for (index_t l = 0; l < 2; ++l) {
    for (const std::string_view module : llama::target_modules) {
      auto& f = model.linear(l, module);
      for (const auto& s : f.adapters()) {
        const Matrix a = qlr::test::gaussian(rng, s.a.rows(), s.a.cols(), 0.3f);
        const Matrix b = qlr::test::gaussian(rng, s.b.rows(), s.b.cols(), 0.3f);
        qlr::Vector m = s.magnitude;
        if (m.size() != 0) m.array() *= 1.0f + 0.2f * qlr::test::gaussian(rng, m.size(), 1).array();
        f.set_values(s.name, a.template cast<T>(), b.template cast<T>(), m.template cast<T>());
      }
    }
  }
}

/// Checks every adapter tensor's gradient of the double twin against central differences
/// (h = 1e-5): per tensor ‖g − g_fd‖ / ‖g_fd‖ ≤ 1e-6.
void check_gradients(TrainableModel<double>& model, const Batch& batch) {
  model.zero_gradients();
  model.forward(batch, false);
  model.backward();
  const double h = 1e-5;
  for (index_t l = 0; l < 2; ++l) {
    for (const std::string_view module : llama::target_modules) {
      auto& f = model.linear(l, module);
      if (f.adapters().empty()) continue;
      f.hold_dora_norms(true);  // the function backward differentiates: n detached (§5.2)
      const auto& s = f.adapters()[0];
      const std::string name = s.name;
      const MatrixD a0 = s.a, b0 = s.b, ga = s.grad_a, gb = s.grad_b;
      const Eigen::VectorXd m0 = s.magnitude, gm = s.grad_magnitude;
      const auto loss_at = [&](const MatrixD& a, const MatrixD& b, const Eigen::VectorXd& m) {
        f.set_values(name, a, b, m);
        return model.forward(batch, false);
      };
      const auto fd_of = [&](int which, const auto& value) {
        auto fd = value;
        for (index_t i = 0; i < value.size(); ++i) {
          auto plus = value, minus = value;
          plus.data()[i] += h;
          minus.data()[i] -= h;
          const double up = which == 0   ? loss_at(plus, b0, m0)
                            : which == 1 ? loss_at(a0, plus, m0)
                                         : loss_at(a0, b0, plus);
          const double down = which == 0   ? loss_at(minus, b0, m0)
                              : which == 1 ? loss_at(a0, minus, m0)
                                           : loss_at(a0, b0, minus);
          fd.data()[i] = (up - down) / (2 * h);
        }
        f.set_values(name, a0, b0, m0);
        return fd;
      };
      CAPTURE(l, module);
      const MatrixD fd_a = fd_of(0, a0), fd_b = fd_of(1, b0);
      CHECK((ga - fd_a).norm() <= 1e-6 * fd_a.norm());
      CHECK((gb - fd_b).norm() <= 1e-6 * fd_b.norm());
      CHECK(fd_a.norm() > 0);
      if (m0.size() != 0) {
        const Eigen::VectorXd fd_m = fd_of(2, m0);
        CHECK((gm - fd_m).norm() <= 1e-6 * fd_m.norm());
      }
      f.hold_dora_norms(false);
    }
  }
}

/// The float model's gradients, in parameters() order.
std::vector<std::vector<float>> gradients(TrainableModel<float>& model) {
  std::vector<std::vector<float>> out;
  for (const auto& p : model.parameters()) out.emplace_back(p.grad.begin(), p.grad.end());
  return out;
}

/// The tokens of vendored text data/<text> under stories260K's tokenizer.
std::vector<int> story_tokens(const qlr::model::Tokenizer& tokenizer, const char* text) {
  return llama::story_tokens(tokenizer,
                             qlr::test::read_text(std::filesystem::path(QLR_DATA_DIR) / text));
}

}  // namespace

TEST_CASE("TrainableModel: whole-model gradients against central differences in double",
          "[train][model]") {
  const auto checkpoint = tiny_llama();
  struct Case {
    const char* name;
    const char* spec;  // empty: FP32
    llama::RotationKind rotation;
    qlr::train::AdapterKind kind;
  };
  using K = qlr::train::AdapterKind;
  using R = llama::RotationKind;
  const Case c = GENERATE(Case{"fp32", "", R::none, K::lora},
                          Case{"int4", "int4-asym-g32", R::none, K::lora},
                          Case{"rotated int4", "int4-asym-g32", R::randomized_hadamard, K::lora},
                          Case{"int4 dora", "int4-asym-g32", R::none, K::dora},
                          Case{"int4 qa-lora", "int4-asym-g32", R::none, K::qa_lora});
  CAPTURE(c.name);
  llama::ModelOptions options;
  if (*c.spec) options.linear = qlr::layers::parse_linear_spec(c.spec);
  options.rotation = c.rotation;
  options.rotation_seed = 3;
  const llama::Model base(checkpoint, options);
  TrainOptions train;
  train.adapter.kind = c.kind;
  train.adapter.rank = 2;
  train.adapter.alpha = 4;
  TrainableModel<float> model(base, train);
  randomize_adapters(model, 9);
  const Batch batch = random_batch(2, 6, 1);

  TrainableModel<double> twin(model);
  check_gradients(twin, batch);

  // The float model (the real quantized kernels) against its double twin.
  model.zero_gradients();
  twin.zero_gradients();
  const double loss = model.forward(batch, false);
  const double loss_d = twin.forward(batch, false);
  CHECK(loss == Approx(loss_d).epsilon(1e-5));
  model.backward();
  twin.backward();
  for (index_t l = 0; l < 2; ++l) {
    for (const std::string_view module : llama::target_modules) {
      const auto& s = model.linear(l, module).adapters()[0];
      const auto& sd = twin.linear(l, module).adapters()[0];
      CAPTURE(l, module);
      CHECK((s.grad_a.cast<double>() - sd.grad_a).norm() <= 1e-4 * sd.grad_a.norm());
      CHECK((s.grad_b.cast<double>() - sd.grad_b).norm() <= 1e-4 * sd.grad_b.norm());
    }
  }
}

TEST_CASE("TrainableModel: a mutated gradient fails the check", "[train][model]") {
  // The check above compares per tensor at 1e-6; a sign flip in one term of the attention
  // backward (dk's) moves the wk gradients far past it: this test computes both and requires
  // the difference, so the comparison can fail.
  const llama::Model base(tiny_llama());
  TrainOptions train;
  train.adapter.rank = 2;
  TrainableModel<float> model(base, train);
  randomize_adapters(model, 2);
  TrainableModel<double> twin(model);
  const Batch batch = random_batch(1, 5, 3);
  twin.forward(batch, false);
  twin.backward();
  auto& f = twin.linear(1, "k_proj");
  const MatrixD g = f.adapters()[0].grad_b;
  const MatrixD a = f.adapters()[0].a, b = f.adapters()[0].b;
  // Central differences of one entry, against the analytic value and its negation.
  const double h = 1e-5;
  MatrixD plus = b, minus = b;
  plus(0, 0) += h;
  minus(0, 0) -= h;
  f.set_values("default", a, plus);
  const double up = twin.forward(batch, false);
  f.set_values("default", a, minus);
  const double down = twin.forward(batch, false);
  const double fd = (up - down) / (2 * h);
  CHECK(std::abs(g(0, 0) - fd) <= 1e-6 * std::abs(fd) + 1e-12);
  CHECK(std::abs(-g(0, 0) - fd) > 1e-6 * std::abs(fd));
}

TEST_CASE("TrainableModel: recomputed activations give the same gradients, with less memory",
          "[train][model]") {
  const llama::Model base(tiny_llama(), {.linear = qlr::layers::parse_linear_spec("int4-asym-g32")});
  TrainOptions train;
  train.adapter.rank = 4;
  train.adapter.dropout = 0.25;
  TrainableModel<float> kept(base, train);
  train.recompute = true;
  TrainableModel<float> recomputed(base, train);
  randomize_adapters(kept, 4);
  randomize_adapters(recomputed, 4);
  const Batch batch = random_batch(3, 8, 5);
  const double loss = kept.forward(batch, true);
  const std::size_t kept_bytes = kept.activation_bytes();
  kept.backward();
  CHECK(recomputed.forward(batch, true) == loss);
  CHECK(recomputed.activation_bytes() < kept_bytes / 2);
  recomputed.backward();
  CHECK(gradients(recomputed) == gradients(kept));
}

TEST_CASE("TrainableModel: 1 and 2 threads give the same loss and gradients bit for bit",
          "[train][model]") {
  const llama::Model base(tiny_llama(), {.linear = qlr::layers::parse_linear_spec("int4-asym-g32")});
  TrainOptions train;
  train.adapter.dropout = 0.1;
  const int saved = qlr::num_threads();
  const auto run = [&](int threads) {
    qlr::set_num_threads(threads);
    TrainableModel<float> model(base, train);
    randomize_adapters(model, 6);
    const double loss = model.forward(random_batch(4, 8, 7), true);
    model.backward();
    return std::pair{loss, gradients(model)};
  };
  const auto one = run(1);
  const auto two = run(2);
  qlr::set_num_threads(saved);
  CHECK(one.first == two.first);
  CHECK(one.second == two.second);
}

TEST_CASE("TrainableModel: with B = 0 the NLL is the engine's, bit for bit (stories260K)",
          "[train][model]") {
  const auto s = qlr::test::load_stories("the B = 0 check");
  if (!s) return;
  const auto& checkpoint = s->checkpoint;
  const std::vector<int> tokens =
      story_tokens(s->tokenizer, "tinystories/tinystories_valid_head.txt");
  const char* spec = GENERATE("", "int4-asym-g32", "nf4-g64");
  CAPTURE(spec);
  llama::ModelOptions options;
  if (*spec) options.linear = qlr::layers::parse_linear_spec(spec);
  const llama::Model base(checkpoint, options);
  TrainableModel<float> model(base, TrainOptions{});
  const index_t window = 65;
  for (index_t w = 0; w < 3; ++w) {
    const std::span<const int> piece(tokens.data() + w * window, window);
    Batch batch{{piece.begin(), piece.end()}, {}, 1, window - 1};
    const double nll = model.forward(batch, false);
    CHECK(nll == llama::score_windows(base, piece, static_cast<int>(window)).nll);
  }
}

TEST_CASE(
    "TrainableModel: a saved PEFT folder reads back to the same logits, and runs in the engine",
    "[train][model][peft]") {
  using K = qlr::train::AdapterKind;
  const K kind = GENERATE(K::lora, K::dora, K::qa_lora);
  CAPTURE(static_cast<int>(kind));
  const auto checkpoint = tiny_llama();
  const llama::ModelOptions spec{.linear = qlr::layers::parse_linear_spec("int4-asym-g32")};
  const llama::Model base(checkpoint, spec);
  TrainOptions train;
  train.adapter.kind = kind;
  train.adapter.rank = 4;
  train.adapter.scaling = qlr::adapter::Scaling::rank_stabilized;
  TrainableModel<float> model(base, train);
  randomize_adapters(model, 12);
  const Batch batch = random_batch(1, 8, 2);
  model.forward(batch, false);
  const Matrix logits = model.logits();

  std::vector<std::string> warnings;
  const auto folder = std::filesystem::temp_directory_path() /
                      ("qlr_peft_roundtrip_" + std::to_string(static_cast<int>(kind)));
  qlr::io::save_peft_adapter(folder, llama::to_peft(model, warnings));
  CHECK(warnings.empty());
  const qlr::io::PeftAdapter loaded = qlr::io::load_peft_adapter(folder);
  CHECK(loaded.config.use_rslora);
  CHECK(loaded.config.rope_pairs == "adjacent");  // llama2.c's q/k rows
  CHECK(loaded.modules.size() == 14);
  TrainableModel<float> again(base, llama::options_from_peft(loaded.config, loaded.modules, {}));
  llama::set_from_peft(again, loaded);
  again.forward(batch, false);
  CHECK(qlr::test::bitwise_equal(again.logits(), logits));

  // The engine with the adapter beside its quantized layers: the same function.
  llama::Model engine(checkpoint, spec);
  engine.add_adapter(loaded);
  llama::KvCache cache = engine.make_cache();
  const Matrix served = engine.forward(
      std::span(batch.tokens).first(static_cast<std::size_t>(batch.length)), 0, cache);
  CHECK((served - logits).norm() <= 1e-5f * logits.norm());
  std::filesystem::remove_all(folder);
}

TEST_CASE("merge_adapters: QA-LoRA trained on stories260K merges into the zero points losslessly",
          "[train][model][merge]") {
  const auto s = qlr::test::load_stories("the QA-LoRA merge check");
  if (!s) return;
  const auto& checkpoint = s->checkpoint;
  const std::vector<int> tokens = story_tokens(s->tokenizer, "aesop/aesop_excerpt.txt");
  const llama::ModelOptions spec{.linear = qlr::layers::parse_linear_spec("int4-asym-g32")};
  const llama::Model base(checkpoint, spec);
  using K = qlr::train::AdapterKind;
  const K kind = GENERATE(K::qa_lora, K::lora);
  CAPTURE(static_cast<int>(kind));
  TrainOptions train;
  train.adapter.kind = kind;
  TrainableModel<float> model(base, train);
  // A few AdamW steps on Aesop windows: trained factors, not a random start.
  const auto params = model.parameters();
  qlr::train::AdamW adam(params);
  const auto window = [&](index_t at, index_t length) {
    return Batch{{tokens.begin() + at, tokens.begin() + at + length + 1}, {}, 1, length};
  };
  for (int step = 0; step < 3; ++step) {
    model.zero_gradients();
    model.forward(window(1000 + 300 * step, 128), true);
    model.backward();
    adam.step(params, 1e-2);
  }
  const Batch held_out = window(5000, 128);
  const double unmerged = model.forward(held_out, false);

  llama::MergedLayers merged = llama::merge_adapters(model);
  CHECK(merged.layers.size() == 35);
  if (kind == K::qa_lora) {
    CHECK(merged.reports.empty());
    // Codes and scales byte for byte the base's: only the zero points moved.
    for (index_t l = 0; l < 5; ++l) {
      const auto& engine = base.blocks()[static_cast<std::size_t>(l)];
      const qlr::layers::AnyLinear& before = *engine.wq.quantized();
      const auto after = merged.layers.at(llama::module_path(l, "q_proj")).base();
      std::visit(
          [&](const auto& a, const auto& b) {
            CHECK(
                std::equal(a.codes().begin(), a.codes().end(), b.codes().begin(), b.codes().end()));
            CHECK(std::equal(a.scales().begin(), a.scales().end(), b.scales().begin(),
                             b.scales().end()));
            CHECK(!std::equal(a.zeros().begin(), a.zeros().end(), b.zeros().begin(),
                              b.zeros().end()));
          },
          before.base(), after);
    }
  } else {
    CHECK(merged.reports.size() == 35);
    // Into another spec (QLoRA's merge then PTQ): every layer in it, adapted or not.
    const auto int3 = qlr::layers::parse_linear_spec("int3-asym-g32");
    const llama::MergedLayers into = llama::merge_adapters(model, int3);
    CHECK(into.reports.size() == 35);
    for (const auto& [path, layer] : into.layers)
      CHECK(qlr::layers::to_string(layer.spec()) == "int3-asym-g32");
  }
  if (kind == K::qa_lora)
    CHECK_THROWS_WITH(llama::merge_adapters(model, qlr::layers::parse_linear_spec("int3-asym-g32")),
                      Catch::Contains("expected its base's own spec int4-asym-g32"));
  llama::Model served(checkpoint, spec);
  served.replace_layers(std::move(merged.layers));
  const double nll = llama::score_windows(served, std::span(held_out.tokens),
                                          static_cast<int>(held_out.tokens.size()))
                         .nll;
  CAPTURE(unmerged, nll);
  if (kind == K::qa_lora)
    CHECK(std::abs(nll - unmerged) <= 1e-5);
  else
    CHECK(std::abs(nll - unmerged) <= 0.1);  // requantized, lossy: measured 0.053 (lower)
}

TEST_CASE("error_start: LoftQ and EoRA start an INT2 stories260K nearer the FP32 model",
          "[train][model][init]") {
  const auto s = qlr::test::load_stories("the LoftQ/EoRA start check");
  if (!s) return;
  const auto& checkpoint = s->checkpoint;
  const std::vector<int> tokens = story_tokens(s->tokenizer, "aesop/aesop_excerpt.txt");
  const llama::ModelOptions spec{.linear = qlr::layers::parse_linear_spec("int2-asym-g32")};
  const llama::Model fp32(checkpoint);
  // Held out: the 4 windows after the 4096 calibration tokens.
  Batch held_out{{}, {}, 4, 256};
  for (index_t b = 0; b < 4; ++b)
    held_out.tokens.insert(held_out.tokens.end(), tokens.begin() + 4096 + 257 * b,
                           tokens.begin() + 4096 + 257 * (b + 1));
  const auto nll_of = [&](const llama::Model& base, const TrainOptions& train,
                          const llama::ErrorStart* start) {
    TrainableModel<float> model(base, train);
    if (start) llama::set_error_start(model, *start);
    return model.forward(held_out, false);
  };
  const double nll_fp32 = nll_of(fp32, {}, nullptr);
  const llama::Model rtn(checkpoint, spec);
  const double nll_rtn = nll_of(rtn, {}, nullptr);

  const std::vector<int> calibration_tokens(tokens.begin(), tokens.begin() + 4096);
  const auto statistics = llama::calibrate(fp32, calibration_tokens, 256);
  REQUIRE(statistics);
  // The start's NLL on held_out, and its weight error Σ‖W − Ŵ − s·B·A‖² over the layers.
  const auto start_of = [&](const TrainOptions& train, int iterations, bool eora) {
    llama::ErrorStart start =
        llama::error_start(fp32, *spec.linear, train, iterations, eora ? &*statistics : nullptr);
    CHECK(start.factors.size() == 35);
    const auto scale =
        static_cast<float>(train.adapter.alpha / static_cast<double>(train.adapter.rank));
    double error = 0;
    for (index_t l = 0; l < 5; ++l) {
      const auto& block = fp32.blocks()[static_cast<std::size_t>(l)];
      const std::string path = llama::module_path(l, "q_proj");
      const Matrix w_hat = start.bases.at(path).dequantized_weight();
      const auto& f = start.factors.at(path);
      error += (block.wq.dense() - w_hat - scale * (f.b * f.a)).squaredNorm();
      if (iterations == 1)  // one alternation keeps the round-to-nearest base, bit for bit
        CHECK(qlr::test::bitwise_equal(
            w_hat, rtn.blocks()[static_cast<std::size_t>(l)].wq.quantized()->dequantized_weight()));
    }
    llama::Model base(checkpoint, spec);
    base.replace_layers(std::move(start.bases));
    return std::pair{nll_of(base, train, &start), error};
  };
  const auto [loftq, loftq_error] = start_of({}, 1, false);
  const auto [loftq3, loftq3_error] = start_of({}, 3, false);
  const auto [eora, eora_error] = start_of({}, 1, true);
  TrainOptions dora;
  dora.adapter.kind = qlr::train::AdapterKind::dora;
  const double loftq_dora = start_of(dora, 1, false).first;
  CAPTURE(nll_fp32, nll_rtn, loftq, loftq3, eora, loftq_dora, loftq_error, loftq3_error,
          eora_error);
  // Measured on 4 held-out windows: FP32 4.03, RTN 6.70, LoftQ 5.53 (T = 3: 5.53), EoRA 5.38;
  // q_proj weight errors: LoftQ 64.0, T = 3 58.8, EoRA 76.4.
  CHECK(loftq < nll_rtn - 0.5);
  CHECK(loftq3 < nll_rtn - 0.5);
  CHECK(loftq3_error < loftq_error);  // what LoftQ's alternation minimizes
  CHECK(eora < loftq - 0.05);         // the eigenspace weights the directions inputs take
  CHECK(eora > nll_fp32);
  CHECK(eora_error > loftq_error);  // ... at the cost of plain weight error
  // DoRA's m = ‖Ŵ + s·B·A‖ makes c = 1: the same function as LoRA's start.
  CHECK(std::abs(loftq_dora - loftq) <= 1e-5);

  TrainOptions qa;
  qa.adapter.kind = qlr::train::AdapterKind::qa_lora;
  CHECK_THROWS_WITH(llama::error_start(fp32, *spec.linear, qa, 1),
                    Catch::Contains("QA-LoRA") && Catch::Contains("expected LoRA"));
  CHECK_THROWS_WITH(llama::error_start(rtn, *spec.linear, {}, 1),
                    Catch::Contains("is quantized; expected the FP32 model"));
  CHECK_THROWS_WITH(llama::error_start(fp32, *spec.linear, {}, 0),
                    Catch::Contains("iterations = 0"));
}

TEST_CASE("TrainableModel: bad targets, batches and order are qlr::Errors", "[train][model]") {
  const llama::Model base(tiny_llama());
  TrainOptions train;
  train.targets = {"q_proj", "wq"};
  CHECK_THROWS_WITH(TrainableModel<float>(base, train),
                    Catch::Contains("target module 'wq'") && Catch::Contains("q_proj, k_proj"));
  train.targets.clear();
  CHECK_THROWS_WITH(TrainableModel<float>(base, train), Catch::Contains("no target module"));
  train.targets = {"down_proj"};
  train.adapter.rank = 0;
  CHECK_THROWS_WITH(TrainableModel<float>(base, train), Catch::Contains("rank = 0"));
  train.adapter.rank = 2;
  TrainableModel<float> model(base, train);
  CHECK_THROWS_WITH(model.backward(), Catch::Contains("expected forward() first"));
  Batch batch = random_batch(1, 9, 1);  // past the context of 8
  CHECK_THROWS_WITH(model.forward(batch), Catch::Contains("seq_len = 8"));
  batch = random_batch(2, 4, 1);
  batch.tokens[3] = 24;
  CHECK_THROWS_WITH(model.forward(batch), Catch::Contains("token 3 = 24"));
  batch = random_batch(2, 4, 1);
  batch.tokens.pop_back();
  CHECK_THROWS_WITH(model.forward(batch), Catch::Contains("expected sequences x (length + 1) = 10"));
  batch = random_batch(2, 4, 1);
  batch.counted.assign(8, 0);
  CHECK_THROWS_WITH(model.forward(batch), Catch::Contains("every target is masked out"));
  CHECK_THROWS_WITH(model.linear(0, "w2"), Catch::Contains("'w2'"));
  CHECK_THROWS_WITH(model.linear(2, "q_proj"), Catch::Contains("block = 2"));
}
