// SPDX-License-Identifier: Apache-2.0
// The `qlr` command-line tool. `qlr inspect FILE|FOLDER` describes a safetensors file
// (metadata, then each tensor's dtype, shape, size and FNV-1a 64 checksum) or a PEFT adapter
// folder (config, warnings, then each module's rank, scale, shapes and ‖s·B·A‖_F);
// `qlr generate` and `qlr perplexity` run the example engine (cli/llama_commands.cpp).
// Bad input of any kind is one line `qlr: <what is wrong>` on stderr and exit status 1.
#include <fmt/core.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <qlr/io.hpp>

#include "cli/commands.hpp"
#include "cli/support.hpp"

namespace qlr_cli {
namespace {

constexpr std::string_view usage = R"(usage: qlr COMMAND [ARGS]

commands:
  inspect FILE|FOLDER [--json]   describe a safetensors file or a PEFT adapter folder
  generate [--prompt TEXT] ...   write a story with the llama2.c model (FP32 or quantized)
  perplexity [--text FILE] ...   next-token NLL and perplexity of a text
  demo [--linear SPEC] ...       the model quantized writes a story; perplexity next to FP32
  finetune --train FILE ...      train adapters on the frozen (quantized) model; PEFT export
  loraquant ADAPTER_DIR ...      LoRAQuant of a PEFT adapter against uniform RTN (bits, errors)

options:
  -h, --help      show this help (`qlr COMMAND --help` for a command's own)
)";

constexpr std::string_view inspect_usage = R"(usage: qlr inspect FILE|FOLDER [--json]

FILE (a .safetensors file): prints the __metadata__ strings, then one line per tensor:
  name, dtype, shape, size in bytes and fnv1a64, the FNV-1a 64-bit hash (offset basis
  0xcbf29ce484222325, prime 0x100000001b3) of the tensor's raw little-endian bytes as they
  are stored in the file, printed as 16 hex digits.

FOLDER (a PEFT adapter: adapter_config.json + adapter_model.safetensors): prints the config
  (peft_type, r, lora_alpha, use_rslora, use_dora, fan_in_fan_out, target_modules, base
  model), the loader's warnings, then one line per module: name, rank, alpha, scale
  s (alpha/r, or alpha/sqrt(r) with rsLoRA), A shape (r x K), B shape (N x r) and
  |s*B*A|_F, the Frobenius norm of the update, computed in double without forming the
  N x K matrix as s * sqrt(trace((B^T B)(A A^T))).

options:
  --json          print one JSON object instead of text
  -h, --help      show this help
)";

/// What `qlr inspect` was asked to do.
struct InspectOptions {
  std::filesystem::path path;
  bool json = false;
};

/// Parses the arguments after `inspect` (argv[first] onwards).
InspectOptions parse_inspect(int argc, char** argv, int first) {
  InspectOptions o;
  bool have_path = false;
  for (int i = first; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      print_and_exit(inspect_usage);
    } else if (arg == "--json") {
      o.json = true;
    } else if (arg.starts_with("-") && arg != "-") {
      usage_error(fmt::format("inspect: unknown option '{}'", arg));
    } else if (have_path) {
      usage_error(
          fmt::format("inspect: unexpected argument '{}'; expected one FILE or FOLDER", arg));
    } else {
      o.path = std::string(arg);
      have_path = true;
    }
  }
  if (!have_path) usage_error("inspect needs a FILE or FOLDER");
  return o;
}

/// `h` as 16 lower-case hex digits.
std::string hex16(std::uint64_t h) { return fmt::format("{:016x}", h); }

