// SPDX-License-Identifier: Apache-2.0
// safetensors reader and writer: bit-exact round trips of every dtype, bf16/f16 rounding, the
// six real PEFT adapter files, and one hand-built damaged file per rule of the format, each
// refused with a message that names what is wrong.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "qlr/core/half.hpp"
#include "qlr/io/safetensors.hpp"
#include "qlr_test_support.hpp"

namespace {

using qlr::Errc;
using qlr::io::Dtype;
using Catch::Contains;

/// A safetensors file from its header text (unpadded, as given) and its data section.
std::vector<std::byte> make_file(const std::string& header, std::size_t data_bytes = 0,
                                 std::uint64_t length_field = std::numeric_limits<std::uint64_t>::max()) {
  const std::uint64_t n = length_field == std::numeric_limits<std::uint64_t>::max()
                              ? header.size() : length_field;
  std::vector<std::byte> out(8 + header.size() + data_bytes, std::byte{0});
  for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<std::byte>((n >> (8 * i)) & 0xff);
  std::memcpy(out.data() + 8, header.data(), header.size());
  for (std::size_t i = 0; i < data_bytes; ++i)
    out[8 + header.size() + i] = static_cast<std::byte>(i * 37 + 1);
  return out;
}

Errc code_of(const std::vector<std::byte>& bytes) {
  try {
    (void)qlr::io::parse_safetensors(bytes);
  } catch (const qlr::Error& e) {
    return e.code();
  }
  FAIL("no qlr::Error thrown");
  return Errc::io;
}

std::vector<std::byte> random_bytes(std::mt19937& rng, std::size_t n) {
  std::vector<std::byte> b(n);
  for (auto& x : b) x = static_cast<std::byte>(rng() & 0xff);
  return b;
}

using qlr::test::TempFolder;

std::optional<std::filesystem::path> adapters_folder_or_warn(const char* what) {
  const auto dir = std::filesystem::path(QLR_SHARED_DATA_DIR) / "adapters";
  if (!std::filesystem::is_directory(dir)) {
    WARN(dir.string() << " not found: " << what << " skipped");
    return std::nullopt;
  }
  return dir;
}

}  // namespace

TEST_CASE("Dtype: sizes and safetensors spellings", "[io][safetensors]") {
  for (const Dtype d : {Dtype::f32, Dtype::f16, Dtype::bf16, Dtype::i8, Dtype::u8, Dtype::i32,
                        Dtype::i64}) {
    CHECK(qlr::io::parse_dtype(qlr::io::to_string(d)) == d);
  }
  CHECK(qlr::io::dtype_size(Dtype::bf16) == 2);
  CHECK(qlr::io::dtype_size(Dtype::i64) == 8);
  CHECK_FALSE(qlr::io::parse_dtype("F64").has_value());
  CHECK_FALSE(qlr::io::parse_dtype("f32").has_value());
}

TEST_CASE("bf16: round to nearest even, NaN stays NaN, overflow to inf", "[io][safetensors][half]") {
  CHECK(qlr::float_to_bf16_bits(1.0f) == 0x3f80);
  CHECK(qlr::float_to_bf16_bits(1.0f + 0x1p-8f) == 0x3f80);         // halfway: to even
  CHECK(qlr::float_to_bf16_bits(1.0f + 3 * 0x1p-8f) == 0x3f82);     // halfway: to even (up)
  CHECK(qlr::float_to_bf16_bits(1.0f + 0x1p-8f + 0x1p-20f) == 0x3f81);  // above half: up
  CHECK(qlr::float_to_bf16_bits(-2.0f) == 0xc000);
  CHECK(qlr::float_to_bf16_bits(std::numeric_limits<float>::max()) == 0x7f80);
  CHECK(std::isnan(qlr::bf16_bits_to_float(
      qlr::float_to_bf16_bits(std::bit_cast<float>(0x7f800001u)))));  // low-payload NaN
  CHECK(qlr::bf16_bits_to_float(0x3fc0) == 1.5f);
  for (std::uint32_t b = 0; b < 0x10000u; ++b) {  // every bf16 value converts back exactly
    const auto h = static_cast<std::uint16_t>(b);
    const float f = qlr::bf16_bits_to_float(h);
    if (!std::isnan(f)) REQUIRE(qlr::float_to_bf16_bits(f) == h);
  }
}

