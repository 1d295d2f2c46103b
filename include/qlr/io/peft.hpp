// SPDX-License-Identifier: Apache-2.0
// Hugging Face PEFT LoRA and DoRA adapters: a folder with `adapter_config.json` and
// `adapter_model.safetensors` (ALGORITHMS.md §1.6). Loading checks the tensors against the
// config — every lora_A has its lora_B, ranks agree with `r` / `rank_pattern`, DoRA
// magnitudes are there exactly when `use_dora` says so and have the right length, values are
// finite — so that a layer built from a PeftAdapter never has to. What qlr does not apply (a
// classifier saved through `modules_to_save`, trained biases, config keys it does not know)
// is reported in `warnings` rather than silently dropped or made fatal.
//
// GPT-2 style Conv1D layers (`fan_in_fan_out: true`) still store A as (r, in) and B as
// (out, r); only their base weight is stored (in, out), so a merge into that transposed base
// must add ΔWᵀ = (s·B·A)ᵀ. qlr records the flag and leaves the factors as PEFT stores them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <map>
#include <optional>
#include <regex>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "qlr/core/config.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/io/detail/file.hpp"
#include "qlr/io/detail/json.hpp"
#include "qlr/io/safetensors.hpp"

namespace qlr::io {

/// The fields of a PEFT `adapter_config.json` that decide how an adapter is applied.
/// Defaults are PEFT's (`LoraConfig`) for keys the file leaves out.
struct PeftConfig {
  std::string peft_type = "LORA";                     ///< only "LORA" is read (DoRA is LORA + use_dora)
  std::string task_type;                              ///< e.g. "CAUSAL_LM"; empty when null
  std::string base_model_name_or_path;                ///< empty when null
  index_t r = 8;                                      ///< default rank
  double lora_alpha = 8.0;                            ///< default alpha
  bool use_rslora = false;                            ///< scale α/√r instead of α/r
  bool use_dora = false;                              ///< modules carry a magnitude vector
  bool use_qalora = false;                            ///< QA-LoRA (group-pooled input)
  index_t qalora_group_size = 16;                     ///< QA-LoRA pooling group
  std::vector<std::string> target_modules;            ///< list form (module-name suffixes)
  std::optional<std::string> target_modules_regex;    ///< string form: PEFT full-matches it as a regex
  bool fan_in_fan_out = false;                        ///< base stored (in, out): merge adds ΔWᵀ
  /// Which q/k row order B's rows of q_proj and k_proj follow (qlr's key "qlr_rope_pairs"):
  /// "adjacent" (llama2.c, GGUF: RoPE rotates rows 2i, 2i+1), "halves" (Hugging Face: i and
  /// i + head/2), or empty where the file does not say (PEFT's own files).
  std::string rope_pairs;
  std::vector<std::pair<std::string, index_t>> rank_pattern;  ///< in file order: first match wins
  std::vector<std::pair<std::string, double>> alpha_pattern;  ///< in file order: first match wins
  std::vector<std::string> warnings;                  ///< keys and values qlr does not apply

  /// The rank of `module` (a name such as "model.layers.0.self_attn.q_proj").
  [[nodiscard]] index_t rank_for(std::string_view module) const;
  /// The alpha of `module`.
  [[nodiscard]] double alpha_for(std::string_view module) const;
  /// The LoRA scale of `module`: α/r, or α/√r with rsLoRA, after the patterns.
  [[nodiscard]] double scale_for(std::string_view module) const {
    const auto rank = static_cast<double>(rank_for(module));
    return alpha_for(module) / (use_rslora ? std::sqrt(rank) : rank);
  }
};

/// One adapted linear layer: ΔW = scale · B · A (N×K); DoRA adds a per-row magnitude.
struct PeftModule {
  std::string name;                 ///< module path, e.g. "model.layers.0.self_attn.q_proj"
  Matrix a;                         ///< lora_A, (r, K)
  Matrix b;                         ///< lora_B, (N, r)
  std::optional<Vector> magnitude;  ///< DoRA lora_magnitude_vector, (N); only with use_dora
  index_t rank = 0;                 ///< r of this module (rank_pattern applied)
  double alpha = 0.0;               ///< α of this module (alpha_pattern applied)
  double scale = 0.0;               ///< α/r or α/√r
};

/// A loaded adapter: its config and its modules sorted by name.
struct PeftAdapter {
  PeftConfig config;                  ///< adapter_config.json
  std::vector<PeftModule> modules;    ///< sorted by name
  std::vector<std::string> warnings;  ///< the config's warnings, then ignored tensors

