// SPDX-License-Identifier: Apache-2.0
// Training adapters on the example engine: the forward and backward of a whole Llama model
// (embedding, RMSNorm, RoPE, grouped-query causal attention, SwiGLU, classifier and
// cross-entropy) over a batch of sequences, with the base frozen in whatever form the engine
// built it (FP32 or any LinearSpec, with or without R1/R4) and qlr::train adapters on any
// subset of the seven block linears, named as PEFT names them.
//
// The scalar T is float for training and double for the gradient checks: TrainableModel<double>
// runs this same code over the engine's dequantized weights. In float, a model whose adapters
// have B = 0 computes the engine's logits bit for bit (the operations are llama/ops.hpp's).
//
// Activations: each block keeps its input, q, k, v, the attention's output residual and the
// MLP's gate and up products, and each layer keeps its input (TrainableLinear); with
// `recompute`, only each block's input stays and the block runs again before its backward.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "llama/llama.hpp"
#include "qlr/train/linear.hpp"
#include "qlr/train/parameter.hpp"

namespace llama {

using qlr::train::MatrixT;
using qlr::train::VectorT;

/// splitmix64 of (a, b): independent seeds for steps, micro-batches and layers.
std::uint64_t mix_seed(std::uint64_t a, std::uint64_t b) noexcept;

/// Which adapters a TrainableModel attaches and how it keeps activations.
struct TrainOptions {
  qlr::train::AdapterConfig adapter;  ///< kind, rank, α, dropout, init; seed + layer index
  std::vector<std::string> targets{target_modules.begin(), target_modules.end()};  ///< modules
  std::string adapter_name = "default";  ///< PEFT's adapter name
  bool recompute = false;  ///< keep only each block's input, recompute the block in backward
};

/// Sequences of length + 1 tokens: row b reads tokens 0 … length − 1 and predicts 1 … length.
/// `counted` (sequences × length, empty: every target) is 1 where a target enters the loss,
/// 0 where it is masked (a prompt's tokens in instruction data).
struct Batch {
  std::vector<int> tokens;            ///< sequences × (length + 1), row-major
  std::vector<std::uint8_t> counted;  ///< sequences × length, or empty
  index_t sequences = 0;              ///< B
  index_t length = 0;                 ///< L, positions per sequence (≤ seq_len)
};

/// The engine's model with trainable adapters: forward() returns the batch's mean
/// next-token NLL over counted targets and keeps what backward() needs; backward() adds the
/// adapters' gradients of that loss to their buffers.
template <class T>
class TrainableModel {
 public:
  /// Adapters on `base`'s block linears as `options` says (B = 0: the base's function). In
  /// float the frozen parts are `base`'s own, which must outlive this; in double they are
  /// copies of its dequantized weights. Throws for an unknown target (listing the valid
  /// ones), no target, a compensated base (its term takes no part in the backward: start an
  /// adapter from the error instead, qlr::train::error_init) or an adapter the layers refuse.
  TrainableModel(const Model& base, const TrainOptions& options);

  /// The double twin of a float model: the same base, options and adapter values.
  template <class U>
  requires(!std::is_same_v<U, T>) explicit TrainableModel(const TrainableModel<U>& other);

  /// Mean NLL (nats per counted target) of `batch`; with `training`, adapters drop out.
  /// Keeps what backward() needs. Throws for a malformed batch (shape, token ids, a length
  /// past seq_len, no counted target).
  double forward(const Batch& batch, bool training = true);

  /// Adds ∂(the last forward's loss)/∂θ to every trainable adapter's gradient. Throws
  /// without a forward.
  void backward();

  /// The last forward's logits (B·L × vocab).
  [[nodiscard]] const MatrixT<T>& logits() const noexcept { return logits_; }

  /// Every trainable tensor under PEFT's in-model names.
  [[nodiscard]] qlr::train::ParameterList parameters() requires std::is_same_v<T, float>;

  /// Every adapter's gradients ← 0.
  void zero_gradients() noexcept;

  /// Restarts the dropout streams of every layer from `seed` (each layer its own stream): a
  /// loop that reseeds each step from the step number resumes bit for bit.
  void reseed_dropout(std::uint64_t seed) noexcept;

  /// Bytes the last forward keeps for backward() (activations of every block and layer).
  [[nodiscard]] std::size_t activation_bytes() const noexcept;

  /// The trainable layer of `module` (a target_modules name) in `block`.
  [[nodiscard]] qlr::train::TrainableLinear<T>& linear(index_t block, std::string_view module);
  /// The same, read-only.
  [[nodiscard]] const qlr::train::TrainableLinear<T>& linear(index_t block,
                                                             std::string_view module) const;

  /// The engine model underneath.
  [[nodiscard]] const Model& base() const noexcept { return *base_; }
  /// The options the adapters were made with.
  [[nodiscard]] const TrainOptions& options() const noexcept { return options_; }

 private:
  template <class U>
  friend class TrainableModel;

