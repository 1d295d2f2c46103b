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
//
// The layers' construction and the forward pass live in llama.cpp, compiled once per program:
// they instantiate GPTQ, EoRA and Eigen's solvers, which cost a minute in every unit.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "llama/ops.hpp"
#include "llama/rotation.hpp"
#include "qlr/compensate/calibration.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/io/llama2c.hpp"
#include "qlr/layers/any_linear.hpp"
#include "qlr/model/tokenizer.hpp"

namespace qlr::compensate {
class Eigenspace;  // eora.hpp: only llama.cpp, which builds the layers, pays for its solvers
}  // namespace qlr::compensate
namespace qlr::io {
struct PeftConfig;  // peft.hpp (and its JSON parser): only the units that load adapters
struct PeftModule;
struct PeftAdapter;
}  // namespace qlr::io

namespace llama {

using qlr::index_t;
using qlr::Matrix;
using qlr::Vector;

/// The seven block linears as PEFT names them (Hugging Face's Llama modules), in the
/// order q, k, v, o, gate, up, down.
inline constexpr std::array<std::string_view, 7> target_modules = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

/// "model.layers.<block>.self_attn.q_proj" etc.: the module path of a block linear in a
/// Hugging Face Llama, which PEFT's keys repeat. Throws for a module not in target_modules.
std::string module_path(index_t block, std::string_view module);

/// The index of `module` in target_modules. Throws naming `entity` and the valid names.
std::size_t module_index(std::string_view module, const char* entity);

/// target_modules as "q_proj, k_proj, …", for messages.
std::string module_list();

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
  Linear(const Matrix& w, const std::optional<qlr::layers::LinearSpec>& spec);
  /// `w` quantized as `options` says with the statistics `input` of what the layer reads
  /// (GPTQ) and their eigenspace `space` (EoRA); with no calibration asked for, the plain
  /// constructor's layer.
  Linear(const Matrix& w, const ModelOptions& options, const qlr::compensate::Covariance* input,
         const qlr::compensate::Eigenspace* space);
  /// A layer read from a file (layers::load_layers): a merged model's.
  explicit Linear(qlr::layers::AnyLinear layer) : quantized_(std::move(layer)) {}
  /// Adds PEFT module `m` (of an adapter with `config`): beside a quantized base, attached as
  /// "adapter"; into an FP32 weight, merged. Throws when it does not fit the layer.
  void add_adapter(const qlr::io::PeftModule& m, const qlr::io::PeftConfig& config);
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
  [[nodiscard]] double bits_per_parameter() const;
  /// Bytes the layer holds in memory: its one weight form (FP32 or packed), adapters, bias.
  [[nodiscard]] std::size_t memory_bytes() const {
    return quantized_ ? quantized_->memory_bytes()
                      : sizeof(float) * static_cast<std::size_t>(dense_.size());
  }
  /// The qlr layer, or null when the layer is FP32.
  [[nodiscard]] const qlr::layers::AnyLinear* quantized() const noexcept {
    return quantized_ ? &*quantized_ : nullptr;
  }
  /// The FP32 weight (N×K); empty when the layer is quantized.
  [[nodiscard]] const Matrix& dense() const noexcept { return dense_; }

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
void check_options(const qlr::io::Llama2cConfig& config, const ModelOptions& options);

/// A llama2.c model ready to run.
class Model {
 public:
  /// Builds the layers of `checkpoint` as `options` says, rotated first if it asks.
  /// GPTQ and EoRA read `calibration`, which calibrate() took from the FP32 model with the
  /// same rotation. Throws when options ask for one without it, or for a layer-level
  /// rotation (+rht), whose basis the statistics are not in.
  Model(const qlr::io::Llama2cModel& checkpoint, const ModelOptions& options = {},
        const Calibration* calibration = nullptr);

  /// The checkpoint's header.
  [[nodiscard]] const qlr::io::Llama2cConfig& config() const noexcept { return config_; }

  /// An empty cache for up to seq_len positions.
  [[nodiscard]] KvCache make_cache() const;

  /// Logits (T×vocab) of `tokens` at positions [pos, pos + T), attending to the cache's
  /// positions [0, pos) and to each other causally; their keys and values join the cache.
  /// Throws for a token id out of range or positions past seq_len.
  /// With `capture`, each block's linear inputs are added to its statistics.
  [[nodiscard]] Matrix forward(std::span<const int> tokens, int pos, KvCache& cache,
                               Calibration* capture = nullptr) const;

  /// Adds every module of a PEFT adapter to the block linear it names (module_path's names):
  /// beside quantized layers, merged into FP32 ones. Throws naming a module that is not a
  /// block linear of this model or whose shapes do not fit.
  void add_adapter(const qlr::io::PeftAdapter& adapter);

  /// Replaces the block linears that `layers` names (module_path's names) with those layers,
  /// e.g. a merged model's read by layers::load_layers. Throws naming a layer that is not a
  /// block linear of this model or whose shape differs.
  void replace_layers(std::map<std::string, qlr::layers::AnyLinear> layers);

  /// Storage bits per linear weight, averaged over the parameters of the seven block
  /// layers and, unless `with_classifier` is false, the classifier.
  [[nodiscard]] double bits_per_parameter(bool with_classifier = true) const;
  /// Bytes the linear layers hold in memory (resident weight bytes): the seven block layers
  /// and, unless `with_classifier` is false, the classifier.
  [[nodiscard]] std::size_t weight_bytes(bool with_classifier = true) const;

  /// One transformer block: its RMSNorm gains and seven linear layers.
  struct Block {
    Vector attention_norm, ffn_norm;    ///< gains before attention and the MLP (dim)
    Linear wq, wk, wv, wo, w1, w2, w3;  ///< q, k, v, o, gate, down, up
  };
  /// The blocks, first to last.
  [[nodiscard]] std::span<const Block> blocks() const noexcept { return blocks_; }
  /// The token embedding (vocab × dim), rotated by R1 when the model is.
  [[nodiscard]] const Matrix& embedding() const noexcept { return embedding_; }
  /// The RMSNorm gain before the classifier (dim).
  [[nodiscard]] const Vector& final_norm() const noexcept { return final_norm_; }
  /// The classifier (vocab × dim).
  [[nodiscard]] const Linear& classifier() const noexcept { return *classifier_; }
  /// RoPE's angles for positions [0, seq_len).
  [[nodiscard]] const ops::RopeTable<float>& rope() const noexcept { return rope_; }
  /// R4, which the engine applies online to the down projection's input; null when the
  /// model is not rotated.
  [[nodiscard]] const StreamRotation* hidden_rotation() const noexcept {
    return hidden_rotation_ ? &*hidden_rotation_ : nullptr;
  }

 private:
  static void check_compression(const qlr::io::Llama2cModel& checkpoint,
                                const ModelOptions& options, const Calibration* calibration);
  void build(const qlr::io::Llama2cModel& checkpoint, const ModelOptions& options,
             const Calibration* calibration);

  qlr::io::Llama2cConfig config_;
  Matrix embedding_;
  Vector final_norm_;
  std::vector<Block> blocks_;
  std::optional<Linear> classifier_;
  std::optional<StreamRotation> hidden_rotation_;  // R4 when the model is rotated
  ops::RopeTable<float> rope_;                     // RoPE's angles for [0, seq_len)
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