  /// The module called `name`, or nullptr.
  [[nodiscard]] const PeftModule* find(std::string_view name) const noexcept {
    const auto it = std::lower_bound(modules.begin(), modules.end(), name,
                                     [](const PeftModule& m, std::string_view n) { return m.name < n; });
    return it != modules.end() && it->name == name ? &*it : nullptr;
  }
};

namespace detail {

inline constexpr std::string_view peft_prefix = "base_model.model.";
inline constexpr std::size_t max_pattern_key = 256;
inline constexpr std::size_t max_matched_name = 512;

/// Throws Errc::invalid_argument unless `key` is a rank/alpha pattern qlr can match safely:
/// ECMAScript syntax, at most 256 characters, and no counted or nested repetition (`{n}`,
/// `(…)*`), whose backtracking can take exponential time on a hostile file, nor a
/// back-reference (`\1`): libstdc++ reads its number into a long without an overflow check.
QLR_COMPILED_FUNCTION
void check_pattern_key(const std::string& key, std::string_view field) {
  constexpr std::string_view entity = "io::parse_peft_config";
  QLR_CHECK(!key.empty() && key.size() <= max_pattern_key, invalid_argument,
            "{}: {} key \"{}\" has {} characters; expected 1 to {}", entity, field, key,
            key.size(), max_pattern_key);
  QLR_CHECK(key.find('{') == std::string::npos, unsupported,
            "{}: {} key \"{}\" uses counted repetition {{…}}; expected a module name or a "
            "simple regex",
            entity, field, key);
  for (std::size_t i = 1; i < key.size(); ++i) {
    QLR_CHECK(!(key[i - 1] == ')' && (key[i] == '*' || key[i] == '+')), unsupported,
              "{}: {} key \"{}\" repeats a group; expected a module name or a simple regex",
              entity, field, key);
    QLR_CHECK(!(key[i - 1] == '\\' && key[i] >= '1' && key[i] <= '9'), unsupported,
              "{}: {} key \"{}\" has a back-reference; expected a module name or a simple regex",
              entity, field, key);
  }
  try {
    const std::regex re("(.*\\.)?(" + key + ")");
  } catch (const std::regex_error& e) {
    QLR_CHECK(false, invalid_argument, "{}: {} key \"{}\" is not a regular expression ({})",
              entity, field, key, e.what());
  }
}

/// PEFT's `get_pattern_key` rule: `key` (a regex) matches the whole module name or a suffix
/// of it that starts after a dot, i.e. `re.match(r"(.*\.)?(key)$", module)`.
QLR_COMPILED_FUNCTION
bool pattern_matches(const std::string& key, std::string_view module) {
  QLR_CHECK(module.size() <= max_matched_name, unsupported,
            "io::PeftConfig: module name of {} characters matched against pattern \"{}\"; "
            "expected at most {}",
            module.size(), key, max_matched_name);
  const std::regex re("(.*\\.)?(" + key + ")");
  return std::regex_match(module.begin(), module.end(), re);
}

}  // namespace detail

inline index_t PeftConfig::rank_for(std::string_view module) const {
  for (const auto& [key, rank] : rank_pattern)
    if (detail::pattern_matches(key, module)) return rank;
  return r;
}

inline double PeftConfig::alpha_for(std::string_view module) const {
  for (const auto& [key, alpha] : alpha_pattern)
    if (detail::pattern_matches(key, module)) return alpha;
  return lora_alpha;
}

namespace detail {

using Json = nlohmann::json;

/// In the order of the text: the top-level object's keys (parent "", depth 1), or the keys
/// of the object that top-level key `parent` holds (depth 2).
inline std::vector<std::string_view> keys_of(std::span<const JsonKey> keys, std::string_view parent,
                                             int depth) {
  std::vector<std::string_view> out;
  bool inside = parent.empty();
  for (const JsonKey& k : keys) {
    if (k.depth == depth - 1 && !parent.empty()) inside = k.name == parent;
    if (inside && k.depth == depth) out.push_back(k.name);
  }
  return out;
}

/// Reads one typed field of the config; a wrong type is Errc::invalid_argument naming the key.
class ConfigReader {
 public:
  explicit ConfigReader(const Json& j) : j_(j) {}

