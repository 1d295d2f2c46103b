// SPDX-License-Identifier: Apache-2.0
// qlr's own file: a set of quantized layers with their adapters, as one safetensors file, read
// back bit for bit. Each layer stores its packed codes (U8, the canonical row streams of
// ALGORITHMS.md §1.5), scales, zero points, codebook and bias as tensors named
// "<layer>.codes", "<layer>.scales", …; each adapter its factors as "<layer>.adapters.<name>.A",
// ".B", ".magnitude", or, quantized, as blocks ".block<i>.A.codes", ".block<i>.Bt.codes", ….
// The metadata carries what is not a tensor: the layer's LinearSpec (format, activations,
// rotation seed), group size and storage modes, and each adapter's kind, alpha, scaling,
// pooling, basis and run-time state. Nothing is recomputed on load except
// the kernels' packing, so a loaded layer computes what the saved one did.
#pragma once

#include <charconv>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qlr/core/config.hpp"
#include "qlr/adapter/dora.hpp"
#include "qlr/adapter/lora.hpp"
#include "qlr/adapter/low_rank.hpp"
#include "qlr/adapter/qa_lora.hpp"
#include "qlr/adapter/quantized_low_rank.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/format.hpp"
#include "qlr/io/safetensors.hpp"
#include "qlr/layers/any_linear.hpp"
#include "qlr/quant/spec.hpp"

