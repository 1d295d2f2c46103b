// SPDX-License-Identifier: Apache-2.0
// safetensors files (Hugging Face's tensor container: an 8-byte little-endian header length,
// a JSON header naming each tensor's dtype, shape and byte range, then the raw bytes), read
// in place from a memory map and written atomically. The parser trusts nothing in the file:
// every length, offset and product is checked before it is used, the tensors must tile the
// data section exactly, and a damaged or hostile file is an Errc::corrupt_file that says what
// is wrong — never a read past the buffer. The same parser runs under libFuzzer
// (tests/fuzz/safetensors_fuzz.cpp).
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "qlr/core/config.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/half.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/io/detail/file.hpp"
#include "qlr/io/detail/json.hpp"

namespace qlr::io {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; qlr reads it on little-endian hosts");

/// Element types qlr reads and writes; other safetensors dtypes (F64, BOOL, F8_*, …) are
/// refused with Errc::unsupported.
enum class Dtype { f32, f16, bf16, i8, u8, i32, i64 };

/// Bytes per element of `d`.
constexpr std::size_t dtype_size(Dtype d) noexcept {
  switch (d) {
    case Dtype::f32: return 4;
    case Dtype::f16: return 2;
    case Dtype::bf16: return 2;
    case Dtype::i8: return 1;
    case Dtype::u8: return 1;
    case Dtype::i32: return 4;
    case Dtype::i64: return 8;
  }
  return 0;
}

/// The safetensors spelling of `d` ("F32", "BF16", …).
constexpr std::string_view to_string(Dtype d) noexcept {
  switch (d) {
    case Dtype::f32: return "F32";
    case Dtype::f16: return "F16";
    case Dtype::bf16: return "BF16";
    case Dtype::i8: return "I8";
    case Dtype::u8: return "U8";
    case Dtype::i32: return "I32";
    case Dtype::i64: return "I64";
  }
  return "?";
}

/// The Dtype spelled `s` in a safetensors header, or nullopt for a dtype qlr does not read.
constexpr std::optional<Dtype> parse_dtype(std::string_view s) noexcept {
  for (const Dtype d : {Dtype::f32, Dtype::f16, Dtype::bf16, Dtype::i8, Dtype::u8, Dtype::i32,
                        Dtype::i64}) {
    if (to_string(d) == s) return d;
  }
  return std::nullopt;
}

/// One tensor of a safetensors file: its bytes are a view into the file's buffer.
struct TensorView {
  std::string name;                  ///< key in the header
  Dtype dtype = Dtype::f32;          ///< element type
  std::vector<std::int64_t> shape;   ///< dimensions, outermost first (row-major)
  std::span<const std::byte> bytes;  ///< numel() · dtype_size(dtype) little-endian bytes

  /// Number of elements (1 for a scalar, shape []).
  [[nodiscard]] std::int64_t numel() const noexcept {
    // A zero dimension empties the tensor whatever the others are: the parser checked the
    // product of the rest only when no dimension is 0, so it must not be formed then.
    for (const std::int64_t d : shape)
      if (d == 0) return 0;
    std::int64_t n = 1;
    for (const std::int64_t d : shape) n *= d;
    return n;
  }
};

/// A parsed safetensors buffer: the tensors sorted by name and the `__metadata__` strings.
/// Views into the buffer it was parsed from, which must outlive it.
struct SafetensorsView {
  std::vector<TensorView> tensors;              ///< sorted by name
  std::map<std::string, std::string> metadata;  ///< `__metadata__`, string → string

