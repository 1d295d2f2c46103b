// SPDX-License-Identifier: Apache-2.0
// `qlr loraquant ADAPTER_DIR`: LoRAQuant (ALGORITHMS.md §6) of every module of a PEFT LoRA
// adapter at several energy thresholds and high-precision widths, next to uniform RTN of
// the original factors, as bits per parameter against the relative error of ΔW and of the
// layer output; optionally writes one of the quantized adapters in qlr's adapter file.
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <qlr/adapter/lora_quant.hpp>
#include <qlr/adapter/quantized_low_rank.hpp>
#include <qlr/core/random.hpp>
#include <qlr/io/peft.hpp>
#include <qlr/layers/layer_file.hpp>

#include "cli/commands.hpp"
#include "cli/support.hpp"

namespace qlr_cli {
namespace {

constexpr std::string_view loraquant_usage = R"(usage: qlr loraquant ADAPTER_DIR [options]

Quantizes every module of the PEFT LoRA adapter in ADAPTER_DIR with LoRAQuant: B*A is
re-factored by SVD, the leading h components (the fewest whose energy sum sigma_i^2 reaches
the threshold rho) are stored group-wise at b_h bits, the others at 1 bit (sign x mean
magnitude). Each high component is first refined (ALGORITHMS.md 6.4): gradient steps on
its latent pair that lower |u*v^T - Q(p)*Q(q)^T|_F. Next to it, uniform RTN of the
original A and B at each --rtn-bits width and uniform binary codes. One row per method,
over all modules:
  ref_bits       code bits per parameter as the LoRAQuant paper counts them (h*b_h + r-h)/r
  bits           stored bits per parameter: codes, f16 scales and zero points
  dW_err         |s*B*A - s*B^*A^|_F / |s*B*A|_F
  out_err        the same for the layer output on --inputs Gaussian input rows per module
  vs_rtn         dW_err of the cheapest uniform RTN row stored in at least as many bits,
                 divided by this row's (> 1: this row is better, at fewer or equal bits)

options:
  --energy LIST      thresholds rho in (0, 1], comma-separated (default 0.5,0.8,0.9,0.95)
  --high-bits LIST   b_h, each 2, 3, 4 or 8 (default 2,3)
  --rtn-bits LIST    uniform RTN widths, each 2, 3, 4 or 8 (default 2,3,4)
  --group-size G     group size of every quantizer, along each component (default 128)
  --refine-steps N   refinement steps per high component, 0 for none (default 300)
  --inputs M         Gaussian input rows per module for out_err (default 64)
  --seed S           seed of the inputs (default 1)
  --write FILE       save the adapter quantized at --write-energy and --write-bits as a
                     qlr adapter file (safetensors, format qlr-adapters/1; the modules keep
                     their PEFT names and scales)
  --write-energy R   rho of the written adapter (default 0.8)
  --write-bits B     b_h of the written adapter (default 3)
  --json             print one JSON object instead of text
  -h, --help         show this help
)";

/// What `qlr loraquant` was asked to do.
struct LoraQuantArgs {
  std::filesystem::path folder;
  std::vector<double> energies{0.5, 0.8, 0.9, 0.95};
  std::vector<int> high_bits{2, 3};
  std::vector<int> rtn_bits{2, 3, 4};
  qlr::index_t group_size = 128;
  int refine_steps = 300;
  qlr::index_t inputs = 64;
  std::uint64_t seed = 1;
  std::optional<std::filesystem::path> write;
  double write_energy = 0.8;
  int write_bits = 3;
  bool json = false;
};

/// A comma-separated list of numbers for `flag`, or a usage error.
template <class T>
std::vector<T> parse_list(std::string_view flag, std::string_view text) {
  std::vector<T> values;
  for (std::size_t begin = 0; begin <= text.size();) {
    const std::size_t comma = std::min(text.find(',', begin), text.size());
    values.push_back(parse_number<T>(flag, text.substr(begin, comma - begin)));
    begin = comma + 1;
  }
  return values;
}

/// Throws unless `bits` is a width qlr quantizes adapter factors at.
void check_width(std::string_view flag, int bits) {
  if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
    usage_error(fmt::format("loraquant: {} {}; expected 2, 3, 4 or 8", flag, bits));
}

/// Parses the arguments after `loraquant` (argv[first] onwards).
LoraQuantArgs parse_loraquant(int argc, char** argv, int first) {
  LoraQuantArgs o;
  bool have_folder = false;
  for (int i = first; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      print_and_exit(loraquant_usage);
    } else if (arg == "--json") {
      o.json = true;
    } else if (arg == "--energy") {
      o.energies = parse_list<double>(arg, flag_value(argc, argv, i));
    } else if (arg == "--high-bits") {
      o.high_bits = parse_list<int>(arg, flag_value(argc, argv, i));
    } else if (arg == "--rtn-bits") {
      o.rtn_bits = parse_list<int>(arg, flag_value(argc, argv, i));
    } else if (arg == "--group-size") {
      o.group_size = parse_number<qlr::index_t>(arg, flag_value(argc, argv, i));
    } else if (arg == "--refine-steps") {
      o.refine_steps = parse_number<int>(arg, flag_value(argc, argv, i));
    } else if (arg == "--inputs") {
      o.inputs = parse_number<qlr::index_t>(arg, flag_value(argc, argv, i));
    } else if (arg == "--seed") {
      o.seed = parse_number<std::uint64_t>(arg, flag_value(argc, argv, i));
    } else if (arg == "--write") {
      o.write = std::string(flag_value(argc, argv, i));
    } else if (arg == "--write-energy") {
      o.write_energy = parse_number<double>(arg, flag_value(argc, argv, i));
    } else if (arg == "--write-bits") {
      o.write_bits = parse_number<int>(arg, flag_value(argc, argv, i));
    } else if (arg.starts_with("-")) {
      usage_error(fmt::format("loraquant: unknown option '{}'", arg));
    } else if (have_folder) {
      usage_error(fmt::format("loraquant: unexpected argument '{}'; expected one ADAPTER_DIR", arg));
    } else {
      o.folder = std::string(arg);
      have_folder = true;
    }
  }
  if (!have_folder) usage_error("loraquant needs an ADAPTER_DIR");
  for (const double rho : o.energies)
    if (!(rho > 0.0 && rho <= 1.0))
      usage_error(fmt::format("loraquant: --energy {}; expected a value in (0, 1]", rho));
  if (!(o.write_energy > 0.0 && o.write_energy <= 1.0))
    usage_error(fmt::format("loraquant: --write-energy {}; expected a value in (0, 1]", o.write_energy));
  for (const int b : o.high_bits) check_width("--high-bits", b);
  for (const int b : o.rtn_bits) check_width("--rtn-bits", b);
  check_width("--write-bits", o.write_bits);
  if (o.refine_steps < 0)
    usage_error(fmt::format("loraquant: --refine-steps {}; expected >= 0", o.refine_steps));
  if (o.inputs < 1) usage_error(fmt::format("loraquant: --inputs {}; expected >= 1", o.inputs));
  return o;
}

