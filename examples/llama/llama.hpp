// SPDX-License-Identifier: Apache-2.0
// A small Llama-architecture inference engine on qlr's public headers: the engine an author
// would copy. It runs llama2.c checkpoints (RMSNorm, RoPE, grouped-query attention with a
// KV cache, SwiGLU MLP, tied or untied classifier) with every linear layer either FP32 or a
// qlr layer chosen at run time (layers::LinearSpec), and scores text (next-token NLL).
//
// Forward takes a block of tokens at consecutive positions, so a prompt or a perplexity
// window runs as GEMMs (M = tokens) and a generated token as GEMVs, on the same code.
//
// Calibration (ALGORITHMS.md §2.7, §7): calibrate() runs the FP32 model over text and keeps,
// per block, the covariance Σ x·xᵀ of the four inputs its seven linear layers read; a model
// built with them quantizes by GPTQ and adds EoRA (or plain-SVD) compensation per layer.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "qlr/adapter/quantized_low_rank.hpp"
#include "qlr/compensate/calibration.hpp"
#include "qlr/compensate/eora.hpp"
#include "qlr/compensate/gptq.hpp"
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

/// Which error-compensation term a quantized layer gets (§7).
enum class CompensationKind {
  svd,    ///< the best rank-r B·A for ‖ΔW − B·A‖_F (no calibration needed)
  eora,   ///< the best rank-r B·A for ‖(ΔW − B·A)·X‖_F, in the calibration eigenspace
};

/// "svd" or "eora".
inline const char* to_string(CompensationKind kind) {
  return kind == CompensationKind::svd ? "svd" : "eora";
}

/// How the engine builds its linear layers.
struct ModelOptions {
  std::optional<qlr::layers::LinearSpec> linear;  ///< q, k, v, o, gate, up, down; none: FP32
  bool quantize_classifier = false;               ///< the classifier too (else FP32, RTN)
  RotationKind rotation = RotationKind::none;     ///< R1 and R4 (see rotation.hpp)
  std::uint64_t rotation_seed = 0;                ///< R1's seed; R4 takes seed + 1
  bool gptq = false;                              ///< GPTQ instead of RTN (needs calibration)
  index_t compensation_rank = 0;                  ///< r of each block layer's term; 0: none
  CompensationKind compensation = CompensationKind::eora;  ///< the term's objective
  int compensation_bits = 0;  ///< its factors quantized to 4 or 3 bits (g = 32); 0: FP32
};

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
  /// `w` quantized as `options` says with the statistics `input` of what the layer reads
  /// (GPTQ, EoRA); with no calibration asked for, the plain constructor's layer.
  Linear(const Matrix& w, const ModelOptions& options, const qlr::compensate::Covariance* input,
         const std::optional<qlr::compensate::Eigenspace>& space) {
    if (!options.linear) {
      dense_ = w;
      return;
    }
    quantized_.emplace(options.gptq
                           ? qlr::layers::make_linear(
                                 qlr::compensate::gptq_quantize(w, *input, options.linear->weights),
                                 *options.linear)
                           : qlr::layers::make_linear(w, *options.linear));
    if (options.compensation_rank == 0) return;
    const Matrix w_hat = quantized_->dequantized_weight();
    const qlr::compensate::Compensation term =
        options.compensation == CompensationKind::eora
            ? qlr::compensate::eora(w, w_hat, *space, options.compensation_rank)
            : qlr::compensate::svd_compensation(w, w_hat, options.compensation_rank);
    if (options.compensation_bits == 0) {
      quantized_->attach("compensation", term.to_low_rank());
    } else {
      qlr::quant::QuantSpec factors;
      factors.bits = options.compensation_bits;
      factors.options.group_size = 32;
      factors.options.scale_type = qlr::ScaleType::f16;
      quantized_->attach("compensation",
                         qlr::adapter::QuantizedLowRank::quantize(term.to_low_rank(), factors));
    }
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
  /// Storage bits per weight, scales and zeros included (32 for FP32); a compensation term
  /// adds its own stored bits over the N·K weights.
  [[nodiscard]] double bits_per_parameter() const {
    if (!quantized_) return 32.0;
    double bits = qlr::quant::bits_per_parameter(quantized_->base());
    const auto weights = static_cast<double>(out_features() * in_features());
    for (const qlr::layers::AttachedAdapter& a : quantized_->adapters())
      bits += std::visit(
          []<class A>(const A& held) {
            const auto values = static_cast<double>(held.rank() * (held.in_features() + held.out_features()));
            if constexpr (std::is_same_v<A, qlr::adapter::QuantizedLowRank>)
              return held.bits_per_parameter() * values;
            else
              return 32.0 * values;
          },
          a.adapter) / weights;
    return bits;
  }
 private:
  Matrix dense_;
  std::optional<qlr::layers::AnyLinear> quantized_;
};

