// SPDX-License-Identifier: Apache-2.0
// A QuantizedLinear chosen at run time, for engines that read the layer's format from a
// file or a flag: a LinearSpec names the weight format, the activation width, the rotation
// and the kernel, and make_linear maps it onto a closed list of compiled compositions
// (STYLE.md §3.6). Formats the SIMD kernels take (INT4/INT8) run there with FP32, INT8 or
// INT4 activations; the others (INT2/INT3, NF4) run on the dense kernel, weight-only.
//
// Compiling the 21 compositions costs about a minute per translation unit that calls
// make_linear (or load_layers). A project with several such units may compile them once:
// define QLR_SEPARATE_MAKE_LINEAR in all of them and, in exactly one unit, also
// QLR_MAKE_LINEAR_IMPLEMENTATION before including this header; the others then see only
// make_linear's declarations. Without the macros everything stays inline (header-only).
#pragma once

#include <charconv>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "qlr/adapter/dora.hpp"
#include "qlr/adapter/lora.hpp"
#include "qlr/adapter/low_rank.hpp"
#include "qlr/adapter/qa_lora.hpp"
#include "qlr/adapter/quantized_low_rank.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/layers/policies.hpp"
#include "qlr/layers/quantized_linear.hpp"
#include "qlr/quant/int_group.hpp"
#include "qlr/quant/nf4.hpp"
#include "qlr/quant/spec.hpp"
#include "qlr/rotate/rotation.hpp"

namespace qlr::layers {

/// A rotation chosen at run time: none (the identity) or a randomized Hadamard.
class AnyRotation {
 public:
  /// The identity of size n.
  explicit AnyRotation(index_t n) : r_(rotate::Identity(n)) {}
  /// A randomized Hadamard rotation.
  explicit AnyRotation(rotate::RandomizedHadamard r) : r_(std::move(r)) {}

  /// n.
  [[nodiscard]] index_t size() const noexcept {
    return std::visit([](const auto& r) { return r.size(); }, r_);
  }
  /// Whether it is the identity (a layer built without rotation).
  [[nodiscard]] bool is_identity() const noexcept {
    return std::holds_alternative<rotate::Identity>(r_);
  }
  /// Floats of scratch a row needs.
  [[nodiscard]] index_t scratch_size() const noexcept {
    return std::visit([](const auto& r) { return r.scratch_size(); }, r_);
  }
  /// x ← Qᵀ·x.
  void rotate(float* x, float* scratch) const noexcept {
    std::visit([&](const auto& r) { r.rotate(x, scratch); }, r_);
  }
  /// x ← Q·x.
  void unrotate(float* x, float* scratch) const noexcept {
    std::visit([&](const auto& r) { r.unrotate(x, scratch); }, r_);
  }

