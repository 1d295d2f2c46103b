// SPDX-License-Identifier: Apache-2.0
// PEFT adapter loader: the six real adapters of ../shared/data against the oracle norms of its
// SOURCE.md, rsLoRA and pattern scaling, the DoRA save/load round trip (T5.5), and each kind
// of inconsistent adapter refused with a message naming the module or the config key.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "qlr/core/half.hpp"
#include "qlr/io/peft.hpp"
#include "qlr/io/safetensors.hpp"
#include "qlr_test_support.hpp"

namespace {

using Catch::Contains;
using qlr::Errc;
using qlr::io::Dtype;

using qlr::test::TempFolder;

/// Builds the safetensors bytes of an adapter, tensor by tensor.
struct AdapterFile {
  qlr::io::SafetensorsWriter w;
  std::mt19937 rng{11};
  AdapterFile& lora(const std::string& module, qlr::index_t r, qlr::index_t k, qlr::index_t n) {
    w.add("base_model.model." + module + ".lora_A.weight", qlr::test::gaussian(rng, r, k));
    w.add("base_model.model." + module + ".lora_B.weight", qlr::test::gaussian(rng, n, r));
    return *this;
  }
  AdapterFile& tensor(const std::string& name, const qlr::Matrix& m) {
    w.add(name, m);
    return *this;
  }
  AdapterFile& magnitude(const std::string& module, qlr::index_t n,
                         const std::string& suffix = ".lora_magnitude_vector") {
    w.add_vector("base_model.model." + module + suffix, qlr::Vector::Constant(n, 1.5f));
    return *this;
  }
  [[nodiscard]] std::vector<std::byte> bytes() const { return w.to_bytes(); }
};

const std::string lora_config = R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8})";
const std::string dora_config = R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_dora": true})";

Errc code_of(const std::string& config, const std::vector<std::byte>& bytes) {
  try {
    (void)qlr::io::load_peft_adapter(config, bytes);
  } catch (const qlr::Error& e) {
    return e.code();
  }
  FAIL("no qlr::Error thrown");
  return Errc::io;
}

}  // namespace

TEST_CASE("load_peft_adapter: the six real adapters match SOURCE.md's oracle", "[io][peft][real]") {
  struct Expected {
    const char* folder;
    qlr::index_t r;
    double alpha;
    std::size_t modules;
    const char* first;
    double norm;  // ‖(α/r)·B·A‖_F of the first module in name order
  };
  const Expected table[] = {
      {"distilbert-imdb-r8", 8, 16, 12, "distilbert.transformer.layer.0.attention.q_lin", 4.476336e-01},
      {"gpt2-tigrinya-r8", 8, 32, 36, "transformer.h.0.attn.c_attn", 4.244138e+00},
      {"opt125m-dpo-r16-bf16", 16, 32, 24, "model.decoder.layers.0.self_attn.q_proj", 2.475823e-02},
      {"gemma3-270m-svg-r4", 4, 16, 72, "model.layers.0.self_attn.k_proj", 1.326443e-01},
      {"qwen2.5-0.5b-r8", 8, 16, 48, "model.layers.0.self_attn.q_proj", 5.628298e-02},
      {"opencalm1b-r1-fp16", 1, 32, 24, "gpt_neox.layers.0.attention.query_key_value", 5.171373e+02}};
  const auto root = std::filesystem::path(QLR_SHARED_DATA_DIR) / "adapters";
  for (const auto& e : table) {
    CAPTURE(e.folder);
    const auto folder = root / e.folder;
    if (!std::filesystem::is_directory(folder)) {
      WARN(folder.string() << " not found: the real-adapter checks of " << e.folder << " skipped");
      continue;
    }
    const auto adapter = qlr::io::load_peft_adapter(folder);
    const auto& c = adapter.config;
    CHECK(c.r == e.r);
    CHECK(c.lora_alpha == e.alpha);
    CHECK_FALSE(c.use_dora);
    CHECK_FALSE(c.use_rslora);
    REQUIRE(adapter.modules.size() == e.modules);
    for (const auto& m : adapter.modules) {
      CAPTURE(m.name);
      CHECK(m.rank == c.r);
      CHECK(m.a.rows() == c.r);
      CHECK(m.b.cols() == c.r);
      CHECK(m.scale == e.alpha / static_cast<double>(e.r));
      CHECK_FALSE(m.magnitude.has_value());
      CHECK(m.b.cwiseAbs().maxCoeff() > 0.0f);  // trained: B is not the zero of a fresh adapter
    }
    const auto& first = adapter.modules.front();
    CHECK(first.name == e.first);
    const qlr::MatrixD delta = first.scale * (first.b.cast<double>() * first.a.cast<double>());
    CHECK(delta.norm() == Approx(e.norm).epsilon(1e-5));
    CHECK(adapter.find(e.first) == &first);
  }
  if (std::filesystem::is_directory(root / "gpt2-tigrinya-r8")) {
    const auto gpt2 = qlr::io::load_peft_adapter(root / "gpt2-tigrinya-r8");
    CHECK(gpt2.config.fan_in_fan_out);
    CHECK(gpt2.find("transformer.h.0.attn.c_attn")->b.rows() == 2304);  // still (out, r)
    CHECK(gpt2.find("transformer.h.0.mlp.c_proj")->a.cols() == 3072);   // still (r, in)
    CHECK(gpt2.config.target_modules == std::vector<std::string>{"c_attn", "c_proj"});
  }
  if (std::filesystem::is_directory(root / "distilbert-imdb-r8")) {
    // modules_to_save: the classifier's tensors are reported, not fatal.
    const auto bert = qlr::io::load_peft_adapter(root / "distilbert-imdb-r8");
    std::size_t ignored = 0;
    for (const auto& w : bert.warnings) ignored += w.find("classifier") != std::string::npos;
    CHECK(ignored == 4);
    CHECK(bert.config.task_type == "SEQ_CLS");
  }
}