/// The four inputs a block's linear layers read: wq, wk, wv share one, w1 and w3 another.
enum class BlockInput : std::uint8_t {
  attention,         ///< the normalized residual, read by wq, wk, wv
  attention_output,  ///< the heads' output, read by wo
  mlp,               ///< the normalized residual, read by w1, w3
  mlp_hidden,        ///< silu(gate) ⊙ up (R4-rotated when the model is), read by w2
};
inline constexpr std::size_t block_inputs = 4;

/// Calibration statistics: per block, the covariance of each BlockInput.
struct Calibration {
  std::vector<std::array<std::optional<qlr::compensate::Covariance>, block_inputs>> blocks;
  index_t tokens = 0;  ///< tokens run (each is one sample of every input)
};

/// The keys and values of every block for the positions seen so far.
struct KvCache {
  std::vector<Matrix> keys;    ///< per block, seq_len × kv_dim
  std::vector<Matrix> values;  ///< per block, seq_len × kv_dim
};

/// Throws unless `options` can build a model of `config` (a quantized spec without +rht for
/// GPTQ or compensation, a rank every layer has, 0/3/4 compensation bits): cheap, so a tool
/// can call it before spending time on calibration.
inline void check_options(const qlr::io::Llama2cConfig& config, const ModelOptions& options) {
  constexpr const char* entity = "llama::Model";
  if (!options.gptq && options.compensation_rank == 0) return;
  QLR_CHECK(options.linear && !options.linear->rotated, invalid_argument,
            "{}: GPTQ or compensation with linear = {}; expected a quantized spec without "
            "+rht (the calibration is in the model's basis)", entity,
            options.linear ? to_string(*options.linear) : std::string("fp32"));
  const index_t max_rank = std::min({config.dim, config.hidden_dim, config.kv_dim()});
  QLR_CHECK(options.compensation_rank >= 0 && options.compensation_rank <= max_rank,
            invalid_argument,
            "{}: compensation_rank = {}; expected 0 to {} (the smallest min(N, K) of a layer)",
            entity, options.compensation_rank, max_rank);
  QLR_CHECK(options.compensation_bits == 0 || options.compensation_bits == 3 ||
                options.compensation_bits == 4,
            unsupported, "{}: compensation_bits = {}; expected 0 (FP32), 3 or 4", entity,
            options.compensation_bits);
}