 private:
  std::variant<rotate::Identity, rotate::RandomizedHadamard> r_;
};

/// Which kernel a runtime layer uses.
enum class KernelChoice : std::uint8_t {
  automatic,  ///< the SIMD kernels when they take the format, else the dense one
  dense,      ///< the dequantized FP32 weight through Eigen (weight-only)
};

/// A layer's composition, chosen at run time.
struct LinearSpec {
  quant::QuantSpec weights;      ///< the base weight's quantizer
  int activation_bits = 0;       ///< 0 (FP32), 8 or 4 (per token)
  float activation_clip = 1.0f;  ///< per-token range clip·max|x|
  bool rotated = false;          ///< a randomized Hadamard on the input side
  std::uint64_t rotation_seed = 0;               ///< its signs' seed
  KernelChoice kernel = KernelChoice::automatic;  ///< which kernel runs it
};

/// The spec's name, which parse_linear_spec reads back: the weights' quant spec, then
/// "+a8" / "+a4", "+rht<seed>" and "+dense" when they apply, e.g. "int4-sym-g128+a8+rht7".
inline std::string to_string(const LinearSpec& spec) {
  std::string name = quant::to_string(spec.weights);
  if (spec.activation_bits != 0) name += "+a" + std::to_string(spec.activation_bits);
  if (spec.rotated) name += "+rht" + std::to_string(spec.rotation_seed);
  if (spec.kernel == KernelChoice::dense) name += "+dense";
  return name;
}

/// Reads "<quant spec>[+a8|+a4][+rht<seed>][+dense]" (see to_string). Throws naming the
/// word it does not understand.
inline LinearSpec parse_linear_spec(std::string_view text) {
  constexpr const char* entity = "layers::parse_linear_spec";
  LinearSpec spec;
  const std::size_t plus = text.find('+');
  spec.weights = quant::parse_quant_spec(text.substr(0, plus));
  for (std::size_t begin = plus; begin != std::string_view::npos;) {
    const std::size_t next = text.find('+', begin + 1);
    const std::string_view word = text.substr(begin + 1, next == std::string_view::npos ? next : next - begin - 1);
    begin = next;
    if (word == "a8" || word == "a4") {
      spec.activation_bits = word[1] - '0';
    } else if (word == "dense") {
      spec.kernel = KernelChoice::dense;
    } else if (word.starts_with("rht")) {
      const auto [end, ec] = std::from_chars(word.data() + 3, word.data() + word.size(), spec.rotation_seed);
      QLR_CHECK(ec == std::errc() && end == word.data() + word.size() && word.size() > 3,
                invalid_argument, "{}: '{}' in '{}'; expected rht<seed>, e.g. rht42", entity, word,
                text);
      spec.rotated = true;
    } else {
      qlr::detail::fail(Errc::invalid_argument,
                        "{}: '{}' in '{}'; expected a8, a4, rht<seed> or dense after '+'", entity,
                        word, text);
    }
  }
  return spec;
}

/// Any adapter a runtime layer can hold.
using AnyAdapter = std::variant<adapter::Lora, adapter::Dora, adapter::LowRank,
                                adapter::QuantizedLowRank, adapter::QaLora>;

/// An adapter as a layer holds it: the adapter, the basis it reads and its run-time state.
struct AttachedAdapter {
  std::string name;              ///< the name it was attached under
  AnyAdapter adapter;            ///< the adapter itself
  Basis basis = Basis::original; ///< the basis it reads
  bool enabled = true;           ///< whether forwards use it
  float scale = 1.0f;            ///< run-time multiplier of its update
};

/// A QuantizedLinear whose composition was chosen at run time (make_linear). The same
/// operations as QuantizedLinear, through one virtual call each.
class AnyLinear {
  struct Interface;

 public:
  /// Wraps a compiled composition `layer` described by `spec`.
  template <class Layer>
  static AnyLinear wrap(LinearSpec spec, Layer layer) {
    return AnyLinear(std::move(spec), std::make_unique<Model<Layer>>(std::move(layer)));
  }

  /// The layer's composition.
  [[nodiscard]] const LinearSpec& spec() const noexcept { return spec_; }
  [[nodiscard]] index_t in_features() const { return impl_->in_features(); }   ///< K
  [[nodiscard]] index_t out_features() const { return impl_->out_features(); }  ///< N
  /// Y (M×N) = X·Ŵᵀ + b plus the enabled adapters (QuantizedLinear::forward).
  void forward(ConstMatrixRef x, MatrixRef y) const { impl_->forward(x, y); }
  /// forward(x, y) into a new matrix.
  [[nodiscard]] Matrix forward(ConstMatrixRef x) const {
    Matrix y(x.rows(), out_features());
    forward(x, y);
    return y;
  }
  /// Multi-adapter batch: row i uses adapter adapter_of_row[i] (or -1).
  void forward(ConstMatrixRef x, MatrixRef y, std::span<const index_t> adapter_of_row) const {
    impl_->forward_rows(x, y, adapter_of_row);
  }
  /// Attaches `a` under `name`. Throws when the base cannot hold it (QA-LoRA needs an
  /// asymmetric integer base).
  void attach(std::string name, AnyAdapter a, Basis basis = Basis::original) {
    impl_->attach(std::move(name), std::move(a), basis);
  }
  /// Removes adapter `name`.
  void detach(std::string_view name) { impl_->detach(name); }
  /// Enables or disables adapter `name`.
  void set_enabled(std::string_view name, bool enabled) { impl_->set_enabled(name, enabled); }
  /// Multiplies adapter `name`'s update by `scale`.
  void set_scale(std::string_view name, float scale) { impl_->set_scale(name, scale); }
  /// Folds QA-LoRA adapter `name` into the base's zero points (QuantizedLinear::merge_into_base).
  void merge_into_base(std::string_view name, ZeroMode zeros = ZeroMode::floating) {
    impl_->merge_into_base(name, zeros);
  }
  /// The id of adapter `name` for a multi-adapter forward.
  [[nodiscard]] index_t adapter_id(std::string_view name) const { return impl_->adapter_id(name); }
  /// The attached adapters' names, in id order.
  [[nodiscard]] std::vector<std::string> adapter_names() const { return impl_->adapter_names(); }
  /// Sets the bias (N values; empty removes it).
  void set_bias(const Vector& bias) { impl_->set_bias(bias); }
  /// The dequantized base in the original basis.
  [[nodiscard]] Matrix dequantized_weight() const { return impl_->dequantized_weight(); }
  /// The dense weight with the enabled adapters, the oracle of forward().
  [[nodiscard]] Matrix dense_weight() const { return impl_->dense_weight(); }
  /// The quantized base, in the rotated basis.
  [[nodiscard]] quant::AnyQuantizedMatrix base() const { return impl_->base(); }
  /// The bias (empty when there is none).
  [[nodiscard]] Vector bias() const { return impl_->bias(); }
  /// Every attached adapter with its state, in id order.
  [[nodiscard]] std::vector<AttachedAdapter> adapters() const { return impl_->adapters(); }

