// SPDX-License-Identifier: Apache-2.0
// The example engine (examples/llama) and qlr's llama2.c tokenizer against the oracles of
// ../shared/data/SOURCE.md: run.c's encodings, the logits after BOS, the greedy story token
// for token, and the FP32 NLL on the TinyStories slice under its protocol.
#include "llama/llama.hpp"

#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "qlr/compensate/eora.hpp"
#include "qlr/compensate/gptq.hpp"
#include "qlr/model/tokenizer.hpp"
#include "qlr/quant/spec.hpp"
#include "qlr_test_support.hpp"
#include "stories.hpp"

namespace {

using qlr::model::Tokenizer;

/// run.c's merge loop as written: rescan all pairs, merge the best (leftmost on ties).
std::vector<int> naive_encode(const Tokenizer& t, std::string_view text) {
  std::vector<int> ids;
  if (!text.empty()) ids.push_back(t.find(" "));
  for (std::size_t i = 0; i < text.size();) {
    std::size_t end = i + 1;
    while (end < text.size() && end - i < 4 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80)
      ++end;
    const int id = t.find(text.substr(i, end - i));
    if (id >= 0)
      ids.push_back(id);
    else
      for (std::size_t b = i; b < end; ++b) ids.push_back(static_cast<unsigned char>(text[b]) + 3);
    i = end;
  }
  for (;;) {
    float best = -1e10f;
    int best_id = -1;
    std::size_t best_at = 0;
    for (std::size_t i = 0; i + 1 < ids.size(); ++i) {
      const int id = t.find(t.piece(ids[i]) + t.piece(ids[i + 1]));
      if (id >= 0 && t.score(id) > best) {
        best = t.score(id);
        best_id = id;
        best_at = i;
      }
    }
    if (best_id < 0) break;
    ids[best_at] = best_id;
    ids.erase(ids.begin() + static_cast<std::ptrdiff_t>(best_at) + 1);
  }
  return ids;
}

}  // namespace

TEST_CASE("tokenizer: run.c's encodings of SOURCE.md", "[model][tokenizer]") {
  const auto path = qlr::test::tok512_path();
  if (!path) return;
  const Tokenizer t = Tokenizer::load(*path, 512);
  CHECK(t.vocab_size() == 512);
  CHECK(t.encode("Once upon a time") == std::vector<int>{1, 403, 407, 261, 378});
  CHECK(t.encode("Hello world!\n") == std::vector<int>{1, 346, 306, 414, 263, 304, 341, 443, 13});
  CHECK(t.encode("") == std::vector<int>{1});
  CHECK(t.encode("", false, true) == std::vector<int>{2});
  CHECK(t.decode(t.encode("Once upon a time, Lily saw a cat.")) == "Once upon a time, Lily saw a cat.");
  CHECK(t.decode(1, 13) == "\n");  // a raw byte piece "<0x0A>"
}

TEST_CASE("tokenizer: the heap's merges equal run.c's rescans", "[model][tokenizer]") {
  const auto path = qlr::test::tok512_path();
  if (!path) return;
  const Tokenizer t = Tokenizer::load(*path, 512);
  std::mt19937 rng(7);
  const std::string alphabet = "abcdeilnorst ,.\n\"'AOT\xc3\xa9\xe2\x80\x94\x80";
  for (int trial = 0; trial < 300; ++trial) {
    std::string text;
    const int length = std::uniform_int_distribution<int>(0, 80)(rng);
    for (int i = 0; i < length; ++i)
      text += alphabet[std::uniform_int_distribution<std::size_t>(0, alphabet.size() - 1)(rng)];
    CAPTURE(text);
    std::vector<int> fast = t.encode(text, false);
    CHECK(fast == naive_encode(t, text));
  }
  const std::string story =
      qlr::test::read_text(std::filesystem::path(*path).parent_path() / "SOURCE.md");
  CHECK(t.encode(story.substr(0, 3000), false) == naive_encode(t, story.substr(0, 3000)));
}