  /// The tensor called `name`, or nullptr.
  [[nodiscard]] const TensorView* find(std::string_view name) const noexcept {
    const auto it = std::lower_bound(tensors.begin(), tensors.end(), name,
                                     [](const TensorView& t, std::string_view n) { return t.name < n; });
    return it != tensors.end() && it->name == name ? &*it : nullptr;
  }
  /// The tensor called `name`; throws Errc::invalid_argument naming it when it is absent.
  [[nodiscard]] const TensorView& at(std::string_view name) const {
    const TensorView* t = find(name);
    QLR_CHECK(t != nullptr, invalid_argument,
              "io::SafetensorsView::at: tensor \"{}\" not found; expected one of the {} tensors "
              "in the file",
              name, tensors.size());
    return *t;
  }
};

namespace detail {

inline constexpr std::uint64_t max_header_bytes = 100'000'000;  // the format's own limit

/// `a·b`, or nullopt when it does not fit 64 bits.
constexpr std::optional<std::uint64_t> checked_mul(std::uint64_t a, std::uint64_t b) noexcept {
  std::uint64_t p = 0;
  if (__builtin_mul_overflow(a, b, &p)) return std::nullopt;
  return p;
}

/// The non-negative integer `j`, or a corrupt_file naming `tensor` and `field`.
QLR_COMPILED_FUNCTION
std::uint64_t json_unsigned(const nlohmann::json& j, std::string_view tensor,
                            std::string_view field) {
  if (j.is_number_unsigned()) return j.get<std::uint64_t>();
  QLR_CHECK(!j.is_number_integer(), corrupt_file,
            "io::parse_safetensors: tensor \"{}\": {} holds {}; expected a non-negative integer "
            "(negative value)",
            tensor, field, j.dump());
  QLR_CHECK(false, corrupt_file,
            "io::parse_safetensors: tensor \"{}\": {} holds {}; expected a non-negative integer",
            tensor, field, j.dump());
  return 0;
}

/// A tensor entry of the header before the byte ranges are checked against each other.
struct Entry {
  TensorView view;
  std::uint64_t begin = 0, end = 0;
};

QLR_COMPILED_FUNCTION
Entry parse_entry(const std::string& name, const nlohmann::json& j) {
  constexpr std::string_view entity = "io::parse_safetensors";
  QLR_CHECK(j.is_object(), corrupt_file,
            "{}: tensor \"{}\" is described by {}; expected an object with dtype, shape and "
            "data_offsets",
            entity, name, j.type_name());
  Entry e;
  e.view.name = name;

  const auto dtype = j.find("dtype");
  QLR_CHECK(dtype != j.end(), corrupt_file, "{}: tensor \"{}\" has no \"dtype\"; expected one",
            entity, name);
  QLR_CHECK(dtype->is_string(), corrupt_file,
            "{}: tensor \"{}\": dtype is {}; expected a string such as \"F32\"", entity, name,
            dtype->type_name());
  const auto& dtype_text = dtype->get_ref<const std::string&>();
  const auto d = parse_dtype(dtype_text);
  QLR_CHECK(d.has_value(), unsupported,
            "{}: tensor \"{}\" has dtype \"{}\"; expected F32, F16, BF16, I8, U8, I32 or I64",
            entity, name, dtype_text);
  e.view.dtype = *d;

  const auto shape = j.find("shape");
  QLR_CHECK(shape != j.end(), corrupt_file, "{}: tensor \"{}\" has no \"shape\"; expected one",
            entity, name);
  QLR_CHECK(shape->is_array(), corrupt_file,
            "{}: tensor \"{}\": shape is {}; expected an array of dimensions", entity, name,
            shape->type_name());
  std::uint64_t numel = 1;
  bool overflow = false;
  for (const auto& dim : *shape) {
    const std::uint64_t v = json_unsigned(dim, name, "a shape dimension");
    QLR_CHECK(v <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()),
              corrupt_file, "{}: tensor \"{}\": shape dimension {}; expected at most 2^63 - 1",
              entity, name, v);
    e.view.shape.push_back(static_cast<std::int64_t>(v));
    const auto p = checked_mul(numel, v);
    overflow = overflow || !p.has_value();
    numel = p.value_or(0);
  }
  // A zero dimension makes the product 0 whatever overflowed before it.
  const bool empty = std::find(e.view.shape.begin(), e.view.shape.end(), 0) != e.view.shape.end();
  const auto bytes = overflow ? std::nullopt : checked_mul(numel, dtype_size(*d));
  QLR_CHECK(empty || bytes.has_value(), corrupt_file,
            "{}: tensor \"{}\": shape [{}] of {} holds more than 2^64 bytes; expected a size "
            "that fits the file",
            entity, name, fmt::join(e.view.shape, ", "), dtype_text);