 private:
  struct Interface {
    virtual ~Interface() = default;
    [[nodiscard]] virtual index_t in_features() const = 0;
    [[nodiscard]] virtual index_t out_features() const = 0;
    virtual void forward(ConstMatrixRef x, MatrixRef y) const = 0;
    virtual void forward_rows(ConstMatrixRef x, MatrixRef y, std::span<const index_t> ids) const = 0;
    virtual void attach(std::string name, AnyAdapter a, Basis basis) = 0;
    virtual void detach(std::string_view name) = 0;
    virtual void set_enabled(std::string_view name, bool enabled) = 0;
    virtual void set_scale(std::string_view name, float scale) = 0;
    virtual void merge_into_base(std::string_view name, ZeroMode zeros) = 0;
    [[nodiscard]] virtual index_t adapter_id(std::string_view name) const = 0;
    [[nodiscard]] virtual std::vector<std::string> adapter_names() const = 0;
    virtual void set_bias(const Vector& bias) = 0;
    [[nodiscard]] virtual Matrix dequantized_weight() const = 0;
    [[nodiscard]] virtual Matrix dense_weight() const = 0;
    [[nodiscard]] virtual quant::AnyQuantizedMatrix base() const = 0;
    [[nodiscard]] virtual Vector bias() const = 0;
    [[nodiscard]] virtual std::vector<AttachedAdapter> adapters() const = 0;
  };

  template <class Layer>
  struct Model final : Interface {
    explicit Model(Layer l) : layer(std::move(l)) {}
    index_t in_features() const override { return layer.in_features(); }
    index_t out_features() const override { return layer.out_features(); }
    void forward(ConstMatrixRef x, MatrixRef y) const override { layer.forward(x, y); }
    void forward_rows(ConstMatrixRef x, MatrixRef y, std::span<const index_t> ids) const override {
      layer.forward(x, y, ids);
    }
    void attach(std::string name, AnyAdapter a, Basis basis) override {
      std::visit(
          [&]<class A>(A& held) {
            if constexpr (Layer::adapter_set::template contains<A>) {
              layer.attach(std::move(name), std::move(held), basis);
            } else {
              qlr::detail::fail(Errc::unsupported,
                                "layers::AnyLinear::attach: adapter '{}' is QA-LoRA on a {} base; "
                                "expected an asymmetric integer base (its zero points absorb it)",
                                name, to_string(Layer::format::encoding));
            }
          },
          a);
    }
    void detach(std::string_view name) override { layer.detach(name); }
    void set_enabled(std::string_view name, bool enabled) override { layer.set_enabled(name, enabled); }
    void set_scale(std::string_view name, float scale) override { layer.set_scale(name, scale); }
    void merge_into_base(std::string_view name, ZeroMode zeros) override {
      if constexpr (Layer::adapter_set::template contains<adapter::QaLora>) {
        layer.merge_into_base(name, zeros);
      } else {
        (void)layer.adapter_id(name);  // an unknown name is named as such first
        qlr::detail::fail(Errc::invalid_argument,
                          "layers::AnyLinear::merge_into_base: adapter '{}' is on a {} base; "
                          "expected QA-LoRA on an asymmetric integer base",
                          name, to_string(Layer::format::encoding));
      }
    }
    index_t adapter_id(std::string_view name) const override { return layer.adapter_id(name); }
    std::vector<std::string> adapter_names() const override { return layer.adapter_names(); }
    void set_bias(const Vector& bias) override { layer.set_bias(bias); }
    Matrix dequantized_weight() const override { return layer.dequantized_weight(); }
    Matrix dense_weight() const override { return layer.dense_weight(); }
    quant::AnyQuantizedMatrix base() const override { return layer.base(); }
    Vector bias() const override { return layer.bias(); }
    std::vector<AttachedAdapter> adapters() const override {
      std::vector<AttachedAdapter> all;
      layer.for_each_adapter([&](const std::string& name, const auto& held, Basis basis, bool enabled,
                                 float scale) {
        all.push_back({name, std::visit([](const auto& a) { return AnyAdapter(a); }, held), basis,
                       enabled, scale});
      });
      return all;
    }
    Layer layer;
  };

