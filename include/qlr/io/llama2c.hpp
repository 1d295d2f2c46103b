// SPDX-License-Identifier: Apache-2.0
// Reader for llama2.c's legacy checkpoint format (7-int32 header, then FP32 tensors), the
// format of the stories260K model qlr's demo and tests quantize. Every size is checked
// before use, so a truncated or hostile file is an Errc::corrupt_file, never a bad read.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "qlr/core/config.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/matrix.hpp"

namespace qlr::io {

static_assert(std::endian::native == std::endian::little,
              "llama2.c checkpoints are little-endian; qlr reads them on little-endian hosts");

/// The header of a llama2.c checkpoint.
struct Llama2cConfig {
  int dim = 0;                     ///< model width
  int hidden_dim = 0;              ///< SwiGLU MLP width
  int n_layers = 0;                ///< transformer blocks
  int n_heads = 0;                 ///< query heads
  int n_kv_heads = 0;              ///< key/value heads (grouped-query attention)
  int vocab_size = 0;              ///< tokens
  int seq_len = 0;                 ///< longest context
  bool shared_classifier = true;   ///< classifier = token embedding (vocab_size > 0 in the file)

  /// Width of one attention head, dim / n_heads.
  [[nodiscard]] int head_size() const noexcept { return n_heads > 0 ? dim / n_heads : 0; }
  /// Width of the key/value projections, head_size · n_kv_heads.
  [[nodiscard]] int kv_dim() const noexcept { return head_size() * n_kv_heads; }
};

/// The weights of one transformer block; matrices are (out_features, in_features).
struct Llama2cLayer {
  Vector attention_norm;  ///< RMSNorm gain before attention (dim)
  Matrix wq;              ///< (dim, dim)
  Matrix wk;              ///< (kv_dim, dim)
  Matrix wv;              ///< (kv_dim, dim)
  Matrix wo;              ///< (dim, dim)
  Vector ffn_norm;        ///< RMSNorm gain before the MLP (dim)
  Matrix w1;              ///< gate projection (hidden_dim, dim)
  Matrix w2;              ///< down projection (dim, hidden_dim)
  Matrix w3;              ///< up projection (hidden_dim, dim)
};

/// A linear layer's weight with its checkpoint name, e.g. "layers.0.attention.wq".
struct NamedWeight {
  std::string name;      ///< where it sits in the model
  const Matrix* weight;  ///< (out_features, in_features), owned by the model
};

/// All tensors of a llama2.c checkpoint.
struct Llama2cModel {
  Llama2cConfig config;            ///< the header
  Matrix token_embedding;          ///< (vocab_size, dim)
  std::vector<Llama2cLayer> layers;  ///< n_layers blocks
  Vector final_norm;               ///< RMSNorm gain before the classifier (dim)
  Matrix classifier;               ///< (vocab_size, dim); empty when shared with the embedding

  /// The seven linear weights of every block, in file order per kind, layer by layer.
  [[nodiscard]] std::vector<NamedWeight> linear_weights() const {
    std::vector<NamedWeight> out;
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const auto& b = layers[l];
      const std::string prefix = "layers." + std::to_string(l) + ".";
      for (const auto& [name, m] :
           {std::pair{"attention.wq", &b.wq}, {"attention.wk", &b.wk}, {"attention.wv", &b.wv},
            {"attention.wo", &b.wo}, {"feed_forward.w1", &b.w1}, {"feed_forward.w2", &b.w2},
            {"feed_forward.w3", &b.w3}}) {
        out.push_back({prefix + name, m});
      }
    }
    return out;
  }
};

namespace detail {

/// Reads consecutive little-endian float tensors out of a byte span, bounds-checked.
class TensorReader {
 public:
  TensorReader(std::span<const std::byte> bytes, std::size_t offset)
      : bytes_(bytes), offset_(offset) {}

  /// The next rows×cols floats as a Matrix, or as a Vector when T is Vector (cols = 1).
  template <class T>
  T read(index_t rows, index_t cols, const std::string& name) {
    T t;
    if constexpr (std::is_same_v<T, Matrix>)
      t.resize(rows, cols);
    else
      t.resize(rows * cols);
    read_into(t.data(), rows * cols, name);
    check_finite(ConstMatrixMap(t.data(), rows, cols, Eigen::OuterStride<>(cols)),
                 "io::load_llama2c: " + name);
    return t;
  }
  void skip(index_t floats) { offset_ += static_cast<std::size_t>(floats) * sizeof(float); }
  [[nodiscard]] std::size_t offset() const noexcept { return offset_; }

 private:
  void read_into(float* out, index_t count, const std::string& name) {
    const std::size_t size = static_cast<std::size_t>(count) * sizeof(float);
    QLR_CHECK(offset_ <= bytes_.size() && size <= bytes_.size() - offset_, corrupt_file,
              "io::load_llama2c: tensor {} needs bytes [{}, {}); expected a file of at least "
              "that size, got {}",
              name, offset_, offset_ + size, bytes_.size());
    std::memcpy(out, bytes_.data() + offset_, size);
    offset_ += size;
  }

  std::span<const std::byte> bytes_;
  std::size_t offset_;
};

}  // namespace detail