/// One way of quantizing every module, and its figures summed over the modules.
struct Method {
  std::string name;           ///< "loraquant", "rtn" or "binary"
  double energy = 0.0;        ///< ρ (LoRAQuant only)
  int high_bits = 0;          ///< b_h, or the RTN width
  double high_components = 0; ///< Σ h over modules (LoRAQuant only)
  double ref_bits = 0, bits = 0, values = 0;              ///< Σ bits·count, Σ count
  double delta_error = 0, delta_norm = 0, output_error = 0, output_norm = 0;  ///< squared sums

  [[nodiscard]] std::string label() const {
    if (name == "loraquant") return fmt::format("loraquant b_h={} rho={}", high_bits, energy);
    if (name == "rtn") return fmt::format("rtn {}-bit", high_bits);
    return "binary";
  }
  [[nodiscard]] double storage_bits() const { return bits / values; }
  [[nodiscard]] double reference_bits() const { return ref_bits / values; }
  [[nodiscard]] double delta_relative_error() const { return std::sqrt(delta_error / delta_norm); }
  [[nodiscard]] double output_relative_error() const { return std::sqrt(output_error / output_norm); }
};

/// Uniform binary codes (sign × mean magnitude per group) of A and of Bᵀ.
qlr::adapter::QuantizedLowRank uniform_binary(const qlr::Matrix& a, const qlr::Matrix& b,
                                              qlr::index_t group_size) {
  const qlr::quant::Binary binary({group_size, qlr::ScaleType::f16});
  std::vector<qlr::adapter::ComponentBlock> blocks;
  blocks.push_back({0, a.rows(), binary.quantize(a), binary.quantize(qlr::Matrix(b.transpose()))});
  return qlr::adapter::QuantizedLowRank(std::move(blocks), 1.0f);
}