  AnyLinear(LinearSpec spec, std::unique_ptr<Interface> impl)
      : spec_(std::move(spec)), impl_(std::move(impl)) {}

  LinearSpec spec_;
  std::unique_ptr<Interface> impl_;
};

#if defined(QLR_SEPARATE_MAKE_LINEAR) && !defined(QLR_MAKE_LINEAR_IMPLEMENTATION)

/// Rotates, quantizes and packs `w` (N×K) as `spec` says (defined in the unit that defines
/// QLR_MAKE_LINEAR_IMPLEMENTATION).
AnyLinear make_linear(ConstMatrixRef w, const LinearSpec& spec);
/// A layer over `base`, a quantized weight already in the spec's rotated basis.
AnyLinear make_linear(const quant::AnyQuantizedMatrix& base, const LinearSpec& spec);

#else

#  if defined(QLR_SEPARATE_MAKE_LINEAR)
#    define QLR_MAKE_LINEAR_LINKAGE  // the one out-of-line definition
#  else
#    define QLR_MAKE_LINEAR_LINKAGE inline
#  endif

namespace detail {

/// The adapters a base of `Format` can hold: QA-LoRA only beside asymmetric zero points.
template <class Format>
using adapters_for =
    std::conditional_t<Format::encoding == Encoding::int_asym, AsymAdapters, StandardAdapters>;

/// A layer built from an FP32 weight and its quantizer.
template <class Q>
struct FromWeight {
  ConstMatrixRef w;  ///< N×K, original basis
  Q quantizer;       ///< the policy the spec names
  [[nodiscard]] index_t cols() const { return w.cols(); }
  template <class Layer, class Act>
  [[nodiscard]] Layer build(AnyRotation rotation, Act act) const {
    return Layer(w, quantizer, std::move(rotation), act);
  }
};

/// A layer built from a quantized base already in the rotated basis (a file).
template <class Q>
struct FromBase {
  const QuantizedMatrix<typename Q::format>& base;  ///< N×K, rotated basis
  [[nodiscard]] index_t cols() const { return base.cols(); }
  template <class Layer, class Act>
  [[nodiscard]] Layer build(AnyRotation rotation, Act act) const {
    return Layer(base, std::move(rotation), act);
  }
};

/// The composition of quantizer Q, activations Act and kernel K, as an AnyLinear.
template <class Q, class Act, class K, class Source>
AnyLinear make_composed(const Source& source, const LinearSpec& spec) {
  using Layer = QuantizedLinear<Q, AnyRotation, Act, adapters_for<typename Q::format>, K>;
  AnyRotation rotation =
      spec.rotated ? AnyRotation(rotate::RandomizedHadamard(source.cols(), spec.rotation_seed))
                   : AnyRotation(source.cols());
  Act act{};
  if constexpr (Act::bits != 0) act.clip = spec.activation_clip;
  return AnyLinear::wrap(spec, source.template build<Layer>(std::move(rotation), act));
}

/// Quantizer Q on the SIMD kernels with the spec's activations, or on the dense kernel.
template <template <class> class Source, class Q>
AnyLinear make_for_quantizer(const Source<Q>& source, const LinearSpec& spec) {
  constexpr const char* entity = "layers::make_linear";
  QLR_CHECK(spec.activation_bits == 0 || spec.activation_bits == 8 || spec.activation_bits == 4,
            unsupported, "{}: activation_bits = {}; expected 0 (FP32), 8 or 4", entity,
            spec.activation_bits);
  if constexpr (simd_packable<typename Q::format>) {
    if (spec.kernel == KernelChoice::automatic) {
      if (spec.activation_bits == 8) return make_composed<Q, Int8Activations, SimdKernels>(source, spec);
      if (spec.activation_bits == 4) return make_composed<Q, Int4Activations, SimdKernels>(source, spec);
      return make_composed<Q, FloatActivations, SimdKernels>(source, spec);
    }
  }
  QLR_CHECK(spec.activation_bits == 0, unsupported,
            "{}: '{}' runs on the dense kernel, weight-only; expected activation_bits = 0, or "
            "INT4/INT8 weights for the integer kernels",
            entity, to_string(spec));
  return make_composed<Q, FloatActivations, DenseKernel>(source, spec);
}

template <int Bits>
AnyLinear make_for_bits(ConstMatrixRef w, const LinearSpec& spec) {
  if (spec.weights.encoding == Encoding::int_sym)
    return make_for_quantizer(FromWeight<quant::IntSym<Bits>>{w, quant::IntSym<Bits>(spec.weights.options)}, spec);
  return make_for_quantizer(FromWeight<quant::IntAsym<Bits>>{w, quant::IntAsym<Bits>(spec.weights.options)}, spec);
}

/// The quantizer policy whose format is F.
template <class F>
using quantizer_of = std::conditional_t<
    F::encoding == Encoding::codebook, quant::Nf4,
    std::conditional_t<F::encoding == Encoding::int_sym, quant::IntSym<F::bits>, quant::IntAsym<F::bits>>>;

}  // namespace detail

/// Rotates, quantizes and packs `w` (N×K) as `spec` says. Throws for a composition that is
/// not compiled (e.g. INT3 weights with INT8 activations), naming it.
QLR_MAKE_LINEAR_LINKAGE AnyLinear make_linear(ConstMatrixRef w, const LinearSpec& spec) {
  if (spec.weights.encoding == Encoding::codebook) {
    QLR_CHECK(spec.weights.bits == 4, unsupported,
              "layers::make_linear: bits = {} with a codebook; expected 4 (NF4)", spec.weights.bits);
    return detail::make_for_quantizer(detail::FromWeight<quant::Nf4>{w, quant::Nf4(spec.weights.nf4)}, spec);
  }
  switch (spec.weights.bits) {
    case 2: return detail::make_for_bits<2>(w, spec);
    case 3: return detail::make_for_bits<3>(w, spec);
    case 4: return detail::make_for_bits<4>(w, spec);
    case 8: return detail::make_for_bits<8>(w, spec);
    default:
      qlr::detail::fail(Errc::unsupported, "layers::make_linear: bits = {}; expected 2, 3, 4 or 8",
                        spec.weights.bits);
  }
}

/// A layer over `base`, a quantized weight already in the spec's rotated basis (as
/// AnyLinear::base() returns it): how a saved layer comes back bit for bit. The spec's
/// weight format must be base's; its quantizer options are not used.
QLR_MAKE_LINEAR_LINKAGE AnyLinear make_linear(const quant::AnyQuantizedMatrix& base,
                                             const LinearSpec& spec) {
  return std::visit(
      [&]<class F>(const QuantizedMatrix<F>& q) -> AnyLinear {
        QLR_CHECK(F::bits == spec.weights.bits && F::encoding == spec.weights.encoding, invalid_argument,
                  "layers::make_linear: base is {}-bit {}; expected the spec's {}", F::bits,
                  to_string(F::encoding), to_string(spec));
        if constexpr (F::bits == 1) {  // binary adapter factors: no spec names them, no kernel
          qlr::detail::fail(Errc::unsupported,
                            "layers::make_linear: base is 1-bit binary; expected a base format");
        } else {
          return detail::make_for_quantizer(detail::FromBase<detail::quantizer_of<F>>{q}, spec);
        }
      },
      base);
}

#  undef QLR_MAKE_LINEAR_LINKAGE
#endif  // QLR_SEPARATE_MAKE_LINEAR && !QLR_MAKE_LINEAR_IMPLEMENTATION

}  // namespace qlr::layers
