// SPDX-License-Identifier: Apache-2.0
// QuantizedLinear: the layer an engine drops into a transformer. Its base weight is rotated
// (optional), quantized group-wise and packed once, in the one form its kernel reads; zero or
// more named low-rank adapters sit beside it. A forward runs one base GEMM and adds every
// adapter's B·t in the kernel's epilogue, so Y is written once. The type names only what
// changes what is stored or how it is computed — the weight format, the rotation, the
// activation width, the kernel — so swapping INT4 for NF4, adding a Hadamard rotation or
// choosing W4A8 is a change of one argument, while the quantizer (RTN, MSE clip, GPTQ) and
// the adapters are values.
#pragma once

#include <cmath>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

#include "qlr/adapter/concept.hpp"
#include "qlr/adapter/zero_merge.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/format.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/view.hpp"
#include "qlr/layers/adapter_bank.hpp"
#include "qlr/layers/policies.hpp"
#include "qlr/layers/rotated_activations.hpp"
#include "qlr/quant/activation.hpp"
#include "qlr/quant/concept.hpp"
#include "qlr/quant/spec.hpp"
#include "qlr/rotate/rotation.hpp"

namespace qlr::layers {

namespace detail {

/// Throws unless x is M×K with M ≥ 1 and y (named y_name in messages) is M×N.
inline void check_io(ConstMatrixRef x, ConstMatrixRef y, index_t n, index_t k, const char* entity,
                     const char* y_name = "y") {
  QLR_CHECK(x.cols() == k && x.rows() >= 1, shape_mismatch,
            "{}: x is {}x{}; expected M x K = M x {} with M >= 1", entity, x.rows(), x.cols(), k);
  QLR_CHECK(y.rows() == x.rows() && y.cols() == n, shape_mismatch,
            "{}: {} is {}x{}; expected M x N = {}x{}", entity, y_name, y.rows(), y.cols(), x.rows(),
            n);
}

/// Throws unless `bias` is empty or N finite values.
inline void check_bias(const Vector& bias, index_t n) {
  if (bias.size() == 0) return;
  QLR_CHECK(bias.size() == n, shape_mismatch,
            "layers::QuantizedLinear::set_bias: bias has {} values; expected N = {}", bias.size(),
            n);
  check_finite(bias.transpose(), "layers::QuantizedLinear::set_bias");
}

/// The QA-LoRA adapter `a` (attached as `name`) with its run-time scale folded in, checked
/// for a merge into the base's zero points.
inline adapter::QaLora mergeable_qa_lora(const AttachedAdapter& a, std::string_view name,
                                         bool rotation_is_identity) {
  constexpr const char* entity = "layers::QuantizedLinear::merge_into_base";
  const auto* qa = std::get_if<adapter::QaLora>(&a.adapter);
  QLR_CHECK(qa != nullptr, invalid_argument,
            "{}: adapter '{}' is not QA-LoRA; expected a QA-LoRA adapter (others merge into an "
            "FP32 weight: adapter::merge, or adapter::requantizing_merge)",
            entity, name);
  QLR_CHECK(a.enabled, invalid_argument, "{}: adapter '{}' is disabled; expected an enabled one",
            entity, name);
  QLR_CHECK(a.basis == Basis::rotated || rotation_is_identity, invalid_argument,
            "{}: adapter '{}' reads the original basis of a rotated layer; expected "
            "Basis::rotated (the base's groups are in the rotated basis)",
            entity, name);
  if (a.scale == 1.0f) return *qa;
  return adapter::QaLora(qa->a(), qa->b(), qa->alpha() * a.scale, qa->in_features(),
                         qa->group_size(), qa->pooling(), qa->scaling());
}

/// Throws for a QA-LoRA adapter beside a base of `encoding`, which has no zero points.
inline void check_adapter_fits(const AnyAdapter& a, std::string_view name, Encoding encoding) {
  QLR_CHECK(!std::holds_alternative<adapter::QaLora>(a) || encoding == Encoding::int_asym,
            unsupported,
            "layers::QuantizedLinear::attach: adapter '{}' is QA-LoRA on a {} base; expected an "
            "asymmetric integer base (its zero points absorb it)",
            name, to_string(encoding));
}

}  // namespace detail

/// The base of a QuantizedLinear: a weight of format F, stored once in the form kernel K
/// reads, in the basis rotation R makes (W·Q), with activations entering the GEMM as Act says.
template <QuantFormatType F, rotate::RotationPolicy R, ActivationPolicy Act, class K>
  requires KernelFor<K, F, Act>
class QuantizedBase {
 public:
  using format = F;  ///< the weight's quantized format