namespace qlr::layers {

namespace detail {

inline constexpr std::string_view layer_file_format = "qlr-layers/1";
inline constexpr std::string_view adapter_file_format = "qlr-adapters/1";

/// A metadata value, or a corrupt_file error naming the key.
QLR_COMPILED_FUNCTION
const std::string& meta(const std::map<std::string, std::string>& m, const std::string& key) {
  const auto it = m.find(key);
  QLR_CHECK(it != m.end(), corrupt_file, "layers::load_layers: metadata \"{}\" is missing", key);
  return it->second;
}

/// A metadata number, or a corrupt_file error naming the key and the text.
template <class T>
T meta_number(const std::map<std::string, std::string>& m, const std::string& key) {
  const std::string& text = meta(m, key);
  T value{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  QLR_CHECK(ec == std::errc() && end == text.data() + text.size(), corrupt_file,
            "layers::load_layers: metadata \"{}\" = '{}'; expected a number", key, text);
  return value;
}

/// The shortest text that reads back as exactly `v` (std::to_chars).
template <class T>
std::string exact_text(T v) {
  char text[64];
  const auto [end, ec] = std::to_chars(text, text + sizeof text, v);
  return std::string(text, ec == std::errc() ? end : text);
}

/// Splits "a,b,c" (empty: no items).
QLR_COMPILED_FUNCTION
std::vector<std::string> split_names(const std::string& text) {
  std::vector<std::string> names;
  for (std::size_t begin = 0; begin < text.size();) {
    const std::size_t comma = std::min(text.find(',', begin), text.size());
    names.push_back(text.substr(begin, comma - begin));
    begin = comma + 1;
  }
  return names;
}

/// Throws unless `name` can be a layer or adapter name in the file (no ',' or '/').
QLR_COMPILED_FUNCTION
void check_stored_name(const std::string& name, const char* what) {
  QLR_CHECK(!name.empty() && name.find_first_of(",/") == std::string::npos, invalid_argument,
            "layers::save_layers: {} name '{}'; expected a non-empty name without ',' or '/'",
            what, name);
}

/// The raw little-endian bytes of `v`.
template <class T>
std::span<const std::byte> bytes_of(std::span<const T> v) {
  return std::as_bytes(v);
}

/// A stored float tensor's values (F32, any rank), or a corrupt_file error.
QLR_COMPILED_FUNCTION
std::vector<float> floats_of(const io::TensorView& t) {
  QLR_CHECK(t.dtype == io::Dtype::f32, corrupt_file,
            "layers::load_layers: tensor \"{}\" is {}; expected F32", t.name, io::to_string(t.dtype));
  std::vector<float> v(static_cast<std::size_t>(t.numel()));
  std::memcpy(v.data(), t.bytes.data(), t.bytes.size());
  return v;
}

template <class F>
quant::AnyQuantizedMatrix typed_base(QuantizedParts parts) {
  return QuantizedMatrix<F>(std::move(parts));
}

/// The QuantizedMatrix of `bits` and `encoding` over `parts` (validated by its constructor).
QLR_COMPILED_FUNCTION
quant::AnyQuantizedMatrix base_of(int bits, Encoding encoding, QuantizedParts parts) {
  if (encoding == Encoding::codebook && bits == 4) return typed_base<quant::Nf4::format>(std::move(parts));
  if (encoding == Encoding::codebook && bits == 1) return typed_base<quant::Binary::format>(std::move(parts));
  const bool sym = encoding == Encoding::int_sym;
  switch (bits) {
    case 2: return sym ? typed_base<QuantFormat<2, Encoding::int_sym>>(std::move(parts)) : typed_base<QuantFormat<2, Encoding::int_asym>>(std::move(parts));
    case 3: return sym ? typed_base<QuantFormat<3, Encoding::int_sym>>(std::move(parts)) : typed_base<QuantFormat<3, Encoding::int_asym>>(std::move(parts));
    case 4: return sym ? typed_base<QuantFormat<4, Encoding::int_sym>>(std::move(parts)) : typed_base<QuantFormat<4, Encoding::int_asym>>(std::move(parts));
    case 8: return sym ? typed_base<QuantFormat<8, Encoding::int_sym>>(std::move(parts)) : typed_base<QuantFormat<8, Encoding::int_asym>>(std::move(parts));
    default: break;
  }
  qlr::detail::fail(Errc::corrupt_file, "layers::load_layers: a {}-bit {} base; expected a format qlr stores",
                    bits, to_string(encoding));
}

/// Writes quantized matrix `q` as tensors "<tensor>.codes", ".scales", ".zeros", ".codebook"
/// and metadata "<key>.group_size", ".cols", ".zero_mode", ".scale_type" (and, with
/// `with_format`, ".bits" and ".encoding": a base takes them from its spec).
QLR_COMPILED_FUNCTION
void add_quantized(io::SafetensorsWriter& out, const std::string& tensor, const std::string& key,
                   const quant::AnyQuantizedMatrix& any, bool with_format) {
  std::visit(
      [&]<class F>(const QuantizedMatrix<F>& q) {
        const QuantizedParts& p = q.parts();
        if (with_format) {
          out.set_metadata(key + ".bits", std::to_string(F::bits));
          out.set_metadata(key + ".encoding", to_string(F::encoding));
        }
        out.set_metadata(key + ".group_size", std::to_string(p.group_size));
        out.set_metadata(key + ".cols", std::to_string(p.cols));
        out.set_metadata(key + ".zero_mode", p.zero_mode == ZeroMode::floating ? "floating" : "integer");
        out.set_metadata(key + ".scale_type", p.scale_type == ScaleType::f16 ? "f16" : "f32");
        out.add(tensor + ".codes", io::Dtype::u8, {p.rows, q.row_stride()},
                bytes_of(std::span<const std::uint8_t>(p.codes)));
        out.add(tensor + ".scales", io::Dtype::f32, {p.rows, q.groups()},
                bytes_of(std::span<const float>(p.scales)));
        if (!p.zeros.empty())
          out.add(tensor + ".zeros", io::Dtype::f32, {p.rows, q.groups()},
                  bytes_of(std::span<const float>(p.zeros)));
        if (!p.codebook.empty())
          out.add(tensor + ".codebook", io::Dtype::f32, {static_cast<std::int64_t>(p.codebook.size())},
                  bytes_of(std::span<const float>(p.codebook)));
      },
      any);
}

/// The encoding whose to_string is `text`, or a corrupt_file error naming `key`.
QLR_COMPILED_FUNCTION
Encoding encoding_named(const std::string& text, const std::string& key) {
  for (const Encoding e : {Encoding::int_sym, Encoding::int_asym, Encoding::codebook})
    if (text == to_string(e)) return e;
  qlr::detail::fail(Errc::corrupt_file, "layers::load_layers: metadata \"{}\" = '{}'; expected {}, {} or {}",
                    key, text, to_string(Encoding::int_sym), to_string(Encoding::int_asym),
                    to_string(Encoding::codebook));
}

/// Reads back what add_quantized wrote; `bits` and `encoding` from the spec, or (0, …) to
/// read them from "<key>.bits" and ".encoding". The QuantizedMatrix constructor validates
/// the parts against each other.
QLR_COMPILED_FUNCTION
quant::AnyQuantizedMatrix read_quantized(const io::SafetensorsFile& file,
                                         const std::map<std::string, std::string>& m,
                                         const std::string& tensor, const std::string& key,
                                         int bits = 0, Encoding encoding = Encoding::int_sym) {
  if (bits == 0) {
    bits = meta_number<int>(m, key + ".bits");
    encoding = encoding_named(meta(m, key + ".encoding"), key + ".encoding");
  }
  const io::TensorView& codes = file.at(tensor + ".codes");
  QLR_CHECK(codes.dtype == io::Dtype::u8 && codes.shape.size() == 2, corrupt_file,
            "layers::load_layers: tensor \"{}\" is {} of rank {}; expected U8 (N, row bytes)",
            codes.name, io::to_string(codes.dtype), codes.shape.size());
  const io::TensorView& scales = file.at(tensor + ".scales");
  QLR_CHECK(scales.shape.size() == 2, corrupt_file,
            "layers::load_layers: tensor \"{}\" has rank {}; expected (N, groups)", scales.name,
            scales.shape.size());
  QuantizedParts parts;
  parts.rows = codes.shape[0];
  parts.group_size = meta_number<index_t>(m, key + ".group_size");
  parts.cols = meta_number<index_t>(m, key + ".cols");
  parts.codes.resize(codes.bytes.size());
  std::memcpy(parts.codes.data(), codes.bytes.data(), codes.bytes.size());
  parts.scales = floats_of(scales);
  if (const io::TensorView* z = file.find(tensor + ".zeros")) parts.zeros = floats_of(*z);
  if (const io::TensorView* c = file.find(tensor + ".codebook")) parts.codebook = floats_of(*c);
  parts.zero_mode = meta(m, key + ".zero_mode") == "floating" ? ZeroMode::floating : ZeroMode::integer;
  parts.scale_type = meta(m, key + ".scale_type") == "f16" ? ScaleType::f16 : ScaleType::f32;
  return base_of(bits, encoding, std::move(parts));
}

/// Writes adapter `any` as tensors "<tensor>.A", ".B", ".magnitude" (or, quantized, its
/// blocks "<tensor>.block<i>.A.codes", …) and metadata "<key>.kind", ".alpha", … .
QLR_COMPILED_FUNCTION
void add_adapter(io::SafetensorsWriter& out, const std::string& tensor, const std::string& key,
                 const AnyAdapter& any) {
  std::visit(
      [&]<class A>(const A& held) {
        if constexpr (std::is_same_v<A, adapter::QuantizedLowRank>) {
          // The blocks as quantized, not their dequantization: the file keeps the bits.
          out.set_metadata(key + ".kind", "quantized_low_rank");
          out.set_metadata(key + ".factor_scale", exact_text(held.scale()));
          out.set_metadata(key + ".blocks", std::to_string(held.blocks().size()));
          for (std::size_t i = 0; i < held.blocks().size(); ++i) {
            const adapter::ComponentBlock& block = held.blocks()[i];
            const std::string bkey = key + ".block" + std::to_string(i);
            const std::string btensor = tensor + ".block" + std::to_string(i);
            out.set_metadata(bkey + ".begin", std::to_string(block.begin));
            out.set_metadata(bkey + ".end", std::to_string(block.end));
            add_quantized(out, btensor + ".A", bkey + ".A", block.a_rows, true);
            add_quantized(out, btensor + ".Bt", bkey + ".Bt", block.bt_rows, true);
          }
        } else {
          out.add(tensor + ".A", held.a());
          out.add(tensor + ".B", held.b());
          if constexpr (std::is_same_v<A, adapter::LowRank>) {
            out.set_metadata(key + ".kind", "low_rank");
          } else {
            out.set_metadata(key + ".alpha", exact_text(held.alpha()));
            out.set_metadata(key + ".scaling",
                             held.scaling() == adapter::Scaling::standard ? "standard" : "rank_stabilized");
            if constexpr (std::is_same_v<A, adapter::Lora>) out.set_metadata(key + ".kind", "lora");
            if constexpr (std::is_same_v<A, adapter::Dora>) {
              out.set_metadata(key + ".kind", "dora");
              out.add_vector(tensor + ".magnitude", held.magnitude());
            }
            if constexpr (std::is_same_v<A, adapter::QaLora>) {
              out.set_metadata(key + ".kind", "qa_lora");
              out.set_metadata(key + ".group_size", std::to_string(held.group_size()));
              out.set_metadata(key + ".pooling", std::to_string(static_cast<int>(held.pooling())));
            }
          }
        }
      },
      any);
}

/// Reads back what add_adapter wrote, for a layer of `in_features` inputs (QA-LoRA's groups
/// and the block count's bound need it).
QLR_COMPILED_FUNCTION
AnyAdapter read_adapter(const io::SafetensorsFile& file,
                        const std::map<std::string, std::string>& m, const std::string& tensor,
                        const std::string& key, index_t in_features) {
  const std::string& kind = meta(m, key + ".kind");
  const auto factor = [&](const char* which) { return io::to_matrix(file.at(tensor + which)); };
  const auto alpha = [&] { return meta_number<double>(m, key + ".alpha"); };
  const auto scaling = [&] {
    return meta(m, key + ".scaling") == "rank_stabilized" ? adapter::Scaling::rank_stabilized
                                                           : adapter::Scaling::standard;
  };
  if (kind == "lora") return adapter::Lora(factor(".A"), factor(".B"), alpha(), scaling());
  if (kind == "dora")
    return adapter::Dora(factor(".A"), factor(".B"), io::to_vector(file.at(tensor + ".magnitude")),
                         alpha(), scaling());
  if (kind == "low_rank") return adapter::LowRank(factor(".A"), factor(".B"));
  if (kind == "qa_lora") {
    const int pooling = meta_number<int>(m, key + ".pooling");
    QLR_CHECK(pooling >= 0 && pooling <= 2, corrupt_file,
              "layers::load_layers: metadata \"{}.pooling\" = {}; expected 0, 1 or 2", key, pooling);
    return adapter::QaLora(factor(".A"), factor(".B"), alpha(), in_features,
                           meta_number<index_t>(m, key + ".group_size"),
                           static_cast<adapter::Pooling>(pooling), scaling());
  }
  if (kind == "quantized_low_rank") {
    const auto count = meta_number<std::size_t>(m, key + ".blocks");
    // At most one block per component, and components are at most K.
    QLR_CHECK(count >= 1 && count <= static_cast<std::size_t>(in_features), corrupt_file,
              "layers::load_layers: metadata \"{}.blocks\" = {}; expected 1 to {}", key, count,
              in_features);
    std::vector<adapter::ComponentBlock> blocks;
    for (std::size_t i = 0; i < count; ++i) {
      const std::string bkey = key + ".block" + std::to_string(i);
      const std::string btensor = tensor + ".block" + std::to_string(i);
      blocks.push_back({meta_number<index_t>(m, bkey + ".begin"),
                        meta_number<index_t>(m, bkey + ".end"),
                        read_quantized(file, m, btensor + ".A", bkey + ".A"),
                        read_quantized(file, m, btensor + ".Bt", bkey + ".Bt")});
    }
    return adapter::QuantizedLowRank(std::move(blocks), meta_number<float>(m, key + ".factor_scale"));
  }
  qlr::detail::fail(Errc::corrupt_file,
                    "layers::load_layers: metadata \"{}.kind\" = '{}'; expected lora, dora, "
                    "low_rank, qa_lora or quantized_low_rank",
                    key, kind);
}

/// K of any adapter.
QLR_COMPILED_FUNCTION
index_t in_features_of(const AnyAdapter& a) {
  return std::visit([](const auto& held) { return held.in_features(); }, a);
}

/// The file's metadata after checking its "qlr.format" is `expected`.
QLR_COMPILED_FUNCTION
const std::map<std::string, std::string>& checked_metadata(const io::SafetensorsFile& file,
                                                           const std::filesystem::path& path,
                                                           std::string_view expected) {
  const auto& m = file.metadata();
  const auto format = m.find("qlr.format");
  QLR_CHECK(format != m.end() && format->second == expected, corrupt_file,
            "layers: {}: metadata qlr.format = '{}'; expected '{}'", path.string(),
            format == m.end() ? "" : format->second, expected);
  return m;
}

/// The names joined by ',' after checking each one can be stored.
template <class Map>
std::string stored_names(const Map& items, const char* what) {
  std::string names;
  for (const auto& [name, item] : items) {
    check_stored_name(name, what);
    names += (names.empty() ? "" : ",") + name;
  }
  return names;
}

}  // namespace detail

/// Saves `layers` (name → layer) with their adapters to `path` as one safetensors file
/// (written atomically); adapters with quantized factors keep their codes. Throws for a name
/// with ',' or '/'.
QLR_COMPILED_FUNCTION
void save_layers(const std::filesystem::path& path, const std::map<std::string, AnyLinear>& layers) {
  io::SafetensorsWriter out;
  out.set_metadata("qlr.format", std::string(detail::layer_file_format));
  out.set_metadata("qlr.layers", detail::stored_names(layers, "layer"));
  for (const auto& [name, layer] : layers) {
    const std::string key = "qlr.layer." + name;
    out.set_metadata(key + ".spec", to_string(layer.spec()));
    detail::add_quantized(out, name, key, layer.base(), false);
    if (const Vector& bias = layer.bias(); bias.size() != 0) out.add_vector(name + ".bias", bias);
    std::string adapter_names;
    for (const AttachedAdapter& a : layer.adapters()) {
      detail::check_stored_name(a.name, "adapter");
      adapter_names += (adapter_names.empty() ? "" : ",") + a.name;
      const std::string akey = "qlr.adapter." + name + "/" + a.name;
      out.set_metadata(akey + ".basis", a.basis == Basis::rotated ? "rotated" : "original");
      out.set_metadata(akey + ".enabled", a.enabled ? "1" : "0");
      out.set_metadata(akey + ".scale", detail::exact_text(a.scale));
      detail::add_adapter(out, name + ".adapters." + a.name, akey, a.adapter);
    }
    out.set_metadata(key + ".adapters", adapter_names);
  }
  out.write(path);
}

/// Reads a file save_layers wrote: every layer with its base bit for bit, its bias, and its
/// adapters in their saved state. Throws Errc::corrupt_file naming what is missing or wrong.
QLR_COMPILED_FUNCTION
std::map<std::string, AnyLinear> load_layers(const std::filesystem::path& path) {
  const io::SafetensorsFile file(path);
  const auto& m = detail::checked_metadata(file, path, detail::layer_file_format);
  std::map<std::string, AnyLinear> layers;
  for (const std::string& name : detail::split_names(detail::meta(m, "qlr.layers"))) {
    const std::string key = "qlr.layer." + name;
    const LinearSpec spec = parse_linear_spec(detail::meta(m, key + ".spec"));
    AnyLinear layer = make_linear(
        detail::read_quantized(file, m, name, key, spec.weights.bits, spec.weights.encoding), spec);
    if (const io::TensorView* b = file.find(name + ".bias")) layer.set_bias(io::to_vector(*b));
    for (const std::string& a : detail::split_names(detail::meta(m, key + ".adapters"))) {
      const std::string akey = "qlr.adapter." + name + "/" + a;
      const Basis basis = detail::meta(m, akey + ".basis") == "rotated" ? Basis::rotated : Basis::original;
      layer.attach(a,
                   detail::read_adapter(file, m, name + ".adapters." + a, akey, layer.in_features()),
                   basis);
      layer.set_scale(a, detail::meta_number<float>(m, akey + ".scale"));
      layer.set_enabled(a, detail::meta(m, akey + ".enabled") == "1");
    }
    layers.emplace(name, std::move(layer));
  }
  return layers;
}

/// Saves `adapters` (name → adapter, e.g. a PEFT module's name) without a base, as one
/// safetensors file of format "qlr-adapters/1" (written atomically); quantized factors keep
/// their codes. Throws for a name with ',' or '/'.
QLR_COMPILED_FUNCTION
void save_adapters(const std::filesystem::path& path,
                   const std::map<std::string, AnyAdapter>& adapters) {
  io::SafetensorsWriter out;
  out.set_metadata("qlr.format", std::string(detail::adapter_file_format));
  out.set_metadata("qlr.adapters", detail::stored_names(adapters, "adapter"));
  for (const auto& [name, a] : adapters) {
    const std::string key = "qlr.adapter." + name;
    out.set_metadata(key + ".in_features",
                     std::to_string(detail::in_features_of(a)));
    detail::add_adapter(out, name, key, a);
  }
  out.write(path);
}

/// Reads a file save_adapters wrote, every adapter bit for bit. Throws Errc::corrupt_file
/// naming what is missing or wrong.
QLR_COMPILED_FUNCTION
std::map<std::string, AnyAdapter> load_adapters(const std::filesystem::path& path) {
  const io::SafetensorsFile file(path);
  const auto& m = detail::checked_metadata(file, path, detail::adapter_file_format);
  std::map<std::string, AnyAdapter> adapters;
  for (const std::string& name : detail::split_names(detail::meta(m, "qlr.adapters"))) {
    const std::string key = "qlr.adapter." + name;
    const auto in_features = detail::meta_number<index_t>(m, key + ".in_features");
    AnyAdapter a = detail::read_adapter(file, m, name, key, in_features);
    const index_t read = detail::in_features_of(a);
    QLR_CHECK(read == in_features, corrupt_file,
              "layers::load_adapters: adapter '{}' reads {} inputs; metadata \"{}.in_features\" "
              "says {}", name, read, key, in_features);
    adapters.emplace(name, std::move(a));
  }
  return adapters;
}

// qlr::compiled (qlr/layers/layers.cpp) holds the one copy of these in a program.
#define QLR_LAYER_FILE_FUNCTIONS(prefix)                                                        \
  prefix template void save_layers<>(const std::filesystem::path&,                             \
                                     const std::map<std::string, AnyLinear>&);                 \
  prefix template std::map<std::string, AnyLinear> load_layers<>(const std::filesystem::path&); \
  prefix template void save_adapters<>(const std::filesystem::path&,                           \
                                       const std::map<std::string, AnyAdapter>&);              \
  prefix template std::map<std::string, AnyAdapter> load_adapters<>(                           \
      const std::filesystem::path&);
#if defined(QLR_COMPILED)
QLR_LAYER_FILE_FUNCTIONS(extern)
#endif

}  // namespace qlr::layers