/// A shape as "[d0, d1, …]".
std::string shape_text(const std::vector<std::int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

/// A matrix shape as "RxC".
std::string shape_text(qlr::index_t rows, qlr::index_t cols) {
  return fmt::format("{}x{}", rows, cols);
}

/// `j` as indented text; strings that are not UTF-8 are printed with U+FFFD, not thrown on.
std::string dump(const nlohmann::ordered_json& j) {
  return j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

/// ‖s·B·A‖_F in double, via ‖s·B·A‖_F² = s²·trace((BᵀB)(AAᵀ)) on r×r matrices.
double delta_norm(const qlr::io::PeftModule& m) {
  const qlr::MatrixD a = m.a.cast<double>();
  const qlr::MatrixD b = m.b.cast<double>();
  const qlr::MatrixD btb = b.transpose() * b;  // r×r
  const qlr::MatrixD aat = a * a.transpose();  // r×r
  // trace(X·Y) = Σ_ij X_ij·Y_ji; both are symmetric, so it is the elementwise product's sum.
  const double trace = btb.cwiseProduct(aat.transpose()).sum();
  return std::abs(m.scale) * std::sqrt(std::max(trace, 0.0));
}

/// Describes the safetensors file at `path`, as text or JSON.
void inspect_file(const std::filesystem::path& path, bool json) {
  const qlr::io::SafetensorsFile file(path);
  std::uint64_t total = 0;
  for (const auto& t : file.tensors()) total += t.bytes.size();
  if (json) {
    nlohmann::ordered_json out = {{"file", path.string()},
                                  {"metadata", nlohmann::ordered_json::object()},
                                  {"tensor_count", file.tensors().size()},
                                  {"total_bytes", total},
                                  {"tensors", nlohmann::ordered_json::array()}};
    for (const auto& [k, v] : file.metadata()) out["metadata"][k] = v;
    for (const auto& t : file.tensors()) {
      out["tensors"].push_back({{"name", t.name},
                                {"dtype", std::string(qlr::io::to_string(t.dtype))},
                                {"shape", t.shape},
                                {"bytes", t.bytes.size()},
                                {"fnv1a64", hex16(fnv1a64(t.bytes))}});
    }
    fmt::print("{}\n", dump(out));
    return;
  }
  fmt::print("file: {}\n", path.string());
  fmt::print("metadata:{}\n", file.metadata().empty() ? " (none)" : "");
  for (const auto& [k, v] : file.metadata()) fmt::print("  {}: {}\n", k, v);
  fmt::print("tensors: {} ({} bytes)\n", file.tensors().size(), total);
  std::size_t name_width = 4, shape_width = 5;
  for (const auto& t : file.tensors()) {
    name_width = std::max(name_width, t.name.size());
    shape_width = std::max(shape_width, shape_text(t.shape).size());
  }
  fmt::print("  {:<{}}  {:<5} {:<{}} {:>12}  {}\n", "name", name_width, "dtype", "shape",
             shape_width, "bytes", "fnv1a64");
  for (const auto& t : file.tensors()) {
    fmt::print("  {:<{}}  {:<5} {:<{}} {:>12}  {}\n", t.name, name_width,
               qlr::io::to_string(t.dtype), shape_text(t.shape), shape_width, t.bytes.size(),
               hex16(fnv1a64(t.bytes)));
  }
}

/// The config's target modules as text: the list, or the regex string form.
std::string targets_text(const qlr::io::PeftConfig& c) {
  if (c.target_modules_regex) return fmt::format("regex \"{}\"", *c.target_modules_regex);
  if (c.target_modules.empty()) return "(none)";
  return fmt::format("{}", fmt::join(c.target_modules, ", "));
}

/// Describes the PEFT adapter in `folder`, as text or JSON.
void inspect_adapter(const std::filesystem::path& folder, bool json) {
  const qlr::io::PeftAdapter adapter = qlr::io::load_peft_adapter(folder);
  const qlr::io::PeftConfig& c = adapter.config;
  if (json) {
    nlohmann::ordered_json config = {{"peft_type", c.peft_type},
                                     {"task_type", c.task_type},
                                     {"base_model_name_or_path", c.base_model_name_or_path},
                                     {"r", c.r},
                                     {"lora_alpha", c.lora_alpha},
                                     {"use_rslora", c.use_rslora},
                                     {"use_dora", c.use_dora},
                                     {"fan_in_fan_out", c.fan_in_fan_out}};
    if (c.target_modules_regex)
      config["target_modules"] = *c.target_modules_regex;
    else
      config["target_modules"] = c.target_modules;
    nlohmann::ordered_json out = {{"folder", folder.string()},
                                  {"config", config},
                                  {"warnings", adapter.warnings},
                                  {"modules", nlohmann::ordered_json::array()}};
    for (const auto& m : adapter.modules) {
      nlohmann::ordered_json mj = {{"name", m.name},
                                   {"rank", m.rank},
                                   {"alpha", m.alpha},
                                   {"scale", m.scale},
                                   {"a_shape", {m.a.rows(), m.a.cols()}},
                                   {"b_shape", {m.b.rows(), m.b.cols()}},
                                   {"delta_frobenius_norm", delta_norm(m)}};
      if (m.magnitude) mj["magnitude_size"] = m.magnitude->size();
      out["modules"].push_back(std::move(mj));
    }
    fmt::print("{}\n", dump(out));
    return;
  }
  fmt::print("adapter: {}\n", folder.string());
  fmt::print("  peft_type: {}{}\n", c.peft_type, c.use_dora ? " (DoRA)" : "");
  fmt::print("  base model: {}\n",
             c.base_model_name_or_path.empty() ? "(none)" : c.base_model_name_or_path);
  if (!c.task_type.empty()) fmt::print("  task_type: {}\n", c.task_type);
  fmt::print("  r: {}, lora_alpha: {}, use_rslora: {}, use_dora: {}, fan_in_fan_out: {}\n", c.r,
             c.lora_alpha, c.use_rslora, c.use_dora, c.fan_in_fan_out);
  fmt::print("  target_modules: {}\n", targets_text(c));
  fmt::print("warnings:{}\n", adapter.warnings.empty() ? " (none)" : "");
  for (const auto& w : adapter.warnings) fmt::print("  {}\n", w);
  fmt::print("modules: {}\n", adapter.modules.size());
  std::size_t name_width = 4;
  for (const auto& m : adapter.modules) name_width = std::max(name_width, m.name.size());
  fmt::print("  {:<{}}  {:>4} {:>8} {:>12} {:>11} {:>11} {:>13}\n", "name", name_width, "rank",
             "alpha", "scale", "A", "B", "|s*B*A|_F");
  for (const auto& m : adapter.modules) {
    fmt::print("  {:<{}}  {:>4} {:>8} {:>12.6e} {:>11} {:>11} {:>13.6e}\n", m.name, name_width,
               m.rank, m.alpha, m.scale, shape_text(m.a.rows(), m.a.cols()),
               shape_text(m.b.rows(), m.b.cols()), delta_norm(m));
  }
}

/// Runs `qlr inspect`: a folder is read as a PEFT adapter, anything else as a safetensors file.
void inspect(const InspectOptions& o) {
  std::error_code ec;
  if (std::filesystem::is_directory(o.path, ec))
    inspect_adapter(o.path, o.json);
  else
    inspect_file(o.path, o.json);
}

}  // namespace

void inspect(int argc, char** argv, int first) { inspect(parse_inspect(argc, argv, first)); }

}  // namespace qlr_cli

/// Dispatches to the subcommand; any error is one line on stderr and exit status 1.
int main(int argc, char** argv) {
  using namespace qlr_cli;
  if (argc < 2)
    usage_error(
        "missing subcommand; expected inspect, generate, perplexity, demo, finetune or loraquant");
  const std::string_view command = argv[1];
  if (command == "-h" || command == "--help")
    print_and_exit(std::string(usage) + engine_options_help());
  try {
    if (command == "inspect")
      inspect(argc, argv, 2);
    else if (command == "generate")
      generate(argc, argv, 2);
    else if (command == "perplexity")
      perplexity(argc, argv, 2);
    else if (command == "demo")
      demo(argc, argv, 2);
    else if (command == "finetune")
      finetune(argc, argv, 2);
    else if (command == "loraquant")
      loraquant(argc, argv, 2);
    else
      usage_error(fmt::format("unknown subcommand '{}'", command));
  } catch (const std::exception& e) {
    // Messages that already name the tool ("qlr finetune: ...") are not prefixed again.
    const std::string message = one_line(e.what());
    std::fprintf(stderr, "%s%s\n", message.starts_with("qlr") ? "" : "qlr: ", message.c_str());
    return 1;
  }
  return 0;
}