  /// Adapters this base can hold, checked at compile time (QA-LoRA needs int_asym zeros).
  template <class A>
  static constexpr bool holds = is_any_adapter_alternative<A> && adapter::AdapterFor<A, F>;
  /// Whether QA-LoRA adapters can be merged into the zero points.
  static constexpr bool mergeable = F::encoding == Encoding::int_asym;

  /// Rotates `w` (N×K) on its input side (W·Q), quantizes it with `quantizer` and packs it.
  template <quant::Quantizer Q>
    requires std::same_as<typename Q::format, F>
  QuantizedBase(ConstMatrixRef w, const Q& quantizer, R rotation, Act act)
      : rotation_(std::move(rotation)),
        act_(act),
        packed_(K::template pack<Act>(rotate_and_quantize(w, quantizer, rotation_))) {}

  /// A base over `q`, already quantized in the rotated basis (a file, a merge, GPTQ).
  QuantizedBase(const QuantizedMatrix<F>& q, R rotation, Act act)
      : rotation_(std::move(rotation)), act_(act), packed_(K::template pack<Act>(fitting(q))) {}

  [[nodiscard]] index_t in_features() const noexcept { return packed_.cols(); }   ///< K
  [[nodiscard]] index_t out_features() const noexcept { return packed_.rows(); }  ///< N
  /// The rotation policy.
  [[nodiscard]] const R& rotation() const noexcept { return rotation_; }
  /// The activation policy.
  [[nodiscard]] const Act& activations() const noexcept { return act_; }
  /// The weight as the kernel reads it.
  [[nodiscard]] const typename K::template packed<F, Act>& packed() const noexcept {
    return packed_;
  }

  /// Whether Q = I: known from the type, or asked of a rotation chosen at run time.
  [[nodiscard]] bool rotation_is_identity() const noexcept {
    if constexpr (std::is_same_v<R, rotate::Identity>)
      return true;
    else if constexpr (requires { rotation_.is_identity(); })
      return rotation_.is_identity();
    else
      return false;
  }
  /// Whether a forward needs Qᵀ·x as a matrix: for FP32 activations of a rotated base, or
  /// for adapters that read the rotated basis.
  [[nodiscard]] bool needs_rotated_input(bool adapters_read_rotated) const noexcept {
    return !rotation_is_identity() && (Act::bits == 0 || adapters_read_rotated);
  }
  /// Each row of x ← Qᵀ·x.
  void rotate_rows(Matrix& x) const { rotate::rotate_rows(rotation_, x); }
  /// Each row of w ← Q·w: a rotated-basis update back in the original basis.
  void unrotate_rows(Matrix& w) const { rotate::unrotate_rows(rotation_, w); }

  /// Y = X·Ŵᵀ + epilogue; `rotated_x` is Qᵀ·x when needs_rotated_input() said so.
  void run(ConstMatrixRef x, const Matrix* rotated_x, MatrixRef y, const Epilogue& e) const {
    const MatrixView out{y.data(), y.rows(), y.cols(), y.outerStride()};
    if constexpr (Act::bits == 0) {
      const ConstMatrixRef in = rotated_x != nullptr ? ConstMatrixRef(*rotated_x) : x;
      K::gemm(packed_, ConstMatrixView{in.data(), in.rows(), in.cols(), in.outerStride()}, out, e);
    } else {
      const quant::ActivationOptions options{Act::bits, act_.clip};
      const quant::QuantizedActivations codes =
          rotation_is_identity() ? quantize_activations(x, options)
                                 : rotate_quantize_per_token(rotation_, x, options);
      K::gemm(packed_, codes.view(), out, e);
    }
  }

  /// out (R×N) = A (R×K)·Ŵᵀ in the original basis with A in FP32, whatever Act says.
  void apply_weight(ConstMatrixRef a, MatrixRef out) const {
    const MatrixView o{out.data(), out.rows(), out.cols(), out.outerStride()};
    if (rotation_is_identity()) {
      K::gemm(packed_, ConstMatrixView{a.data(), a.rows(), a.cols(), a.outerStride()}, o, {});
      return;
    }
    Matrix ar = a;
    rotate_rows(ar);
    K::gemm(packed_, ConstMatrixView{ar.data(), ar.rows(), ar.cols(), ar.cols()}, o, {});
  }

