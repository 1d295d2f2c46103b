// SPDX-License-Identifier: Apache-2.0
// llama2.c's byte-pair tokenizer (tokenizer.bin): pieces with merge scores, encoded as its
// run.c does — a dummy-prefix space, one piece per UTF-8 code point with raw-byte fallback
// (id = byte + 3), then repeated merges of the adjacent pair whose merged piece scores
// highest (the leftmost among equals). The merges here run from a heap rather than
// run.c's rescan of all pairs, so a megabyte of text encodes in O(n log n) with the same
// result. Every read of the file is bounds-checked.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "qlr/core/error.hpp"

namespace qlr::model {

/// A llama2.c tokenizer: `vocab_size` pieces and their merge scores.
class Tokenizer {
 public:
  static constexpr int unk = 0;  ///< an unknown character, in a vocabulary without bytes
  static constexpr int bos = 1;  ///< beginning of a sequence (also separates stories)
  static constexpr int eos = 2;  ///< end of a sequence

  /// Parses tokenizer.bin bytes holding exactly `vocab_size` pieces. Throws
  /// Errc::corrupt_file for a truncated or inconsistent file.
  static Tokenizer parse(std::span<const std::byte> bytes, int vocab_size) {
    constexpr const char* entity = "model::Tokenizer";
    QLR_CHECK(vocab_size >= 4 && vocab_size <= (1 << 20), invalid_argument,
              "{}: vocab_size = {}; expected 4 <= vocab_size <= {} (3 specials and pieces)", entity,
              vocab_size, 1 << 20);
    std::size_t at = 0;
    const auto read_i32 = [&](const char* what, int index) {
      QLR_CHECK(bytes.size() - at >= 4, corrupt_file,
                "{}: file ends at byte {} inside the {} of piece {}; expected {} pieces", entity,
                bytes.size(), what, index, vocab_size);
      std::int32_t v = 0;
      std::memcpy(&v, bytes.data() + at, 4);
      at += 4;
      return v;
    };
    Tokenizer t;
    const std::int32_t max_length = read_i32("header", -1);
    QLR_CHECK(max_length >= 1 && max_length <= (1 << 16), corrupt_file,
              "{}: max_token_length = {}; expected 1 <= max_token_length <= {}", entity,
              max_length, 1 << 16);
    t.pieces_.reserve(static_cast<std::size_t>(vocab_size));
    t.scores_.reserve(static_cast<std::size_t>(vocab_size));
    for (int i = 0; i < vocab_size; ++i) {
      const std::int32_t score_bits = read_i32("score", i);
      float score = 0;
      std::memcpy(&score, &score_bits, 4);
      const std::int32_t length = read_i32("length", i);
      QLR_CHECK(length >= 0 && length <= max_length, corrupt_file,
                "{}: piece {} has length {}; expected 0 <= length <= max_token_length = {}",
                entity, i, length, max_length);
      QLR_CHECK(bytes.size() - at >= static_cast<std::size_t>(length), corrupt_file,
                "{}: piece {} needs bytes [{}, {}); expected a file of at least that size, got {}",
                entity, i, at, at + static_cast<std::size_t>(length), bytes.size());
      t.pieces_.emplace_back(reinterpret_cast<const char*>(bytes.data() + at),
                             static_cast<std::size_t>(length));
      t.scores_.push_back(score);
      at += static_cast<std::size_t>(length);
    }
    // Byte fallback when pieces 3 … 258 are "<0x00>" … "<0xFF>" (llama2.c's vocabularies);
    // without them (a character vocabulary), a code point outside it is <unk> (id 0), as
    // SentencePiece without byte fallback encodes it.
    t.byte_fallback_ = vocab_size >= 3 + 256;
    for (int b = 0; b < 256 && t.byte_fallback_; ++b) {
      constexpr const char* hex = "0123456789ABCDEF";
      const std::string name = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
      t.byte_fallback_ = t.pieces_[static_cast<std::size_t>(3 + b)] == name;
    }
    QLR_CHECK(at == bytes.size(), corrupt_file,
              "{}: {} bytes follow the {} pieces; expected the file to end there (a tokenizer "
              "of another vocabulary?)",
              entity, bytes.size() - at, vocab_size);
    // The first id of a piece wins, as run.c's sorted binary search finds one of equals.
    for (int i = vocab_size - 1; i >= 0; --i) t.ids_[t.pieces_[static_cast<std::size_t>(i)]] = i;
    return t;
  }

  /// Loads tokenizer.bin from `path` (see parse). Throws Errc::io when it cannot be read.
  static Tokenizer load(const std::filesystem::path& path, int vocab_size) {
    std::ifstream in(path, std::ios::binary);
    QLR_CHECK(in.good() && std::filesystem::is_regular_file(path), io,
              "model::Tokenizer: path = '{}'; expected a readable file", path.string());
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return parse(std::as_bytes(std::span(bytes.data(), bytes.size())), vocab_size);
  }

  /// Whether a character outside the vocabulary becomes its UTF-8 bytes (pieces 3 … 258),
  /// else <unk>.
  [[nodiscard]] bool byte_fallback() const noexcept { return byte_fallback_; }
  /// Pieces in the vocabulary.
  [[nodiscard]] int vocab_size() const noexcept { return static_cast<int>(pieces_.size()); }
  /// The bytes of piece `id` (a raw byte appears as "<0xXX>"). Throws for an id out of range.
  [[nodiscard]] const std::string& piece(int id) const {
    check_id(id);
    return pieces_[static_cast<std::size_t>(id)];
  }
  /// The merge score of piece `id`. Throws for an id out of range.
  [[nodiscard]] float score(int id) const {
    check_id(id);
    return scores_[static_cast<std::size_t>(id)];
  }
  /// The id of `piece`, or -1 when it is not in the vocabulary.
  [[nodiscard]] int find(std::string_view piece) const {
    const auto it = ids_.find(std::string(piece));
    return it == ids_.end() ? -1 : it->second;
  }