TEST_CASE("tokenizer: damaged files are refused with what is wrong", "[model][tokenizer]") {
  const auto path = qlr::test::tok512_path();
  if (!path) return;
  const std::string bytes = qlr::test::read_text(*path);
  const auto parse = [](const std::string& b, int vocab) {
    return Tokenizer::parse(std::as_bytes(std::span(b.data(), b.size())), vocab);
  };
  CHECK_NOTHROW(parse(bytes, 512));
  CHECK_THROWS_WITH(parse(bytes.substr(0, 3), 512), Catch::Contains("inside the header"));
  CHECK_THROWS_WITH(parse(bytes.substr(0, bytes.size() - 1), 512),
                    Catch::Contains("piece 511 needs bytes"));
  CHECK_THROWS_WITH(parse(bytes, 300), Catch::Contains("follow the 300 pieces"));
  CHECK_THROWS_WITH(parse(bytes, 3), Catch::Contains("vocab_size = 3; expected 4"));
  CHECK_THROWS_WITH(parse(bytes, 100), Catch::Contains("follow the 100 pieces"));
  std::string bad = bytes;
  const std::int32_t huge = 1 << 30;
  std::memcpy(bad.data() + 8, &huge, 4);  // piece 0's length
  CHECK_THROWS_WITH(parse(bad, 512), Catch::Contains("piece 0 has length 1073741824"));
  std::memcpy(bad.data(), &huge, 4);  // max_token_length
  CHECK_THROWS_WITH(parse(bad, 512), Catch::Contains("max_token_length = 1073741824"));
  const Tokenizer t = parse(bytes, 512);
  CHECK_THROWS_WITH(t.piece(512), Catch::Contains("token id = 512; expected 0 <= id < vocab_size = 512"));
  CHECK_THROWS_AS(Tokenizer::load("/nonexistent/tok.bin", 512), qlr::Error);
}

TEST_CASE("llama: FP32 logits after BOS and the greedy story are llama2.c's", "[model][llama]") {
  const auto s = qlr::test::load_stories("the llama2.c oracles");
  if (!s) return;
  const llama::Model model(s->checkpoint);
  llama::KvCache cache = model.make_cache();
  const int bos = Tokenizer::bos;
  const qlr::Matrix logits = model.forward(std::span(&bos, 1), 0, cache);
  std::vector<int> order(512);
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + 5, order.end(),
                    [&](int a, int b) { return logits(0, a) > logits(0, b); });
  CHECK(std::vector<int>(order.begin(), order.begin() + 5) == std::vector<int>{403, 385, 410, 317, 407});
  CHECK(logits(0, 403) == Approx(17.0235).margin(1e-3));
  CHECK(logits(0, 385) == Approx(15.4062).margin(1e-3));
  CHECK(logits.sum() == Approx(-1070.172).margin(1e-2));
  CHECK(logits.norm() == Approx(128.110).margin(1e-2));

  llama::Sampler greedy(0.0f, 0.9f, 1);
  std::string text;
  const std::vector<int> tokens =
      llama::generate(model, s->tokenizer, "", 256, greedy, [&](const std::string& t) { text += t; });
  CHECK(std::vector<int>(tokens.begin(), tokens.begin() + 20) ==
        std::vector<int>{1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317,
                         426, 338, 401, 396, 267});
  CHECK(text.starts_with("Once upon a time, there was a little girl named Lily. She loved to play "
                         "outside in the park. One day, she saw a big, red ball. She wanted to play "
                         "with it, but it was too high.\n"));
  CHECK(text.ends_with("Her mom said, \"Don't worry, Lily. We can help you."));
  CHECK(tokens.size() == 257);  // BOS and a token from each of the 256 positions
}

