// SPDX-License-Identifier: Apache-2.0
// The trainable model's forward and backward (train.hpp), compiled once for float and double.
#include "llama/train.hpp"

#include <algorithm>
#include <cmath>
#include <optional>

#include <fmt/format.h>

#include "llama/ops.hpp"
#include "qlr/adapter/dora.hpp"
#include "qlr/adapter/qa_lora.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr/io/peft.hpp"
#include "qlr/rotate/rotation.hpp"
#include "qlr/train/init.hpp"

namespace llama {
namespace {

using qlr::ConstMatrixRef;
using qlr::MatrixRef;

/// An engine layer as a train::FrozenBase layer: the engine keeps it, this reads it.
class EngineLayer {
 public:
  explicit EngineLayer(const Linear& linear) : l_(&linear) {}
  [[nodiscard]] index_t in_features() const { return l_->in_features(); }
  [[nodiscard]] index_t out_features() const { return l_->out_features(); }
  [[nodiscard]] bool is_rotated() const { return l_->quantized() && l_->quantized()->is_rotated(); }
  [[nodiscard]] index_t group_size() const {
    return l_->quantized() ? qlr::train::base_group_size(*l_->quantized()) : 0;
  }
  void forward(ConstMatrixRef x, MatrixRef y) const { l_->forward(x, y); }
  void backward_input(ConstMatrixRef x, ConstMatrixRef dy, MatrixRef dx) const {
    if (const auto* q = l_->quantized())
      q->backward_input(x, dy, dx);
    else
      dx.noalias() = dy * l_->dense();
  }
  void apply_weight(ConstMatrixRef a, MatrixRef out) const {
    if (const auto* q = l_->quantized())
      q->apply_weight(a, out);
    else
      out.noalias() = a * l_->dense().transpose();
  }
  [[nodiscard]] Matrix dequantized_weight() const {
    return l_->quantized() ? l_->quantized()->dequantized_weight() : l_->dense();
  }

