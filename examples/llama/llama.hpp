// SPDX-License-Identifier: Apache-2.0
// A small Llama-architecture inference engine on qlr's public headers: the engine an author
// would copy. It runs llama2.c checkpoints (RMSNorm, RoPE, grouped-query attention with a
// KV cache, SwiGLU MLP, tied or untied classifier) with every linear layer either FP32 or a
// qlr layer chosen at run time (layers::LinearSpec), and scores text (next-token NLL).
//
// Forward takes a block of tokens at consecutive positions, so a prompt or a perplexity
// window runs as GEMMs (M = tokens) and a generated token as GEMVs, on the same code.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "qlr/core/error.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/io/llama2c.hpp"
#include "qlr/layers/any_linear.hpp"
#include "qlr/model/tokenizer.hpp"
#include "qlr/quant/spec.hpp"
#include "llama/rotation.hpp"

namespace llama {

using qlr::index_t;
using qlr::Matrix;
using qlr::Vector;

/// One linear layer of the engine: the FP32 weight (y = x·Wᵀ) or a qlr layer.
class Linear {
 public:
  /// FP32 when `spec` is empty, else `w` rotated/quantized/packed as the spec says.
  Linear(const Matrix& w, const std::optional<qlr::layers::LinearSpec>& spec) {
    if (spec)
      quantized_.emplace(qlr::layers::make_linear(w, *spec));
    else
      dense_ = w;
  }
  /// y (M×N) = x (M×K)·Wᵀ.
  void forward(qlr::ConstMatrixRef x, qlr::MatrixRef y) const {
    if (quantized_)
      quantized_->forward(x, y);
    else
      y.noalias() = x * dense_.transpose();
  }
  [[nodiscard]] index_t out_features() const {  ///< N
    return quantized_ ? quantized_->out_features() : dense_.rows();
  }
  [[nodiscard]] index_t in_features() const {  ///< K
    return quantized_ ? quantized_->in_features() : dense_.cols();
  }
  /// Storage bits per weight, scales and zeros included (32 for FP32).
  [[nodiscard]] double bits_per_parameter() const {
    return quantized_ ? qlr::quant::bits_per_parameter(quantized_->base()) : 32.0;
  }

 private:
  Matrix dense_;
  std::optional<qlr::layers::AnyLinear> quantized_;
};

/// How the engine builds its linear layers.
struct ModelOptions {
  std::optional<qlr::layers::LinearSpec> linear;  ///< q, k, v, o, gate, up, down; none: FP32
  bool quantize_classifier = false;               ///< the classifier too (else FP32)
  RotationKind rotation = RotationKind::none;     ///< R1 and R4 (see rotation.hpp)
  std::uint64_t rotation_seed = 0;                ///< R1's seed; R4 takes seed + 1
};

/// The keys and values of every block for the positions seen so far.
struct KvCache {
  std::vector<Matrix> keys;    ///< per block, seq_len × kv_dim
  std::vector<Matrix> values;  ///< per block, seq_len × kv_dim
};

/// A llama2.c model ready to run.
class Model {
 public:
  /// Builds the layers of `checkpoint` as `options` says, rotated first if it asks.
  Model(const qlr::io::Llama2cModel& checkpoint, const ModelOptions& options = {}) {
    if (options.rotation == RotationKind::none) {
      build(checkpoint, options);
      return;
    }
    qlr::io::Llama2cModel rotated = checkpoint;
    const StreamRotation r1(options.rotation, checkpoint.config.dim, options.rotation_seed);
    const StreamRotation r4(options.rotation, checkpoint.config.hidden_dim, options.rotation_seed + 1);
    rotate_checkpoint(rotated, r1, r4);
    hidden_rotation_.emplace(r4);
    build(rotated, options);
  }

  /// The checkpoint's header.
  [[nodiscard]] const qlr::io::Llama2cConfig& config() const noexcept { return config_; }

  /// An empty cache for up to seq_len positions.
  [[nodiscard]] KvCache make_cache() const {
    KvCache cache;
    for (std::size_t l = 0; l < blocks_.size(); ++l) {
      cache.keys.emplace_back(Matrix::Zero(config_.seq_len, config_.kv_dim()));
      cache.values.emplace_back(Matrix::Zero(config_.seq_len, config_.kv_dim()));
    }
    return cache;
  }