/// Uniform RTN (asymmetric, f16 scales) of A and of Bᵀ at `bits`.
qlr::adapter::QuantizedLowRank uniform_rtn(const qlr::Matrix& a, const qlr::Matrix& b, int bits,
                                           qlr::index_t group_size) {
  qlr::quant::QuantSpec spec;
  spec.bits = bits;
  spec.options.group_size = group_size;
  spec.options.scale_type = qlr::ScaleType::f16;
  return qlr::adapter::QuantizedLowRank::quantize(qlr::adapter::LowRank(a, b), spec);
}

/// The LoRAQuant options for ρ and b_h, with the group size and refinement of `o`.
qlr::adapter::LoraQuantOptions lora_quant_options(double energy, int high_bits,
                                                  const LoraQuantArgs& o) {
  qlr::adapter::LoraQuantOptions options;
  options.energy = energy;
  options.high_bits = high_bits;
  options.group_size = o.group_size;
  options.refine.steps = o.refine_steps;
  return options;
}

/// Adds module (a, b)'s figures under quantized factors `q` (scale 1) to `method`.
void accumulate(Method& method, const qlr::adapter::QuantizedLowRank& q, double ref_bits,
                const qlr::MatrixD& exact_delta, const qlr::MatrixD& x,
                const qlr::MatrixD& exact_output) {
  const auto count = static_cast<double>(q.parameter_count());
  method.bits += q.bits_per_parameter() * count;
  method.ref_bits += ref_bits * count;
  method.values += count;
  method.delta_error += (exact_delta - q.delta().cast<double>()).squaredNorm();
  method.delta_norm += exact_delta.squaredNorm();
  const qlr::MatrixD output = (x * q.a().cast<double>().transpose()) * q.b().cast<double>().transpose();
  method.output_error += (exact_output - output).squaredNorm();
  method.output_norm += exact_output.squaredNorm();
}

/// For each method other than RTN, the dW error of the cheapest RTN row stored in at least
/// as many bits, divided by the method's own (0 when there is no such row, and for RTN rows).
std::vector<double> versus_rtn(const std::vector<Method>& methods) {
  std::vector<double> ratios;
  for (const Method& m : methods) {
    const Method* peer = nullptr;
    for (const Method& r : methods)
      if (m.name != "rtn" && r.name == "rtn" && r.storage_bits() >= m.storage_bits() &&
          (peer == nullptr || r.storage_bits() < peer->storage_bits()))
        peer = &r;
    ratios.push_back(peer == nullptr ? 0.0 : peer->delta_relative_error() / m.delta_relative_error());
  }
  return ratios;
}