TEST_CASE("llama: an NF4 model holds its block layers in at most 5.25 bits per weight",
          "[model][llama][memory]") {
  const auto s = qlr::test::load_stories("the NF4 memory check");
  if (!s) return;
  const qlr::io::Llama2cConfig& c = s->checkpoint.config;
  // wq, wo: dim x dim; wk, wv: kv_dim x dim; w1, w3: hidden x dim; w2: dim x hidden.
  const auto weights = static_cast<double>(
      c.n_layers * (2 * c.dim * c.dim + 2 * c.kv_dim() * c.dim + 3 * c.hidden_dim * c.dim));
  const llama::Model fp32(s->checkpoint);
  CHECK(static_cast<double>(fp32.weight_bytes(false)) == 4.0 * weights);
  llama::ModelOptions options;
  options.linear = qlr::layers::parse_linear_spec("nf4-g64");
  const llama::Model nf4(s->checkpoint, options);
  const double bits = 8.0 * static_cast<double>(nf4.weight_bytes(false)) / weights;
  CAPTURE(bits, nf4.bits_per_parameter(false));
  CHECK(nf4.bits_per_parameter(false) == Approx(4.5).margin(0.02));  // codes + f32 absmax / 64
  // The SIMD kernels' form pads rows to panels of 16 and K to whole blocks, and each layer
  // keeps a few hundred bytes of bookkeeping: ~0.6 bits a weight on these 64-wide layers
  // (5.13 measured), ~0 on an LLM's; an FP32 copy would add 32.
  CHECK(bits <= 5.25);
}

TEST_CASE("llama: a block of tokens equals feeding them one at a time", "[model][llama]") {
  const auto s = qlr::test::load_stories("the block forward check");
  if (!s) return;
  for (const bool quantized : {false, true}) {
    CAPTURE(quantized);
    llama::ModelOptions options;
    if (quantized) options.linear = qlr::layers::parse_linear_spec("int4-sym-g32+a8");
    const llama::Model model(s->checkpoint, options);
    const std::vector<int> tokens = s->tokenizer.encode("Once upon a time, Tom had a big dog.");
    llama::KvCache block_cache = model.make_cache(), step_cache = model.make_cache();
    // Two blocks (a prompt, then its continuation) against single steps.
    const auto half = static_cast<std::ptrdiff_t>(tokens.size() / 2);
    const qlr::Matrix first = model.forward(std::span(tokens).first(half), 0, block_cache);
    const qlr::Matrix second = model.forward(std::span(tokens).subspan(half), static_cast<int>(half), block_cache);
    for (std::size_t t = 0; t < tokens.size(); ++t) {
      const qlr::Matrix one = model.forward(std::span(tokens).subspan(t, 1), static_cast<int>(t), step_cache);
      const auto row = t < static_cast<std::size_t>(half) ? first.row(static_cast<qlr::index_t>(t))
                                                          : second.row(static_cast<qlr::index_t>(t) - half);
      CHECK((row - one.row(0)).cwiseAbs().maxCoeff() <= 1e-4f * (1.0f + one.cwiseAbs().maxCoeff()));
    }
  }
  const llama::Model model(s->checkpoint);
  llama::KvCache cache = model.make_cache();
  const int bad = 512;
  CHECK_THROWS_WITH(model.forward(std::span(&bad, 1), 0, cache),
                    Catch::Contains("token 0 = 512; expected 0 <= id < vocab_size = 512"));
  const int ok = 1;
  CHECK_THROWS_WITH(model.forward(std::span(&ok, 1), 512, cache),
                    Catch::Contains("positions [512, 513); expected 1 or more inside [0, seq_len = 512)"));
}