TEST_CASE("PeftConfig: rsLoRA, rank_pattern and alpha_pattern follow PEFT", "[io][peft]") {
  const auto rs = qlr::io::parse_peft_config(
      R"({"peft_type": "LORA", "r": 16, "lora_alpha": 8, "use_rslora": true})");
  CHECK(rs.scale_for("model.layers.0.self_attn.q_proj") == 2.0);  // α/√r = 8/4

  // Keys are tried in file order (the first match wins) and match a dot-separated suffix.
  const auto c = qlr::io::parse_peft_config(R"({
      "peft_type": "LORA", "r": 8, "lora_alpha": 16,
      "rank_pattern": {"layers.1.self_attn.q_proj": 2, "q_proj": 4, "layers\\.[23]\\..*v_proj": 6},
      "alpha_pattern": {"v_proj": 32}})");
  REQUIRE(c.rank_pattern.size() == 3);
  CHECK(c.rank_pattern[0].first == "layers.1.self_attn.q_proj");  // not sorted
  CHECK(c.rank_for("model.layers.0.self_attn.q_proj") == 4);
  CHECK(c.rank_for("model.layers.1.self_attn.q_proj") == 2);
  CHECK(c.rank_for("q_proj") == 4);                             // the whole name
  CHECK(c.rank_for("model.layers.0.self_attn.xq_proj") == 8);   // no dot before: no match
  CHECK(c.rank_for("model.layers.0.self_attn.q_proj_2") == 8);  // anchored at the end
  CHECK(c.rank_for("model.layers.3.self_attn.v_proj") == 6);    // a regex key
  CHECK(c.rank_for("model.layers.0.self_attn.v_proj") == 8);
  CHECK(c.alpha_for("model.layers.0.self_attn.v_proj") == 32.0);
  CHECK(c.alpha_for("model.layers.0.self_attn.q_proj") == 16.0);
  CHECK(c.scale_for("model.layers.3.self_attn.v_proj") == 32.0 / 6.0);
  CHECK(c.scale_for("model.layers.1.self_attn.q_proj") == 16.0 / 2.0);

  // A loaded adapter takes each module's rank from the patterns.
  AdapterFile f;
  f.lora("model.layers.1.self_attn.q_proj", 2, 8, 8).lora("model.layers.3.self_attn.v_proj", 6, 8, 4);
  const auto adapter = qlr::io::load_peft_adapter(R"({
      "peft_type": "LORA", "r": 8, "lora_alpha": 16,
      "rank_pattern": {"layers.1.self_attn.q_proj": 2, "layers\\.[23]\\..*v_proj": 6}})", f.bytes());
  REQUIRE(adapter.modules.size() == 2);
  CHECK(adapter.modules[0].rank == 2);
  CHECK(adapter.modules[1].rank == 6);
  CHECK(adapter.modules[1].scale == 16.0 / 6.0);

  // The string form of target_modules is kept as a regex.
  const auto re = qlr::io::parse_peft_config(
      R"({"peft_type": "LORA", "target_modules": ".*\\.(q|v)_proj", "task_type": null})");
  CHECK(re.target_modules.empty());
  CHECK(re.target_modules_regex == std::optional<std::string>(".*\\.(q|v)_proj"));
  CHECK(re.task_type.empty());
}