/// Runs `qlr loraquant`: every method on every module, then the table (and the file).
void loraquant(const LoraQuantArgs& o) {
  const qlr::io::PeftAdapter peft = qlr::io::load_peft_adapter(o.folder);
  QLR_CHECK(!peft.config.use_dora && !peft.config.use_qalora, unsupported,
            "loraquant: {}: a {} adapter; expected plain LoRA factors", o.folder.string(),
            peft.config.use_dora ? "DoRA" : "QA-LoRA");
  std::vector<Method> methods;
  for (const int hb : o.high_bits)
    for (const double rho : o.energies) methods.push_back({.name = "loraquant", .energy = rho, .high_bits = hb});
  for (const int b : o.rtn_bits) methods.push_back({.name = "rtn", .high_bits = b});
  methods.push_back({.name = "binary", .high_bits = 1});
  std::map<std::string, qlr::layers::AnyAdapter> written;
  const ProgressBar bar("loraquant");
  for (std::size_t i = 0; i < peft.modules.size(); ++i) {
    const qlr::io::PeftModule& module = peft.modules[i];
    const qlr::MatrixD a = module.a.cast<double>(), b = module.b.cast<double>();
    const qlr::MatrixD exact_delta = b * a;
    const qlr::MatrixD x = qlr::gaussian_matrix(o.inputs, a.cols(), o.seed + i);
    const qlr::MatrixD exact_output = (x * a.transpose()) * b.transpose();
    for (Method& m : methods) {
      if (m.name == "loraquant") {
        const auto q = qlr::adapter::lora_quant(module.a, module.b, 1.0,
                                                lora_quant_options(m.energy, m.high_bits, o));
        m.high_components += static_cast<double>(q.high_components);
        accumulate(m, q.adapter, q.reference_bits(), exact_delta, x, exact_output);
      } else if (m.name == "rtn") {
        accumulate(m, uniform_rtn(module.a, module.b, m.high_bits, o.group_size), m.high_bits,
                   exact_delta, x, exact_output);
      } else {
        accumulate(m, uniform_binary(module.a, module.b, o.group_size), 1.0, exact_delta, x,
                   exact_output);
      }
    }
    if (o.write) {
      written.emplace(module.name,
                      qlr::adapter::lora_quant(module.a, module.b, module.scale,
                                               lora_quant_options(o.write_energy, o.write_bits, o))
                          .adapter);
    }
    bar.update(static_cast<long>(i + 1), static_cast<long>(peft.modules.size()));
  }
  if (o.write) qlr::layers::save_adapters(*o.write, written);
  const std::vector<double> vs = versus_rtn(methods);
  const auto modules = static_cast<double>(peft.modules.size());
  if (o.json) {
    nlohmann::ordered_json out = {{"adapter", o.folder.string()},
                                  {"modules", peft.modules.size()},
                                  {"r", peft.config.r},
                                  {"group_size", o.group_size},
                                  {"refine_steps", o.refine_steps},
                                  {"inputs", o.inputs},
                                  {"seed", o.seed},
                                  {"methods", nlohmann::ordered_json::array()}};
    for (std::size_t j = 0; j < methods.size(); ++j) {
      const Method& m = methods[j];
      nlohmann::ordered_json mj = {{"method", m.name}};
      if (m.name == "loraquant") {
        mj["energy"] = m.energy;
        mj["high_bits"] = m.high_bits;
        mj["mean_high_components"] = m.high_components / modules;
      } else if (m.name == "rtn") {
        mj["bits"] = m.high_bits;
      }
      mj["reference_bits"] = m.reference_bits();
      mj["bits_per_param"] = m.storage_bits();
      mj["delta_relative_error"] = m.delta_relative_error();
      mj["output_relative_error"] = m.output_relative_error();
      mj["rtn_error_ratio"] = vs[j];
      out["methods"].push_back(std::move(mj));
    }
    if (o.write) out["written"] = o.write->string();
    fmt::print("{}\n", out.dump(2));
    return;
  }
  fmt::print("adapter: {} ({} modules, r = {}; groups of {}, {} refinement steps, {} Gaussian "
             "inputs per module)\n",
             o.folder.string(), peft.modules.size(), peft.config.r, o.group_size, o.refine_steps,
             o.inputs);
  fmt::print("{:<28} {:>6} {:>8} {:>6} {:>8} {:>8} {:>7}\n", "method", "mean_h", "ref_bits",
             "bits", "dW_err", "out_err", "vs_rtn");
  for (std::size_t j = 0; j < methods.size(); ++j) {
    const Method& m = methods[j];
    const std::string mean_h =
        m.name == "loraquant" ? fmt::format("{:.2f}", m.high_components / modules) : "-";
    const std::string ratio = vs[j] > 0.0 ? fmt::format("{:.2f}", vs[j]) : "-";
    fmt::print("{:<28} {:>6} {:>8.3f} {:>6.3f} {:>8.4f} {:>8.4f} {:>7}\n", m.label(), mean_h,
               m.reference_bits(), m.storage_bits(), m.delta_relative_error(),
               m.output_relative_error(), ratio);
  }
  if (o.write)
    fmt::print("wrote {} (loraquant b_h={} rho={}, {} modules)\n", o.write->string(), o.write_bits,
               o.write_energy, written.size());
}

}  // namespace

void loraquant(int argc, char** argv, int first) { loraquant(parse_loraquant(argc, argv, first)); }

}  // namespace qlr_cli