TEST_CASE(
    "llama: babyllama-tok105, a character vocabulary without byte pieces: SOURCE.md's encoding, "
    "logits, greedy story and NLL",
    "[model][llama]") {
  const auto folder = std::filesystem::path(QLR_SHARED_DATA_DIR) / "models" / "babyllama-tok105";
  if (!std::filesystem::exists(folder / "model5000.bin")) {
    WARN("../shared/data/models/babyllama-tok105 not found: its oracles are skipped");
    return;
  }
  const auto checkpoint = qlr::io::load_llama2c(folder / "model5000.bin");
  const Tokenizer tokenizer = Tokenizer::load(folder / "tok105.bin", checkpoint.config.vocab_size);
  CHECK(!tokenizer.byte_fallback());
  CHECK(tokenizer.encode("Once upon a time") ==
        std::vector<int>{1, 3, 34, 9, 22, 4, 3, 18, 20, 7, 9, 3, 5, 3, 6, 10, 16, 4});
  // A character outside the vocabulary is <unk>, one per code point (SentencePiece without
  // byte fallback).
  CHECK(tokenizer.find("\n") == -1);
  CHECK(tokenizer.encode("\n\xe4\xb8\xad", false) ==
        std::vector<int>{3, Tokenizer::unk, Tokenizer::unk});

  const llama::Model model(checkpoint);
  llama::KvCache cache = model.make_cache();
  const int bos = Tokenizer::bos;
  const qlr::Matrix logits = model.forward(std::span(&bos, 1), 0, cache);
  const std::vector<std::pair<int, float>> top5 = {
      {3, 8.3135f}, {13, 3.0107f}, {1, 2.7597f}, {9, 2.6903f}, {0, 2.0537f}};
  std::vector<int> order(static_cast<std::size_t>(logits.cols()));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + 5, order.end(),
                    [&](int a, int b) { return logits(0, a) > logits(0, b); });
  for (std::size_t i = 0; i < 5; ++i) {
    CHECK(order[i] == top5[i].first);
    CHECK(logits(0, top5[i].first) == Approx(top5[i].second).margin(1e-3));
  }

  llama::Sampler greedy(0.0f, 0.9f, 1);
  std::string text;
  llama::generate(model, tokenizer, "", 200, greedy, [&](const std::string& t) { text += t; });
  CHECK(text ==
        "Once upon a time, there was a little girl named Lily. She loved to play outside in "
        "the sunshine. One day, she went to the park with her mommy and daddy. She saw a big "
        "box on the ground. She wanted to");

  std::vector<int> tokens = llama::story_tokens(
      tokenizer, qlr::test::read_text(std::filesystem::path(QLR_DATA_DIR) / "tinystories" /
                                      "tinystories_valid_head.txt"));
  tokens.resize(8192);
  // SOURCE.md's 0.7809 encodes the out-of-vocabulary newline by llama2.c's byte + 3 rule,
  // which in this vocabulary names piece 13, another character; with SentencePiece's <unk>
  // (what this tokenizer does) the same protocol measures 0.7069. The byte + 3 stream
  // reproduced 0.7809 to 4 decimals here, so the engine matches the oracle's arithmetic.
  CHECK(std::count(tokens.begin(), tokens.end(), Tokenizer::unk) > 0);
  CHECK(llama::score_windows(model, tokens, 256).nll == Approx(0.7069).margin(1e-3));
}

TEST_CASE("llama: FP32 NLL on the TinyStories slice is SOURCE.md's 1.2685; W8 within 1 %",
          "[model][llama]") {
  const auto s = qlr::test::load_stories("the NLL oracle");
  if (!s) return;
  const auto slice = std::filesystem::path(QLR_DATA_DIR) / "tinystories" / "tinystories_valid_head.txt";
  std::vector<int> tokens = llama::story_tokens(s->tokenizer, qlr::test::read_text(slice));
  REQUIRE(tokens.size() >= 8192);
  tokens.resize(8192);
  const llama::NllResult fp32 = llama::score_windows(llama::Model(s->checkpoint), tokens, 256);
  CHECK(fp32.targets == 8160);
  CHECK(fp32.nll == Approx(1.2685).margin(1e-3));
  llama::ModelOptions w8;
  w8.linear = qlr::layers::parse_linear_spec("int8-sym-g32");
  const llama::NllResult quantized = llama::score_windows(llama::Model(s->checkpoint, w8), tokens, 256);
  CHECK(std::abs(quantized.nll - fp32.nll) <= 0.01 * fp32.nll);
}