  /// Logits (T×vocab) of `tokens` at positions [pos, pos + T), attending to the cache's
  /// positions [0, pos) and to each other causally; their keys and values join the cache.
  /// Throws for a token id out of range or positions past seq_len.
  [[nodiscard]] Matrix forward(std::span<const int> tokens, int pos, KvCache& cache) const {
    constexpr const char* entity = "llama::Model::forward";
    const auto t_count = static_cast<index_t>(tokens.size());
    QLR_CHECK(pos >= 0 && t_count >= 1 && pos + t_count <= config_.seq_len, invalid_argument,
              "{}: positions [{}, {}); expected 1 or more inside [0, seq_len = {})", entity, pos,
              pos + t_count, config_.seq_len);
    const int dim = config_.dim, kv_dim = config_.kv_dim(), head = config_.head_size();
    Matrix x(t_count, dim);
    for (index_t t = 0; t < t_count; ++t) {
      const int id = tokens[static_cast<std::size_t>(t)];
      QLR_CHECK(id >= 0 && id < config_.vocab_size, invalid_argument,
                "{}: token {} = {}; expected 0 <= id < vocab_size = {}", entity, t, id,
                config_.vocab_size);
      x.row(t) = embedding_.row(id);
    }
    Matrix xb(t_count, dim), q(t_count, dim), k(t_count, kv_dim), v(t_count, kv_dim),
        att_out(t_count, dim), proj(t_count, dim), gate(t_count, config_.hidden_dim),
        up(t_count, config_.hidden_dim);
    std::vector<float> scores(static_cast<std::size_t>(pos + t_count));
    const int kv_per_head = config_.n_heads / config_.n_kv_heads;
    const float inv_sqrt_head = 1.0f / std::sqrt(static_cast<float>(head));
    for (std::size_t l = 0; l < blocks_.size(); ++l) {
      const Block& b = blocks_[l];
      rms_norm(x, b.attention_norm, xb);
      b.wq.forward(xb, q);
      b.wk.forward(xb, k);
      b.wv.forward(xb, v);
      rope(q, pos);
      rope(k, pos);
      cache.keys[l].middleRows(pos, t_count) = k;
      cache.values[l].middleRows(pos, t_count) = v;
      for (index_t t = 0; t < t_count; ++t) {
        const index_t last = pos + t;  // attends to positions [0, last]
        for (int h = 0; h < config_.n_heads; ++h) {
          const int kv_offset = (h / kv_per_head) * head;
          const auto qh = q.row(t).segment(h * head, head);
          float top = -INFINITY;
          for (index_t s = 0; s <= last; ++s) {
            const float score =
                qh.dot(cache.keys[l].row(s).segment(kv_offset, head)) * inv_sqrt_head;
            scores[static_cast<std::size_t>(s)] = score;
            top = std::max(top, score);
          }
          float total = 0.0f;
          for (index_t s = 0; s <= last; ++s) {
            float& e = scores[static_cast<std::size_t>(s)];
            e = std::exp(e - top);
            total += e;
          }
          auto out = att_out.row(t).segment(h * head, head);
          out.setZero();
          for (index_t s = 0; s <= last; ++s)
            out += (scores[static_cast<std::size_t>(s)] / total) *
                   cache.values[l].row(s).segment(kv_offset, head);
        }
      }
      b.wo.forward(att_out, proj);
      x += proj;
      rms_norm(x, b.ffn_norm, xb);
      b.w1.forward(xb, gate);
      b.w3.forward(xb, up);
      // SwiGLU: silu(gate) ⊙ up.
      gate = (gate.array() / (1.0f + (-gate.array()).exp())) * up.array();
      if (hidden_rotation_) qlr::rotate::rotate_rows(*hidden_rotation_, gate);  // R4, online
      b.w2.forward(gate, proj);
      x += proj;
    }
    rms_norm(x, final_norm_, xb);
    Matrix logits(t_count, config_.vocab_size);
    classifier_->forward(xb, logits);
    return logits;
  }

  /// Storage bits per linear weight, averaged over the parameters of the seven block
  /// layers and, unless `with_classifier` is false, the classifier.
  [[nodiscard]] double bits_per_parameter(bool with_classifier = true) const {
    double bits = 0, params = 0;
    const auto add = [&](const Linear& f) {
      const double n = static_cast<double>(f.out_features() * f.in_features());
      bits += f.bits_per_parameter() * n;
      params += n;
    };
    for (const Block& b : blocks_)
      for (const Linear* f : {&b.wq, &b.wk, &b.wv, &b.wo, &b.w1, &b.w2, &b.w3}) add(*f);
    if (with_classifier) add(*classifier_);
    return bits / params;
  }

 private:
  struct Block {
    Vector attention_norm, ffn_norm;
    Linear wq, wk, wv, wo, w1, w2, w3;
  };