  [[nodiscard]] const Json* get(std::string_view key) const {
    const auto it = j_.find(std::string(key));
    return it == j_.end() ? nullptr : &*it;
  }
  QLR_COMPILED_FUNCTION
  void boolean(std::string_view key, bool& out) const {
    if (const auto* v = get(key)) {
      QLR_CHECK(v->is_boolean(), invalid_argument,
                "io::parse_peft_config: \"{}\" = {}; expected true or false", key, v->dump());
      out = v->get<bool>();
    }
  }
  QLR_COMPILED_FUNCTION
  void positive_integer(std::string_view key, index_t& out) const {
    if (const auto* v = get(key)) out = positive_integer_value(*v, key);
  }
  QLR_COMPILED_FUNCTION
  void finite_number(std::string_view key, double& out) const {
    if (const auto* v = get(key)) out = finite_number_value(*v, key);
  }
  /// A string, or "" for null.
  QLR_COMPILED_FUNCTION
  void string(std::string_view key, std::string& out) const {
    if (const auto* v = get(key)) {
      QLR_CHECK(v->is_string() || v->is_null(), invalid_argument,
                "io::parse_peft_config: \"{}\" = {}; expected a string", key, v->dump());
      out = v->is_null() ? std::string() : v->get<std::string>();
    }
  }

  QLR_COMPILED_FUNCTION
  static index_t positive_integer_value(const Json& v, std::string_view key) {
    QLR_CHECK(v.is_number_integer(), invalid_argument,
              "io::parse_peft_config: \"{}\" = {}; expected a positive integer", key, v.dump());
    const bool positive = v.is_number_unsigned() ? v.get<std::uint64_t>() >= 1
                                                 : v.get<std::int64_t>() >= 1;
    QLR_CHECK(positive && (!v.is_number_unsigned() || v.get<std::uint64_t>() <= (1u << 30)),
              invalid_argument, "io::parse_peft_config: \"{}\" = {}; expected 1 <= {} <= 2^30",
              key, v.dump(), key);
    return static_cast<index_t>(v.get<std::int64_t>());
  }
  QLR_COMPILED_FUNCTION
  static double finite_number_value(const Json& v, std::string_view key) {
    QLR_CHECK(v.is_number(), invalid_argument,
              "io::parse_peft_config: \"{}\" = {}; expected a finite number", key, v.dump());
    const double d = v.get<double>();
    QLR_CHECK(std::isfinite(d), invalid_argument,
              "io::parse_peft_config: \"{}\" = {}; expected a finite number", key, v.dump());
    return d;
  }