  const auto offsets = j.find("data_offsets");
  QLR_CHECK(offsets != j.end(), corrupt_file,
            "{}: tensor \"{}\" has no \"data_offsets\"; expected [begin, end]", entity, name);
  QLR_CHECK(offsets->is_array() && offsets->size() == 2, corrupt_file,
            "{}: tensor \"{}\": data_offsets is {}; expected an array of two integers [begin, "
            "end]",
            entity, name, offsets->dump());
  e.begin = json_unsigned((*offsets)[0], name, "data_offsets[0]");
  e.end = json_unsigned((*offsets)[1], name, "data_offsets[1]");
  QLR_CHECK(e.begin <= e.end, corrupt_file,
            "{}: tensor \"{}\": data_offsets [{}, {}] descend; expected begin <= end", entity,
            name, e.begin, e.end);
  const std::uint64_t expected = empty ? 0 : *bytes;
  QLR_CHECK(e.end - e.begin == expected, corrupt_file,
            "{}: tensor \"{}\": data_offsets [{}, {}] span {} bytes; expected {} (shape [{}] of "
            "{})",
            entity, name, e.begin, e.end, e.end - e.begin, expected,
            fmt::join(e.view.shape, ", "), dtype_text);
  return e;
}

}  // namespace detail

/// Parses a whole safetensors file held in `bytes`. Throws Errc::corrupt_file for anything
/// the format forbids (short or truncated file, bad header length, malformed or duplicated
/// JSON, wrong field types, byte ranges that do not match dtype × shape or do not tile the
/// data section exactly) and Errc::unsupported for a dtype qlr does not read.
QLR_COMPILED_FUNCTION
SafetensorsView parse_safetensors(std::span<const std::byte> bytes) {
  constexpr std::string_view entity = "io::parse_safetensors";
  QLR_CHECK(bytes.size() >= 8, corrupt_file,
            "{}: file size = {} bytes; expected at least the 8-byte header length", entity,
            bytes.size());
  std::uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i)
    header_size = (header_size << 8) | std::to_integer<std::uint64_t>(bytes[static_cast<std::size_t>(i)]);
  QLR_CHECK(header_size > 0, corrupt_file,
            "{}: header length = 0; expected a JSON header of at least 2 bytes", entity);
  QLR_CHECK(header_size <= detail::max_header_bytes, corrupt_file,
            "{}: header length = {} bytes; expected at most {} (100 MB)", entity, header_size,
            detail::max_header_bytes);
  QLR_CHECK(header_size <= bytes.size() - 8, corrupt_file,
            "{}: header length = {} bytes runs past the end of the file ({} bytes after the "
            "length); expected a complete header (truncated file?)",
            entity, header_size, bytes.size() - 8);
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()) + 8,
                              static_cast<std::size_t>(header_size));
  const auto header = detail::parse_json_strict<nlohmann::json>(text, entity, "header");
  QLR_CHECK(header.is_object(), corrupt_file,
            "{}: header is a JSON {}; expected an object of tensors", entity, header.type_name());

  const std::span<const std::byte> data = bytes.subspan(8 + static_cast<std::size_t>(header_size));
  SafetensorsView out;
  std::vector<detail::Entry> entries;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      QLR_CHECK(value.is_object(), corrupt_file,
                "{}: __metadata__ is {}; expected an object of strings", entity, value.type_name());
      for (const auto& [mkey, mvalue] : value.items()) {
        QLR_CHECK(mvalue.is_string(), corrupt_file,
                  "{}: __metadata__ \"{}\" is {}; expected a string", entity, mkey,
                  mvalue.type_name());
        out.metadata.emplace(mkey, mvalue.template get<std::string>());
      }
      continue;
    }
    entries.push_back(detail::parse_entry(key, value));
  }

  // The tensors, in file order, must tile the data section: no gap, no overlap, nothing after.
  std::sort(entries.begin(), entries.end(), [](const detail::Entry& a, const detail::Entry& b) {
    return std::pair(a.begin, a.end) < std::pair(b.begin, b.end);
  });
  std::uint64_t expected_begin = 0;
  const detail::Entry* previous = nullptr;
  for (auto& e : entries) {
    QLR_CHECK(e.end <= data.size(), corrupt_file,
              "{}: tensor \"{}\": data_offsets [{}, {}] end past the data section of {} bytes; "
              "expected offsets inside it (truncated file?)",
              entity, e.view.name, e.begin, e.end, data.size());
    QLR_CHECK(e.begin >= expected_begin, corrupt_file,
              "{}: tensor \"{}\": bytes [{}, {}) overlap tensor \"{}\" (ends at {}); expected "
              "tensors that do not overlap",
              entity, e.view.name, e.begin, e.end, previous ? previous->view.name : "",
              expected_begin);
    QLR_CHECK(e.begin == expected_begin, corrupt_file,
              "{}: tensor \"{}\" starts at byte {}, leaving a gap of {} bytes after {}; expected "
              "contiguous tensors",
              entity, e.view.name, e.begin, e.begin - expected_begin,
              previous ? fmt::format("tensor \"{}\"", previous->view.name) : std::string("the header"));
    e.view.bytes = data.subspan(static_cast<std::size_t>(e.begin),
                                static_cast<std::size_t>(e.end - e.begin));
    expected_begin = e.end;
    previous = &e;
  }
  QLR_CHECK(expected_begin == data.size(), corrupt_file,
            "{}: the data section is {} bytes but its tensors cover {}; expected no trailing "
            "bytes",
            entity, data.size(), expected_begin);

  out.tensors.reserve(entries.size());
  for (auto& e : entries) out.tensors.push_back(std::move(e.view));
  std::sort(out.tensors.begin(), out.tensors.end(),
            [](const TensorView& a, const TensorView& b) { return a.name < b.name; });
  return out;
}