/// Parses a llama2.c checkpoint held in memory. Throws Errc::corrupt_file for a header
/// that is out of range or inconsistent, or a size that does not match the header exactly.
inline Llama2cModel parse_llama2c(std::span<const std::byte> bytes) {
  constexpr const char* entity = "io::load_llama2c";
  constexpr std::size_t header_bytes = 7 * sizeof(std::int32_t);
  QLR_CHECK(bytes.size() >= header_bytes, corrupt_file,
            "{}: file size = {} bytes; expected at least the {}-byte header", entity,
            bytes.size(), header_bytes);
  std::int32_t h[7];
  std::memcpy(h, bytes.data(), header_bytes);
  // A negative vocab size is llama2.c's flag for a classifier of its own; negate in 64 bits
  // (−INT32_MIN does not fit an int).
  const std::int64_t vocab_field = h[5] < 0 ? -std::int64_t{h[5]} : std::int64_t{h[5]};
  QLR_CHECK(vocab_field >= 1 && vocab_field <= (1 << 20), corrupt_file,
            "{}: header vocab_size = {}; expected 1 <= |vocab_size| <= {}", entity, h[5], 1 << 20);
  Llama2cConfig c{h[0], h[1], h[2], h[3], h[4], static_cast<int>(vocab_field), h[6], h[5] > 0};

  // Bounds that keep every product below 2^62 and match any model a CPU can hold.
  const auto check_range = [&](const char* field, std::int64_t v, std::int64_t hi) {
    QLR_CHECK(v >= 1 && v <= hi, corrupt_file, "{}: header {} = {}; expected 1 <= {} <= {}",
              entity, field, v, field, hi);
  };
  check_range("dim", c.dim, 1 << 16);
  check_range("hidden_dim", c.hidden_dim, 1 << 18);
  check_range("n_layers", c.n_layers, 1 << 10);
  check_range("n_heads", c.n_heads, c.dim);
  check_range("n_kv_heads", c.n_kv_heads, c.n_heads);
  check_range("seq_len", c.seq_len, 1 << 20);
  QLR_CHECK(c.dim % c.n_heads == 0 && c.n_heads % c.n_kv_heads == 0 && c.head_size() % 2 == 0,
            corrupt_file,
            "{}: header dim = {}, n_heads = {}, n_kv_heads = {}; expected n_heads to divide dim "
            "into even head sizes and n_kv_heads to divide n_heads",
            entity, c.dim, c.n_heads, c.n_kv_heads);

  const std::int64_t dim = c.dim, hidden = c.hidden_dim, layers = c.n_layers,
                     kv = c.kv_dim(), vocab = c.vocab_size;
  const std::int64_t floats = vocab * dim + layers * (2 * dim + 2 * dim * dim + 2 * kv * dim +
                                                      3 * hidden * dim) +
                              dim + std::int64_t{c.seq_len} * c.head_size() +
                              (c.shared_classifier ? 0 : vocab * dim);
  const std::int64_t expected = static_cast<std::int64_t>(header_bytes) + floats * 4;
  QLR_CHECK(static_cast<std::int64_t>(bytes.size()) == expected, corrupt_file,
            "{}: file size = {} bytes; expected {} for the header's shapes (dim {}, hidden {}, "
            "{} layers, vocab {})",
            entity, bytes.size(), expected, c.dim, c.hidden_dim, c.n_layers, c.vocab_size);

  Llama2cModel m;
  m.config = c;
  m.layers.resize(static_cast<std::size_t>(c.n_layers));
  detail::TensorReader r(bytes, header_bytes);
  m.token_embedding = r.read<Matrix>(vocab, dim, "token_embedding");
  // The file groups tensors by kind across layers: all attention norms, then all wq, …
  const auto per_layer = [&](auto member, index_t rows, index_t cols, const char* kind) {
    using T = std::remove_reference_t<decltype(m.layers.front().*member)>;
    for (std::size_t l = 0; l < m.layers.size(); ++l)
      m.layers[l].*member = r.read<T>(rows, cols, "layers." + std::to_string(l) + "." + kind);
  };
  per_layer(&Llama2cLayer::attention_norm, dim, 1, "attention_norm");
  per_layer(&Llama2cLayer::wq, dim, dim, "attention.wq");
  per_layer(&Llama2cLayer::wk, kv, dim, "attention.wk");
  per_layer(&Llama2cLayer::wv, kv, dim, "attention.wv");
  per_layer(&Llama2cLayer::wo, dim, dim, "attention.wo");
  per_layer(&Llama2cLayer::ffn_norm, dim, 1, "ffn_norm");
  per_layer(&Llama2cLayer::w1, hidden, dim, "feed_forward.w1");
  per_layer(&Llama2cLayer::w2, dim, hidden, "feed_forward.w2");
  per_layer(&Llama2cLayer::w3, hidden, dim, "feed_forward.w3");
  m.final_norm = r.read<Vector>(dim, 1, "final_norm");
  r.skip(std::int64_t{c.seq_len} * c.head_size());  // two RoPE tables llama2.c no longer reads
  if (!c.shared_classifier) m.classifier = r.read<Matrix>(vocab, dim, "classifier");
  QLR_ASSERT(r.offset() == bytes.size());
  return m;
}

/// Loads a llama2.c checkpoint from `path`. Throws Errc::io when the file cannot be read
/// and Errc::corrupt_file when its contents do not match the format.
inline Llama2cModel load_llama2c(const std::filesystem::path& path) {
  std::error_code ec;
  QLR_CHECK(std::filesystem::is_regular_file(path, ec), io,
            "io::load_llama2c: path = '{}'; expected a regular file", path.string());
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  QLR_CHECK(in.good(), io, "io::load_llama2c: path = '{}'; expected a readable file",
            path.string());
  const std::streamoff size = in.tellg();
  QLR_CHECK(size >= 0, io, "io::load_llama2c: path = '{}'; expected a file whose size can be read",
            path.string());
  std::vector<std::byte> bytes(static_cast<std::size_t>(size));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(bytes.data()), size);
  QLR_CHECK(in.good() || (in.eof() && in.gcount() == size), io,
            "io::load_llama2c: path = '{}'; read {} of {} bytes", path.string(), in.gcount(),
            size);
  return parse_llama2c(bytes);
}

}  // namespace qlr::io
