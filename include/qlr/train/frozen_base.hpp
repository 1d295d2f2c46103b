// SPDX-License-Identifier: Apache-2.0
// What training needs of a frozen base layer, behind one small interface: its forward, the
// gradient with respect to its input (dX = dY·Ŵ), Ŵ applied to a few rows (DoRA's norms) and
// the layout its quantization groups have (QA-LoRA pools over them). A QuantizedLinear or an
// AnyLinear is wrapped as it is (FP32); DenseBase holds Ŵ as a plain matrix of any scalar,
// which is how the gradient checks run the same training code in double.
#pragma once

#include <memory>
#include <type_traits>
#include <utility>
#include <variant>

#include <Eigen/Core>

#include "qlr/core/error.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/types.hpp"

namespace qlr::train {

/// A row-major matrix of scalar T.
template <class T>
using MatrixT = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
/// A column vector of scalar T (one value per output row).
template <class T>
using VectorT = Eigen::Matrix<T, Eigen::Dynamic, 1>;
/// A read-only view of a row-major matrix of T.
template <class T>
using ConstRefT = Eigen::Ref<const MatrixT<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
/// A writable view of a row-major matrix of T.
template <class T>
using RefT = Eigen::Ref<MatrixT<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

/// A frozen base y = x·Ŵᵀ + b held as a dense matrix of T: the double twin of a quantized
/// layer (its dequantized weight) for gradient checks, or an unquantized FP32 base.
template <class T>
class DenseBase {
 public:
  /// Ŵ (N×K), finite; `group_size` is the quantization group its values came from (0: none),
  /// which QA-LoRA adapters must pool over. Throws for an empty or non-finite weight.
  explicit DenseBase(MatrixT<T> w, index_t group_size = 0, VectorT<T> bias = {})
      : w_(std::move(w)), bias_(std::move(bias)), group_size_(group_size) {
    constexpr const char* entity = "train::DenseBase";
    QLR_CHECK(w_.rows() >= 1 && w_.cols() >= 1, shape_mismatch,
              "{}: w is {}x{}; expected N x K with N, K >= 1", entity, w_.rows(), w_.cols());
    QLR_CHECK(w_.allFinite() && bias_.allFinite(), invalid_argument,
              "{}: w or bias holds a NaN or an infinity; expected finite values", entity);
    QLR_CHECK(bias_.size() == 0 || bias_.size() == w_.rows(), shape_mismatch,
              "{}: bias has {} values; expected 0 or N = {}", entity, bias_.size(), w_.rows());
    QLR_CHECK(group_size_ >= 0, invalid_argument, "{}: group_size = {}; expected >= 0", entity,
              group_size_);
  }

  [[nodiscard]] index_t in_features() const noexcept { return w_.cols(); }   ///< K
  [[nodiscard]] index_t out_features() const noexcept { return w_.rows(); }  ///< N
  [[nodiscard]] index_t group_size() const noexcept { return group_size_; }  ///< 0: none
  [[nodiscard]] bool is_rotated() const noexcept { return false; }           ///< groups lie along x
  /// y = x·Ŵᵀ + b.
  void forward(ConstRefT<T> x, RefT<T> y) const {
    y.noalias() = x * w_.transpose();
    if (bias_.size() != 0) y.rowwise() += bias_.transpose();
  }
  /// dx = dy·Ŵ (x is not needed: nothing is quantized on the way in).
  void backward_input(ConstRefT<T> /*x*/, ConstRefT<T> dy, RefT<T> dx) const {
    dx.noalias() = dy * w_;
  }
  /// out = a·Ŵᵀ.
  void apply_weight(ConstRefT<T> a, RefT<T> out) const { out.noalias() = a * w_.transpose(); }
  /// Ŵ.
  [[nodiscard]] MatrixT<T> dequantized_weight() const { return w_; }