/// A safetensors file mapped read-only and parsed; move-only. Its tensors view the mapping,
/// so they live as long as this object (moving it keeps them valid). The file must not be
/// truncated by someone else while it is mapped (the OS would signal SIGBUS).
class SafetensorsFile {
 public:
  /// Maps and parses `path`; Errc::io when it cannot be read, else as parse_safetensors.
  explicit SafetensorsFile(const std::filesystem::path& path)
      : path_(path), file_(path, "io::SafetensorsFile"), view_(parse_with_path()) {}

  /// All tensors, sorted by name.
  [[nodiscard]] const std::vector<TensorView>& tensors() const noexcept { return view_.tensors; }
  /// The tensor called `name`, or nullptr.
  [[nodiscard]] const TensorView* find(std::string_view name) const noexcept {
    return view_.find(name);
  }
  /// The tensor called `name`; throws Errc::invalid_argument naming it and the file.
  [[nodiscard]] const TensorView& at(std::string_view name) const {
    const TensorView* t = find(name);
    QLR_CHECK(t != nullptr, invalid_argument,
              "io::SafetensorsFile::at: tensor \"{}\" not found in \"{}\"; expected one of its "
              "{} tensors",
              name, path_.string(), view_.tensors.size());
    return *t;
  }
  /// The `__metadata__` strings.
  [[nodiscard]] const std::map<std::string, std::string>& metadata() const noexcept {
    return view_.metadata;
  }
  /// The parsed view (tensors and metadata).
  [[nodiscard]] const SafetensorsView& view() const noexcept { return view_; }
  /// The path the file was opened from.
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