  /// dX = dY·Ŵ in the original basis, straight through the activation quantizer: zero where
  /// a clip < 1 saturated (Qᵀ·x)[i] (ALGORITHMS.md §8.3). x is the forward's input.
  void input_grad(ConstMatrixRef x, ConstMatrixRef dy, MatrixRef dx) const {
    const ConstMatrixView g{dy.data(), dy.rows(), dy.cols(), dy.outerStride()};
    bool clipped = false;
    if constexpr (Act::bits != 0) clipped = act_.clip < 1.0f;
    if (rotation_is_identity() && !clipped) {
      K::input_grad(packed_, g, MatrixView{dx.data(), dx.rows(), dx.cols(), dx.outerStride()});
      return;
    }
    Matrix d(dx.rows(), dx.cols());  // in the rotated basis
    K::input_grad(packed_, g, MatrixView{d.data(), d.rows(), d.cols(), d.cols()});
    if constexpr (Act::bits != 0) {
      if (clipped) {
        Matrix xr = x;
        rotate_rows(xr);
        for (index_t t = 0; t < xr.rows(); ++t) {
          const float range = act_.clip * xr.row(t).cwiseAbs().maxCoeff();
          for (index_t i = 0; i < xr.cols(); ++i)
            if (std::abs(xr(t, i)) > range) d(t, i) = 0.0f;
        }
      }
    }
    unrotate_rows(d);
    dx = d;
  }

  /// The dequantized weight Ŵ (N×K) in `basis`.
  [[nodiscard]] Matrix dequantized(Basis basis) const {
    Matrix w = decoded();
    if (basis == Basis::original && !rotation_is_identity()) unrotate_rows(w);
    return w;
  }

  /// The quantized weight in the rotated basis, unpacked from the kernel's form.
  [[nodiscard]] QuantizedMatrix<F> quantized() const { return packed_.unpack(); }

  /// Folds `qa` into the zero points (ALGORITHMS.md §3.3) and repacks.
  void merge_qa_lora(const adapter::QaLora& qa, ZeroMode zeros)
    requires mergeable
  {
    packed_ = K::template pack<Act>(adapter::merge_into_zeros(packed_.unpack(), qa, zeros));
  }

  /// Throws for an adapter this base cannot hold (QA-LoRA on a base without zero points).
  void check_adapter(const AnyAdapter& a, std::string_view name) const {
    detail::check_adapter_fits(a, name, F::encoding);
  }

  /// Bytes held: the packed weight, the rotation and the object itself.
  [[nodiscard]] std::size_t memory_bytes() const noexcept {
    std::size_t rotation_bytes = 0;
    if constexpr (requires { rotation_.memory_bytes(); }) rotation_bytes = rotation_.memory_bytes();
    return sizeof(*this) - sizeof(packed_) + packed_.memory_bytes() + rotation_bytes;
  }
  /// Storage cost per weight of the quantized weight (codes, scales, zeros).
  [[nodiscard]] double bits_per_parameter() const noexcept { return packed_.bits_per_parameter(); }

 private:
  // Ŵ in the rotated basis, from the form the kernel holds.
  [[nodiscard]] Matrix decoded() const {
    if constexpr (requires(float* out) { packed_.decode_rows(0, 1, out); }) {
      Matrix w(out_features(), in_features());
      packed_.decode_rows(0, out_features(), w.data());
      return w;
    } else {
      return quant::dequantize(packed_.unpack());
    }
  }

  template <class Q>
  static QuantizedMatrix<F> rotate_and_quantize(ConstMatrixRef w, const Q& quantizer,
                                                const R& rotation) {
    if constexpr (std::is_same_v<R, rotate::Identity>) {
      QLR_CHECK(w.cols() == rotation.size(), shape_mismatch,
                "layers::QuantizedLinear: w has K = {} columns; expected the rotation's n = {}",
                w.cols(), rotation.size());
      return quantizer.quantize(w);
    } else {
      Matrix rotated = w;
      rotate::rotate_weight_input(rotation, rotated);  // checks K = n and finiteness
      return quantizer.quantize(rotated);
    }
  }

  const QuantizedMatrix<F>& fitting(const QuantizedMatrix<F>& q) const {
    QLR_CHECK(q.cols() == rotation_.size(), shape_mismatch,
              "layers::QuantizedLinear: base has K = {} columns; expected the rotation's n = {}",
              q.cols(), rotation_.size());
    return q;
  }