TEST_CASE("SafetensorsWriter: raw bytes of every dtype round-trip bit for bit", "[io][safetensors]") {
  std::mt19937 rng(7);
  qlr::io::SafetensorsWriter w;
  const std::vector<std::pair<Dtype, std::vector<std::int64_t>>> cases = {
      {Dtype::f32, {3, 5}}, {Dtype::f16, {7}},    {Dtype::bf16, {2, 3, 4}}, {Dtype::i8, {9}},
      {Dtype::u8, {1, 13}}, {Dtype::i32, {}},     {Dtype::i64, {2, 2}},     {Dtype::f32, {0, 4}}};
  std::vector<std::vector<std::byte>> payloads;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    std::size_t n = qlr::io::dtype_size(cases[i].first);
    for (const auto d : cases[i].second) n *= static_cast<std::size_t>(d);
    payloads.push_back(random_bytes(rng, n));
    w.add(fmt::format("t{}.{}", i, qlr::io::to_string(cases[i].first)), cases[i].first,
          cases[i].second, payloads.back());
  }
  const auto bytes = w.to_bytes();
  std::uint64_t header = 0;
  std::memcpy(&header, bytes.data(), 8);
  CHECK(header % 8 == 0);  // padded with spaces so the data section starts 8-byte aligned
  const auto view = qlr::io::parse_safetensors(bytes);
  REQUIRE(view.tensors.size() == cases.size());
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto& t = view.at(fmt::format("t{}.{}", i, qlr::io::to_string(cases[i].first)));
    CHECK(t.dtype == cases[i].first);
    CHECK(t.shape == cases[i].second);
    REQUIRE(t.bytes.size() == payloads[i].size());
    CHECK(std::equal(t.bytes.begin(), t.bytes.end(), payloads[i].begin()));
  }
  CHECK(view.tensors[0].name < view.tensors[1].name);

  // The same through a file on disk, read back from its memory map.
  const TempFolder dir("st-roundtrip");
  w.write(dir / "model.safetensors");
  CHECK(std::distance(std::filesystem::directory_iterator(dir), {}) == 1);  // no temp file left
  qlr::io::SafetensorsFile file(dir / "model.safetensors");
  REQUIRE(file.tensors().size() == cases.size());
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto& t = file.tensors()[i];
    CHECK(std::equal(t.bytes.begin(), t.bytes.end(), view.tensors[i].bytes.begin(),
                     view.tensors[i].bytes.end()));
  }
  qlr::io::SafetensorsFile moved = std::move(file);
  CHECK(moved.find("t0.F32") != nullptr);  // views survive the move
  CHECK(moved.find("absent") == nullptr);
  CHECK_THROWS_WITH(moved.at("absent"), Contains("\"absent\" not found"));
}