 private:
  QLR_COMPILED_FUNCTION
  SafetensorsView parse_with_path() const {
    try {
      return parse_safetensors(file_.bytes());
    } catch (const Error& e) {
      throw Error(e.code(), fmt::format("{} (file \"{}\")", e.what(), path_.string()));
    }
  }

  std::filesystem::path path_;
  detail::MappedFile file_;
  SafetensorsView view_;
};

namespace detail {

/// Decodes `t`'s F32/F16/BF16 elements into `out` (t.numel() floats).
QLR_COMPILED_FUNCTION
void decode_floats(const TensorView& t, float* out, std::string_view entity) {
  const auto n = static_cast<std::size_t>(t.numel());
  QLR_CHECK(t.bytes.size() == n * dtype_size(t.dtype), corrupt_file,
            "{}: tensor \"{}\" holds {} bytes; expected {} for shape [{}] of {}", entity, t.name,
            t.bytes.size(), n * dtype_size(t.dtype), fmt::join(t.shape, ", "), to_string(t.dtype));
  switch (t.dtype) {
    case Dtype::f32:
      if (n > 0) std::memcpy(out, t.bytes.data(), n * sizeof(float));
      return;
    case Dtype::f16:
    case Dtype::bf16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h = 0;
        std::memcpy(&h, t.bytes.data() + 2 * i, 2);
        out[i] = t.dtype == Dtype::f16 ? half_bits_to_float(h) : bf16_bits_to_float(h);
      }
      return;
    default:
      QLR_CHECK(false, unsupported, "{}: tensor \"{}\" has dtype {}; expected F32, F16 or BF16",
                entity, t.name, to_string(t.dtype));
  }
}

/// Throws Errc::invalid_argument naming the tensor and the first non-finite element.
QLR_COMPILED_FUNCTION
void check_finite_tensor(const float* v, index_t rows, index_t cols, const TensorView& t,
                         std::string_view entity) {
  for (index_t i = 0; i < rows; ++i)
    for (index_t j = 0; j < cols; ++j)
      QLR_CHECK(std::isfinite(v[i * cols + j]), invalid_argument,
                "{}: tensor \"{}\": element ({}, {}) = {}; expected a finite value", entity,
                t.name, i, j, v[i * cols + j]);
}

}  // namespace detail

/// A rank-2 F32/F16/BF16 tensor as an (rows, cols) Matrix, widened exactly to float. Throws
/// Errc::shape_mismatch for another rank, Errc::unsupported for an integer dtype, and
/// Errc::invalid_argument naming the element for a NaN or an infinity (ALGORITHMS.md §1.4).
QLR_COMPILED_FUNCTION
Matrix to_matrix(const TensorView& t) {
  constexpr std::string_view entity = "io::to_matrix";
  QLR_CHECK(t.shape.size() == 2, shape_mismatch,
            "{}: tensor \"{}\" has shape [{}]; expected rank 2 (rows, cols)", entity, t.name,
            fmt::join(t.shape, ", "));
  Matrix m(static_cast<index_t>(t.shape[0]), static_cast<index_t>(t.shape[1]));
  detail::decode_floats(t, m.data(), entity);
  detail::check_finite_tensor(m.data(), m.rows(), m.cols(), t, entity);
  return m;
}

/// A rank-1 F32/F16/BF16 tensor as a Vector; errors as to_matrix (the element is (0, j)).
QLR_COMPILED_FUNCTION
Vector to_vector(const TensorView& t) {
  constexpr std::string_view entity = "io::to_vector";
  QLR_CHECK(t.shape.size() == 1, shape_mismatch,
            "{}: tensor \"{}\" has shape [{}]; expected rank 1", entity, t.name,
            fmt::join(t.shape, ", "));
  Vector v(static_cast<index_t>(t.shape[0]));
  detail::decode_floats(t, v.data(), entity);
  detail::check_finite_tensor(v.data(), 1, v.size(), t, entity);
  return v;
}

