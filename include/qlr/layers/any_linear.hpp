// SPDX-License-Identifier: Apache-2.0
// A QuantizedLinear chosen at run time, for engines that read the layer's format from a
// file or a flag: a LinearSpec names the weight format, the activation width, the rotation
// and the kernel, and make_linear maps it onto a closed list of compiled compositions
// (STYLE.md §3.6, `compositions`). Every format (INT2/INT3/INT4/INT8, NF4) runs on
// the SIMD kernels with FP32, INT8 or INT4 activations, or on request (`+dense`) on the dense
// kernel, weight-only. AnyLinear shares QuantizedLinear's adapters and forward
// (LinearLayer); only the base is reached through a virtual call.
//
// Header-only, every unit that calls make_linear compiles the 36 compositions. Linking
// qlr::compiled (which defines QLR_COMPILED) compiles them once per program instead, in
// qlr/layers/layers.cpp; units with and without it mix freely (docs/building.md).
#pragma once

#include <charconv>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "qlr/core/config.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/layers/adapter_bank.hpp"
#include "qlr/layers/policies.hpp"
#include "qlr/layers/quantized_linear.hpp"
#include "qlr/quant/int_group.hpp"
#include "qlr/quant/nf4.hpp"
#include "qlr/quant/spec.hpp"
#include "qlr/rotate/rotation.hpp"

namespace qlr::layers {

/// A rotation chosen at run time: none (the identity) or a randomized Hadamard. An unrotated
/// layer pays 16 bytes for it; a rotation is held once and shared by the copies.
class AnyRotation {
 public:
  /// The identity of size n.
  explicit AnyRotation(index_t n) : n_(rotate::Identity(n).size()) {}
  /// A randomized Hadamard rotation.
  explicit AnyRotation(rotate::RandomizedHadamard r)
      : n_(r.size()), r_(std::make_shared<const rotate::RandomizedHadamard>(std::move(r))) {}

  /// n.
  [[nodiscard]] index_t size() const noexcept { return n_; }
  /// Whether it is the identity (a layer built without rotation).
  [[nodiscard]] bool is_identity() const noexcept { return r_ == nullptr; }
  /// Floats of scratch a row needs.
  [[nodiscard]] index_t scratch_size() const noexcept { return r_ ? r_->scratch_size() : 0; }
  /// x ← Qᵀ·x.
  void rotate(float* x, float* scratch) const noexcept {
    if (r_) r_->rotate(x, scratch);
  }
  /// x ← Q·x.
  void unrotate(float* x, float* scratch) const noexcept {
    if (r_) r_->unrotate(x, scratch);
  }
  /// Bytes of the rotation held beside this handle.
  [[nodiscard]] std::size_t memory_bytes() const noexcept {
    return r_ ? sizeof(rotate::RandomizedHadamard) : 0;
  }

 private:
  index_t n_;
  std::shared_ptr<const rotate::RandomizedHadamard> r_;  // null: the identity
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

namespace detail {

/// A QuantizedBase whose format, activations and kernel were chosen at run time: the part of
/// an AnyLinear that depends on them, behind one small virtual interface.
class AnyBase {
 public:
  /// Any adapter AnyLinear::attach takes; QA-LoRA is checked against the base at run time.
  template <class A>
  static constexpr bool holds = is_any_adapter_alternative<A>;
  /// merge_into_base is offered; a base without zero points refuses it at run time.
  static constexpr bool mergeable = true;

  /// Wraps `base`.
  template <class Base>
  explicit AnyBase(Base base) : impl_(std::make_unique<Model<Base>>(std::move(base))) {}

  [[nodiscard]] index_t in_features() const noexcept { return impl_->in_features(); }   ///< K
  [[nodiscard]] index_t out_features() const noexcept { return impl_->out_features(); }  ///< N
  /// Whether the rotation is the identity.
  [[nodiscard]] bool rotation_is_identity() const noexcept { return impl_->rotation_is_identity(); }
  /// QuantizedBase::needs_rotated_input.
  [[nodiscard]] bool needs_rotated_input(bool adapters) const noexcept {
    return impl_->needs_rotated_input(adapters);
  }
  /// Each row of x ← Qᵀ·x.
  void rotate_rows(Matrix& x) const { impl_->rotate_rows(x); }
  /// Each row of w ← Q·w.
  void unrotate_rows(Matrix& w) const { impl_->unrotate_rows(w); }
  /// QuantizedBase::run.
  void run(ConstMatrixRef x, const Matrix* rotated_x, MatrixRef y, const Epilogue& e) const {
    impl_->run(x, rotated_x, y, e);
  }
  /// QuantizedBase::apply_weight.
  void apply_weight(ConstMatrixRef a, MatrixRef out) const { impl_->apply_weight(a, out); }
  /// QuantizedBase::input_grad.
  void input_grad(ConstMatrixRef x, ConstMatrixRef dy, MatrixRef dx) const {
    impl_->input_grad(x, dy, dx);
  }
  /// The dequantized weight in `basis`.
  [[nodiscard]] Matrix dequantized(Basis basis) const { return impl_->dequantized(basis); }
  /// The quantized weight in the rotated basis, unpacked from the kernel's form.
  [[nodiscard]] quant::AnyQuantizedMatrix quantized() const { return impl_->quantized(); }
  /// Folds `qa` into the zero points; throws for a base without them.
  void merge_qa_lora(const adapter::QaLora& qa, ZeroMode zeros) { impl_->merge_qa_lora(qa, zeros); }
  /// Throws for an adapter this base cannot hold.
  void check_adapter(const AnyAdapter& a, std::string_view name) const {
    impl_->check_adapter(a, name);
  }
  /// Bytes held.
  [[nodiscard]] std::size_t memory_bytes() const noexcept {
    return sizeof(*this) + impl_->memory_bytes();
  }
  /// Storage cost per weight.
  [[nodiscard]] double bits_per_parameter() const noexcept { return impl_->bits_per_parameter(); }