  // What a block keeps from its forward for its backward.
  struct BlockActivations {
    MatrixT<T> x;          // the block's input (B·L × dim)
    MatrixT<T> q, k, v;    // after RoPE (q, k)
    MatrixT<T> mid;        // x + attention output
    MatrixT<T> gate, up;   // w1 and w3 outputs
    std::array<std::vector<MatrixT<T>>, 7> masks;  // recompute: each layer's dropout masks
  };
  struct Block {
    VectorT<T> attention_norm, ffn_norm;
    std::vector<qlr::train::TrainableLinear<T>> linears;  // q, k, v, o, gate, up, down
  };

  void build(const TrainOptions& options);
  void block_forward(std::size_t l, const MatrixT<T>& x, BlockActivations& a, bool training,
                     bool keep_masks, MatrixT<T>& out);
  void block_backward(std::size_t l, BlockActivations& a, MatrixT<T>& dx);
  void rotate_hidden(MatrixT<T>& rows, bool inverse) const;

  const Model* base_;
  TrainOptions options_;
  MatrixT<T> embedding_, hidden_rotation_;  // double twin only: float reads the base's
  VectorT<T> final_norm_;
  std::vector<Block> blocks_;
  qlr::train::FrozenBase<T> classifier_;
  ops::RopeTable<T> rope_;  // the engine's angles, computed in T
  // The last forward.
  std::vector<BlockActivations> activations_;
  MatrixT<T> final_x_, final_h_, logits_, dlogits_;
  index_t length_ = 1;
  bool training_ = false, has_forward_ = false;
};

/// The model's adapters as PEFT saves them (io::save_peft_adapter): module paths, the
/// kind, rank and α of the options. QA-LoRA's A is converted to PEFT's pooling (the group mean
/// times the group count); a layer whose K is not a multiple of its group cannot be held by
/// PEFT and is left out, with a line added to `warnings`.
qlr::io::PeftAdapter to_peft(const TrainableModel<float>& model,
                             std::vector<std::string>& warnings);

/// `base` with the adapter kind, rank, α and targets of a PEFT adapter whose config is
/// `config` and whose modules are `modules`. Throws for what a TrainableModel cannot hold
/// (rank or α patterns, DoRA with QA-LoRA, no block linear).
TrainOptions options_from_peft(const qlr::io::PeftConfig& config,
                               std::span<const qlr::io::PeftModule> modules, TrainOptions base);

/// Sets every adapter of `model` from `adapter` (to_peft's inverse). Throws naming a module
/// that is missing or whose shapes do not fit.
void set_from_peft(TrainableModel<float>& model, const qlr::io::PeftAdapter& adapter);

/// A model's block linears with their adapters merged in, named by module path (for
/// layers::save_layers and Model::replace_layers), with a report per lossy merge.
struct MergedLayers {
  std::map<std::string, qlr::layers::AnyLinear> layers;  ///< module path → merged layer
  std::vector<std::string> reports;                      ///< "<module>: requantizing merge: …"
};

/// Every block linear of `model` with its trained adapter merged in: QA-LoRA into the zero
/// points (codes and scales untouched, lossless, ALGORITHMS.md §3.3); LoRA and DoRA into the
/// base's weight (dequantized, or FP32), quantized as `to` says, or the base's own spec
/// (round to nearest; lossy, a report per layer); a layer without an adapter as it is, or
/// quantized to `to`. Throws for an FP32 base without `to`, whose merge is no layer file, and
/// for QA-LoRA with a `to` other than its base's spec.
MergedLayers merge_adapters(const TrainableModel<float>& model,
                            const std::optional<qlr::layers::LinearSpec>& to = std::nullopt);

/// Where LoftQ or EoRA starts a model's adapters (ALGORITHMS.md §8.2): per targeted layer
/// (module path), the base quantized from W − s·B·A and the factors fitted to its error.
struct ErrorStart {
  /// One layer's starting adapter: A, B and, for DoRA, m = ‖Ŵ + s·B·A‖ per row.
  struct Factors {
    Matrix a, b;
    Vector magnitude;
  };
  std::map<std::string, qlr::layers::AnyLinear> bases;  ///< for Model::replace_layers
  std::map<std::string, Factors> factors;               ///< for set_error_start
};

/// LoftQ (`calibration` null) or EoRA (the eigenspace of each layer's input in `calibration`)
/// for every layer `options` targets: W is `fp32`'s layer (the FP32 model in the basis of the
/// model to train, i.e. with its rotation), the base is quantized as `spec` says, alternating
/// `iterations` times (1 keeps the round-to-nearest base). Throws for a QA-LoRA adapter (its A
/// reads pooled inputs, which no error fit gives), an FP32 `fp32` layer missing, or
/// iterations < 1.
ErrorStart error_start(const Model& fp32, const qlr::layers::LinearSpec& spec,
                       const TrainOptions& options, int iterations,
                       const Calibration* calibration = nullptr);

/// Sets the adapters of `model`, whose base took `start.bases`, to `start.factors`.
void set_error_start(TrainableModel<float>& model, const ErrorStart& start);

extern template class TrainableModel<float>;
extern template class TrainableModel<double>;
extern template TrainableModel<double>::TrainableModel(const TrainableModel<float>&);

}  // namespace llama