TEST_CASE("SafetensorsWriter: matrices as F32, F16 and BF16 read back as to_matrix expects",
          "[io][safetensors]") {
  std::mt19937 rng(3);
  const qlr::Matrix m = qlr::test::gaussian(rng, 5, 7);
  qlr::Vector v = qlr::test::gaussian(rng, 6, 1).col(0);
  qlr::io::SafetensorsWriter w;
  w.add("f32", m);
  w.add("f16", m, Dtype::f16);
  w.add("bf16", m, Dtype::bf16);
  w.add_vector("vec", v, Dtype::bf16);
  const auto bytes = w.to_bytes();
  const auto view = qlr::io::parse_safetensors(bytes);
  CHECK(qlr::io::to_matrix(view.at("f32")) == m);
  const qlr::Matrix h = qlr::io::to_matrix(view.at("f16"));
  const qlr::Matrix b = qlr::io::to_matrix(view.at("bf16"));
  for (qlr::index_t i = 0; i < m.size(); ++i) {
    CHECK(h.data()[i] == qlr::round_to_half(m.data()[i]));
    CHECK(b.data()[i] == qlr::bf16_bits_to_float(qlr::float_to_bf16_bits(m.data()[i])));
  }
  const qlr::Vector vb = qlr::io::to_vector(view.at("vec"));
  REQUIRE(vb.size() == 6);
  CHECK(vb(2) == qlr::bf16_bits_to_float(qlr::float_to_bf16_bits(v(2))));

  // Conversion errors name the tensor and what was expected.
  CHECK_THROWS_WITH(qlr::io::to_matrix(view.at("vec")), Contains("\"vec\"") && Contains("rank 2"));
  CHECK_THROWS_WITH(qlr::io::to_vector(view.at("f32")), Contains("expected rank 1"));
  qlr::Matrix bad = m;
  bad(3, 4) = std::numeric_limits<float>::quiet_NaN();
  qlr::io::SafetensorsWriter raw;
  raw.add("bad", Dtype::f32, {5, 7},
          std::as_bytes(std::span<const float>(bad.data(), static_cast<std::size_t>(bad.size()))));
  raw.add("ints", Dtype::i32, {1, 2}, std::vector<std::byte>(8));
  const auto raw_bytes = raw.to_bytes();
  const auto raw_view = qlr::io::parse_safetensors(raw_bytes);
  CHECK_THROWS_WITH(qlr::io::to_matrix(raw_view.at("bad")),
                    Contains("\"bad\": element (3, 4) = nan; expected a finite value"));
  CHECK_THROWS_WITH(qlr::io::to_matrix(raw_view.at("ints")), Contains("dtype I32; expected F32"));

  // The writer refuses what the reader would refuse.
  CHECK_THROWS_WITH(w.add("f32", m), Contains("already added"));
  CHECK_THROWS_WITH(w.add("__metadata__", m), Contains("__metadata__"));
  CHECK_THROWS_WITH(w.add("nan", bad), Contains("element (3, 4) = nan"));
  qlr::Matrix big = m;
  big(0, 0) = 1e6f;
  CHECK_THROWS_WITH(w.add("big", big, Dtype::f16), Contains("overflows F16"));
  CHECK_THROWS_WITH(w.add("short", Dtype::f32, {2, 2}, std::vector<std::byte>(12)),
                    Contains("12 bytes; expected 16"));
  CHECK_THROWS_WITH(w.add("neg", Dtype::f32, {-1}, {}), Contains("dimensions >= 0"));
  // A zero dimension makes the tensor empty even when the other dimensions' product overflows,
  // for the writer as for the reader (safetensors_fuzz rewrites every file it parses).
  qlr::io::SafetensorsWriter huge_empty;
  huge_empty.add("e", Dtype::f32, {std::int64_t{1} << 40, std::int64_t{1} << 40, 0}, {});
  const auto huge_bytes = huge_empty.to_bytes();
  CHECK(qlr::io::parse_safetensors(huge_bytes).at("e").numel() == 0);
  CHECK_THROWS_WITH(w.add("int", m, Dtype::i8), Contains("expected F32, F16 or BF16"));
}

TEST_CASE("SafetensorsWriter: metadata round-trips; __metadata__ comes first", "[io][safetensors]") {
  qlr::io::SafetensorsWriter w;
  w.set_metadata("format", "pt");
  w.set_metadata("note", "ünïcode \"quoted\"");
  w.set_metadata("format", "qlr");  // replaces
  w.add("a", qlr::Matrix::Ones(1, 1));
  const auto bytes = w.to_bytes();
  const std::string header(reinterpret_cast<const char*>(bytes.data()) + 8, 16);
  CHECK(header.starts_with("{\"__metadata__\""));
  const auto view = qlr::io::parse_safetensors(bytes);
  CHECK(view.metadata.size() == 2);
  CHECK(view.metadata.at("format") == "qlr");
  CHECK(view.metadata.at("note") == "ünïcode \"quoted\"");

  qlr::io::SafetensorsWriter bad;
  bad.set_metadata("k", std::string("\xff\xfe"));
  CHECK_THROWS_WITH(bad.to_bytes(), Contains("not valid UTF-8"));
}

TEST_CASE("parse_safetensors: a valid hand-built file, with header padding and a zero-size tensor",
          "[io][safetensors]") {
  const std::string header =
      "  {\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[8,12]},"
      "\"a\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[0,8]},"
      "\"z\":{\"dtype\":\"I64\",\"shape\":[0,3],\"data_offsets\":[12,12]},"
      "\"__metadata__\":{\"format\":\"pt\"}}    ";
  const auto bytes = make_file(header, 12);
  const auto view = qlr::io::parse_safetensors(bytes);
  REQUIRE(view.tensors.size() == 3);
  CHECK(view.tensors[0].name == "a");
  CHECK(view.tensors[0].bytes.data() == bytes.data() + 8 + header.size());
  CHECK(view.tensors[1].bytes.size() == 4);
  CHECK(view.tensors[2].numel() == 0);
  CHECK(view.metadata.at("format") == "pt");
  const auto empty = qlr::io::parse_safetensors(make_file("{}"));
  CHECK(empty.tensors.empty());
}