 private:
  struct Interface {
    virtual ~Interface() = default;
    [[nodiscard]] virtual index_t in_features() const noexcept = 0;
    [[nodiscard]] virtual index_t out_features() const noexcept = 0;
    [[nodiscard]] virtual bool rotation_is_identity() const noexcept = 0;
    [[nodiscard]] virtual bool needs_rotated_input(bool adapters) const noexcept = 0;
    virtual void rotate_rows(Matrix& x) const = 0;
    virtual void unrotate_rows(Matrix& w) const = 0;
    virtual void run(ConstMatrixRef x, const Matrix* xr, MatrixRef y, const Epilogue& e) const = 0;
    virtual void apply_weight(ConstMatrixRef a, MatrixRef out) const = 0;
    virtual void input_grad(ConstMatrixRef x, ConstMatrixRef dy, MatrixRef dx) const = 0;
    [[nodiscard]] virtual Matrix dequantized(Basis basis) const = 0;
    [[nodiscard]] virtual quant::AnyQuantizedMatrix quantized() const = 0;
    virtual void merge_qa_lora(const adapter::QaLora& qa, ZeroMode zeros) = 0;
    virtual void check_adapter(const AnyAdapter& a, std::string_view name) const = 0;
    [[nodiscard]] virtual std::size_t memory_bytes() const noexcept = 0;
    [[nodiscard]] virtual double bits_per_parameter() const noexcept = 0;
  };

  template <class Base>
  struct Model final : Interface {
    explicit Model(Base b) : base(std::move(b)) {}
    index_t in_features() const noexcept override { return base.in_features(); }
    index_t out_features() const noexcept override { return base.out_features(); }
    bool rotation_is_identity() const noexcept override { return base.rotation_is_identity(); }
    bool needs_rotated_input(bool adapters) const noexcept override {
      return base.needs_rotated_input(adapters);
    }
    void rotate_rows(Matrix& x) const override { base.rotate_rows(x); }
    void unrotate_rows(Matrix& w) const override { base.unrotate_rows(w); }
    void run(ConstMatrixRef x, const Matrix* xr, MatrixRef y, const Epilogue& e) const override {
      base.run(x, xr, y, e);
    }
    void apply_weight(ConstMatrixRef a, MatrixRef out) const override { base.apply_weight(a, out); }
    void input_grad(ConstMatrixRef x, ConstMatrixRef dy, MatrixRef dx) const override {
      base.input_grad(x, dy, dx);
    }
    Matrix dequantized(Basis basis) const override { return base.dequantized(basis); }
    quant::AnyQuantizedMatrix quantized() const override { return base.quantized(); }
    void merge_qa_lora(const adapter::QaLora& qa, ZeroMode zeros) override {
      if constexpr (Base::mergeable) {
        base.merge_qa_lora(qa, zeros);
      } else {
        qlr::detail::fail(Errc::invalid_argument,
                          "layers::AnyLinear::merge_into_base: the base is {}; expected QA-LoRA "
                          "on an asymmetric integer base",
                          to_string(Base::format::encoding));
      }
    }
    void check_adapter(const AnyAdapter& a, std::string_view name) const override {
      base.check_adapter(a, name);
    }
    std::size_t memory_bytes() const noexcept override {
      return sizeof(*this) - sizeof(base) + base.memory_bytes();
    }
    double bits_per_parameter() const noexcept override { return base.bits_per_parameter(); }
    Base base;
  };