/// Builds a safetensors file: tensors are written in name order, contiguous, after a header
/// padded with spaces to a multiple of 8 bytes (so every tensor starts 8-byte aligned when
/// the sizes before it are multiples of 8), with `__metadata__` first.
class SafetensorsWriter {
 public:
  /// Adds raw little-endian `bytes` of `shape` and `dtype`. Throws Errc::invalid_argument
  /// for a name already added or reserved ("__metadata__"), a negative dimension, or a byte
  /// count other than numel · dtype_size.
  void add(std::string name, Dtype dtype, std::vector<std::int64_t> shape,
           std::span<const std::byte> bytes) {
    constexpr std::string_view entity = "io::SafetensorsWriter::add";
    QLR_CHECK(name != "__metadata__", invalid_argument,
              "{}: name = \"__metadata__\"; expected a tensor name (that key holds the metadata)",
              entity);
    QLR_CHECK(!tensors_.contains(name), invalid_argument,
              "{}: name = \"{}\" was already added; expected unique tensor names", entity, name);
    std::uint64_t numel = 1;
    bool overflow = false;
    for (const std::int64_t d : shape) {
      QLR_CHECK(d >= 0, invalid_argument, "{}: tensor \"{}\": shape [{}]; expected dimensions >= 0",
                entity, name, fmt::join(shape, ", "));
      const auto p = detail::checked_mul(numel, static_cast<std::uint64_t>(d));
      overflow = overflow || !p.has_value();
      numel = p.value_or(0);
    }
    // A zero dimension makes the size 0 whatever overflowed before it (as the reader says).
    const bool empty = std::find(shape.begin(), shape.end(), 0) != shape.end();
    const auto size = empty ? std::optional<std::uint64_t>(0)
                            : overflow ? std::nullopt : detail::checked_mul(numel, dtype_size(dtype));
    QLR_CHECK(size.has_value() && *size == bytes.size(), invalid_argument,
              "{}: tensor \"{}\": {} bytes; expected {} for shape [{}] of {}", entity, name,
              bytes.size(), size.value_or(0), fmt::join(shape, ", "), to_string(dtype));
    tensors_.emplace(std::move(name),
                     Entry{dtype, std::move(shape), std::vector<std::byte>(bytes.begin(), bytes.end())});
  }

  /// Adds `m` as a rank-2 tensor of `dtype` F32, F16 or BF16 (narrowed with round to nearest
  /// even). Throws Errc::invalid_argument for a non-finite element or one that overflows F16.
  QLR_COMPILED_FUNCTION
  void add(std::string name, ConstMatrixRef m, Dtype dtype = Dtype::f32) {
    add_floats(std::move(name), m, {m.rows(), m.cols()}, dtype);
  }

  /// Adds `v` as a rank-1 tensor, as add(name, matrix, dtype) does.
  QLR_COMPILED_FUNCTION
  void add_vector(std::string name, const Vector& v, Dtype dtype = Dtype::f32) {
    const ConstMatrixMap row(v.data(), 1, v.size(), Eigen::OuterStride<>(v.size()));
    add_floats(std::move(name), row, {v.size()}, dtype);
  }

  /// Sets `__metadata__[key] = value` (replacing an earlier value of the key).
  void set_metadata(std::string key, std::string value) {
    metadata_.insert_or_assign(std::move(key), std::move(value));
  }