  [[no_unique_address]] R rotation_;
  [[no_unique_address]] Act act_;
  typename K::template packed<F, Act> packed_;
};

/// A linear layer y = x·Wᵀ + b over a base (QuantizedBase, or AnyLinear's run-time one) with
/// named low-rank adapters: the operations every layer type shares, written once over Base.
template <class Base>
class LinearLayer {
 public:
  /// The adapter id of a row that uses no adapter, in a multi-adapter forward.
  static constexpr index_t no_adapter = AdapterBank::no_adapter;

  [[nodiscard]] index_t in_features() const noexcept { return base_.in_features(); }   ///< K
  [[nodiscard]] index_t out_features() const noexcept { return base_.out_features(); }  ///< N

  /// Sets the bias b (N values, finite); an empty vector removes it.
  void set_bias(const Vector& bias) {
    detail::check_bias(bias, out_features());
    bias_ = bias;
  }
  /// The bias (empty when there is none).
  [[nodiscard]] const Vector& bias() const noexcept { return bias_; }

  /// Attaches `a` under `name`, enabled, reading `basis`. Throws for a taken name or an
  /// adapter whose shape is not N×K. An adapter the base cannot hold (QA-LoRA beside a base
  /// without zero points) fails to compile.
  template <class A>
    requires Base::template holds<A>
  void attach(std::string name, A a, Basis basis = Basis::original) {
    attach(std::move(name), AnyAdapter(std::move(a)), basis);
  }
  /// Attaches an adapter chosen at run time. Throws as attach does, and for an adapter the
  /// base cannot hold.
  void attach(std::string name, AnyAdapter a, Basis basis = Basis::original) {
    base_.check_adapter(a, name);
    bank_.attach(std::move(name), std::move(a), basis, base_weight(),
                 "layers::QuantizedLinear::attach");
  }
  /// Removes the adapter `name`. Ids of the adapters attached after it drop by one.
  void detach(std::string_view name) { bank_.detach(name); }
  /// Enables or disables adapter `name`: a disabled adapter takes no part in any forward.
  void set_enabled(std::string_view name, bool enabled) { bank_.set_enabled(name, enabled); }
  /// Multiplies adapter `name`'s update by `scale` (1 as attached; 0 silences it).
  void set_scale(std::string_view name, float scale) {
    bank_.set_scale(name, scale, base_weight());
  }

  /// Folds QA-LoRA adapter `name`, with its run-time scale, into the base's zero points (the
  /// exact merge of ALGORITHMS.md §3.3), repacks the base and detaches the adapter: forward
  /// gives the same outputs within FP32 rounding without a low-rank path. ZeroMode::integer
  /// rounds and clamps the new zero points instead (lossy; see adapter::merge_into_zeros).
  /// Throws for an adapter that is not QA-LoRA or is disabled, or one that reads the original
  /// basis of a rotated layer (its groups are not the base's).
  void merge_into_base(std::string_view name, ZeroMode zeros = ZeroMode::floating)
    requires Base::mergeable
  {
    const adapter::QaLora qa =
        detail::mergeable_qa_lora(bank_.get(name), name, base_.rotation_is_identity());
    base_.merge_qa_lora(qa, zeros);
    bank_.detach(name);
    bank_.base_changed(base_weight());  // DoRA norms read the base
  }

  /// The id of adapter `name` for a multi-adapter forward. Throws for an unknown name.
  [[nodiscard]] index_t adapter_id(std::string_view name) const { return bank_.id(name); }
  /// The names of the attached adapters, in id order.
  [[nodiscard]] std::vector<std::string> adapter_names() const { return bank_.names(); }
  /// Every attached adapter with its state, in id order: a view, valid until the next change.
  [[nodiscard]] std::span<const AttachedAdapter> adapters() const noexcept {
    return bank_.adapters();
  }
  /// The adapter `name` as attached. Throws for an unknown name or another type.
  template <class A>
  [[nodiscard]] const A& adapter(std::string_view name) const {
    const auto* a = std::get_if<A>(&bank_.get(name).adapter);
    QLR_CHECK(a != nullptr, invalid_argument,
              "layers::QuantizedLinear::adapter: '{}' holds another adapter type", name);
    return *a;
  }