  /// The ids of `text`, after BOS when `with_bos`, before EOS when `with_eos`.
  [[nodiscard]] std::vector<int> encode(std::string_view text, bool with_bos = true,
                                        bool with_eos = false) const {
    std::vector<int> ids;
    if (with_bos) ids.push_back(bos);
    std::vector<int> tokens;
    if (!text.empty()) {
      const int space = find(" ");
      QLR_CHECK(space >= 0, unsupported,
                "model::Tokenizer::encode: the vocabulary has no ' ' piece; expected one for "
                "the dummy prefix");
      tokens.push_back(space);
    }
    // One piece per code point: a lead byte and its continuation bytes (at most 4 bytes, as
    // run.c groups them), or each byte on its own when the code point is not a piece.
    for (std::size_t i = 0; i < text.size();) {
      std::size_t end = i + 1;
      while (end < text.size() && end - i < 4 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80)
        ++end;
      const int id = find(text.substr(i, end - i));
      if (id >= 0) {
        tokens.push_back(id);
      } else if (byte_fallback_) {
        for (std::size_t b = i; b < end; ++b) tokens.push_back(static_cast<unsigned char>(text[b]) + 3);
      } else {
        tokens.push_back(unk);
      }
      i = end;
    }
    merge(tokens);
    ids.insert(ids.end(), tokens.begin(), tokens.end());
    if (with_eos) ids.push_back(eos);
    return ids;
  }

  /// The text token `id` adds after token `previous`, as run.c prints it: the leading space
  /// of a piece after BOS dropped, "<0xXX>" pieces as their byte.
  [[nodiscard]] std::string decode(int previous, int id) const {
    std::string_view p = piece(id);
    if (previous == bos && !p.empty() && p.front() == ' ') p.remove_prefix(1);
    if (p.size() == 6 && p.starts_with("<0x") && p.back() == '>') {
      const auto hex = [](char c) {
        return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      };
      const int hi = hex(p[3]), lo = hex(p[4]);
      if (hi >= 0 && lo >= 0) return std::string(1, static_cast<char>(hi * 16 + lo));
    }
    return std::string(p);
  }

  /// The text of `ids` (decode of each after its predecessor; the first after BOS when it
  /// is BOS itself, which prints nothing).
  [[nodiscard]] std::string decode(std::span<const int> ids) const {
    std::string text;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (i == 0 && ids[0] == bos) continue;
      text += decode(i == 0 ? bos : ids[i - 1], ids[i]);
    }
    return text;
  }

 private:
  void check_id(int id) const {
    QLR_CHECK(id >= 0 && id < vocab_size(), invalid_argument,
              "model::Tokenizer: token id = {}; expected 0 <= id < vocab_size = {}", id,
              vocab_size());
  }

  // Merges in place: repeatedly the adjacent pair whose merged piece scores highest, the
  // leftmost among equal scores (run.c's order). A heap of candidate pairs keyed by
  // (score, position) gives that order: merging keeps the left position, so positions stay
  // in text order, and a popped pair is used only if both its tokens are still as pushed.
  void merge(std::vector<int>& tokens) const {
    const std::size_t n = tokens.size();
    if (n < 2) return;
    struct Candidate {
      float score;
      std::size_t left, right;
      int left_id, right_id, merged;
    };
    const auto after = [](const Candidate& a, const Candidate& b) {
      return a.score != b.score ? a.score < b.score : a.left > b.left;
    };
    std::priority_queue<Candidate, std::vector<Candidate>, decltype(after)> heap(after);
    std::vector<std::size_t> next(n), prev(n);
    std::vector<bool> alive(n, true);
    for (std::size_t i = 0; i < n; ++i) {
      next[i] = i + 1;
      prev[i] = i - 1;  // wraps for i = 0: never read, the first token has no left pair
    }
    const auto push = [&](std::size_t left, std::size_t right) {
      const int merged = find(pieces_[static_cast<std::size_t>(tokens[left])] +
                              pieces_[static_cast<std::size_t>(tokens[right])]);
      // run.c starts its best score at −1e10: pairs scoring lower never merge.
      if (merged >= 0 && scores_[static_cast<std::size_t>(merged)] > -1e10f)
        heap.push({scores_[static_cast<std::size_t>(merged)], left, right, tokens[left],
                   tokens[right], merged});
    };
    for (std::size_t i = 0; i + 1 < n; ++i) push(i, i + 1);
    while (!heap.empty()) {
      const Candidate c = heap.top();
      heap.pop();
      if (!alive[c.left] || !alive[c.right] || next[c.left] != c.right ||
          tokens[c.left] != c.left_id || tokens[c.right] != c.right_id)
        continue;
      tokens[c.left] = c.merged;
      alive[c.right] = false;
      next[c.left] = next[c.right];
      if (next[c.left] < n) prev[next[c.left]] = c.left;
      // Position 0 never dies (only right tokens do): it is the one without a left pair.
      if (c.left != 0) push(prev[c.left], c.left);
      if (next[c.left] < n) push(c.left, next[c.left]);
    }
    std::size_t kept = 0;
    for (std::size_t i = 0; i < n; ++i)
      if (alive[i]) tokens[kept++] = tokens[i];
    tokens.resize(kept);
  }

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string, int> ids_;
  bool byte_fallback_ = false;  // pieces 3 … 258 are the 256 bytes
};

}  // namespace qlr::model