TEST_CASE("PeftConfig: unknown keys and unapplied features are warnings", "[io][peft]") {
  const auto c = qlr::io::parse_peft_config(R"({
      "peft_type": "LORA", "r": 4, "lora_alpha": 8, "lora_dropout": 0.1, "bias": "all",
      "lora_bias": true, "layer_replication": null, "future_option": 3})");
  const auto has = [&](const char* text) {
    return std::any_of(c.warnings.begin(), c.warnings.end(),
                       [&](const std::string& w) { return w.find(text) != std::string::npos; });
  };
  CHECK(c.warnings.size() == 3);
  CHECK(has("unknown key \"future_option\""));
  CHECK(has("\"bias\" = \"all\""));
  CHECK(has("\"lora_bias\" = true"));
  const auto defaults = qlr::io::parse_peft_config(R"({"peft_type": "LORA"})");
  CHECK(defaults.r == 8);
  CHECK(defaults.lora_alpha == 8.0);
  CHECK(defaults.warnings.size() == 2);  // r and lora_alpha missing: PEFT's defaults
  CHECK(defaults.rope_pairs.empty());
  // qlr's own key: the q/k row order its B follows.
  const auto pairs = qlr::io::parse_peft_config(
      R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "qlr_rope_pairs": "adjacent"})");
  CHECK(pairs.rope_pairs == "adjacent");
  CHECK(pairs.warnings.empty());
  CHECK_THROWS_WITH(
      qlr::io::parse_peft_config(R"({"peft_type": "LORA", "r": 4, "qlr_rope_pairs": "random"})"),
      Catch::Contains("\"qlr_rope_pairs\" = \"random\"; expected \"adjacent\""));
}

TEST_CASE("save_peft_adapter: a DoRA adapter round-trips (T5.5)", "[io][peft]") {
  AdapterFile f;
  f.lora("model.layers.0.self_attn.q_proj", 4, 12, 10).magnitude("model.layers.0.self_attn.q_proj", 10);
  f.lora("model.layers.0.mlp.down_proj", 4, 20, 12).magnitude("model.layers.0.mlp.down_proj", 12);
  const auto original = qlr::io::load_peft_adapter(dora_config, f.bytes());
  REQUIRE(original.modules.size() == 2);
  CHECK(original.modules[0].name == "model.layers.0.mlp.down_proj");
  REQUIRE(original.modules[0].magnitude.has_value());
  CHECK(original.modules[0].magnitude->size() == 12);

  const TempFolder dir("peft-dora");
  qlr::io::save_peft_adapter(dir / "adapter", original);
  const qlr::io::SafetensorsFile file(dir / "adapter" / "adapter_model.safetensors");
  const auto* mag = file.find("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector");
  REQUIRE(mag != nullptr);
  CHECK(mag->shape == std::vector<std::int64_t>{10});
  CHECK(file.metadata().at("format") == "pt");

  const auto loaded = qlr::io::load_peft_adapter(dir / "adapter");
  CHECK(loaded.config.use_dora);
  CHECK(loaded.config.r == 4);
  CHECK(loaded.config.lora_alpha == 8.0);
  REQUIRE(loaded.modules.size() == 2);
  for (std::size_t i = 0; i < 2; ++i) {
    CHECK(loaded.modules[i].name == original.modules[i].name);
    CHECK(loaded.modules[i].a == original.modules[i].a);
    CHECK(loaded.modules[i].b == original.modules[i].b);
    CHECK(*loaded.modules[i].magnitude == *original.modules[i].magnitude);
    CHECK(loaded.modules[i].scale == original.modules[i].scale);
  }

  // As BF16 the factors come back rounded to nearest even.
  qlr::io::save_peft_adapter(dir / "bf16", original, Dtype::bf16);
  const auto narrow = qlr::io::load_peft_adapter(dir / "bf16");
  const float a0 = original.modules[1].a(1, 3);
  CHECK(narrow.modules[1].a(1, 3) == qlr::bf16_bits_to_float(qlr::float_to_bf16_bits(a0)));

  // The in-memory spelling lora_magnitude_vector.weight is read too.
  AdapterFile g;
  g.lora("m", 4, 3, 5).magnitude("m", 5, ".lora_magnitude_vector.weight");
  CHECK(qlr::io::load_peft_adapter(dora_config, g.bytes()).modules[0].magnitude->size() == 5);

  // What would not load back is refused on save.
  auto bad = original;
  bad.modules[0].magnitude.reset();
  CHECK_THROWS_WITH(qlr::io::save_peft_adapter(dir / "bad", bad), 
                    Contains("has no magnitude vector; expected one since use_dora is true"));
  bad = original;
  bad.modules[1].alpha = 3.0;
  CHECK_THROWS_WITH(qlr::io::save_peft_adapter(dir / "bad", bad), Contains("alpha = 3"));
  bad = original;
  bad.modules[1].a = qlr::Matrix::Ones(3, 12);
  CHECK_THROWS_WITH(qlr::io::save_peft_adapter(dir / "bad", bad), Contains("expected r = 4"));
}

