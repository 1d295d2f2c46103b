// SPDX-License-Identifier: Apache-2.0
// Generation speed of the example engine (examples/llama): one token per forward (M = 1),
// the decode step of an LLM, whose time is reading every weight once.
//   decode/stories260K/<impl>/<setting>/threads:<t>   the vendored model (dim 64: per-call
//                                                     costs decide)
//   decode/synthetic7b/<impl>/<setting>/threads:<t>   two random blocks of a 7B-class model
//                                                     (dim 4096, MLP 11008, 32 heads, vocab
//                                                     512): memory bandwidth decides
//   train/<model>/<setting>/<forward|step>/threads:<t>
//                                                     fine-tuning (examples/llama/train.hpp):
//                                                     the forward of a batch with activations
//                                                     kept, and a whole step (forward,
//                                                     backward, clip, AdamW) with a LoRA on the
//                                                     seven block linears. Models: stories260K
//                                                     and babyllama-tok105 (8 × 256 tokens,
//                                                     rank 8), synthetic7b (one block, 1 × 256
//                                                     tokens, rank 16); settings eigen/fp32
//                                                     and qlr/w4 (int4-asym-g128). Counters:
//                                                     tokens/s, peak_rss_MB.
// Settings: eigen/fp32 (Eigen's GEMV, the peer), qlr/w8a8 (int8-sym-pc+a8), qlr/w4
// (int4-sym-g128, weight-only), qlr/w4a8 (int4-sym-g128+a8). Counters: tokens/s, GBps (weight bytes
// read per second) and weight_MB (bytes one token reads), so speedups compare with byte ratios.
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>

#include "bench_support.hpp"
#include "llama/llama.hpp"
#include "llama/train.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr/train/adamw.hpp"
#include <sys/resource.h>