namespace {
/// A random llama2.c model: GQA, hidden_dim 172 (a Hadamard order that is not a power of
/// two), RMSNorm gains away from 1, and a classifier of its own unless `shared`.
qlr::io::Llama2cModel random_llama(bool shared) {
  qlr::io::Llama2cModel m;
  m.config = {64, 172, 2, 4, 2, 96, 32, shared};
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  const auto random = [&](qlr::index_t rows, qlr::index_t cols, float scale) {
    qlr::Matrix w(rows, cols);
    for (qlr::index_t i = 0; i < w.size(); ++i) w.data()[i] = scale * normal(rng);
    return w;
  };
  const auto gains = [&](qlr::index_t n) -> qlr::Vector {
    return (1.0f + 0.5f * random(n, 1, 1.0f).array().tanh()).matrix();
  };
  const int d = 64, h = 172, kv = m.config.kv_dim();
  m.token_embedding = random(96, d, 1.0f);
  for (int l = 0; l < 2; ++l)
    m.layers.push_back({gains(d), random(d, d, 0.125f), random(kv, d, 0.125f), random(kv, d, 0.125f),
                        random(d, d, 0.125f), gains(d), random(h, d, 0.125f), random(d, h, 0.08f),
                        random(h, d, 0.125f)});
  m.final_norm = gains(d);
  if (!shared) m.classifier = random(96, d, 0.125f);
  return m;
}

/// ‖a − b‖ / ‖b‖ over the whole block of logits.
double relative_error(const qlr::Matrix& a, const qlr::Matrix& b) {
  return (a - b).cast<double>().norm() / b.cast<double>().norm();
}

/// The logits of `tokens` as one block, then of one more token through the cache.
qlr::Matrix block_then_step(const llama::Model& model, std::span<const int> tokens) {
  llama::KvCache cache = model.make_cache();
  const qlr::Matrix block = model.forward(tokens.first(tokens.size() - 1), 0, cache);
  const qlr::Matrix step = model.forward(tokens.last(1), static_cast<int>(tokens.size() - 1), cache);
  qlr::Matrix all(block.rows() + 1, block.cols());
  all << block, step;
  return all;
}
}  // namespace

TEST_CASE("llama: the rotated FP32 model gives the unrotated logits (R1 + R4, norms folded)",
          "[model][llama][rotation]") {
  using llama::RotationKind;
  const auto kind = GENERATE(RotationKind::hadamard, RotationKind::randomized_hadamard,
                             RotationKind::random_orthogonal);
  const bool shared = GENERATE(false, true);
  CAPTURE(llama::to_string(kind), shared);
  const qlr::io::Llama2cModel checkpoint = random_llama(shared);
  const std::vector<int> tokens{1, 5, 17, 42, 93, 0, 64, 7, 7, 31, 88, 2};
  const qlr::Matrix reference = block_then_step(llama::Model(checkpoint), tokens);
  llama::ModelOptions options;
  options.rotation = kind;
  options.rotation_seed = 5;
  const llama::Model rotated(checkpoint, options);
  CHECK_FALSE(rotated.config().shared_classifier);  // untied: the head folds γ, E does not
  CHECK(relative_error(block_then_step(rotated, tokens), reference) <= 1e-5);

  // The rotation is not a no-op: the weights the layers hold differ.
  qlr::io::Llama2cModel copy = checkpoint;
  const llama::StreamRotation r1(kind, 64, 5), r4(kind, 172, 6);
  llama::rotate_checkpoint(copy, r1, r4);
  CHECK((copy.layers[0].w2 - checkpoint.layers[0].w2).norm() > 0.1f * checkpoint.layers[0].w2.norm());
  CHECK(copy.layers[1].ffn_norm.isOnes());
  CHECK(copy.token_embedding.row(3).norm() == Approx(checkpoint.token_embedding.row(3).norm()).epsilon(1e-5));
}