  void build(const qlr::io::Llama2cModel& checkpoint, const ModelOptions& options) {
    config_ = checkpoint.config;
    embedding_ = checkpoint.token_embedding;
    final_norm_ = checkpoint.final_norm;
    for (const auto& l : checkpoint.layers) {
      const auto& s = options.linear;
      blocks_.push_back(Block{l.attention_norm, l.ffn_norm, Linear(l.wq, s), Linear(l.wk, s),
                              Linear(l.wv, s), Linear(l.wo, s), Linear(l.w1, s), Linear(l.w2, s),
                              Linear(l.w3, s)});
    }
    const Matrix& classifier =
        config_.shared_classifier ? checkpoint.token_embedding : checkpoint.classifier;
    classifier_.emplace(classifier, options.quantize_classifier ? options.linear : std::nullopt);
  }

  // out = γ ⊙ x / sqrt(mean(x²) + 1e-5), per row (llama2.c's RMSNorm).
  static void rms_norm(const Matrix& x, const Vector& gamma, Matrix& out) {
    for (index_t t = 0; t < x.rows(); ++t) {
      const float mean_square = x.row(t).squaredNorm() / static_cast<float>(x.cols());
      const float inv = 1.0f / std::sqrt(mean_square + 1e-5f);
      out.row(t) = (x.row(t).array() * inv) * gamma.transpose().array();
    }
  }

  // Rotates each pair (2i, 2i + 1) of every head of row t by (pos + t)·10000^(−2i/head).
  void rope(Matrix& m, int pos) const {
    const int head = config_.head_size();
    for (index_t t = 0; t < m.rows(); ++t) {
      const auto p = static_cast<float>(pos + t);
      for (index_t i = 0; i < m.cols(); i += 2) {
        const auto within = static_cast<float>(i % head);
        const float angle = p / std::pow(10000.0f, within / static_cast<float>(head));
        const float c = std::cos(angle), s = std::sin(angle);
        const float a = m(t, i), b = m(t, i + 1);
        m(t, i) = a * c - b * s;
        m(t, i + 1) = a * s + b * c;
      }
    }
  }

  qlr::io::Llama2cConfig config_;
  Matrix embedding_;
  Vector final_norm_;
  std::vector<Block> blocks_;
  std::optional<Linear> classifier_;
  std::optional<StreamRotation> hidden_rotation_;  // R4 when the model is rotated
};

/// Picks the next token from logits: greedy at temperature 0, else nucleus (top-p)
/// sampling with llama2.c's xorshift generator, so a seed gives run.c's choices.
class Sampler {
 public:
  /// temperature ≥ 0, top_p in (0, 1], any seed but 0.
  Sampler(float temperature, float top_p, std::uint64_t seed)
      : temperature_(temperature), top_p_(top_p), state_(seed) {
    QLR_CHECK(std::isfinite(temperature) && temperature >= 0.0f, invalid_argument,
              "llama::Sampler: temperature = {}; expected a finite value >= 0", temperature);
    QLR_CHECK(top_p > 0.0f && top_p <= 1.0f, invalid_argument,
              "llama::Sampler: top_p = {}; expected 0 < top_p <= 1", top_p);
    QLR_CHECK(seed != 0, invalid_argument, "llama::Sampler: seed = 0; expected a non-zero seed");
  }

  /// The next token for one row of logits.
  int sample(std::span<const float> logits) {
    const auto n = static_cast<int>(logits.size());
    if (temperature_ == 0.0f)
      return static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    std::vector<float> p(logits.begin(), logits.end());
    const float top = *std::max_element(p.begin(), p.end()) / temperature_;
    float total = 0.0f;
    for (float& x : p) total += (x = std::exp(x / temperature_ - top));
    for (float& x : p) x /= total;
    const float coin = random_f32();
    if (top_p_ >= 1.0f) {
      float cdf = 0.0f;
      for (int i = 0; i < n; ++i)
        if (coin < (cdf += p[static_cast<std::size_t>(i)])) return i;
      return n - 1;
    }
    // Nucleus: the most likely tokens whose mass first exceeds top_p (tokens under
    // (1 − top_p)/(n − 1) cannot be among them and are skipped before sorting).
    const float cutoff = (1.0f - top_p_) / static_cast<float>(n - 1);
    std::vector<int> order;
    for (int i = 0; i < n; ++i)
      if (p[static_cast<std::size_t>(i)] >= cutoff) order.push_back(i);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      return p[static_cast<std::size_t>(a)] > p[static_cast<std::size_t>(b)];
    });
    float mass = 0.0f;
    std::size_t last = order.size() - 1;
    for (std::size_t i = 0; i < order.size(); ++i) {
      mass += p[static_cast<std::size_t>(order[i])];
      if (mass > top_p_) {
        last = i;
        break;
      }
    }
    const float r = coin * mass;
    float cdf = 0.0f;
    for (std::size_t i = 0; i <= last; ++i)
      if (r < (cdf += p[static_cast<std::size_t>(order[i])])) return order[i];
    return order[last];
  }

 private:
  float random_f32() {
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    const auto u = static_cast<std::uint32_t>((state_ * 0x2545F4914F6CDD1Dull) >> 32);
    return static_cast<float>(u >> 8) / 16777216.0f;
  }

  float temperature_, top_p_;
  std::uint64_t state_;
};