TEST_CASE("load_peft_adapter: inconsistent adapters are qlr::Errors naming the module",
          "[io][peft]") {
  const std::string q = "model.layers.0.self_attn.q_proj";
  const auto check = [](const std::string& config, const std::vector<std::byte>& bytes,
                        const std::string& needle, Errc code) {
    CAPTURE(needle);
    CHECK_THROWS_WITH(qlr::io::load_peft_adapter(config, bytes), Contains(needle));
    CHECK(code_of(config, bytes) == code);
  };
  SECTION("missing factors") {
    AdapterFile f;
    f.tensor("base_model.model." + q + ".lora_A.weight", qlr::Matrix::Ones(4, 8));
    check(lora_config, f.bytes(), "module \"" + q + "\" has lora_A but no lora_B.weight",
          Errc::corrupt_file);
    AdapterFile g;
    g.tensor("base_model.model." + q + ".lora_B.weight", qlr::Matrix::Ones(8, 4));
    check(lora_config, g.bytes(), "module \"" + q + "\" has no lora_A.weight", Errc::corrupt_file);
    AdapterFile h;
    h.tensor("base_model.model.classifier.weight", qlr::Matrix::Ones(2, 8));
    check(lora_config, h.bytes(), "expected at least one LoRA module", Errc::corrupt_file);
  }
  SECTION("ranks") {
    AdapterFile f;
    f.lora(q, 8, 16, 16);
    check(lora_config, f.bytes(), "lora_A is [8, 16] and lora_B [16, 8]; expected lora_A rows = "
                                  "lora_B columns = r = 4", Errc::shape_mismatch);
    AdapterFile g;
    g.tensor("base_model.model." + q + ".lora_A.weight", qlr::Matrix::Ones(4, 8))
        .tensor("base_model.model." + q + ".lora_B.weight", qlr::Matrix::Ones(8, 3));
    check(lora_config, g.bytes(), "lora_B [8, 3]", Errc::shape_mismatch);
  }
  SECTION("DoRA magnitudes") {
    AdapterFile f;
    f.lora(q, 4, 8, 16);
    check(dora_config, f.bytes(),
          "module \"" + q + "\" has no lora_magnitude_vector; expected one for every module",
          Errc::corrupt_file);
    f.magnitude(q, 8);
    check(dora_config, f.bytes(), "lora_magnitude_vector has shape [8]; expected [16]",
          Errc::shape_mismatch);
    check(lora_config, f.bytes(), "has a lora_magnitude_vector but use_dora is false",
          Errc::corrupt_file);
    AdapterFile g;
    g.lora(q, 4, 8, 16).magnitude(q, 16).magnitude(q, 16, ".lora_magnitude_vector.weight");
    check(dora_config, g.bytes(), "has two magnitude vectors", Errc::corrupt_file);
  }
  SECTION("non-finite values") {
    qlr::Matrix a = qlr::Matrix::Ones(4, 8);
    a(2, 5) = std::numeric_limits<float>::infinity();
    qlr::io::SafetensorsWriter w;
    w.add("base_model.model.m.lora_A.weight", Dtype::f32, {4, 8},
          std::as_bytes(std::span<const float>(a.data(), 32)));
    w.add("base_model.model.m.lora_B.weight", qlr::Matrix::Ones(8, 4));
    check(lora_config, w.to_bytes(), "\"base_model.model.m.lora_A.weight\": element (2, 5) = inf",
          Errc::invalid_argument);
  }
  SECTION("config types and values") {
    AdapterFile f;
    f.lora(q, 4, 8, 16);
    const auto bytes = f.bytes();
    check(R"({"peft_type": "LORA", "r": "4"})", bytes, "\"r\" = \"4\"; expected a positive integer",
          Errc::invalid_argument);
    check(R"({"peft_type": "LORA", "r": 0})", bytes, "\"r\" = 0; expected 1 <= r", Errc::invalid_argument);
    check(R"({"peft_type": "LORA", "r": -2})", bytes, "\"r\" = -2", Errc::invalid_argument);
    check(R"({"peft_type": "LORA", "r": 4.5})", bytes, "\"r\" = 4.5", Errc::invalid_argument);
    check(R"({"peft_type": "LORA", "lora_alpha": "x"})", bytes, "\"lora_alpha\" = \"x\"; expected a finite number",
          Errc::invalid_argument);
    check(R"({"peft_type": "LORA", "lora_alpha": 1e999})", bytes, "number overflow",
          Errc::corrupt_file);  // JSON has no infinity: the parser refuses the overflow
    check(R"({"peft_type": "LORA", "use_dora": "yes"})", bytes, "\"use_dora\" = \"yes\"; expected true or false",
          Errc::invalid_argument);
    check(R"({"peft_type": "LORA", "target_modules": 3})", bytes, "\"target_modules\" = 3",
          Errc::invalid_argument);
    check(R"({"peft_type": "LORA", "target_modules": ["q", 1]})", bytes, "\"target_modules\" holds 1",
          Errc::invalid_argument);
    check(R"({"peft_type": "LORA", "rank_pattern": {"q_proj": "2"}})", bytes,
          "\"rank_pattern[\"q_proj\"]\" = \"2\"", Errc::invalid_argument);
    check(R"({"peft_type": "LORA", "alpha_pattern": []})", bytes, "\"alpha_pattern\" = []",
          Errc::invalid_argument);
    check(R"({"peft_type": "LORA", "rank_pattern": {"q_proj(": 2}})", bytes,
          "is not a regular expression", Errc::invalid_argument);
    check(R"({"peft_type": "LORA", "rank_pattern": {"(a+)+": 2}})", bytes, "repeats a group",
          Errc::unsupported);
    check(R"({"peft_type": "LORA", "rank_pattern": {"a{1000}": 2}})", bytes, "counted repetition",
          Errc::unsupported);
    // Found by peft_fuzz: libstdc++ overflows a long reading a back-reference's number.
    check(R"({"peft_type": "LORA", "rank_pattern": {"a\\1111111111111111111": 2}})", bytes,
          "has a back-reference", Errc::unsupported);
    check(R"({"peft_type": "PREFIX_TUNING", "r": 4})", bytes,
          "\"peft_type\" = \"PREFIX_TUNING\"; expected \"LORA\"", Errc::unsupported);
    check(R"({"r": 4})", bytes, "\"peft_type\" is missing", Errc::invalid_argument);
    check(R"({"peft_type": "LORA", "r": 4, "r": 8})", bytes, "has the key \"r\" twice",
          Errc::corrupt_file);
    check(R"([1])", bytes, "is a JSON array; expected an object", Errc::corrupt_file);
    check(R"({"peft_type": "LORA", "r": 4)", bytes, "is not valid JSON", Errc::corrupt_file);
  }
}

TEST_CASE("load_peft_adapter: folders without the two files", "[io][peft]") {
  const TempFolder dir("peft-folders");
  try {
    (void)qlr::io::load_peft_adapter(dir);
    FAIL("no error");
  } catch (const qlr::Error& e) {
    CHECK(e.code() == Errc::io);
    CHECK_THAT(e.what(), Contains("adapter_config.json"));
  }
  { std::ofstream(dir / "adapter_model.bin") << "pickle"; }
  CHECK_THROWS_WITH(qlr::io::load_peft_adapter(dir), Contains("qlr does not read pickle files"));
  { std::ofstream(dir / "adapter_config.json") << lora_config; }
  std::filesystem::remove(dir / "adapter_model.bin");
  try {
    (void)qlr::io::load_peft_adapter(dir);
    FAIL("no error");
  } catch (const qlr::Error& e) {
    CHECK(e.code() == Errc::io);
    CHECK_THAT(e.what(), Contains("adapter_model.safetensors"));
  }
  { std::ofstream(dir / "adapter_config.json") << R"({"peft_type": "LORA", "r": 0})"; }
  CHECK_THROWS_WITH(qlr::io::load_peft_adapter(dir),
                    Contains("\"r\" = 0") && Contains("adapter_config.json"));
}