  /// The whole file. Throws Errc::invalid_argument when a name or metadata string is not
  /// valid UTF-8 (JSON cannot hold it).
  QLR_COMPILED_FUNCTION
  [[nodiscard]] std::vector<std::byte> to_bytes() const {
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata_.empty()) {
      auto& meta = header["__metadata__"] = nlohmann::ordered_json::object();
      for (const auto& [k, v] : metadata_) meta[k] = v;
    }
    std::uint64_t offset = 0;
    for (const auto& [name, e] : tensors_) {
      const std::uint64_t end = offset + e.bytes.size();
      header[name] = {{"dtype", std::string(to_string(e.dtype))},
                      {"shape", e.shape},
                      {"data_offsets", {offset, end}}};
      offset = end;
    }
    std::string text;
    try {
      text = header.dump();
    } catch (const nlohmann::json::exception& ex) {
      QLR_CHECK(false, invalid_argument,
                "io::SafetensorsWriter::to_bytes: a tensor name or metadata string is not valid "
                "UTF-8 ({}); expected UTF-8 text",
                ex.what());
    }
    text.append((8 - text.size() % 8) % 8, ' ');
    std::vector<std::byte> out(8 + text.size() + static_cast<std::size_t>(offset));
    const std::uint64_t n = text.size();
    for (std::size_t i = 0; i < 8; ++i) out[i] = static_cast<std::byte>((n >> (8 * i)) & 0xffu);
    std::memcpy(out.data() + 8, text.data(), text.size());
    std::size_t at = 8 + text.size();
    for (const auto& [name, e] : tensors_) {
      if (!e.bytes.empty()) std::memcpy(out.data() + at, e.bytes.data(), e.bytes.size());
      at += e.bytes.size();
    }
    return out;
  }

  /// Writes to_bytes() to `path` through a temporary file in the same folder and a rename, so
  /// a crash never leaves half a file under `path`. Throws Errc::io.
  QLR_COMPILED_FUNCTION
  void write(const std::filesystem::path& path) const {
    detail::write_file_atomically(path, to_bytes(), "io::SafetensorsWriter::write");
  }

 private:
  struct Entry {
    Dtype dtype;
    std::vector<std::int64_t> shape;
    std::vector<std::byte> bytes;
  };

  QLR_COMPILED_FUNCTION
  void add_floats(std::string name, ConstMatrixRef m, std::vector<std::int64_t> shape, Dtype dtype) {
    constexpr std::string_view entity = "io::SafetensorsWriter::add";
    QLR_CHECK(dtype == Dtype::f32 || dtype == Dtype::f16 || dtype == Dtype::bf16, unsupported,
              "{}: tensor \"{}\": dtype {}; expected F32, F16 or BF16 for float data", entity,
              name, to_string(dtype));
    const std::size_t size = dtype_size(dtype);
    std::vector<std::byte> bytes(static_cast<std::size_t>(m.size()) * size);
    std::size_t at = 0;
    for (index_t i = 0; i < m.rows(); ++i) {
      for (index_t j = 0; j < m.cols(); ++j, at += size) {
        const float v = m(i, j);
        QLR_CHECK(std::isfinite(v), invalid_argument,
                  "{}: tensor \"{}\": element ({}, {}) = {}; expected a finite value", entity,
                  name, i, j, v);
        if (dtype == Dtype::f32) {
          std::memcpy(bytes.data() + at, &v, 4);
          continue;
        }
        const std::uint16_t h = dtype == Dtype::f16 ? float_to_half_bits(v) : float_to_bf16_bits(v);
        const float back = dtype == Dtype::f16 ? half_bits_to_float(h) : bf16_bits_to_float(h);
        QLR_CHECK(std::isfinite(back), invalid_argument,
                  "{}: tensor \"{}\": element ({}, {}) = {} overflows {}; expected a value the "
                  "dtype can hold",
                  entity, name, i, j, v, to_string(dtype));
        std::memcpy(bytes.data() + at, &h, 2);
      }
    }
    add(std::move(name), dtype, std::move(shape), bytes);
  }

  std::map<std::string, Entry, std::less<>> tensors_;
  std::map<std::string, std::string> metadata_;
};

// qlr::compiled (qlr/io/io.cpp) holds the one copy of these in a program.
#define QLR_IO_SAFETENSORS_FUNCTIONS(prefix) \
  prefix template SafetensorsView parse_safetensors<>(std::span<const std::byte>);
#if defined(QLR_COMPILED)
QLR_IO_SAFETENSORS_FUNCTIONS(extern)
#endif

}  // namespace qlr::io