  std::unique_ptr<Interface> impl_;
};

}  // namespace detail

/// A QuantizedLinear whose composition was chosen at run time (make_linear): the same
/// operations, the base's through one virtual call each.
class AnyLinear : public LinearLayer<detail::AnyBase> {
 public:
  /// Wraps `base`, a QuantizedBase built as `spec` describes.
  AnyLinear(LinearSpec spec, detail::AnyBase base)
      : LinearLayer(std::move(base)), spec_(std::move(spec)) {}

  /// The layer's composition.
  [[nodiscard]] const LinearSpec& spec() const noexcept { return spec_; }
  /// The quantized base in the rotated basis, unpacked from the kernel's form (a new matrix).
  [[nodiscard]] quant::AnyQuantizedMatrix base() const { return base_.quantized(); }

 private:
  LinearSpec spec_;
};

/// A composition make_linear can build: a weight format, an activation width and a kernel.
struct Composition {
  int bits;             ///< weight code width
  Encoding encoding;    ///< weight encoding
  int activation_bits;  ///< 0 (FP32), 8 or 4
  bool dense;           ///< the dense kernel (else qlr's SIMD kernels)
  /// Builds the layer over a base of this format (held by the variant) in the spec's basis.
  AnyLinear (*make)(const quant::AnyQuantizedMatrix& base, AnyRotation rotation,
                    const LinearSpec& spec);
};

namespace detail {

/// The activation policy of a width: FP32 (0), INT8 or INT4 per token.
template <int Bits>
using activations_of =
    std::conditional_t<Bits == 0, FloatActivations, TokenActivations<Bits == 0 ? 8 : Bits>>;

/// Composition (F, Act, K) over `base`, which holds a QuantizedMatrix<F> in the rotated basis.
template <QuantFormatType F, class Act, class K>
AnyLinear make_composed(const quant::AnyQuantizedMatrix& base, AnyRotation rotation,
                        const LinearSpec& spec) {
  Act act{};
  if constexpr (Act::bits != 0) act.clip = spec.activation_clip;
  return AnyLinear(spec, AnyBase(QuantizedBase<F, AnyRotation, Act, K>(
                             std::get<QuantizedMatrix<F>>(base), std::move(rotation), act)));
}

}  // namespace detail

// The closed list of compositions, X(bits, encoding, activation bits, kernel): every format
// on the SIMD kernels with every activation width, and every format on the dense kernel,
// weight-only.
// clang-format off
#define QLR_LINEAR_COMPOSITIONS(X)                                                               \
  X(4, int_sym, 0, SimdKernels) X(4, int_sym, 8, SimdKernels) X(4, int_sym, 4, SimdKernels)       \
  X(4, int_asym, 0, SimdKernels) X(4, int_asym, 8, SimdKernels) X(4, int_asym, 4, SimdKernels)    \
  X(8, int_sym, 0, SimdKernels) X(8, int_sym, 8, SimdKernels) X(8, int_sym, 4, SimdKernels)       \
  X(8, int_asym, 0, SimdKernels) X(8, int_asym, 8, SimdKernels) X(8, int_asym, 4, SimdKernels)    \
  X(3, int_sym, 0, SimdKernels) X(3, int_sym, 8, SimdKernels) X(3, int_sym, 4, SimdKernels)       \
  X(3, int_asym, 0, SimdKernels) X(3, int_asym, 8, SimdKernels) X(3, int_asym, 4, SimdKernels)    \
  X(2, int_sym, 0, SimdKernels) X(2, int_sym, 8, SimdKernels) X(2, int_sym, 4, SimdKernels)       \
  X(2, int_asym, 0, SimdKernels) X(2, int_asym, 8, SimdKernels) X(2, int_asym, 4, SimdKernels)    \
  X(4, codebook, 0, SimdKernels) X(4, codebook, 8, SimdKernels) X(4, codebook, 4, SimdKernels)    \
  X(2, int_sym, 0, DenseKernel) X(2, int_asym, 0, DenseKernel) X(3, int_sym, 0, DenseKernel)      \
  X(3, int_asym, 0, DenseKernel) X(4, int_sym, 0, DenseKernel) X(4, int_asym, 0, DenseKernel)     \
  X(8, int_sym, 0, DenseKernel) X(8, int_asym, 0, DenseKernel) X(4, codebook, 0, DenseKernel)
// clang-format on

#define QLR_COMPOSITION_ENTRY(B, E, A, K)                                                  \
  Composition{B, Encoding::E, A, std::is_same_v<K, DenseKernel>,                           \
              &detail::make_composed<QuantFormat<B, Encoding::E>, detail::activations_of<A>, K>},
/// Every composition make_linear builds, in one list: what it dispatches over and what the
/// tests iterate.
inline constexpr Composition compositions[] = {QLR_LINEAR_COMPOSITIONS(QLR_COMPOSITION_ENTRY)};
#undef QLR_COMPOSITION_ENTRY

#if defined(QLR_COMPILED)
// qlr::compiled (qlr/layers/layers.cpp) holds the one copy of each composition.
#  define QLR_COMPOSITION_EXTERN(B, E, A, K)                                                \
    extern template AnyLinear                                                               \
    detail::make_composed<QuantFormat<B, Encoding::E>, detail::activations_of<A>, K>(       \
        const quant::AnyQuantizedMatrix&, AnyRotation, const LinearSpec&);
QLR_LINEAR_COMPOSITIONS(QLR_COMPOSITION_EXTERN)
#  undef QLR_COMPOSITION_EXTERN
#endif

namespace detail {

/// The composition that builds `spec` over a base of `bits` and `encoding`. Throws for a
/// width or encoding qlr has no quantizer for, or a composition that is not compiled.
inline const Composition& find_composition(int bits, Encoding encoding, const LinearSpec& spec) {
  constexpr const char* entity = "layers::make_linear";
  QLR_CHECK(encoding != Encoding::codebook || bits == 4, unsupported,
            "{}: bits = {} with a codebook; expected 4 (NF4)", entity, bits);
  QLR_CHECK(bits == 2 || bits == 3 || bits == 4 || bits == 8, unsupported,
            "{}: bits = {}; expected 2, 3, 4 or 8", entity, bits);
  QLR_CHECK(spec.activation_bits == 0 || spec.activation_bits == 8 || spec.activation_bits == 4,
            unsupported, "{}: activation_bits = {}; expected 0 (FP32), 8 or 4", entity,
            spec.activation_bits);
  const bool dense = spec.kernel == KernelChoice::dense || !is_simd_packable(bits, encoding);
  for (const Composition& c : compositions)
    if (c.bits == bits && c.encoding == encoding && c.activation_bits == spec.activation_bits &&
        c.dense == dense)
      return c;
  qlr::detail::fail(Errc::unsupported,
                    "{}: '{}' runs on the dense kernel, weight-only; expected activation_bits = 0, "
                    "or the SIMD kernels (no '+dense')",
                    entity, to_string(spec));
}

/// The spec's rotation of size k.
inline AnyRotation rotation_of(const LinearSpec& spec, index_t k) {
  return spec.rotated ? AnyRotation(rotate::RandomizedHadamard(k, spec.rotation_seed))
                      : AnyRotation(k);
}

}  // namespace detail

/// A layer over `base`, a quantized weight already in the spec's rotated basis (as
/// AnyLinear::base() returns it): how a saved layer comes back bit for bit. The spec's
/// weight format must be base's; its quantizer options are not used. Throws for a
/// composition that is not compiled (e.g. INT3 weights with INT8 activations), naming it.
QLR_COMPILED_FUNCTION
AnyLinear make_linear(const quant::AnyQuantizedMatrix& base, const LinearSpec& spec) {
  const auto [bits, encoding, k] = std::visit(
      [](const auto& q) {
        using F = typename std::remove_cvref_t<decltype(q)>::format;
        return std::tuple(F::bits, F::encoding, q.cols());
      },
      base);
  QLR_CHECK(bits == spec.weights.bits && encoding == spec.weights.encoding, invalid_argument,
            "layers::make_linear: base is {}-bit {}; expected the spec's {}", bits,
            to_string(encoding), to_string(spec));
  QLR_CHECK(bits != 1, unsupported,
            "layers::make_linear: base is 1-bit binary; expected a base format");
  return detail::find_composition(bits, encoding, spec).make(base, detail::rotation_of(spec, k),
                                                              spec);
}

/// Rotates, quantizes and packs `w` (N×K) as `spec` says. Throws for a composition that is
/// not compiled (e.g. INT3 weights with INT8 activations), naming it.
QLR_COMPILED_FUNCTION
AnyLinear make_linear(ConstMatrixRef w, const LinearSpec& spec) {
  const Composition& c = detail::find_composition(spec.weights.bits, spec.weights.encoding, spec);
  AnyRotation rotation = detail::rotation_of(spec, w.cols());
  if (!spec.rotated) return c.make(quant::quantize(w, spec.weights), std::move(rotation), spec);
  Matrix rotated = w;
  rotate::rotate_weight_input(rotation, rotated);  // checks finiteness
  return c.make(quant::quantize(rotated, spec.weights), std::move(rotation), spec);
}

// qlr::compiled (qlr/layers/layers.cpp) holds the one copy of these in a program.
#define QLR_MAKE_LINEAR_FUNCTIONS(prefix)                                                      \
  prefix template AnyLinear make_linear<>(const quant::AnyQuantizedMatrix&, const LinearSpec&); \
  prefix template AnyLinear make_linear<>(ConstMatrixRef, const LinearSpec&);
#if defined(QLR_COMPILED)
QLR_MAKE_LINEAR_FUNCTIONS(extern)
#endif

}  // namespace qlr::layers
