// SPDX-License-Identifier: Apache-2.0
// The engine's layer construction (RTN or GPTQ, with SVD or EoRA compensation) and forward
// pass: the heavy half of llama.hpp, compiled once per program.
#include "llama/llama.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <variant>

#include "llama/ops.hpp"
#include "qlr/adapter/merge.hpp"
#include "qlr/adapter/quantized_low_rank.hpp"
#include "qlr/compensate/eora.hpp"
#include "qlr/compensate/gptq.hpp"
#include "qlr/io/peft.hpp"
#include "qlr/layers/peft.hpp"
#include "qlr/quant/spec.hpp"

namespace llama {

StreamRotation::StreamRotation(RotationKind kind, qlr::index_t n, std::uint64_t seed)
    : r_(make(kind, n, seed)) {}

qlr::index_t StreamRotation::size() const noexcept {
  return std::visit([](const auto& r) { return r.size(); }, r_);
}

qlr::index_t StreamRotation::scratch_size() const noexcept {
  return std::visit([](const auto& r) { return r.scratch_size(); }, r_);
}

void StreamRotation::rotate(float* x, float* scratch) const noexcept {
  std::visit([&](const auto& r) { r.rotate(x, scratch); }, r_);
}

void StreamRotation::unrotate(float* x, float* scratch) const noexcept {
  std::visit([&](const auto& r) { r.unrotate(x, scratch); }, r_);
}

StreamRotation::Any StreamRotation::make(RotationKind kind, qlr::index_t n, std::uint64_t seed) {
  switch (kind) {
    case RotationKind::hadamard:
      return qlr::rotate::Hadamard(n);
    case RotationKind::randomized_hadamard:
      return qlr::rotate::RandomizedHadamard(n, seed);
    case RotationKind::random_orthogonal:
      return qlr::rotate::RandomOrthogonal(n, seed);
    case RotationKind::none:
      break;
  }
  qlr::detail::fail(qlr::Errc::invalid_argument,
                    "llama::StreamRotation: kind = none; expected a rotation");
}

std::string module_list() {
  std::string out;
  for (const std::string_view m : target_modules) out += (out.empty() ? "" : ", ") + std::string(m);
  return out;
}

std::size_t module_index(std::string_view module, const char* entity) {
  const auto* it = std::find(target_modules.begin(), target_modules.end(), module);
  QLR_CHECK(it != target_modules.end(), invalid_argument,
            "{}: target module '{}' is not a block linear; expected one of {}", entity, module,
            module_list());
  return static_cast<std::size_t>(it - target_modules.begin());
}

std::string module_path(index_t block, std::string_view module) {
  const std::size_t j = module_index(module, "llama::module_path");
  return "model.layers." + std::to_string(block) + (j < 4 ? ".self_attn." : ".mlp.") +
         std::string(module);
}

void Linear::add_adapter(const qlr::io::PeftModule& m, const qlr::io::PeftConfig& config) {
  const qlr::layers::AnyAdapter adapter = qlr::layers::to_adapter(m, config, in_features());
  if (quantized_) {
    quantized_->attach("adapter", adapter);
    return;
  }
  dense_ = std::visit(
      [&]<class A>(const A& a) -> Matrix {
        if constexpr (std::is_same_v<A, qlr::adapter::Dora>)
          return qlr::adapter::merge(dense_, a).weight;
        else
          return qlr::adapter::merge(dense_, a);
      },
      adapter);
}

Linear::Linear(const Matrix& w, const std::optional<qlr::layers::LinearSpec>& spec) {
  if (spec)
    quantized_.emplace(qlr::layers::make_linear(w, *spec));
  else
    dense_ = w;
}

Linear::Linear(const Matrix& w, const ModelOptions& options,
               const qlr::compensate::Covariance* input,
               const qlr::compensate::Eigenspace* space) {
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

double Linear::bits_per_parameter() const {
  if (!quantized_) return 32.0;
  double bits = quantized_->bits_per_parameter();
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

void check_options(const qlr::io::Llama2cConfig& config, const ModelOptions& options) {
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

Model::Model(const qlr::io::Llama2cModel& checkpoint, const ModelOptions& options,
             const Calibration* calibration) {
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

KvCache Model::make_cache() const {
  KvCache cache;
  for (std::size_t l = 0; l < blocks_.size(); ++l) {
    cache.keys.emplace_back(Matrix::Zero(config_.seq_len, config_.kv_dim()));
    cache.values.emplace_back(Matrix::Zero(config_.seq_len, config_.kv_dim()));
  }
  return cache;
}

Matrix Model::forward(std::span<const int> tokens, int pos, KvCache& cache,
                      Calibration* capture) const {
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
  Eigen::VectorXf scores(pos + t_count);
  const int kv_per_head = config_.n_heads / config_.n_kv_heads;
  const float inv_sqrt_head = 1.0f / std::sqrt(static_cast<float>(head));
  for (std::size_t l = 0; l < blocks_.size(); ++l) {
    const Block& b = blocks_[l];
    const auto observe = [&](BlockInput input, const Matrix& in) {
      if (capture) capture->blocks[l][static_cast<std::size_t>(input)]->add(in);
    };
    ops::rms_norm(x, b.attention_norm, xb);
    observe(BlockInput::attention, xb);
    b.wq.forward(xb, q);
    b.wk.forward(xb, k);
    b.wv.forward(xb, v);
    const auto position = [pos](index_t t) { return pos + t; };
    ops::rope(q, rope_, position);
    ops::rope(k, rope_, position);
    cache.keys[l].middleRows(pos, t_count) = k;
    cache.values[l].middleRows(pos, t_count) = v;
    for (index_t t = 0; t < t_count; ++t) {
      const index_t last = pos + t;  // attends to positions [0, last]
      for (int h = 0; h < config_.n_heads; ++h) {
        const int kv_offset = (h / kv_per_head) * head;
        // One head as two matrix-vector products over the cached positions, (last+1, head):
        // scores = K_h·q_h / √head, then out = softmax(scores)ᵀ·V_h.
        ops::attend(cache.keys[l].block(0, kv_offset, last + 1, head),
                    cache.values[l].block(0, kv_offset, last + 1, head),
                    q.row(t).segment(h * head, head), inv_sqrt_head, scores.head(last + 1),
                    att_out.row(t).segment(h * head, head));
      }
    }
    observe(BlockInput::attention_output, att_out);
    b.wo.forward(att_out, proj);
    x += proj;
    ops::rms_norm(x, b.ffn_norm, xb);
    observe(BlockInput::mlp, xb);
    b.w1.forward(xb, gate);
    b.w3.forward(xb, up);
    // SwiGLU: silu(gate) ⊙ up.
    gate = ops::swiglu(gate, up);
    if (hidden_rotation_) qlr::rotate::rotate_rows(*hidden_rotation_, gate);  // R4, online
    observe(BlockInput::mlp_hidden, gate);
    b.w2.forward(gate, proj);
    x += proj;
  }
  ops::rms_norm(x, final_norm_, xb);
  Matrix logits(t_count, config_.vocab_size);
  classifier_->forward(xb, logits);
  return logits;
}

namespace {
/// The block linears of `b` in target_modules order (q, k, v, o, gate, up, down).
std::array<Linear*, 7> linears_of(Model::Block& b) {
  return {&b.wq, &b.wk, &b.wv, &b.wo, &b.w1, &b.w3, &b.w2};
}

/// The block and target_modules index of module path `name`; nullopt when it names no block
/// linear of a model of `blocks` blocks.
std::optional<std::pair<std::size_t, std::size_t>> find_module(std::string_view name,
                                                               std::size_t blocks) {
  for (std::size_t l = 0; l < blocks; ++l)
    for (std::size_t j = 0; j < target_modules.size(); ++j)
      if (module_path(static_cast<index_t>(l), target_modules[j]) == name) return std::pair{l, j};
  return std::nullopt;
}
}  // namespace

void Model::add_adapter(const qlr::io::PeftAdapter& adapter) {
  for (const qlr::io::PeftModule& m : adapter.modules) {
    const auto at = find_module(m.name, blocks_.size());
    QLR_CHECK(at.has_value(), invalid_argument,
              "llama::Model::add_adapter: module '{}' is not a block linear of this {}-block "
              "model; expected names like {}",
              m.name, blocks_.size(), module_path(0, "q_proj"));
    linears_of(blocks_[at->first])[at->second]->add_adapter(m, adapter.config);
  }
}

void Model::replace_layers(std::map<std::string, qlr::layers::AnyLinear> layers) {
  for (auto& [name, layer] : layers) {
    const auto at = find_module(name, blocks_.size());
    QLR_CHECK(at.has_value(), invalid_argument,
              "llama::Model::replace_layers: layer '{}' is not a block linear of this {}-block "
              "model; expected names like {}",
              name, blocks_.size(), module_path(0, "q_proj"));
    Linear& old = *linears_of(blocks_[at->first])[at->second];
    QLR_CHECK(
        layer.out_features() == old.out_features() && layer.in_features() == old.in_features(),
        shape_mismatch, "llama::Model::replace_layers: layer '{}' is {}x{}; expected {}x{}", name,
        layer.out_features(), layer.in_features(), old.out_features(), old.in_features());
    old = Linear(std::move(layer));
  }
}

double Model::bits_per_parameter(bool with_classifier) const {
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

std::size_t Model::weight_bytes(bool with_classifier) const {
  std::size_t bytes = with_classifier ? classifier_->memory_bytes() : 0;
  for (const Block& b : blocks_)
    for (const Linear* f : {&b.wq, &b.wk, &b.wv, &b.wo, &b.w1, &b.w2, &b.w3}) bytes += f->memory_bytes();
  return bytes;
}

void Model::check_compression(const qlr::io::Llama2cModel& checkpoint,
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

void Model::build(const qlr::io::Llama2cModel& checkpoint, const ModelOptions& options,
                  const Calibration* calibration) {
  config_ = checkpoint.config;
  rope_ = ops::RopeTable<float>(config_.seq_len, config_.head_size());
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
      return Linear(weight, options, input[i], space[i] ? &*space[i] : nullptr);
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

}  // namespace llama