namespace {

using qlr::index_t;

/// The settings measured: name and the spec of every block layer (none: FP32).
const std::vector<std::pair<std::string, std::optional<std::string>>> settings = {
    {"eigen/fp32", std::nullopt},
    {"qlr/w8a8", "int8-sym-pc+a8"},
    {"qlr/w4", "int4-sym-g128"},
    {"qlr/w4a8", "int4-sym-g128+a8"},
};

/// Two blocks of Llama-2-7B's shapes with N(0, 0.02²) weights and a small vocabulary.
qlr::io::Llama2cModel synthetic_7b() {
  qlr::io::Llama2cModel m;
  m.config = {4096, 11008, 2, 32, 32, 512, 256, true};
  const index_t d = 4096, h = 11008;
  std::uint32_t seed = 1;
  const auto random = [&](index_t rows, index_t cols) {
    return qlr_bench::random_matrix(rows, cols, 0.02f, seed++);
  };
  m.token_embedding = random(512, d);
  for (int l = 0; l < 2; ++l)
    m.layers.push_back({qlr::Vector::Ones(d), random(d, d), random(d, d), random(d, d),
                        random(d, d), qlr::Vector::Ones(d), random(h, d), random(d, h),
                        random(h, d)});
  m.final_norm = qlr::Vector::Ones(d);
  return m;
}

/// The checkpoint a benchmark runs, loaded or built once per process.
const qlr::io::Llama2cModel& checkpoint(bool synthetic) {
  if (synthetic) {
    static const qlr::io::Llama2cModel model = synthetic_7b();
    return model;
  }
  static const qlr::io::Llama2cModel model =
      qlr::io::load_llama2c(std::filesystem::path(QLR_DATA_DIR) / "stories260K" / "stories260K.bin");
  return model;
}

/// Bytes of the block layers' storage one token reads (the classifier stays FP32).
double weight_bytes(const qlr::io::Llama2cModel& m, const llama::Model& model) {
  double params = 0;
  for (const auto& [name, w] : m.linear_weights()) params += static_cast<double>(w->size());
  const double classifier = static_cast<double>(m.config.vocab_size) * m.config.dim;
  return model.bits_per_parameter(false) * params / 8.0 + 4.0 * classifier;
}

void bench_decode(benchmark::State& state, bool synthetic, std::optional<std::string> spec, int threads) {
  qlr::set_num_threads(threads);
  const qlr::io::Llama2cModel& m = checkpoint(synthetic);
  llama::ModelOptions options;
  if (spec) options.linear = qlr::layers::parse_linear_spec(*spec);
  // One model per setting: the 7B-class FP32 copy alone is 1.6 GB.
  const llama::Model& model = qlr_bench::kept_setup<llama::Model>(
      std::string(synthetic ? "7b/" : "260k/") + spec.value_or("fp32"),
      [&] { return llama::Model(m, options); });
  llama::KvCache cache = model.make_cache();
  const int positions = std::min(m.config.seq_len, 128);
  int pos = 0, token = 1;
  for (auto _ : state) {
    const qlr::Matrix logits = model.forward(std::span(&token, 1), pos, cache);
    token = (pos * 37 + 11) % m.config.vocab_size;
    pos = (pos + 1) % positions;  // the cache is overwritten from 0: attention stays short
    benchmark::DoNotOptimize(logits.data());
  }
  const double bytes = weight_bytes(m, model);
  state.counters["tokens_per_s"] = benchmark::Counter(1, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GBps"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["weight_MB"] = bytes / 1e6;
  state.counters["bits_per_param"] = model.bits_per_parameter();
}

/// A model of the train/ benchmarks: the checkpoint, the batch and the adapter rank.
struct TrainCase {
  std::string name;
  const qlr::io::Llama2cModel& (*model)();  // built on first use: the 7B block takes seconds
  int batch, length, rank;
};

/// babyllama-tok105 from ../shared/data.
const qlr::io::Llama2cModel& babyllama() {
  static const qlr::io::Llama2cModel model = qlr::io::load_llama2c(
      std::filesystem::path(QLR_SHARED_DATA_DIR) / "models" / "babyllama-tok105" / "model5000.bin");
  return model;
}

/// One block of the synthetic 7B-class model.
const qlr::io::Llama2cModel& synthetic_block() {
  static const qlr::io::Llama2cModel model = [] {
    qlr::io::Llama2cModel m = synthetic_7b();
    m.layers.resize(1);
    m.config.n_layers = 1;
    return m;
  }();
  return model;
}

/// The train/ benchmarks' models; babyllama only where ../shared/data has it.
std::vector<TrainCase> train_cases() {
  std::vector<TrainCase> cases{{"stories260K",
                                []() -> const qlr::io::Llama2cModel& { return checkpoint(false); },
                                8, 256, 8}};
  if (std::filesystem::exists(std::filesystem::path(QLR_SHARED_DATA_DIR) / "models" /
                              "babyllama-tok105" / "model5000.bin"))
    cases.push_back({"babyllama-tok105", babyllama, 8, 255, 8});
  cases.push_back({"synthetic7b", synthetic_block, 1, 255, 16});
  return cases;
}

/// The forward of a training batch, or a whole step, for LoRA on every block linear.
void bench_train(benchmark::State& state, const TrainCase& c, std::optional<std::string> spec,
                 bool step, int threads) {
  qlr::set_num_threads(threads);
  llama::ModelOptions options;
  if (spec) options.linear = qlr::layers::parse_linear_spec(*spec);
  const llama::Model& model =
      qlr_bench::kept_setup<llama::Model>("train/" + c.name + "/" + spec.value_or("fp32"),
                                          [&] { return llama::Model(c.model(), options); });
  llama::TrainOptions train;
  train.adapter.rank = c.rank;
  train.adapter.alpha = 2.0 * c.rank;
  llama::TrainableModel<float> trainable(model, train);
  const auto params = trainable.parameters();
  qlr::train::AdamW adam(params);
  llama::Batch batch{{}, {}, c.batch, c.length};
  for (int i = 0; i < c.batch * (c.length + 1); ++i)
    batch.tokens.push_back((i * 37 + 11) % c.model().config.vocab_size);
  for (auto _ : state) {
    if (step) trainable.zero_gradients();
    benchmark::DoNotOptimize(trainable.forward(batch, true));
    if (step) {
      trainable.backward();
      qlr::train::clip_gradient_norm(params, 1.0);
      adam.step(params, 1e-4);
    }
  }
  state.counters["tokens_per_s"] = benchmark::Counter(
      static_cast<double>(c.batch * c.length), benchmark::Counter::kIsIterationInvariantRate);
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  state.counters["peak_rss_MB"] = static_cast<double>(usage.ru_maxrss) / 1024.0;
}

void register_all() {
  for (const TrainCase& c : train_cases())
    for (const auto& [name, spec] :
         {std::pair<std::string, std::optional<std::string>>{"eigen/fp32", std::nullopt},
          {"qlr/w4", "int4-asym-g128"}})
      for (const bool step : {false, true})
        for (const int threads : {1, 2}) {
          const std::string full = "train/" + c.name + "/" + name + (step ? "/step" : "/forward") +
                                   "/threads:" + std::to_string(threads);
          benchmark::RegisterBenchmark(full.c_str(), bench_train, c, spec, step, threads)
              ->UseRealTime()
              ->Unit(benchmark::kMillisecond);
        }
  for (const int threads : {1, 2})
    for (const bool synthetic : {false, true})
      for (const auto& [name, spec] : settings) {
        const std::string full = std::string("decode/") + (synthetic ? "synthetic7b/" : "stories260K/") +
                                 name + "/threads:" + std::to_string(threads);
        benchmark::RegisterBenchmark(full.c_str(), bench_decode, synthetic, spec, threads)
            ->UseRealTime()
            ->Unit(synthetic ? benchmark::kMillisecond : benchmark::kMicrosecond);
      }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  return qlr_bench::run_benchmarks(argc, argv);
}