/// A llama2.c model ready to run.
class Model {
 public:
  /// Builds the layers of `checkpoint` as `options` says, rotated first if it asks.
  /// GPTQ and EoRA read `calibration`, which calibrate() took from the FP32 model with the
  /// same rotation. Throws when options ask for one without it, or for a layer-level
  /// rotation (+rht), whose basis the statistics are not in.
  Model(const qlr::io::Llama2cModel& checkpoint, const ModelOptions& options = {},
        const Calibration* calibration = nullptr) {
    check_compression(checkpoint, options, calibration);
    if (options.rotation == RotationKind::none) {
      build(checkpoint, options, calibration);
      return;
    }
    qlr::io::Llama2cModel rotated = checkpoint;
    const StreamRotation r1(options.rotation, checkpoint.config.dim, options.rotation_seed);
    const StreamRotation r4(options.rotation, checkpoint.config.hidden_dim, options.rotation_seed + 1);
    rotate_checkpoint(rotated, r1, r4);
    hidden_rotation_.emplace(r4);
    build(rotated, options, calibration);
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
  /// With `capture`, each block's linear inputs are added to its statistics.
  [[nodiscard]] Matrix forward(std::span<const int> tokens, int pos, KvCache& cache,
                               Calibration* capture = nullptr) const {
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
      const auto observe = [&](BlockInput input, const Matrix& in) {
        if (capture) capture->blocks[l][static_cast<std::size_t>(input)]->add(in);
      };
      rms_norm(x, b.attention_norm, xb);
      observe(BlockInput::attention, xb);
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
      observe(BlockInput::attention_output, att_out);
      b.wo.forward(att_out, proj);
      x += proj;
      rms_norm(x, b.ffn_norm, xb);
      observe(BlockInput::mlp, xb);
      b.w1.forward(xb, gate);
      b.w3.forward(xb, up);
      // SwiGLU: silu(gate) ⊙ up.
      gate = (gate.array() / (1.0f + (-gate.array()).exp())) * up.array();
      if (hidden_rotation_) qlr::rotate::rotate_rows(*hidden_rotation_, gate);  // R4, online
      observe(BlockInput::mlp_hidden, gate);
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

  static void check_compression(const qlr::io::Llama2cModel& checkpoint,
                                const ModelOptions& options, const Calibration* calibration) {
    constexpr const char* entity = "llama::Model";
    check_options(checkpoint.config, options);
    const bool needs_calibration =
        options.gptq || (options.compensation_rank > 0 && options.compensation == CompensationKind::eora);
    QLR_CHECK(!needs_calibration || calibration != nullptr, invalid_argument,
              "{}: GPTQ or EoRA without calibration; expected statistics from calibrate()",
              entity);
    QLR_CHECK(!calibration || calibration->blocks.size() == checkpoint.layers.size(),
              shape_mismatch, "{}: calibration of {} blocks; expected {}", entity,
              calibration ? calibration->blocks.size() : 0, checkpoint.layers.size());
  }

  void build(const qlr::io::Llama2cModel& checkpoint, const ModelOptions& options,
             const Calibration* calibration) {
    config_ = checkpoint.config;
    embedding_ = checkpoint.token_embedding;
    final_norm_ = checkpoint.final_norm;
    for (std::size_t l = 0; l < checkpoint.layers.size(); ++l) {
      const auto& w = checkpoint.layers[l];
      // Each input's statistics and, for EoRA, its eigenspace, shared by its readers.
      std::array<const qlr::compensate::Covariance*, block_inputs> input{};
      std::array<std::optional<qlr::compensate::Eigenspace>, block_inputs> space;
      for (std::size_t i = 0; i < block_inputs && calibration; ++i) {
        input[i] = &*calibration->blocks[l][i];
        if (options.compensation_rank > 0 && options.compensation == CompensationKind::eora)
          space[i].emplace(*input[i]);
      }
      const auto make = [&](const Matrix& weight, BlockInput in) {
        const auto i = static_cast<std::size_t>(in);
        return Linear(weight, options, input[i], space[i]);
      };
      blocks_.push_back(Block{w.attention_norm, w.ffn_norm, make(w.wq, BlockInput::attention),
                              make(w.wk, BlockInput::attention), make(w.wv, BlockInput::attention),
                              make(w.wo, BlockInput::attention_output), make(w.w1, BlockInput::mlp),
                              make(w.w2, BlockInput::mlp_hidden), make(w.w3, BlockInput::mlp)});
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

/// Runs `tokens` in non-overlapping windows of `window` tokens, each from position 0 with an
/// empty cache, calling use(begin, logits) per window; a last window shorter than 2 tokens
/// is dropped. After each window, on_window(done, total) says whether to go on. Returns
/// false when it stopped early.
template <class Use>
bool run_windows(const Model& model, std::span<const int> tokens, int window, Calibration* capture,
                 Use use, const std::function<bool(index_t, index_t)>& on_window) {
  QLR_CHECK(window >= 2 && window <= model.config().seq_len, invalid_argument,
            "llama: window = {}; expected 2 <= window <= seq_len = {}", window,
            model.config().seq_len);
  const auto n = static_cast<index_t>(tokens.size());
  const index_t windows = (n + window - 1) / window;
  for (index_t w = 0; w < windows; ++w) {
    const index_t begin = w * window, length = std::min<index_t>(window, n - begin);
    if (length >= 2) {
      KvCache cache = model.make_cache();
      use(begin, model.forward(tokens.subspan(static_cast<std::size_t>(begin),
                                              static_cast<std::size_t>(length)),
                               0, cache, capture));
    }
    if (on_window && !on_window(w + 1, windows)) return false;
  }
  return true;
}

/// Scores `tokens` in windows as run_windows runs them: position t predicts token t + 1 of
/// the same window. `on_window(done, total)` reports progress.
inline NllResult score_windows(const Model& model, std::span<const int> tokens, int window,
                               const std::function<void(index_t, index_t)>& on_window = {}) {
  double total = 0;
  index_t targets = 0;
  const auto score = [&](index_t begin, const Matrix& logits) {
    for (index_t t = 0; t + 1 < logits.rows(); ++t) {
      const auto row = logits.row(t).cast<double>();
      const double top = row.maxCoeff();
      const double log_total = top + std::log((row.array() - top).exp().sum());
      total += log_total - row(tokens[static_cast<std::size_t>(begin + t + 1)]);
      ++targets;
    }
  };
  run_windows(model, tokens, window, nullptr, score, [&](index_t done, index_t all) {
    if (on_window) on_window(done, all);
    return true;
  });
  return {targets > 0 ? total / static_cast<double>(targets) : 0.0, targets};
}

/// The statistics of every block layer's input over `tokens`, run through `model` (the FP32
/// model, with the rotation the compressed one will have) in windows as score_windows runs
/// them; memory O(K²) per input, whatever the token count. `on_window(done, total)` reports
/// progress and returns false to cancel, which returns nothing. Throws when there are fewer
/// tokens than the widest input's K (a rank-deficient covariance) or a non-finite input.
inline std::optional<Calibration> calibrate(
    const Model& model, std::span<const int> tokens, int window,
    const std::function<bool(index_t, index_t)>& on_window = {}) {
  const qlr::io::Llama2cConfig& c = model.config();
  const index_t widest = std::max(c.dim, c.hidden_dim);
  const auto usable = static_cast<index_t>(tokens.size()) -
                      (static_cast<index_t>(tokens.size()) % window == 1 ? 1 : 0);
  QLR_CHECK(usable >= widest, invalid_argument,
            "llama::calibrate: {} calibration tokens; expected at least {} (the widest layer "
            "input) for a full-rank covariance", usable, widest);
  Calibration calibration;
  const index_t widths[block_inputs] = {c.dim, c.dim, c.dim, c.hidden_dim};
  calibration.blocks.resize(static_cast<std::size_t>(c.n_layers));
  for (auto& block : calibration.blocks)
    for (std::size_t i = 0; i < block_inputs; ++i) block[i].emplace(widths[i]);
  const auto count = [&](index_t, const Matrix& logits) { calibration.tokens += logits.rows(); };
  if (!run_windows(model, tokens, window, &calibration, count, on_window)) return std::nullopt;
  return calibration;
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