TEST_CASE("llama: stories260K rotated gives its logits; W4A4 loses less with the rotation",
          "[model][llama][rotation]") {
  const auto s = qlr::test::load_stories("the rotated model check");
  if (!s) return;
  const std::vector<int> tokens = s->tokenizer.encode("Once upon a time, Tom had a big dog. He");
  const qlr::Matrix reference = block_then_step(llama::Model(s->checkpoint), tokens);
  llama::ModelOptions options;
  options.rotation = llama::RotationKind::randomized_hadamard;
  options.rotation_seed = 1;
  CHECK(relative_error(block_then_step(llama::Model(s->checkpoint, options), tokens), reference) <= 1e-4);

  // W4A4 (the classifier FP32): output error against FP32 with and without R1 + R4.
  options.linear = qlr::layers::parse_linear_spec("int4-sym-g32+a4");
  const double rotated = relative_error(block_then_step(llama::Model(s->checkpoint, options), tokens), reference);
  options.rotation = llama::RotationKind::none;
  const double plain = relative_error(block_then_step(llama::Model(s->checkpoint, options), tokens), reference);
  CAPTURE(rotated, plain);
  CHECK(rotated < plain);
}

TEST_CASE("llama: bad rotation input is refused with what is wrong", "[model][llama][rotation]") {
  CHECK(llama::parse_rotation_kind("randomized-hadamard") == llama::RotationKind::randomized_hadamard);
  CHECK_THROWS_WITH(llama::parse_rotation_kind("givens"),
                    Catch::Contains("'givens'; expected none, hadamard, randomized-hadamard"));
  CHECK_THROWS_WITH(llama::StreamRotation(llama::RotationKind::none, 64, 0),
                    Catch::Contains("kind = none; expected a rotation"));
  qlr::io::Llama2cModel m = random_llama(true);
  const qlr::io::Llama2cModel before = m;
  const llama::StreamRotation r64(llama::RotationKind::hadamard, 64, 0);
  CHECK_THROWS_WITH(llama::rotate_checkpoint(m, r64, r64),
                    Catch::Contains("rotations of sizes 64 and 64; expected dim = 64 and hidden_dim = 172"));
  CHECK(m.config.shared_classifier);
  CHECK(m.layers[0].wq == before.layers[0].wq);
  // 172 = 4·43 has a Hadamard matrix; 6 = 3·2 has none.
  CHECK_THROWS_WITH(llama::StreamRotation(llama::RotationKind::hadamard, 6, 0),
                    Catch::Contains("n = 6; expected n = K*2^k"));
}

namespace {
/// The first `count` tokens of the vendored TinyStories slice.
std::vector<int> slice_tokens(const Tokenizer& tokenizer, std::size_t count) {
  const auto slice = std::filesystem::path(QLR_DATA_DIR) / "tinystories" / "tinystories_valid_head.txt";
  std::vector<int> tokens = llama::story_tokens(tokenizer, qlr::test::read_text(slice));
  REQUIRE(tokens.size() >= count);
  tokens.resize(count);
  return tokens;
}

/// A block's seven weights with the input each reads.
std::vector<std::pair<const qlr::Matrix*, llama::BlockInput>> block_weights(const qlr::io::Llama2cLayer& l) {
  using In = llama::BlockInput;
  return {{&l.wq, In::attention}, {&l.wk, In::attention}, {&l.wv, In::attention},
          {&l.wo, In::attention_output}, {&l.w1, In::mlp}, {&l.w3, In::mlp},
          {&l.w2, In::mlp_hidden}};
}
}  // namespace