  /// Y (M×N) = X (M×K)·Ŵᵀ + b plus every enabled adapter. A DoRA adapter rescales the
  /// whole output, so it must be the only one enabled. Throws for mismatched shapes.
  void forward(ConstMatrixRef x, MatrixRef y) const {
    detail::check_io(x, y, out_features(), in_features(), "layers::QuantizedLinear::forward");
    const std::optional<Matrix> rotated = rotated_input(x);
    const Matrix* xr = rotated ? &*rotated : nullptr;
    base_.run(x, xr, y, bank_.plan(x, xr).epilogue(bias_));
  }

  /// Multi-adapter batch: row i of X uses adapter `adapter_of_row[i]` (an id from
  /// adapter_id, or no_adapter) — one base GEMM for the whole batch, then each adapter's
  /// low-rank path on its rows, added in the epilogue. Throws for an id out of range or a
  /// disabled adapter.
  void forward(ConstMatrixRef x, MatrixRef y, std::span<const index_t> adapter_of_row) const {
    detail::check_io(x, y, out_features(), in_features(), "layers::QuantizedLinear::forward");
    const std::optional<Matrix> rotated = rotated_input(x);
    const Matrix* xr = rotated ? &*rotated : nullptr;
    base_.run(x, xr, y, bank_.plan(x, xr, adapter_of_row).epilogue(bias_));
  }

  /// forward(x, y) into a new M×N matrix.
  [[nodiscard]] Matrix forward(ConstMatrixRef x) const {
    Matrix y(x.rows(), out_features());
    forward(x, y);
    return y;
  }

  /// Whether the base is rotated (Q ≠ I): its quantization groups lie in the rotated basis.
  [[nodiscard]] bool is_rotated() const noexcept { return !base_.rotation_is_identity(); }

  /// The dequantized base Ŵ in the original basis (N×K): what the layer computes without
  /// adapters and bias, up to activation quantization.
  [[nodiscard]] Matrix dequantized_weight() const { return base_.dequantized(Basis::original); }

  /// dX (M×K) = dY (M×N)·Ŵ: the gradient of the base term X·Ŵᵀ with respect to X, in the
  /// original basis. Per-token activation quantization passes it straight through (zero
  /// where a clip < 1 saturated an activation, read from `x`, the forward's input). Adapters
  /// and bias take no part: train::TrainableLinear adds its adapters' terms. Throws for
  /// mismatched shapes or a NaN/Inf in dY.
  void backward_input(ConstMatrixRef x, ConstMatrixRef dy, MatrixRef dx) const {
    constexpr const char* entity = "layers::QuantizedLinear::backward_input";
    detail::check_io(x, dy, out_features(), in_features(), entity, "dy");
    QLR_CHECK(dx.rows() == x.rows() && dx.cols() == in_features(), shape_mismatch,
              "{}: dx is {}x{}; expected M x K = {}x{}", entity, dx.rows(), dx.cols(), x.rows(),
              in_features());
    base_.input_grad(x, dy, dx);
  }

  /// out (R×N) = A (R×K)·Ŵᵀ: the base weight applied to the rows of A in FP32 whatever the
  /// activation policy, without adapters or bias (DoRA's norms read Ŵ·Aᵀ). Throws for
  /// mismatched shapes.
  void apply_weight(ConstMatrixRef a, MatrixRef out) const {
    detail::check_io(a, out, out_features(), in_features(),
                     "layers::QuantizedLinear::apply_weight");
    base_.apply_weight(a, out);
  }

  /// The dense FP32 weight in the original basis that the layer computes with its enabled
  /// adapters summed in (a DoRA adapter rescales the rows): the oracle of forward().
  [[nodiscard]] Matrix dense_weight() const {
    Matrix w = dequantized_weight();
    bank_.add_updates(w, [&](Matrix& delta) { base_.unrotate_rows(delta); });
    return w;
  }

  /// Storage cost per weight of the quantized base (codes, scales, zeros), adapters apart.
  [[nodiscard]] double bits_per_parameter() const noexcept { return base_.bits_per_parameter(); }
  /// Bytes this layer holds: its one weight form, its adapters (with the stacked Bᵀ the
  /// epilogue reads), its bias and a fixed few hundred bytes.
  [[nodiscard]] std::size_t memory_bytes() const noexcept {
    return sizeof(*this) - sizeof(base_) - sizeof(bank_) + base_.memory_bytes() +
           bank_.memory_bytes() + sizeof(float) * static_cast<std::size_t>(bias_.size());
  }

 protected:
  /// A layer over `base`, without adapters or bias.
  explicit LinearLayer(Base base)
      : base_(std::move(base)), bank_(base_.out_features(), base_.in_features()) {}