/// Runs up to `steps` positions from `prompt` (encoded with BOS) as run.c does: the prompt
/// is fed token by token, then each sampled token, stopping at BOS. `on_text` receives the
/// text of every token after the first as it is known, the prompt's included. Returns every
/// token, BOS first.
inline std::vector<int> generate(const Model& model, const qlr::model::Tokenizer& tokenizer,
                                 std::string_view prompt, int steps, Sampler& sampler,
                                 const std::function<void(const std::string&)>& on_text = {}) {
  std::vector<int> tokens = tokenizer.encode(prompt, true, false);
  const auto prompt_tokens = static_cast<int>(tokens.size());
  steps = std::min(steps, model.config().seq_len);
  KvCache cache = model.make_cache();
  int token = tokens.front();
  for (int pos = 0; pos < steps; ++pos) {
    const Matrix logits = model.forward(std::span(&token, 1), pos, cache);
    int next = 0;
    if (pos + 1 < prompt_tokens) {
      next = tokens[static_cast<std::size_t>(pos + 1)];
    } else {
      next = sampler.sample(std::span(logits.data(), static_cast<std::size_t>(logits.cols())));
      if (next == qlr::model::Tokenizer::bos) break;
      tokens.push_back(next);
    }
    if (on_text) on_text(tokenizer.decode(token, next));
    token = next;
  }
  return tokens;
}

/// Next-token negative log-likelihood over a token stream.
struct NllResult {
  double nll = 0;       ///< mean nats per predicted token
  index_t targets = 0;  ///< tokens predicted
  /// exp(nll).
  [[nodiscard]] double perplexity() const { return std::exp(nll); }
};

/// Scores `tokens` in non-overlapping windows of `window` tokens, each run from position 0
/// with an empty cache: position t predicts token t + 1 of the same window. A last window
/// shorter than 2 tokens is dropped. `on_window(done, total)` reports progress.
inline NllResult score_windows(const Model& model, std::span<const int> tokens, int window,
                               const std::function<void(index_t, index_t)>& on_window = {}) {
  QLR_CHECK(window >= 2 && window <= model.config().seq_len, invalid_argument,
            "llama::score_windows: window = {}; expected 2 <= window <= seq_len = {}", window,
            model.config().seq_len);
  const auto n = static_cast<index_t>(tokens.size());
  const index_t windows = (n + window - 1) / window;
  double total = 0;
  index_t targets = 0;
  for (index_t w = 0; w < windows; ++w) {
    const index_t begin = w * window, length = std::min<index_t>(window, n - begin);
    if (length >= 2) {
      KvCache cache = model.make_cache();
      const Matrix logits = model.forward(tokens.subspan(static_cast<std::size_t>(begin),
                                                         static_cast<std::size_t>(length)),
                                          0, cache);
      for (index_t t = 0; t + 1 < length; ++t) {
        const auto row = logits.row(t).cast<double>();
        const double top = row.maxCoeff();
        const double log_total = top + std::log((row.array() - top).exp().sum());
        total += log_total - row(tokens[static_cast<std::size_t>(begin + t + 1)]);
        ++targets;
      }
    }
    if (on_window) on_window(w + 1, windows);
  }
  return {targets > 0 ? total / static_cast<double>(targets) : 0.0, targets};
}

/// The token stream of SOURCE.md's NLL protocol: the text split on "<|endoftext|>", each
/// piece stripped of surrounding whitespace and, when not empty, encoded with BOS; the
/// lists concatenated. A text without the separator is one piece.
inline std::vector<int> story_tokens(const qlr::model::Tokenizer& tokenizer, std::string_view text) {
  constexpr std::string_view separator = "<|endoftext|>", space = " \t\n\r\f\v";
  std::vector<int> tokens;
  for (std::size_t begin = 0; begin <= text.size();) {
    const std::size_t end = std::min(text.find(separator, begin), text.size());
    std::string_view piece = text.substr(begin, end - begin);
    const std::size_t first = piece.find_first_not_of(space);
    if (first != std::string_view::npos) {
      piece = piece.substr(first, piece.find_last_not_of(space) - first + 1);
      const std::vector<int> ids = tokenizer.encode(piece, true, false);
      tokens.insert(tokens.end(), ids.begin(), ids.end());
    }
    if (end == text.size()) break;
    begin = end + separator.size();
  }
  return tokens;
}

}  // namespace llama
