// SPDX-License-Identifier: Apache-2.0
// Fine-tuning on the public API: a LoRA adapter trained on a frozen INT4 Llama, on the CPU.
// The loop `qlr finetune` runs, without its flags: load, quantize, attach, forward, loss,
// backward, step, evaluate, save. Copy it and change what you need.
//
// usage: finetune [TEXT] [STEPS] [OUT_DIR]
//   TEXT     training text (default: the vendored Aesop excerpt; its last 10 % validates)
//   STEPS    optimizer steps (default: 60)
//   OUT_DIR  where the PEFT adapter goes (default: none)
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "llama/train.hpp"
#include "qlr/io/peft.hpp"
#include "qlr/model/tokenizer.hpp"
#include "qlr/train/adamw.hpp"
#include "qlr/train/schedule.hpp"

namespace {

std::string read_file(const char* path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(std::string("cannot read ") + path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// `batch` windows of length + 1 tokens at random places of `tokens`.
llama::Batch random_windows(const std::vector<int>& tokens, int batch, int length,
                            std::mt19937_64& rng) {
  llama::Batch b{{}, {}, batch, length};
  std::uniform_int_distribution<std::size_t> start(0, tokens.size() - length - 1);
  for (int i = 0; i < batch; ++i) {
    const auto at = tokens.begin() + static_cast<std::ptrdiff_t>(start(rng));
    b.tokens.insert(b.tokens.end(), at, at + length + 1);
  }
  return b;
}

/// Mean NLL of `tokens` in consecutive windows of length + 1 (no dropout, no gradients).
double evaluate(llama::TrainableModel<float>& model, const std::vector<int>& tokens, int length) {
  double total = 0;
  int windows = 0;
  for (std::size_t at = 0; at + length + 1 <= tokens.size(); at += length + 1, ++windows) {
    llama::Batch b{{tokens.begin() + at, tokens.begin() + at + length + 1}, {}, 1, length};
    total += model.forward(b, /*training=*/false);
  }
  return total / windows;
}

}  // namespace

int main(int argc, char** argv) try {
  const char* text_path = argc > 1 ? argv[1] : QLR_DEFAULT_TEXT;
  const int steps = argc > 2 ? std::atoi(argv[2]) : 60;
  const char* out_dir = argc > 3 ? argv[3] : nullptr;
  if (steps < 1) throw std::invalid_argument("STEPS must be >= 1");

  // 1. Load the llama2.c checkpoint and its tokenizer.
  const qlr::io::Llama2cModel checkpoint = qlr::io::load_llama2c(QLR_DEFAULT_MODEL);
  const auto tokenizer = qlr::model::Tokenizer::load(QLR_DEFAULT_TOKENIZER, checkpoint.config.vocab_size);

  // 2. Quantize every block linear to INT4 (asymmetric, groups of 32): the frozen base.
  llama::ModelOptions quantized;
  quantized.linear = qlr::layers::parse_linear_spec("int4-asym-g32");
  const llama::Model base(checkpoint, quantized);

  // 3. Attach a rank-8 LoRA (α = 16) to the seven block linears. B starts at 0, so the model
  //    starts as the base.
  llama::TrainOptions options;
  options.adapter.rank = 8;
  options.adapter.alpha = 16;
  options.adapter.dropout = 0.05;
  llama::TrainableModel<float> model(base, options);

  // 4. The text as tokens; the last 10 % validates.
  const std::vector<int> tokens = llama::story_tokens(tokenizer, read_file(text_path));
  const auto cut = tokens.size() * 9 / 10;
  const std::vector<int> train(tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(cut));
  const std::vector<int> valid(tokens.begin() + static_cast<std::ptrdiff_t>(cut), tokens.end());
  const int length = 128, batch = 8;
  if (train.size() < static_cast<std::size_t>(4 * length) || valid.size() <= static_cast<std::size_t>(length))
    throw std::invalid_argument("the text is too short for windows of 128 tokens");

  // 5. The loop: forward (the loss), backward (the adapters' gradients), clip, AdamW step.
  const qlr::train::ParameterList params = model.parameters();
  qlr::train::AdamW adam(params);
  const qlr::train::WarmupCosineSchedule lr{.peak = 2e-3, .warmup = steps / 10, .total = steps};
  lr.check();
  std::mt19937_64 rng(42);
  std::printf("validation NLL before: %.4f\n", evaluate(model, valid, length));
  for (int step = 0; step < steps; ++step) {
    model.zero_gradients();
    const double loss = model.forward(random_windows(train, batch, length, rng));
    model.backward();
    const double norm = qlr::train::clip_gradient_norm(params, 1.0);
    adam.step(params, lr(step));
    if ((step + 1) % 20 == 0 || step + 1 == steps)
      std::printf("step %3d  loss %.4f  |g| %.3f  lr %.2e\n", step + 1, loss, norm, lr(step));
  }

  // 6. Evaluate and save the adapter as a Hugging Face PEFT folder.
  std::printf("validation NLL after:  %.4f\n", evaluate(model, valid, length));
  if (out_dir) {
    std::vector<std::string> warnings;
    qlr::io::save_peft_adapter(out_dir, llama::to_peft(model, warnings));
    std::printf("adapter saved to %s\n", out_dir);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "finetune: %s\n", e.what());
  return 1;
}
