// SPDX-License-Identifier: Apache-2.0
// The example engine (examples/llama) and qlr's llama2.c tokenizer against the oracles of
// ../shared/data/SOURCE.md: run.c's encodings, the logits after BOS, the greedy story token
// for token, and the FP32 NLL on the TinyStories slice under its protocol.
#include <catch2/catch.hpp>

#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "llama/llama.hpp"
#include "qlr/model/tokenizer.hpp"
#include "qlr_test_support.hpp"

namespace {

using qlr::model::Tokenizer;

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::optional<std::filesystem::path> tok512_path() {
  for (const auto& p : {std::filesystem::path(QLR_DATA_DIR) / "stories260K" / "tok512.bin",
                        std::filesystem::path(QLR_SHARED_DATA_DIR) / "tok512.bin"})
    if (std::filesystem::exists(p)) return p;
  WARN("tok512.bin not found in data/ or ../shared/data: tokenizer checks skipped");
  return std::nullopt;
}

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
  const auto path = tok512_path();
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
  const auto path = tok512_path();
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
  const std::string story = read_text(std::filesystem::path(*path).parent_path() / "SOURCE.md");
  CHECK(t.encode(story.substr(0, 3000), false) == naive_encode(t, story.substr(0, 3000)));
}

TEST_CASE("tokenizer: damaged files are refused with what is wrong", "[model][tokenizer]") {
  const auto path = tok512_path();
  if (!path) return;
  const std::string bytes = read_text(*path);
  const auto parse = [](const std::string& b, int vocab) {
    return Tokenizer::parse(std::as_bytes(std::span(b.data(), b.size())), vocab);
  };
  CHECK_NOTHROW(parse(bytes, 512));
  CHECK_THROWS_WITH(parse(bytes.substr(0, 3), 512), Catch::Contains("inside the header"));
  CHECK_THROWS_WITH(parse(bytes.substr(0, bytes.size() - 1), 512),
                    Catch::Contains("piece 511 needs bytes"));
  CHECK_THROWS_WITH(parse(bytes, 300), Catch::Contains("follow the 300 pieces"));
  CHECK_THROWS_WITH(parse(bytes, 100), Catch::Contains("vocab_size = 100; expected 259"));
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

namespace {
struct Stories {
  qlr::io::Llama2cModel checkpoint;
  Tokenizer tokenizer;
};

std::optional<Stories> load_stories(const char* what) {
  const auto model = qlr::test::stories260k_path_or_warn(what);
  const auto tok = tok512_path();
  if (!model || !tok) return std::nullopt;
  return Stories{qlr::io::load_llama2c(*model), Tokenizer::load(*tok, 512)};
}
}  // namespace

TEST_CASE("llama: FP32 logits after BOS and the greedy story are llama2.c's", "[model][llama]") {
  const auto s = load_stories("the llama2.c oracles");
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

TEST_CASE("llama: a block of tokens equals feeding them one at a time", "[model][llama]") {
  const auto s = load_stories("the block forward check");
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

TEST_CASE("llama: FP32 NLL on the TinyStories slice is SOURCE.md's 1.2685; W8 within 1 %",
          "[model][llama]") {
  const auto s = load_stories("the NLL oracle");
  if (!s) return;
  const auto slice = std::filesystem::path(QLR_SHARED_DATA_DIR) / "text" / "tinystories_valid_head.txt";
  if (!std::filesystem::exists(slice)) {
    WARN(slice.string() << " not found: the NLL oracle skipped");
    return;
  }
  std::vector<int> tokens = llama::story_tokens(s->tokenizer, read_text(slice));
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