TEST_CASE("llama: calibration keeps Σ x·xᵀ of every block input, streamed and cancellable",
          "[model][llama][calibration]") {
  const auto s = qlr::test::load_stories("the calibration checks");
  if (!s) return;
  const std::vector<int> tokens = slice_tokens(s->tokenizer, 1000);
  const llama::Model model(s->checkpoint);
  qlr::index_t last_done = 0;
  const auto calibration = llama::calibrate(model, tokens, 256, [&](qlr::index_t done, qlr::index_t total) {
    CHECK(total == 4);
    last_done = done;
    return true;
  });
  REQUIRE(calibration);
  CHECK(last_done == 4);
  CHECK(calibration->tokens == 1000);
  REQUIRE(calibration->blocks.size() == 5);
  for (const auto& block : calibration->blocks)
    for (const auto& input : block) CHECK(input->samples() == 1000);
  CHECK(calibration->blocks[0][3]->in_features() == 172);
  // Block 0's attention input depends on the token only: RMSNorm(embedding row) ⊙ γ.
  const auto& c = s->checkpoint;
  qlr::MatrixD expected = qlr::MatrixD::Zero(64, 64);
  for (const int id : tokens) {
    const Eigen::RowVectorXf e = c.token_embedding.row(id);
    const float inv = 1.0f / std::sqrt(e.squaredNorm() / 64.0f + 1e-5f);
    const Eigen::RowVectorXd x = ((e.array() * inv) * c.layers[0].attention_norm.transpose().array()).cast<double>();
    expected += x.transpose() * x;
  }
  CHECK((calibration->blocks[0][0]->sum() - expected).norm() <= 1e-5 * expected.norm());
  // Cancelled after the first window: nothing.
  CHECK_FALSE(llama::calibrate(model, tokens, 256, [](qlr::index_t, qlr::index_t) { return false; }));
  // Fewer tokens than the widest input (hidden_dim 172): a rank-deficient covariance.
  CHECK_THROWS_WITH(llama::calibrate(model, std::span(tokens).first(171), 256),
                    Catch::Contains("171 calibration tokens; expected at least 172"));
  // A NaN reaching a layer's input is named, not accumulated.
  qlr::io::Llama2cModel broken = s->checkpoint;
  broken.token_embedding(tokens[5], 3) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(llama::calibrate(llama::Model(broken), tokens, 256), Catch::Contains("= nan; expected a finite value"));
}

TEST_CASE("llama: GPTQ's calibration loss is <= RTN's and EoRA's <= SVD's on every layer of "
          "stories260K", "[model][llama][calibration]") {
  const auto s = qlr::test::load_stories("the GPTQ and EoRA layer checks");
  if (!s) return;
  const auto calibration = llama::calibrate(llama::Model(s->checkpoint), slice_tokens(s->tokenizer, 4096), 256);
  REQUIRE(calibration);
  int layers = 0;
  for (const char* spec : {"int4-asym-g32", "int3-asym-g32", "int2-sym-g32"}) {
    const qlr::quant::QuantSpec q = qlr::quant::parse_quant_spec(spec);
    for (std::size_t b = 0; b < s->checkpoint.layers.size(); ++b) {
      for (const auto& [w, input] : block_weights(s->checkpoint.layers[b])) {
        const qlr::compensate::Covariance& cov = *calibration->blocks[b][static_cast<std::size_t>(input)];
        const qlr::MatrixD exact = w->cast<double>();
        const auto loss = [&](const qlr::Matrix& w_hat) { return cov.output_error(exact - w_hat.cast<double>()); };
        const qlr::Matrix rtn = qlr::quant::dequantize(qlr::quant::quantize(*w, q));
        const qlr::Matrix gptq = qlr::quant::dequantize(qlr::compensate::gptq_quantize(*w, cov, q));
        CAPTURE(spec, b, static_cast<int>(input), loss(gptq) / loss(rtn));
        CHECK(loss(gptq) <= loss(rtn));
        const qlr::compensate::Eigenspace space(cov);
        const auto residual = [&](const qlr::compensate::Compensation& t) {
          return loss((gptq.cast<double>() + t.b * t.a).cast<float>());
        };
        CHECK(residual(qlr::compensate::eora(*w, gptq, space, 8)) <=
              residual(qlr::compensate::svd_compensation(*w, gptq, 8)) * (1 + 1e-6));
        ++layers;
      }
    }
  }
  CHECK(layers == 3 * 35);
}