 private:
  const Json& j_;
};

/// Whether `v` is the value PEFT writes when a feature is off (null, false, "", [], {}).
QLR_COMPILED_FUNCTION
bool is_off(const Json& v) {
  return v.is_null() || (v.is_boolean() && !v.get<bool>()) ||
         ((v.is_array() || v.is_object()) && v.empty()) ||
         (v.is_string() && v.get<std::string>().empty());
}

}  // namespace detail

/// Parses the text of an `adapter_config.json`. Throws Errc::unsupported when peft_type is
/// not "LORA", Errc::invalid_argument naming the key for a wrong type, r <= 0, a non-finite
/// alpha or an unusable pattern key, and Errc::corrupt_file for malformed or duplicated JSON.
/// Keys qlr does not know, and known ones whose non-default value it does not apply, become
/// warnings.
QLR_COMPILED_FUNCTION
PeftConfig parse_peft_config(std::string_view json_text) {
  constexpr std::string_view entity = "io::parse_peft_config";
  std::vector<detail::JsonKey> keys;  // the file's order: first matching pattern wins
  const auto j =
      detail::parse_json_strict<detail::Json>(json_text, entity, "adapter_config.json", &keys);
  QLR_CHECK(j.is_object(), corrupt_file, "{}: adapter_config.json is a JSON {}; expected an object",
            entity, j.type_name());
  const detail::ConfigReader read(j);
  PeftConfig c;

  const auto* type = read.get("peft_type");
  QLR_CHECK(type != nullptr, invalid_argument,
            "{}: \"peft_type\" is missing; expected \"LORA\"", entity);
  QLR_CHECK(type->is_string(), invalid_argument, "{}: \"peft_type\" = {}; expected a string",
            entity, type->dump());
  c.peft_type = type->get<std::string>();
  QLR_CHECK(c.peft_type == "LORA", unsupported,
            "{}: \"peft_type\" = \"{}\"; expected \"LORA\" (qlr reads LoRA and DoRA adapters)",
            entity, c.peft_type);

  read.string("task_type", c.task_type);
  read.string("base_model_name_or_path", c.base_model_name_or_path);
  if (read.get("r") == nullptr) c.warnings.push_back("\"r\" is missing; PEFT's default 8 is used");
  if (read.get("lora_alpha") == nullptr)
    c.warnings.push_back("\"lora_alpha\" is missing; PEFT's default 8 is used");
  read.positive_integer("r", c.r);
  read.finite_number("lora_alpha", c.lora_alpha);
  read.boolean("use_rslora", c.use_rslora);
  read.boolean("use_dora", c.use_dora);
  read.boolean("use_qalora", c.use_qalora);
  read.positive_integer("qalora_group_size", c.qalora_group_size);
  read.boolean("fan_in_fan_out", c.fan_in_fan_out);
  read.string("qlr_rope_pairs", c.rope_pairs);
  QLR_CHECK(c.rope_pairs.empty() || c.rope_pairs == "adjacent" || c.rope_pairs == "halves",
            invalid_argument,
            "{}: \"qlr_rope_pairs\" = \"{}\"; expected \"adjacent\" or \"halves\"", entity,
            c.rope_pairs);

  if (const auto* t = read.get("target_modules")) {
    if (t->is_string()) {
      c.target_modules_regex = t->get<std::string>();
    } else {
      QLR_CHECK(t->is_array() || t->is_null(), invalid_argument,
                "{}: \"target_modules\" = {}; expected a list of names, a regex string or null",
                entity, t->dump());
      if (t->is_array()) {
        for (const auto& name : *t) {
          QLR_CHECK(name.is_string(), invalid_argument,
                    "{}: \"target_modules\" holds {}; expected module names (strings)", entity,
                    name.dump());
          c.target_modules.push_back(name.get<std::string>());
        }
      }
    }
  }
  const auto patterns = [&](std::string_view key, auto&& add) {
    const auto* p = read.get(key);
    if (p == nullptr || p->is_null()) return;
    QLR_CHECK(p->is_object(), invalid_argument,
              "{}: \"{}\" = {}; expected an object of module pattern → value", entity, key,
              p->dump());
    for (const std::string_view name : detail::keys_of(keys, key, 2)) {
      const std::string pattern(name);
      detail::check_pattern_key(pattern, key);
      add(pattern, p->at(pattern), fmt::format("{}[\"{}\"]", key, pattern));
    }
  };
  patterns("rank_pattern", [&](const std::string& k, const auto& v, const std::string& where) {
    c.rank_pattern.emplace_back(k, detail::ConfigReader::positive_integer_value(v, where));
  });
  patterns("alpha_pattern", [&](const std::string& k, const auto& v, const std::string& where) {
    c.alpha_pattern.emplace_back(k, detail::ConfigReader::finite_number_value(v, where));
  });

  // Keys that describe training or initialisation only, or whose effect the tensors already
  // show (which modules were adapted, which extra modules were saved).
  static constexpr std::string_view ignored[] = {
      "auto_mapping", "revision", "inference_mode", "init_lora_weights", "lora_dropout",
      "megatron_config", "megatron_core", "loftq_config", "eva_config", "corda_config",
      "lora_ga_config", "peft_version", "ensure_weight_tying", "layers_pattern",
      "layers_to_transform", "exclude_modules", "modules_to_save"};
  // Keys whose value, unless off, changes the forward pass in a way qlr does not apply.
  static constexpr std::string_view not_applied[] = {
      "lora_bias", "use_bdlora", "alora_invocation_tokens", "arrow_config", "target_parameters",
      "trainable_token_indices", "layer_replication"};
  static constexpr std::string_view parsed[] = {"peft_type",
                                                "task_type",
                                                "base_model_name_or_path",
                                                "r",
                                                "lora_alpha",
                                                "use_rslora",
                                                "use_dora",
                                                "use_qalora",
                                                "qalora_group_size",
                                                "target_modules",
                                                "fan_in_fan_out",
                                                "rank_pattern",
                                                "alpha_pattern",
                                                "qlr_rope_pairs"};
  const auto in = [](const auto& list, const std::string& key) {
    return std::find(std::begin(list), std::end(list), key) != std::end(list);
  };
  for (const std::string_view name : detail::keys_of(keys, "", 1)) {
    const std::string key(name);
    const detail::Json& value = j.at(key);
    if (in(parsed, key) || in(ignored, key)) continue;
    if (key == "bias") {
      if (!(value.is_string() && value.template get<std::string>() == "none"))
        c.warnings.push_back(fmt::format(
            "\"bias\" = {}: the adapter's trained base-layer biases are not applied", value.dump()));
    } else if (in(not_applied, key)) {
      if (!detail::is_off(value))
        c.warnings.push_back(fmt::format("\"{}\" = {} is not applied by qlr", key, value.dump()));
    } else {
      c.warnings.push_back(fmt::format("unknown key \"{}\" ignored", key));
    }
  }
  return c;
}

namespace detail {

/// The loader shared by the folder and the in-memory entry points.
QLR_COMPILED_FUNCTION
PeftAdapter load_peft_adapter_from(PeftConfig config, const SafetensorsView& file) {
  constexpr std::string_view entity = "io::load_peft_adapter";
  struct Parts {
    const TensorView* a = nullptr;
    const TensorView* b = nullptr;
    const TensorView* magnitude = nullptr;
  };
  PeftAdapter out;
  out.warnings = config.warnings;
  std::map<std::string, Parts, std::less<>> parts;
  for (const auto& t : file.tensors) {
    std::string_view name = t.name;
    const TensorView** slot = nullptr;
    if (name.starts_with(peft_prefix)) {
      name.remove_prefix(peft_prefix.size());
      for (const auto& [suffix, which] :
           {std::pair{std::string_view(".lora_A.weight"), 0}, {".lora_B.weight", 1},
            {".lora_magnitude_vector", 2}, {".lora_magnitude_vector.weight", 2}}) {
        if (name.size() > suffix.size() && name.ends_with(suffix)) {
          name.remove_suffix(suffix.size());
          auto& p = parts[std::string(name)];
          slot = which == 0 ? &p.a : which == 1 ? &p.b : &p.magnitude;
          break;
        }
      }
    }
    if (slot == nullptr) {
      out.warnings.push_back(fmt::format(
          "tensor \"{}\" is not a LoRA factor or DoRA magnitude (e.g. modules_to_save); ignored",
          t.name));
      continue;
    }
    QLR_CHECK(*slot == nullptr, corrupt_file,
              "{}: module \"{}\" has two magnitude vectors (\"{}\" and \"{}\"); expected one",
              entity, name, (*slot)->name, t.name);
    *slot = &t;
  }
  QLR_CHECK(!parts.empty(), corrupt_file,
            "{}: no tensor named base_model.model.<module>.lora_A.weight; expected at least one "
            "LoRA module",
            entity);

  for (const auto& [name, p] : parts) {
    QLR_CHECK(p.a != nullptr, corrupt_file,
              "{}: module \"{}\" has no lora_A.weight; expected lora_A with its {}", entity, name,
              p.b != nullptr ? "lora_B" : "magnitude vector");
    QLR_CHECK(p.b != nullptr, corrupt_file,
              "{}: module \"{}\" has lora_A but no lora_B.weight; expected both", entity, name);
    PeftModule m;
    m.name = name;
    m.rank = config.rank_for(name);
    m.alpha = config.alpha_for(name);
    m.scale = config.scale_for(name);
    m.a = to_matrix(*p.a);
    m.b = to_matrix(*p.b);
    QLR_CHECK(m.a.rows() == m.rank && m.b.cols() == m.rank, shape_mismatch,
              "{}: module \"{}\": lora_A is [{}, {}] and lora_B [{}, {}]; expected lora_A rows = "
              "lora_B columns = r = {}",
              entity, name, m.a.rows(), m.a.cols(), m.b.rows(), m.b.cols(), m.rank);
    if (config.use_dora) {
      QLR_CHECK(p.magnitude != nullptr, corrupt_file,
                "{}: module \"{}\" has no lora_magnitude_vector; expected one for every module "
                "since use_dora is true",
                entity, name);
      QLR_CHECK(p.magnitude->shape.size() == 1 && p.magnitude->shape[0] == m.b.rows(),
                shape_mismatch,
                "{}: module \"{}\": lora_magnitude_vector has shape [{}]; expected [{}] (the "
                "rows of lora_B)",
                entity, name, fmt::join(p.magnitude->shape, ", "), m.b.rows());
      m.magnitude = to_vector(*p.magnitude);
    } else {
      QLR_CHECK(p.magnitude == nullptr, corrupt_file,
                "{}: module \"{}\" has a lora_magnitude_vector but use_dora is false; expected "
                "use_dora: true for a DoRA adapter",
                entity, name);
    }
    out.modules.push_back(std::move(m));
  }
  out.config = std::move(config);
  return out;  // std::map iterated in name order: modules are sorted
}

}  // namespace detail

/// Loads a PEFT adapter from the text of its adapter_config.json and the bytes of its
/// adapter_model.safetensors (what the fuzzer and in-memory callers have). Errors as
/// parse_peft_config and parse_safetensors, plus Errc::corrupt_file / Errc::shape_mismatch
/// naming the module for a missing factor, a rank that disagrees with the config, a missing
/// or misshapen DoRA magnitude, and Errc::invalid_argument for a non-finite value.
QLR_COMPILED_FUNCTION
PeftAdapter load_peft_adapter(std::string_view config_json,
                              std::span<const std::byte> safetensors) {
  PeftConfig config = parse_peft_config(config_json);
  const SafetensorsView file = parse_safetensors(safetensors);
  return detail::load_peft_adapter_from(std::move(config), file);
}

/// Loads the adapter saved by PEFT in `folder` (adapter_config.json and
/// adapter_model.safetensors). Errc::io when a file cannot be read; a folder with only the
/// pickled adapter_model.bin is Errc::unsupported.
QLR_COMPILED_FUNCTION
PeftAdapter load_peft_adapter(const std::filesystem::path& folder) {
  constexpr std::string_view entity = "io::load_peft_adapter";
  const auto config_path = folder / "adapter_config.json";
  const auto weights_path = folder / "adapter_model.safetensors";
  std::error_code ec;
  QLR_CHECK(std::filesystem::exists(weights_path, ec) ||
                !std::filesystem::exists(folder / "adapter_model.bin", ec),
            unsupported,
            "{}: \"{}\" holds adapter_model.bin only; expected adapter_model.safetensors (qlr "
            "does not read pickle files)",
            entity, folder.string());
  const std::string text = detail::read_text_file(config_path, 16u << 20, entity);
  PeftConfig config;
  try {
    config = parse_peft_config(text);
  } catch (const Error& e) {
    throw Error(e.code(), fmt::format("{} (file \"{}\")", e.what(), config_path.string()));
  }
  const SafetensorsFile file(weights_path);
  try {
    return detail::load_peft_adapter_from(std::move(config), file.view());
  } catch (const Error& e) {
    throw Error(e.code(), fmt::format("{} (file \"{}\")", e.what(), weights_path.string()));
  }
}

/// Writes `adapter` to `folder` (created if needed) as PEFT saves it — adapter_config.json
/// and adapter_model.safetensors with keys base_model.model.<module>.lora_A.weight,
/// .lora_B.weight and, for DoRA, .lora_magnitude_vector — each file written atomically, with
/// factors stored as `dtype` (F32, F16 or BF16). The config is the source of truth for rank
/// and alpha: a module whose rank or alpha disagrees with it, or whose shapes do not fit, is
/// Errc::invalid_argument, so that what is saved loads back.
QLR_COMPILED_FUNCTION
void save_peft_adapter(const std::filesystem::path& folder, const PeftAdapter& adapter,
                       Dtype dtype = Dtype::f32) {
  constexpr std::string_view entity = "io::save_peft_adapter";
  const PeftConfig& c = adapter.config;
  QLR_CHECK(c.peft_type == "LORA", unsupported, "{}: peft_type = \"{}\"; expected \"LORA\"",
            entity, c.peft_type);
  QLR_CHECK(c.r >= 1 && std::isfinite(c.lora_alpha), invalid_argument,
            "{}: r = {}, lora_alpha = {}; expected r >= 1 and a finite alpha", entity, c.r,
            c.lora_alpha);
  QLR_CHECK(!adapter.modules.empty(), invalid_argument,
            "{}: the adapter has no modules; expected at least one", entity);
  SafetensorsWriter w;
  w.set_metadata("format", "pt");
  for (const auto& m : adapter.modules) {
    const index_t rank = c.rank_for(m.name);
    QLR_CHECK(m.a.rows() == rank && m.b.cols() == rank && m.rank == rank, invalid_argument,
              "{}: module \"{}\": rank {}, A [{}, {}], B [{}, {}]; expected r = {} from the "
              "config everywhere",
              entity, m.name, m.rank, m.a.rows(), m.a.cols(), m.b.rows(), m.b.cols(), rank);
    QLR_CHECK(m.alpha == c.alpha_for(m.name), invalid_argument,
              "{}: module \"{}\": alpha = {}; expected {} from the config", entity, m.name,
              m.alpha, c.alpha_for(m.name));
    QLR_CHECK(m.magnitude.has_value() || !c.use_dora, invalid_argument,
              "{}: module \"{}\" has no magnitude vector; expected one since use_dora is true",
              entity, m.name);
    QLR_CHECK(!m.magnitude.has_value() || c.use_dora, invalid_argument,
              "{}: module \"{}\" has a magnitude vector; expected none since use_dora is false",
              entity, m.name);
    const std::string key = fmt::format("{}{}", detail::peft_prefix, m.name);
    w.add(key + ".lora_A.weight", m.a, dtype);
    w.add(key + ".lora_B.weight", m.b, dtype);
    if (m.magnitude) {
      QLR_CHECK(m.magnitude->size() == m.b.rows(), invalid_argument,
                "{}: module \"{}\": magnitude has {} values; expected {} (the rows of B)", entity,
                m.name, m.magnitude->size(), m.b.rows());
      w.add_vector(key + ".lora_magnitude_vector", *m.magnitude, dtype);
    }
  }

  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  const auto number = [](double v) -> nlohmann::ordered_json {
    if (v == std::floor(v) && std::abs(v) < 0x1p53) return static_cast<std::int64_t>(v);
    return v;
  };
  const auto patterns = [&](const auto& list) {
    nlohmann::ordered_json o = nlohmann::ordered_json::object();
    for (const auto& [k, v] : list) o[k] = number(static_cast<double>(v));
    return o;
  };
  j["alpha_pattern"] = patterns(c.alpha_pattern);
  j["base_model_name_or_path"] = c.base_model_name_or_path.empty()
                                     ? nlohmann::ordered_json(nullptr)
                                     : nlohmann::ordered_json(c.base_model_name_or_path);
  j["bias"] = "none";
  j["fan_in_fan_out"] = c.fan_in_fan_out;
  j["inference_mode"] = true;
  j["lora_alpha"] = number(c.lora_alpha);
  j["peft_type"] = c.peft_type;
  j["qalora_group_size"] = c.qalora_group_size;
  if (!c.rope_pairs.empty()) j["qlr_rope_pairs"] = c.rope_pairs;
  j["r"] = c.r;
  j["rank_pattern"] = patterns(c.rank_pattern);
  j["target_modules"] = c.target_modules_regex ? nlohmann::ordered_json(*c.target_modules_regex)
                                               : nlohmann::ordered_json(c.target_modules);
  j["task_type"] =
      c.task_type.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(c.task_type);
  j["use_dora"] = c.use_dora;
  j["use_qalora"] = c.use_qalora;
  j["use_rslora"] = c.use_rslora;
  std::string text;
  try {
    text = j.dump(2) + "\n";
  } catch (const nlohmann::json::exception& e) {
    QLR_CHECK(false, invalid_argument, "{}: a config string is not valid UTF-8 ({})", entity,
              e.what());
  }
  const auto bytes = w.to_bytes();
  std::error_code ec;
  std::filesystem::create_directories(folder, ec);
  QLR_CHECK(!ec, io, "{}: cannot create the folder \"{}\": {}", entity, folder.string(),
            ec.message());
  detail::write_file_atomically(folder / "adapter_config.json",
                                std::as_bytes(std::span<const char>(text.data(), text.size())),
                                entity);
  detail::write_file_atomically(folder / "adapter_model.safetensors", bytes, entity);
}

// qlr::compiled (qlr/io/io.cpp) holds the one copy of these in a program.
#define QLR_IO_PEFT_FUNCTIONS(prefix)                                                         \
  prefix template PeftConfig parse_peft_config<>(std::string_view);                            \
  prefix template PeftAdapter detail::load_peft_adapter_from<>(PeftConfig,                     \
                                                               const SafetensorsView&);        \
  prefix template void save_peft_adapter<>(const std::filesystem::path&, const PeftAdapter&,   \
                                           Dtype);
#if defined(QLR_COMPILED)
QLR_IO_PEFT_FUNCTIONS(extern)
#endif

}  // namespace qlr::io