  Base base_;          ///< the quantized weight and how it is run
  AdapterBank bank_;   ///< the adapters
  Vector bias_;        ///< N values, or empty

 private:
  BaseWeight base_weight() const {
    return [this](Basis basis) { return base_.dequantized(basis); };
  }

  std::optional<Matrix> rotated_input(ConstMatrixRef x) const {
    if (!base_.needs_rotated_input(bank_.reads_rotated_basis())) return std::nullopt;
    Matrix xr = x;
    base_.rotate_rows(xr);
    return xr;
  }
};

/// A QuantizedLinear by its stored weight format F (QuantFormat<bits, encoding>): see
/// QuantizedLinear, which names it by a quantizer.
template <QuantFormatType F, rotate::RotationPolicy R = rotate::Identity,
          ActivationPolicy Act = FloatActivations, class K = AutoKernel>
  requires KernelFor<resolved_kernel<K, F>, F, Act>
class BasicQuantizedLinear : public LinearLayer<QuantizedBase<F, R, Act, resolved_kernel<K, F>>> {
  using Base = QuantizedBase<F, R, Act, resolved_kernel<K, F>>;
  using Layer = LinearLayer<Base>;

 public:
  using format = F;                          ///< the base weight's quantized format
  using rotation_type = R;                   ///< the rotation policy
  using activation_type = Act;               ///< the activation policy
  using kernel_type = resolved_kernel<K, F>;  ///< the kernel policy

  /// Quantizes `w` (N×K) with `quantizer` (F's default one unless given: IntAsym, IntSym or
  /// Nf4 with default options; GPTQ or a clip search are other quantizers of the same
  /// format) and packs it, without a rotation (R = Identity).
  template <quant::Quantizer Q = quant::DefaultQuantizer<F>>
    requires std::same_as<typename Q::format, F> && std::is_same_v<R, rotate::Identity>
  explicit BasicQuantizedLinear(ConstMatrixRef w, const Q& quantizer = Q(), Act act = {})
      : Layer(Base(w, quantizer, rotate::Identity(w.cols()), act)) {}

  /// Rotates `w` (N×K) on its input side (W·Q), quantizes it with `quantizer` and packs it.
  template <quant::Quantizer Q>
    requires std::same_as<typename Q::format, F>
  BasicQuantizedLinear(ConstMatrixRef w, const Q& quantizer, R rotation, Act act = {})
      : Layer(Base(w, quantizer, std::move(rotation), act)) {}

  /// A layer over an already quantized base `q`, stored in the rotated basis (a file, a merge).
  BasicQuantizedLinear(const QuantizedMatrix<F>& q, R rotation, Act act = {})
      : Layer(Base(q, std::move(rotation), act)) {}

  /// The quantized base in the rotated basis, unpacked from the kernel's form (a new matrix).
  [[nodiscard]] QuantizedMatrix<F> base() const { return this->base_.quantized(); }
  /// The base as its kernel holds it.
  [[nodiscard]] const auto& packed_base() const noexcept { return this->base_.packed(); }
  /// The rotation policy.
  [[nodiscard]] const R& rotation() const noexcept { return this->base_.rotation(); }
  /// The activation policy.
  [[nodiscard]] const Act& activations() const noexcept { return this->base_.activations(); }
};

/// The format quantizer or format `Q` names: Q::format for a Quantizer, Q for a QuantFormat.
template <class Q>
using format_of = typename std::conditional_t<quant::Quantizer<Q>, Q,
                                              std::type_identity<std::type_identity<Q>>>::format;

/// A quantizer policy or a format, as QuantizedLinear's first argument.
template <class Q>
concept QuantizerOrFormat = quant::Quantizer<Q> || QuantFormatType<Q>;

/// A linear layer y = x·Wᵀ + b with a quantized base and named low-rank adapters, named by
/// the quantizer that makes its base (`QuantizedLinear<quant::IntAsym<4>>`) or by its format:
/// every quantizer of one format gives the same type. R rotates the input side (W·Q, Qᵀ·x),
/// Act says how activations enter the GEMM, K is the kernel (by default qlr's SIMD kernels
/// for INT2/INT3/INT4/INT8 codes, the dense one for NF4).
template <QuantizerOrFormat Q, rotate::RotationPolicy R = rotate::Identity,
          ActivationPolicy Act = FloatActivations, class K = AutoKernel>
using QuantizedLinear = BasicQuantizedLinear<format_of<Q>, R, Act, K>;

}  // namespace qlr::layers