TEST_CASE("parse_safetensors: each malformed file is an Errc::corrupt_file naming the problem",
          "[io][safetensors]") {
  using qlr::io::parse_safetensors;
  const auto entry = [](const std::string& body) { return fmt::format("{{\"t\":{{{}}}}}", body); };
  const std::string good_body = "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]";
  const auto check = [&](const std::vector<std::byte>& bytes, const std::string& needle) {
    CAPTURE(needle);
    CHECK_THROWS_WITH(parse_safetensors(bytes), Contains(needle));
    CHECK(code_of(bytes) == Errc::corrupt_file);
  };
  REQUIRE_NOTHROW(parse_safetensors(make_file(entry(good_body), 8)));

  SECTION("sizes of the file and the header") {
    check({}, "file size = 0 bytes; expected at least the 8-byte header length");
    check(std::vector<std::byte>(7), "file size = 7 bytes");
    check(make_file("", 0), "header length = 0");
    check(make_file("{}", 0, 100'000'001), "header length = 100000001 bytes; expected at most");
    check(make_file("{}", 0, 3), "runs past the end of the file");
    check(make_file("{}", 0, std::numeric_limits<std::uint64_t>::max() - 1), "expected at most");
  }
  SECTION("JSON structure") {
    check(make_file("{\"t\": "), "header is not valid JSON");
    check(make_file(std::string("{\0}", 3)), "header is not valid JSON");
    check(make_file("[1, 2]"), "header is a JSON array; expected an object");
    check(make_file("{\"t\": [1]}"), "tensor \"t\" is described by array; expected an object");
    check(make_file("{\"t\":{" + good_body + "},\"t\":{" + good_body + "}}", 8),
          "has the key \"t\" twice");
    check(make_file(entry(good_body + ",\"dtype\":\"F32\""), 8), "has the key \"dtype\" twice");
    check(make_file("{\"__metadata__\":[]}"), "__metadata__ is array; expected an object");
    check(make_file("{\"__metadata__\":{\"k\":1}}"), "__metadata__ \"k\" is number; expected a string");
  }
  SECTION("dtype, shape and data_offsets fields") {
    check(make_file(entry("\"shape\":[2],\"data_offsets\":[0,8]"), 8), "has no \"dtype\"");
    check(make_file(entry("\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]"), 8),
          "dtype is number; expected a string");
    check(make_file(entry("\"dtype\":\"F32\",\"data_offsets\":[0,8]"), 8), "has no \"shape\"");
    check(make_file(entry("\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]"), 8),
          "shape is number; expected an array");
    check(make_file(entry("\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]"), 8),
          "a shape dimension holds -2; expected a non-negative integer (negative value)");
    check(make_file(entry("\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]"), 8),
          "a shape dimension holds 2.5; expected a non-negative integer");
    check(make_file(entry("\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]"), 8),
          "expected a non-negative integer");
    check(make_file(entry("\"dtype\":\"F32\",\"shape\":[2]"), 8), "has no \"data_offsets\"");
    check(make_file(entry("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]"), 8),
          "expected an array of two integers");
    check(make_file(entry("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{\"a\":0}"), 8),
          "expected an array of two integers");
    check(make_file(entry("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]"), 8),
          "data_offsets [8, 0] descend");
    check(make_file(entry("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8.0]"), 8),
          "data_offsets[1] holds 8.0");
    check(make_file(entry("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-1,7]"), 8),
          "data_offsets[0] holds -1");
  }
  SECTION("byte ranges") {
    check(make_file(entry("\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]"), 8),
          "span 8 bytes; expected 12 (shape [3] of F32)");
    check(make_file(entry("\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],"
                          "\"data_offsets\":[0,8]"), 8),
          "holds more than 2^64 bytes");
    check(make_file(entry("\"dtype\":\"I64\",\"shape\":[4611686018427387904],"
                          "\"data_offsets\":[0,8]"), 8),
          "holds more than 2^64 bytes");  // numel fits, bytes do not
    check(make_file(entry("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]"), 8),
          "end past the data section of 8 bytes");
    check(make_file(entry(good_body), 4), "end past the data section of 4 bytes");
    check(make_file(entry(good_body), 12), "the data section is 12 bytes but its tensors cover 8");
    check(make_file("{\"a\":{" + good_body + "},\"b\":{\"dtype\":\"U8\",\"shape\":[4],"
                    "\"data_offsets\":[12,16]}}", 16),
          "leaving a gap of 4 bytes after tensor \"a\"");
    check(make_file(entry("\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]"), 8),
          "leaving a gap of 4 bytes after the header");
    check(make_file("{\"a\":{" + good_body + "},\"b\":{\"dtype\":\"U8\",\"shape\":[4],"
                    "\"data_offsets\":[4,8]}}", 8),
          "overlap tensor \"a\"");
  }
}