 private:
  MatrixT<T> w_;
  VectorT<T> bias_;
  index_t group_size_;
};

/// The quantization group size of a layer's base (0 for one group per row).
template <class Layer>
index_t base_group_size(const Layer& layer) {
  if constexpr (requires { layer.group_size(); }) {
    return layer.group_size();
  } else {
    const auto q = layer.base();
    if constexpr (requires { q.group_size(); })
      return q.group_size();
    else
      return std::visit([](const auto& m) { return m.group_size(); }, q);
  }
}

/// A frozen base layer of scalar T, any type that has forward, backward_input, apply_weight
/// and dequantized_weight (QuantizedLinear, AnyLinear, DenseBase), held by value and reached
/// through one virtual call per operation.
template <class T>
class FrozenBase {
 public:
  /// Takes `layer`. A QuantizedLinear or AnyLinear must have no enabled adapter: the
  /// trainable layer owns every adapter (a frozen one is an adapter it does not train).
  template <class Layer>
  requires(!std::is_same_v<std::remove_cvref_t<Layer>, FrozenBase>) explicit FrozenBase(
      Layer layer) {
    if constexpr (requires { layer.adapters(); }) {
      for (const auto& a : layer.adapters())
        QLR_CHECK(!a.enabled, invalid_argument,
                  "train::FrozenBase: the layer has adapter '{}' enabled; expected a bare base "
                  "(add adapters to the TrainableLinear, frozen ones with trainable = false)",
                  a.name);
    }
    group_size_ = base_group_size(layer);
    impl_ = std::make_shared<Model<Layer>>(std::move(layer));
  }

  [[nodiscard]] index_t in_features() const noexcept { return impl_->in_features(); }    ///< K
  [[nodiscard]] index_t out_features() const noexcept { return impl_->out_features(); }  ///< N
  /// The base's quantization group along K (0 or ≥ K: one group per row).
  [[nodiscard]] index_t group_size() const noexcept { return group_size_; }
  /// Whether the base is rotated, so that its groups do not lie along x.
  [[nodiscard]] bool is_rotated() const noexcept { return impl_->is_rotated(); }
  /// y (M×N) = x·Ŵᵀ + b as the layer computes it (activation quantization included).
  void forward(ConstRefT<T> x, RefT<T> y) const { impl_->forward(x, y); }
  /// dx (M×K) = dy·Ŵ, straight through the activation quantizer; x is forward's input.
  void backward_input(ConstRefT<T> x, ConstRefT<T> dy, RefT<T> dx) const {
    impl_->backward_input(x, dy, dx);
  }
  /// out (R×N) = a·Ŵᵀ with a in full precision.
  void apply_weight(ConstRefT<T> a, RefT<T> out) const { impl_->apply_weight(a, out); }
  /// Ŵ (N×K) in the original basis.
  [[nodiscard]] MatrixT<T> dequantized_weight() const { return impl_->dequantized_weight(); }

 private:
  struct Interface {
    virtual ~Interface() = default;
    [[nodiscard]] virtual index_t in_features() const noexcept = 0;
    [[nodiscard]] virtual index_t out_features() const noexcept = 0;
    [[nodiscard]] virtual bool is_rotated() const noexcept = 0;
    virtual void forward(ConstRefT<T> x, RefT<T> y) const = 0;
    virtual void backward_input(ConstRefT<T> x, ConstRefT<T> dy, RefT<T> dx) const = 0;
    virtual void apply_weight(ConstRefT<T> a, RefT<T> out) const = 0;
    [[nodiscard]] virtual MatrixT<T> dequantized_weight() const = 0;
  };
  template <class Layer>
  struct Model final : Interface {
    explicit Model(Layer l) : layer(std::move(l)) {}
    index_t in_features() const noexcept override { return layer.in_features(); }
    index_t out_features() const noexcept override { return layer.out_features(); }
    bool is_rotated() const noexcept override { return layer.is_rotated(); }
    void forward(ConstRefT<T> x, RefT<T> y) const override { layer.forward(x, y); }
    void backward_input(ConstRefT<T> x, ConstRefT<T> dy, RefT<T> dx) const override {
      layer.backward_input(x, dy, dx);
    }
    void apply_weight(ConstRefT<T> a, RefT<T> out) const override { layer.apply_weight(a, out); }
    MatrixT<T> dequantized_weight() const override { return layer.dequantized_weight(); }
    Layer layer;
  };

  std::shared_ptr<const Interface> impl_;  // shared: copies of a trainable layer share the base
  index_t group_size_ = 0;
};

}  // namespace qlr::train
