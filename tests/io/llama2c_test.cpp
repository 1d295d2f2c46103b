// SPDX-License-Identifier: Apache-2.0
// llama2.c checkpoint reader: the real stories260K header and tensor order, and every kind
// of damaged file ends in a qlr::Error, never a crash (STYLE.md §7.10).
#include <catch2/catch.hpp>

#include <cstring>
#include <limits>
#include <fstream>
#include <iterator>
#include <random>
#include <vector>

#include <fmt/core.h>

#include "qlr/io/llama2c.hpp"
#include "qlr_test_support.hpp"

namespace {
std::vector<std::byte> read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> bytes(chars.size());
  std::memcpy(bytes.data(), chars.data(), chars.size());
  return bytes;
}

float float_at(const std::vector<std::byte>& bytes, std::size_t float_index) {
  float f;
  std::memcpy(&f, bytes.data() + 28 + 4 * float_index, 4);
  return f;
}

qlr::Errc error_code_of(std::span<const std::byte> bytes) {
  try {
    (void)qlr::io::parse_llama2c(bytes);
  } catch (const qlr::Error& e) {
    return e.code();
  }
  return qlr::Errc::io;  // "no error" is never an expected value below
}
}  // namespace

TEST_CASE("load_llama2c: stories260K's header and tensor layout", "[io][llama2c]") {
  const auto path = qlr::test::stories260k_path_or_warn("llama2.c reader checks on the real file");
  if (!path) return;
  const auto m = qlr::io::load_llama2c(*path);
  const auto& c = m.config;
  CHECK(c.dim == 64);
  CHECK(c.hidden_dim == 172);
  CHECK(c.n_layers == 5);
  CHECK(c.n_heads == 8);
  CHECK(c.n_kv_heads == 4);
  CHECK(c.vocab_size == 512);
  CHECK(c.seq_len == 512);
  CHECK(c.shared_classifier);
  CHECK(c.kv_dim() == 32);
  CHECK(m.classifier.size() == 0);
  REQUIRE(m.layers.size() == 5);
  CHECK(m.layers[4].wk.rows() == 32);
  CHECK(m.layers[4].w2.cols() == 172);

  // Independent offsets into the raw file: embedding first, then 5 attention norms, then wq.
  const auto bytes = read_bytes(*path);
  CHECK(m.token_embedding(0, 0) == float_at(bytes, 0));
  CHECK(m.token_embedding(511, 63) == float_at(bytes, 512 * 64 - 1));
  CHECK(m.layers[0].attention_norm(0) == float_at(bytes, 512 * 64));
  CHECK(m.layers[0].wq(0, 1) == float_at(bytes, 512 * 64 + 5 * 64 + 1));
  CHECK(m.layers[1].wq(2, 3) == float_at(bytes, 512 * 64 + 5 * 64 + 64 * 64 + 2 * 64 + 3));
  const std::size_t w3_start = 512 * 64 + 5 * (64 + 64 * 64 * 2 + 32 * 64 * 2 + 64 + 172 * 64 * 2);
  CHECK(m.layers[0].w3(0, 0) == float_at(bytes, w3_start));
  CHECK(m.final_norm(63) == float_at(bytes, w3_start + 5 * 172 * 64 + 63));
  CHECK(m.linear_weights()[6].name == "layers.0.feed_forward.w3");
}

TEST_CASE("parse_llama2c: truncated, resized and corrupted files are qlr::Errors",
          "[io][llama2c]") {
  const auto path = qlr::test::stories260k_path_or_warn("loader robustness checks");
  if (!path) return;
  const auto bytes = read_bytes(*path);
  const std::span<const std::byte> all(bytes);
  // Truncation anywhere, including inside the header and one byte short of the end.
  for (std::size_t size = 0; size < bytes.size(); size += size < 64 ? 1 : 4099) {
    CAPTURE(size);
    REQUIRE(error_code_of(all.first(size)) == qlr::Errc::corrupt_file);
  }
  REQUIRE(error_code_of(all.first(bytes.size() - 1)) == qlr::Errc::corrupt_file);
  std::vector<std::byte> longer = bytes;
  longer.resize(bytes.size() + 4);
  CHECK(error_code_of(longer) == qlr::Errc::corrupt_file);

  // Hostile header fields: zero, negative, huge, inconsistent heads.
  const auto with_field = [&](int field, std::int32_t value) {
    std::vector<std::byte> copy = bytes;
    std::memcpy(copy.data() + 4 * field, &value, 4);
    return copy;
  };
  for (const auto& [field, value] : {std::pair{0, 0}, {0, -64}, {0, 1 << 30}, {1, -1},
                                     {2, 100000}, {3, 7}, {4, 3}, {4, 16}, {5, 0},
                                     {5, std::numeric_limits<std::int32_t>::min()}, {6, 0}}) {
    CAPTURE(field, value);
    CHECK(error_code_of(with_field(field, value)) == qlr::Errc::corrupt_file);
  }
  // A negative vocab size means "own classifier": the file is then too short.
  CHECK(error_code_of(with_field(5, -512)) == qlr::Errc::corrupt_file);

  // Random byte flips inside the weights load, or fail on a non-finite value by name.
  std::mt19937 rng(1);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<std::byte> copy = bytes;
    const std::size_t at = 28 + rng() % (bytes.size() - 28);
    copy[at] = static_cast<std::byte>(rng());
    try {
      (void)qlr::io::parse_llama2c(copy);
    } catch (const qlr::Error& e) {
      CHECK(e.code() == qlr::Errc::invalid_argument);
    }
  }
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(),
                          std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()}) {
    std::vector<std::byte> bad_weight = bytes;
    std::memcpy(bad_weight.data() + 28 + 4 * (512 * 64 + 5 * 64 + 70), &bad, 4);
    CHECK_THROWS_WITH(qlr::io::parse_llama2c(bad_weight),
                      Catch::Contains("layers.0.attention.wq: element (1, 6) = " +
                                      fmt::format("{}", bad)));
  }
}

TEST_CASE("load_llama2c: a missing file or a directory is an Errc::io error", "[io][llama2c]") {
  for (const char* path : {"/nonexistent/model.bin", "/tmp"}) {
    CAPTURE(path);
    try {
      (void)qlr::io::load_llama2c(path);
      FAIL("no exception");
    } catch (const qlr::Error& e) {
      CHECK(e.code() == qlr::Errc::io);
      CHECK_THAT(e.what(), Catch::Contains(path));
    }
  }
}