TEST_CASE("llama: GPTQ and EoRA lower the W3 model's NLL on held-out TinyStories",
          "[model][llama][calibration]") {
  const auto s = qlr::test::load_stories("the GPTQ and EoRA NLL checks");
  if (!s) return;
  const std::vector<int> all = slice_tokens(s->tokenizer, 8192);
  const std::span<const int> calibration_tokens = std::span(all).first(4096);
  const std::span<const int> held_out = std::span(all).last(4096);
  const auto calibration = llama::calibrate(llama::Model(s->checkpoint), calibration_tokens, 256);
  REQUIRE(calibration);
  llama::ModelOptions o;
  o.linear = qlr::layers::parse_linear_spec("int3-asym-g32-f16");
  const double rtn = llama::score_windows(llama::Model(s->checkpoint, o), held_out, 256).nll;
  o.gptq = true;
  const llama::Model gptq_model(s->checkpoint, o, &*calibration);
  const double gptq = llama::score_windows(gptq_model, held_out, 256).nll;
  o.compensation_rank = 8;
  const llama::Model eora_model(s->checkpoint, o, &*calibration);
  const double eora = llama::score_windows(eora_model, held_out, 256).nll;
  o.compensation_bits = 4;
  const llama::Model eora4_model(s->checkpoint, o, &*calibration);
  const double eora4 = llama::score_windows(eora4_model, held_out, 256).nll;
  CAPTURE(rtn, gptq, eora, eora4);
  CHECK(gptq < rtn);
  CHECK(eora < gptq);
  CHECK(eora4 < gptq);
  // The term's storage is counted: 8·(N + K) values per layer at 32 or ~4.5 bits.
  CHECK(eora_model.bits_per_parameter(false) > eora4_model.bits_per_parameter(false));
  CHECK(eora4_model.bits_per_parameter(false) > gptq_model.bits_per_parameter(false));
}

TEST_CASE("llama: bad calibration options are refused with what is wrong",
          "[model][llama][calibration]") {
  const auto s = qlr::test::load_stories("the calibration option checks");
  if (!s) return;
  llama::ModelOptions o;
  o.linear = qlr::layers::parse_linear_spec("int4-asym-g32");
  o.gptq = true;
  CHECK_THROWS_WITH(llama::Model(s->checkpoint, o), Catch::Contains("GPTQ or EoRA without calibration"));
  o.gptq = false;
  o.compensation = llama::CompensationKind::svd;
  o.compensation_rank = 33;  // kv_dim of stories260K is 32
  CHECK_THROWS_WITH(llama::Model(s->checkpoint, o),
                    Catch::Contains("compensation_rank = 33; expected 0 to 32"));
  o.compensation_rank = 4;
  o.compensation_bits = 2;
  CHECK_THROWS_WITH(llama::Model(s->checkpoint, o), Catch::Contains("compensation_bits = 2; expected 0 (FP32), 3 or 4"));
  o.compensation_bits = 0;
  o.linear = qlr::layers::parse_linear_spec("int4-asym-g32+rht3");
  CHECK_THROWS_WITH(llama::Model(s->checkpoint, o), Catch::Contains("expected a quantized spec without +rht"));
  o.linear.reset();
  CHECK_THROWS_WITH(llama::Model(s->checkpoint, o), Catch::Contains("linear = fp32"));
}