TEST_CASE("parse_safetensors: an unknown dtype is Errc::unsupported naming the tensor",
          "[io][safetensors]") {
  const auto bytes = make_file("{\"w\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8);
  CHECK_THROWS_WITH(qlr::io::parse_safetensors(bytes),
                    Contains("tensor \"w\" has dtype \"F64\"; expected F32, F16, BF16"));
  CHECK(code_of(bytes) == Errc::unsupported);
}

TEST_CASE("SafetensorsFile: missing, empty and truncated files", "[io][safetensors]") {
  const TempFolder dir("st-files");
  try {
    (void)qlr::io::SafetensorsFile(dir / "absent.safetensors");
    FAIL("no error");
  } catch (const qlr::Error& e) {
    CHECK(e.code() == Errc::io);
    CHECK_THAT(e.what(), Contains("absent.safetensors"));
  }
  CHECK_THROWS_WITH(qlr::io::SafetensorsFile(dir), Contains("not a regular file"));
  { std::ofstream(dir / "empty.safetensors"); }
  CHECK_THROWS_WITH(qlr::io::SafetensorsFile(dir / "empty.safetensors"),
                    Contains("file size = 0 bytes") && Contains("empty.safetensors"));

  // Every truncation of a valid file is refused, never read past its end.
  qlr::io::SafetensorsWriter w;
  w.set_metadata("format", "pt");
  w.add("x.lora_A.weight", qlr::Matrix::Constant(2, 3, 0.5f));
  w.add("x.lora_B.weight", qlr::Matrix::Constant(4, 2, 0.25f), Dtype::bf16);
  const auto bytes = w.to_bytes();
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    CAPTURE(n);
    CHECK(code_of(std::vector<std::byte>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n))) ==
          Errc::corrupt_file);
  }
}

TEST_CASE("SafetensorsFile: the six real PEFT adapters", "[io][safetensors][real]") {
  const auto dir = adapters_folder_or_warn("reading the real adapter files");
  if (!dir) return;
  const std::vector<std::pair<std::string, std::size_t>> expected = {
      {"distilbert-imdb-r8", 28},   {"gpt2-tigrinya-r8", 72}, {"opt125m-dpo-r16-bf16", 48},
      {"gemma3-270m-svg-r4", 144}, {"qwen2.5-0.5b-r8", 96},  {"opencalm1b-r1-fp16", 48}};
  for (const auto& [folder, count] : expected) {
    CAPTURE(folder);
    const auto path = *dir / folder / "adapter_model.safetensors";
    if (!std::filesystem::exists(path)) {
      WARN(path.string() << " not found: skipped");
      continue;
    }
    const qlr::io::SafetensorsFile file(path);
    CHECK(file.tensors().size() == count);
    CHECK(file.metadata().at("format") == "pt");
    // Rewritten by the writer, every tensor comes back with the same bytes.
    qlr::io::SafetensorsWriter w;
    for (const auto& t : file.tensors()) w.add(t.name, t.dtype, t.shape, t.bytes);
    const auto bytes = w.to_bytes();
    const auto again = qlr::io::parse_safetensors(bytes);
    REQUIRE(again.tensors.size() == count);
    for (std::size_t i = 0; i < count; ++i) {
      const auto& a = file.tensors()[i];
      const auto& b = again.tensors[i];
      CHECK(a.name == b.name);
      CHECK(a.shape == b.shape);
      CHECK(std::equal(a.bytes.begin(), a.bytes.end(), b.bytes.begin(), b.bytes.end()));
      if (a.shape.size() == 2) CHECK_NOTHROW(qlr::io::to_matrix(a));
    }
  }
}