 private:
  const Linear* l_;
};

/// The frozen base of scalar T for an engine layer: the layer itself in float, its
/// dequantized weight in double.
template <class T>
qlr::train::FrozenBase<T> frozen(const Linear& linear) {
  const EngineLayer layer(linear);
  if constexpr (std::is_same_v<T, float>) {
    return qlr::train::FrozenBase<float>(layer);
  } else {
    return qlr::train::FrozenBase<T>(qlr::train::DenseBase<T>(
        layer.dequantized_weight().template cast<T>(), layer.group_size()));
  }
}

/// The engine's block linears in target_modules order (q, k, v, o, gate, up, down).
std::array<const Linear*, 7> block_linears(const Model::Block& b) {
  return {&b.wq, &b.wk, &b.wv, &b.wo, &b.w1, &b.w3, &b.w2};
}

}  // namespace

template <class T>
TrainableModel<T>::TrainableModel(const Model& base, const TrainOptions& options)
    : base_(&base),
      options_(options),
      classifier_(frozen<T>(base.classifier())),
      rope_(base.config().seq_len, base.config().head_size()) {
  constexpr const char* entity = "llama::TrainableModel";
  QLR_CHECK(!options.targets.empty(), invalid_argument,
            "{}: no target module; expected some of {}", entity, module_list());
  for (const std::string& t : options.targets)
    module_index(t, entity);  // throws naming the valid ones
  for (const Model::Block& b : base.blocks()) {
    for (const Linear* f : block_linears(b)) {
      QLR_CHECK(!f->quantized() || f->quantized()->adapters().empty(), invalid_argument,
                "{}: the base has a compensation term; expected a base without one (start an "
                "adapter from the quantization error instead: qlr::train::error_init)",
                entity);
    }
  }
  if constexpr (!std::is_same_v<T, float>) {
    embedding_ = base.embedding().template cast<T>();
    if (const StreamRotation* r4 = base.hidden_rotation()) {
      // Row i of rotate_rows(I) is (Qᵀ·e_i)ᵀ, so rows·R applies x ← Qᵀ·x to each row.
      Matrix r = Matrix::Identity(r4->size(), r4->size());
      qlr::rotate::rotate_rows(*r4, r);
      hidden_rotation_ = r.template cast<T>();
    }
  }
  final_norm_ = base.final_norm().template cast<T>();
  build(options);
}

template <class T>
template <class U>
requires(!std::is_same_v<U, T>) TrainableModel<T>::TrainableModel(const TrainableModel<U>& other)
    : TrainableModel(other.base(), other.options()) {
  for (std::size_t l = 0; l < blocks_.size(); ++l) {
    for (std::size_t j = 0; j < target_modules.size(); ++j) {
      for (const auto& s : other.blocks_[l].linears[j].adapters()) {
        blocks_[l].linears[j].set_values(s.name, s.a.template cast<T>(), s.b.template cast<T>(),
                                         s.magnitude.template cast<T>());
      }
    }
  }
}

template <class T>
void TrainableModel<T>::build(const TrainOptions& options) {
  const std::span<const Model::Block> engine = base_->blocks();
  for (std::size_t l = 0; l < engine.size(); ++l) {
    Block b{engine[l].attention_norm.template cast<T>(), engine[l].ffn_norm.template cast<T>(),
            {}};
    const auto linears = block_linears(engine[l]);
    for (std::size_t j = 0; j < linears.size(); ++j) {
      b.linears.emplace_back(module_path(static_cast<index_t>(l), target_modules[j]),
                             frozen<T>(*linears[j]));
      if (std::find(options.targets.begin(), options.targets.end(), target_modules[j]) ==
          options.targets.end())
        continue;
      qlr::train::AdapterConfig config = options.adapter;
      config.seed = options.adapter.seed + 7 * l + j;  // each layer its own A and masks
      b.linears.back().add_adapter(options.adapter_name, config);
    }
    blocks_.push_back(std::move(b));
  }
}

template <class T>
void TrainableModel<T>::rotate_hidden(MatrixT<T>& rows, bool inverse) const {
  if constexpr (std::is_same_v<T, float>) {
    const StreamRotation* r4 = base_->hidden_rotation();
    if (r4 == nullptr) return;
    if (inverse)
      qlr::rotate::unrotate_rows(*r4, rows);
    else
      qlr::rotate::rotate_rows(*r4, rows);
  } else {
    if (hidden_rotation_.size() == 0) return;
    rows = inverse ? MatrixT<T>(rows * hidden_rotation_.transpose())
                   : MatrixT<T>(rows * hidden_rotation_);
  }
}

template <class T>
double TrainableModel<T>::forward(const Batch& batch, bool training) {
  constexpr const char* entity = "llama::TrainableModel::forward";
  const qlr::io::Llama2cConfig& c = base_->config();
  const index_t n_seq = batch.sequences, length = batch.length;
  QLR_CHECK(n_seq >= 1 && length >= 1 && length <= c.seq_len, invalid_argument,
            "{}: {} sequences of {} positions; expected >= 1 sequence of 1 to seq_len = {}",
            entity, n_seq, length, c.seq_len);
  QLR_CHECK(static_cast<index_t>(batch.tokens.size()) == n_seq * (length + 1), shape_mismatch,
            "{}: {} tokens; expected sequences x (length + 1) = {}", entity, batch.tokens.size(),
            n_seq * (length + 1));
  QLR_CHECK(batch.counted.empty() || static_cast<index_t>(batch.counted.size()) == n_seq * length,
            shape_mismatch, "{}: {} loss flags; expected 0 or sequences x length = {}", entity,
            batch.counted.size(), n_seq * length);
  for (std::size_t i = 0; i < batch.tokens.size(); ++i) {
    QLR_CHECK(batch.tokens[i] >= 0 && batch.tokens[i] < c.vocab_size, invalid_argument,
              "{}: token {} = {}; expected 0 <= id < vocab_size = {}", entity, i,
              batch.tokens[i], c.vocab_size);
  }
  has_forward_ = false;
  length_ = length;
  training_ = training;
  const index_t rows = n_seq * length;
  const auto token = [&](index_t b, index_t t) {
    return batch.tokens[static_cast<std::size_t>(b * (length + 1) + t)];
  };
  MatrixT<T> x(rows, c.dim);
  const MatrixT<T>& embedding = [&]() -> const MatrixT<T>& {
    if constexpr (std::is_same_v<T, float>)
      return base_->embedding();
    else
      return embedding_;
  }();
  for (index_t b = 0; b < n_seq; ++b)
    for (index_t t = 0; t < length; ++t) x.row(b * length + t) = embedding.row(token(b, t));

  activations_.assign(blocks_.size(), BlockActivations{});
  MatrixT<T> out;
  for (std::size_t l = 0; l < blocks_.size(); ++l) {
    block_forward(l, x, activations_[l], training, options_.recompute, out);
    if (options_.recompute) {
      for (auto& f : blocks_[l].linears) f.release_activations();
      BlockActivations& a = activations_[l];
      a.q = a.k = a.v = a.mid = a.gate = a.up = MatrixT<T>();
    }
    x.swap(out);
  }
  final_x_ = std::move(x);
  ops::rms_norm(final_x_, final_norm_, final_h_);
  logits_.resize(rows, c.vocab_size);
  classifier_.forward(final_h_, logits_);

  // Mean next-token NLL as llama::score_windows computes it, and its gradient
  // (softmax − one-hot) / targets on the logits.
  // Rows in parallel, their NLLs added in row order.
  dlogits_.resize(rows, c.vocab_size);
  std::vector<double> nll(static_cast<std::size_t>(rows), 0.0);
  const auto counted = [&](index_t r) {
    return batch.counted.empty() || batch.counted[static_cast<std::size_t>(r)] != 0;
  };
  ops::for_rows(rows, c.vocab_size, [&](index_t begin, index_t end) {
    for (index_t r = begin; r < end; ++r) {
      if (!counted(r)) {
        dlogits_.row(r).setZero();
        continue;
      }
      const int target = token(r / length, r % length + 1);
      const auto row = logits_.row(r).template cast<double>();
      const double top = row.maxCoeff();
      const double log_total = top + std::log((row.array() - top).exp().sum());
      nll[static_cast<std::size_t>(r)] = log_total - row(target);
      dlogits_.row(r) = (row.array() - log_total).exp().template cast<T>();
      dlogits_(r, target) -= T(1);
    }
  });
  double total = 0;
  index_t targets = 0;
  for (index_t r = 0; r < rows; ++r) {
    if (!counted(r)) continue;
    total += nll[static_cast<std::size_t>(r)];
    ++targets;
  }
  QLR_CHECK(targets > 0, invalid_argument,
            "{}: every target is masked out; expected at least one counted target", entity);
  QLR_CHECK(std::isfinite(total), invalid_argument,
            "{}: the loss is not finite ({}); expected finite logits", entity, total);
  dlogits_ /= static_cast<T>(targets);
  has_forward_ = true;
  return total / static_cast<double>(targets);
}

template <class T>
void TrainableModel<T>::block_forward(std::size_t l, const MatrixT<T>& x, BlockActivations& a,
                                      bool training, bool keep_masks, MatrixT<T>& out) {
  const qlr::io::Llama2cConfig& c = base_->config();
  auto& f = blocks_[l].linears;
  const int head = c.head_size(), kv_per_head = c.n_heads / c.n_kv_heads;
  const index_t rows = x.rows();
  const auto masks = [&](std::size_t j) { return std::span<const MatrixT<T>>(a.masks[j]); };
  const auto position = [this](index_t r) { return r % length_; };
  if (&a.x != &x) a.x = x;
  MatrixT<T> h;
  ops::rms_norm(a.x, blocks_[l].attention_norm, h);
  a.q = f[0].forward(h, training, masks(0));
  a.k = f[1].forward(h, training, masks(1));
  a.v = f[2].forward(h, training, masks(2));
  ops::rope(a.q, rope_, position);
  ops::rope(a.k, rope_, position);
  MatrixT<T> att(rows, c.dim);
  const T inv_sqrt_head = T(1) / std::sqrt(static_cast<T>(head));
  // Each (sequence, head) writes its own columns of att: any split gives the same bits.
  qlr::parallel_for(rows / length_ * c.n_heads, 1, [&](index_t begin, index_t end) {
    VectorT<T> scores(length_);
    for (index_t task = begin; task < end; ++task) {
      const index_t s0 = task / c.n_heads * length_;
      const int hd = static_cast<int>(task % c.n_heads), kv_offset = (hd / kv_per_head) * head;
      for (index_t t = 0; t < length_; ++t) {
        ops::attend(a.k.block(s0, kv_offset, t + 1, head), a.v.block(s0, kv_offset, t + 1, head),
                    a.q.row(s0 + t).segment(hd * head, head), inv_sqrt_head, scores.head(t + 1),
                    att.row(s0 + t).segment(hd * head, head));
      }
    }
  });
  a.mid = a.x + f[3].forward(att, training, masks(3));
  ops::rms_norm(a.mid, blocks_[l].ffn_norm, h);
  a.gate = f[4].forward(h, training, masks(4));
  a.up = f[5].forward(h, training, masks(5));
  MatrixT<T> hidden = ops::swiglu(a.gate, a.up);
  rotate_hidden(hidden, false);
  out = a.mid + f[6].forward(hidden, training, masks(6));
  if (keep_masks) {
    for (std::size_t j = 0; j < f.size(); ++j) {
      a.masks[j].clear();
      for (const auto& s : f[j].adapters()) a.masks[j].push_back(s.mask);
    }
  }
}

template <class T>
void TrainableModel<T>::block_backward(std::size_t l, BlockActivations& a, MatrixT<T>& dx) {
  const qlr::io::Llama2cConfig& c = base_->config();
  auto& f = blocks_[l].linears;
  const int head = c.head_size(), kv_per_head = c.n_heads / c.n_kv_heads;
  const index_t rows = a.x.rows();
  const auto position = [this](index_t r) { return r % length_; };

  // MLP: out = mid + down(R4·swiglu(gate, up)), gate = w1(h), up = w3(h), h = norm(mid).
  MatrixT<T> dhidden = f[6].backward(dx);
  rotate_hidden(dhidden, true);
  MatrixT<T> dgate(rows, c.hidden_dim), dup(rows, c.hidden_dim);
  ops::for_rows(rows, c.hidden_dim, [&](index_t begin, index_t end) {
    for (index_t r = begin; r < end; ++r) {
      for (index_t i = 0; i < c.hidden_dim; ++i) {
        const T g = a.gate(r, i), d = dhidden(r, i);
        dup(r, i) = d * (g / (T(1) + std::exp(-g)));
        dgate(r, i) = d * a.up(r, i) * ops::silu_grad(g);
      }
    }
  });
  MatrixT<T> dh = f[4].backward(dgate);
  dh += f[5].backward(dup);
  ops::rms_norm_backward(a.mid, blocks_[l].ffn_norm, dh, dx);  // dx is now ∂L/∂mid

  // Attention: mid = x + o(attention(rope(q), rope(k), v)), q, k, v = w(norm(x)).
  const MatrixT<T> datt = f[3].backward(dx);
  MatrixT<T> dq(rows, c.dim), dk(rows, c.kv_dim()), dv(rows, c.kv_dim());
  const T inv_sqrt_head = T(1) / std::sqrt(static_cast<T>(head));
  // Per (sequence, KV group), in matrix form: S = Q·Kᵀ/√head, P = causal softmax(S),
  // dV = Pᵀ·dO, dS = P ⊙ (dP − rowsum(P ⊙ dP)) with dP = dO·Vᵀ, dQ = dS·K/√head,
  // dK = dSᵀ·Q/√head. Each task owns its rows of dk, dv and its heads' columns of dq, and adds
  // its heads in a fixed order: any split gives the same bits. Scratch: two L×L matrices per
  // thread (2 MB at L = 512).
  const index_t n_seq = rows / length_, positions = length_;
  qlr::parallel_for(n_seq * c.n_kv_heads, 1, [&](index_t begin, index_t end) {
    MatrixT<T> p(positions, positions), dp(positions, positions), dk_group(positions, head),
        dv_group(positions, head);
    for (index_t task = begin; task < end; ++task) {
      const index_t s0 = task / c.n_kv_heads * positions;
      const int group = static_cast<int>(task % c.n_kv_heads), kv_offset = group * head;
      const auto keys = a.k.block(s0, kv_offset, positions, head);
      const auto values = a.v.block(s0, kv_offset, positions, head);
      dk_group.setZero();
      dv_group.setZero();
      for (int hd = group * kv_per_head; hd < (group + 1) * kv_per_head; ++hd) {
        const auto q = a.q.block(s0, hd * head, positions, head);
        const auto d_out = datt.block(s0, hd * head, positions, head);
        p.noalias() = q * keys.transpose();
        dp.noalias() = d_out * values.transpose();
        for (index_t t = 0; t < positions; ++t) {
          auto pt = p.row(t).head(t + 1);
          auto dpt = dp.row(t).head(t + 1);
          pt *= inv_sqrt_head;
          pt = (pt.array() - pt.maxCoeff()).exp();
          pt /= pt.sum();
          const T mean = pt.dot(dpt);
          dpt = (pt.array() * (dpt.array() - mean)).matrix() * inv_sqrt_head;
          p.row(t).tail(positions - t - 1).setZero();
          dp.row(t).tail(positions - t - 1).setZero();
        }
        dq.block(s0, hd * head, positions, head).noalias() = dp * keys;
        dk_group.noalias() += dp.transpose() * q;
        dv_group.noalias() += p.transpose() * d_out;
      }
      dk.block(s0, kv_offset, positions, head) = dk_group;
      dv.block(s0, kv_offset, positions, head) = dv_group;
    }
  });
  ops::rope(dq, rope_, position, true);
  ops::rope(dk, rope_, position, true);
  dh = f[0].backward(dq);
  dh += f[1].backward(dk);
  dh += f[2].backward(dv);
  ops::rms_norm_backward(a.x, blocks_[l].attention_norm, dh, dx);  // ∂L/∂x
}

template <class T>
void TrainableModel<T>::backward() {
  QLR_CHECK(has_forward_, invalid_argument,
            "llama::TrainableModel::backward: no forward to go back through; expected "
            "forward() first");
  has_forward_ = false;  // one backward per forward: gradients would add twice
  MatrixT<T> dh(final_h_.rows(), final_h_.cols());
  classifier_.backward_input(final_h_, dlogits_, dh);
  MatrixT<T> dx = MatrixT<T>::Zero(final_x_.rows(), final_x_.cols());
  ops::rms_norm_backward(final_x_, final_norm_, dh, dx);
  for (std::size_t l = blocks_.size(); l-- > 0;) {
    BlockActivations& a = activations_[l];
    if (options_.recompute) {
      MatrixT<T> out;
      block_forward(l, a.x, a, training_, false, out);
    }
    block_backward(l, a, dx);
    if (options_.recompute) {
      for (auto& f : blocks_[l].linears) f.release_activations();
      a.q = a.k = a.v = a.mid = a.gate = a.up = MatrixT<T>();
    }
  }
}

template <class T>
qlr::train::ParameterList TrainableModel<T>::parameters() requires std::is_same_v<T, float> {
  qlr::train::ParameterList list;
  for (Block& b : blocks_) {
    for (auto& f : b.linears) {
      qlr::train::ParameterList p = f.parameters();
      list.insert(list.end(), p.begin(), p.end());
    }
  }
  return list;
}

template <class T>
void TrainableModel<T>::zero_gradients() noexcept {
  for (Block& b : blocks_)
    for (auto& f : b.linears) f.zero_gradients();
}

std::uint64_t mix_seed(std::uint64_t a, std::uint64_t b) noexcept {
  std::uint64_t z = a + 0x9E3779B97F4A7C15ull * (b + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

template <class T>
void TrainableModel<T>::reseed_dropout(std::uint64_t seed) noexcept {
  std::uint64_t layer = 0;
  for (Block& b : blocks_)
    for (auto& f : b.linears) f.reseed_dropout(mix_seed(seed, layer++));
}

template <class T>
std::size_t TrainableModel<T>::activation_bytes() const noexcept {
  std::size_t values = 0;
  for (const BlockActivations& a : activations_) {
    values += static_cast<std::size_t>(a.x.size() + a.q.size() + a.k.size() + a.v.size() +
                                       a.mid.size() + a.gate.size() + a.up.size());
    for (const auto& layer_masks : a.masks)
      for (const MatrixT<T>& m : layer_masks) values += static_cast<std::size_t>(m.size());
  }
  values += static_cast<std::size_t>(final_x_.size() + final_h_.size() + logits_.size() +
                                     dlogits_.size());
  std::size_t bytes = values * sizeof(T);
  for (const Block& b : blocks_)
    for (const auto& f : b.linears) bytes += f.activation_bytes();
  return bytes;
}

template <class T>
qlr::train::TrainableLinear<T>& TrainableModel<T>::linear(index_t block, std::string_view module) {
  QLR_CHECK(block >= 0 && block < static_cast<index_t>(blocks_.size()), invalid_argument,
            "llama::TrainableModel::linear: block = {}; expected 0 <= block < {}", block,
            blocks_.size());
  return blocks_[static_cast<std::size_t>(block)]
      .linears[module_index(module, "llama::TrainableModel::linear")];
}

template <class T>
const qlr::train::TrainableLinear<T>& TrainableModel<T>::linear(index_t block,
                                                                std::string_view module) const {
  return const_cast<TrainableModel*>(this)->linear(block, module);
}

qlr::io::PeftAdapter to_peft(const TrainableModel<float>& model,
                             std::vector<std::string>& warnings) {
  const TrainOptions& o = model.options();
  qlr::io::PeftAdapter out;
  std::vector<std::string> left_out;
  qlr::io::PeftConfig& c = out.config;
  c.task_type = "CAUSAL_LM";
  c.r = o.adapter.rank;
  c.lora_alpha = o.adapter.alpha;
  c.use_rslora = o.adapter.scaling == qlr::adapter::Scaling::rank_stabilized;
  c.use_dora = o.adapter.kind == qlr::train::AdapterKind::dora;
  c.use_qalora = o.adapter.kind == qlr::train::AdapterKind::qa_lora;
  c.target_modules = o.targets;
  c.rope_pairs = "adjacent";  // llama2.c's q/k rows (ALGORITHMS.md §1.6)
  for (index_t l = 0; l < model.base().config().n_layers; ++l) {
    for (const std::string& module : o.targets) {
      const auto& layer = model.linear(l, module);
      const auto& s = layer.adapter(o.adapter_name);
      qlr::io::PeftModule m{
          layer.module(), s.a, s.b, std::nullopt, c.r, c.lora_alpha, static_cast<double>(s.scale)};
      if (c.use_dora) m.magnitude = s.magnitude;
      if (c.use_qalora) {
        const index_t k = layer.in_features(), g = layer.base().group_size();
        c.qalora_group_size = g;
        if (k % g != 0) {
          left_out.push_back(fmt::format("{} (K = {})", layer.module(), k));
          continue;
        }
        m.a /= static_cast<float>(s.a.cols());  // PEFT pools the mean times K/g
      }
      out.modules.push_back(std::move(m));
    }
  }
  if (!left_out.empty())
    warnings.push_back(fmt::format(
        "{} layers left out of the PEFT export, whose QA-LoRA needs K to be a multiple of the "
        "group {}: {}",
        left_out.size(), c.qalora_group_size, fmt::join(left_out, ", ")));
  std::sort(out.modules.begin(), out.modules.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

TrainOptions options_from_peft(const qlr::io::PeftConfig& config,
                               std::span<const qlr::io::PeftModule> modules, TrainOptions base) {
  constexpr const char* entity = "llama::options_from_peft";
  QLR_CHECK(config.rank_pattern.empty() && config.alpha_pattern.empty(), unsupported,
            "{}: the adapter has rank or alpha patterns; expected one rank and alpha for every "
            "module",
            entity);
  QLR_CHECK(!(config.use_dora && config.use_qalora), unsupported,
            "{}: the adapter is DoRA and QA-LoRA at once; expected one", entity);
  qlr::train::AdapterConfig& a = base.adapter;
  a.kind = config.use_dora     ? qlr::train::AdapterKind::dora
           : config.use_qalora ? qlr::train::AdapterKind::qa_lora
                               : qlr::train::AdapterKind::lora;
  a.scaling =
      config.use_rslora ? qlr::adapter::Scaling::rank_stabilized : qlr::adapter::Scaling::standard;
  a.rank = config.r;
  a.alpha = config.lora_alpha;
  base.targets.clear();
  for (const std::string_view name : target_modules) {
    std::string suffix = ".";  // not "." + name: GCC 12 -O3 warns falsely (-Wrestrict) on it
    suffix += name;
    if (std::any_of(modules.begin(), modules.end(),
                    [&](const auto& m) { return m.name.ends_with(suffix); }))
      base.targets.emplace_back(name);
  }
  QLR_CHECK(!base.targets.empty(), invalid_argument,
            "{}: the adapter adapts no block linear; expected modules named like {}", entity,
            module_path(0, "q_proj"));
  return base;
}

void set_from_peft(TrainableModel<float>& model, const qlr::io::PeftAdapter& adapter) {
  constexpr const char* entity = "llama::set_from_peft";
  const TrainOptions& o = model.options();
  for (index_t l = 0; l < model.base().config().n_layers; ++l) {
    for (const std::string& module : o.targets) {
      auto& layer = model.linear(l, module);
      const auto& s = layer.adapter(o.adapter_name);
      const qlr::io::PeftModule* m = adapter.find(layer.module());
      QLR_CHECK(m != nullptr, invalid_argument,
                "{}: the adapter has no module {}; expected every target in every block", entity,
                layer.module());
      Matrix a = m->a;
      if (o.adapter.kind == qlr::train::AdapterKind::qa_lora) a *= static_cast<float>(s.a.cols());
      QLR_CHECK(a.rows() == s.a.rows() && a.cols() == s.a.cols() && m->b.rows() == s.b.rows() &&
                    m->b.cols() == s.b.cols(),
                shape_mismatch,
                "{}: {} has A [{}, {}], B [{}, {}]; expected A [{}, {}], B [{}, {}] for this model",
                entity, layer.module(), m->a.rows(), m->a.cols(), m->b.rows(), m->b.cols(),
                s.a.rows(), s.a.cols(), s.b.rows(), s.b.cols());
      layer.set_values(s.name, a, m->b, m->magnitude.value_or(qlr::Vector()));
    }
  }
}

MergedLayers merge_adapters(const TrainableModel<float>& model,
                            const std::optional<qlr::layers::LinearSpec>& to) {
  constexpr const char* entity = "llama::merge_adapters";
  const TrainOptions& o = model.options();
  const std::string to_name = to ? qlr::layers::to_string(*to) : std::string();
  MergedLayers out;
  for (index_t l = 0; l < model.base().config().n_layers; ++l) {
    const auto engine = block_linears(model.base().blocks()[static_cast<std::size_t>(l)]);
    for (const std::string_view module : target_modules) {
      const auto& layer = model.linear(l, module);
      const Linear& original = *engine[module_index(module, entity)];
      const qlr::layers::AnyLinear* base = original.quantized();
      QLR_CHECK(base != nullptr || to, invalid_argument,
                "{}: {} is FP32 and no spec to merge into; expected a quantized base or a spec "
                "(an FP32 merge is W + ΔW, no layer file)",
                entity, layer.module());
      const qlr::layers::LinearSpec& spec = to ? *to : base->spec();
      // The merge keeps the base's own quantization where the spec is the base's.
      const bool same_spec =
          base != nullptr && (!to || qlr::layers::to_string(base->spec()) == to_name);
      const auto weight = [&] {  // Ŵ, or W for an FP32 base
        return base != nullptr ? base->dequantized_weight() : original.dense();
      };
      if (std::find(o.targets.begin(), o.targets.end(), module) == o.targets.end()) {
        // Not adapted: the base's own layer, bit for bit, so the file holds the whole model.
        out.layers.emplace(layer.module(), same_spec ? qlr::layers::make_linear(base->base(), spec)
                                                     : qlr::layers::make_linear(weight(), spec));
        continue;
      }
      const auto& s = layer.adapter(o.adapter_name);
      if (o.adapter.kind == qlr::train::AdapterKind::qa_lora) {
        QLR_CHECK(same_spec, invalid_argument,
                  "{}: a QA-LoRA adapter merged into {}; expected its base's own spec {} (it "
                  "merges into the base's zero points)",
                  entity, to_name, base ? qlr::layers::to_string(base->spec()) : "fp32");
        qlr::layers::AnyLinear merged = qlr::layers::make_linear(base->base(), spec);
        merged.attach(
            "trained",
            qlr::adapter::QaLora(s.a, s.b, o.adapter.alpha, layer.in_features(),
                                 layer.base().group_size(), o.adapter.pooling, o.adapter.scaling));
        merged.merge_into_base("trained");
        out.layers.emplace(layer.module(), std::move(merged));
        continue;
      }
      // W + s·B·A, and for DoRA its rows scaled to m: in double, then quantized as the spec
      // says (its rotation included).
      const Eigen::MatrixXd w = weight().cast<double>();
      Eigen::MatrixXd exact =
          w + static_cast<double>(s.scale) * (s.b.cast<double>() * s.a.cast<double>());
      if (o.adapter.kind == qlr::train::AdapterKind::dora) {
        const Eigen::VectorXd norms = exact.rowwise().norm();
        exact = (s.magnitude.cast<double>().array() / norms.array()).matrix().asDiagonal() * exact;
      }
      qlr::layers::AnyLinear merged = qlr::layers::make_linear(exact.cast<float>(), spec);
      const Eigen::MatrixXd error = exact - merged.dequantized_weight().cast<double>();
      out.reports.push_back(fmt::format(
          "{}: requantizing merge: relative error {:.3g} of the weight, {:.3g} of the update",
          layer.module(), error.norm() / exact.norm(), error.norm() / (exact - w).norm()));
      out.layers.emplace(layer.module(), std::move(merged));
    }
  }
  return out;
}

ErrorStart error_start(const Model& fp32, const qlr::layers::LinearSpec& spec,
                       const TrainOptions& options, int iterations,
                       const Calibration* calibration) {
  constexpr const char* entity = "llama::error_start";
  const qlr::train::AdapterConfig& a = options.adapter;
  QLR_CHECK(a.kind != qlr::train::AdapterKind::qa_lora, invalid_argument,
            "{}: a QA-LoRA adapter; expected LoRA, rsLoRA or DoRA (QA-LoRA's A reads pooled "
            "inputs, which an error fit does not give)",
            entity);
  QLR_CHECK(!calibration || calibration->blocks.size() == fp32.blocks().size(), shape_mismatch,
            "{}: calibration of {} blocks; expected {}", entity,
            calibration ? calibration->blocks.size() : 0, fp32.blocks().size());
  const float scale = qlr::adapter::lora_scale(a.alpha, a.rank, a.scaling, entity);
  // Each module's input, in target_modules order (q, k, v, o, gate, up, down).
  constexpr std::array<BlockInput, 7> inputs{BlockInput::attention, BlockInput::attention,
                                             BlockInput::attention, BlockInput::attention_output,
                                             BlockInput::mlp,       BlockInput::mlp,
                                             BlockInput::mlp_hidden};
  ErrorStart start;
  for (std::size_t l = 0; l < fp32.blocks().size(); ++l) {
    const auto layers = block_linears(fp32.blocks()[l]);
    std::array<std::optional<qlr::compensate::Eigenspace>, block_inputs> spaces;
    for (const std::string& module : options.targets) {
      const std::size_t j = module_index(module, entity);
      const Linear& layer = *layers[j];
      QLR_CHECK(!layer.quantized(), invalid_argument,
                "{}: {} is quantized; expected the FP32 model", entity,
                module_path(static_cast<index_t>(l), module));
      const Matrix& w = layer.dense();
      const qlr::compensate::Eigenspace* space = nullptr;
      if (calibration) {
        const auto i = static_cast<std::size_t>(inputs[j]);
        if (!spaces[i]) spaces[i].emplace(*calibration->blocks[l][i]);
        space = &*spaces[i];
      }
      std::optional<qlr::layers::AnyLinear> base;
      const qlr::train::ErrorFactors f = qlr::train::fit_error(
          w,
          [&](const Matrix& target) {
            base.emplace(qlr::layers::make_linear(target, spec));
            return base->dequantized_weight();
          },
          a.rank, scale, iterations, space);
      ErrorStart::Factors factors{f.a, f.b, {}};
      if (a.kind == qlr::train::AdapterKind::dora)  // m = ‖Ŵ + s·B·A‖: c = 1, LoRA's start
        factors.magnitude =
            qlr::adapter::Dora(f.a, f.b, Vector::Ones(f.b.rows()), a.alpha, a.scaling)
                .row_norms(base->dequantized_weight());
      const std::string path = module_path(static_cast<index_t>(l), module);
      start.bases.emplace(path, std::move(*base));
      start.factors.emplace(path, std::move(factors));
    }
  }
  return start;
}

void set_error_start(TrainableModel<float>& model, const ErrorStart& start) {
  const TrainOptions& o = model.options();
  for (index_t l = 0; l < model.base().config().n_layers; ++l) {
    for (const std::string& module : o.targets) {
      const std::string path = module_path(l, module);
      const auto it = start.factors.find(path);
      QLR_CHECK(it != start.factors.end(), invalid_argument,
                "llama::set_error_start: no starting values for {}; expected every targeted "
                "layer's",
                path);
      model.linear(l, module).set_values(o.adapter_name, it->second.a, it->second.b,
                                         it->second.magnitude);
    }
  }
}

template class TrainableModel<float>;
template class TrainableModel<double>;
template TrainableModel<double>::TrainableModel(const TrainableModel<float>&);

}  // namespace llama
