// SPDX-License-Identifier: Apache-2.0
// qlr's first demo: load the linear weights of a real small language model (stories260K,
// a llama2.c checkpoint), quantize them with several policies and compare cost and error.
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <qlr/core/parallel.hpp>
#include <qlr/io/llama2c.hpp>
#include <qlr/quant.hpp>
#include <qlr/version.hpp>

namespace {

constexpr std::string_view usage = R"(usage: quickstart [--model PATH] [--policy SPEC]... [--json]

Quantizes every linear weight (q, k, v, o, w1, w2, w3 of each block) of a llama2.c
checkpoint and prints, per policy, the storage bits per weight (scales and zeros
included), the relative Frobenius error sqrt(sum |W - Q(W)|^2 / sum |W|^2) over the
whole model, the SQNR and the time taken.

options:
  --model PATH    llama2.c checkpoint (default: the vendored stories260K.bin)
  --policy SPEC   a quantizer such as int4-asym-g128, int3-sym-g32-clip, nf4-g64 or
                  int8-sym-pc-f16 (words: int2|int3|int4|int8|nf4, sym|asym, g<N>|pc,
                  clip, fz, f16); repeat for several; default: a representative set
  --threads N     threads to quantize with (default: QLR_NUM_THREADS or all cores)
  --json          print one JSON object instead of the table
  -h, --help      show this help
)";

/// The policies shown when none are named: the common formats at 8, 4, 3 and 2 bits.
const std::vector<std::string> default_policies = {
    "int8-sym-pc-f16",   "int4-asym-g128-f16", "int4-asym-g32-f16", "int4-asym-g32-clip-f16",
    "int4-sym-g32-f16",  "nf4-g64",            "int3-asym-g32-f16", "int3-asym-g32-clip-f16",
    "int2-asym-g32-f16", "int2-asym-g32-clip-f16"};

struct Options {
  std::filesystem::path model = QLR_DEFAULT_MODEL;
  std::vector<std::string> policies;
  std::optional<int> threads;
  bool json = false;
};

struct Row {
  std::string policy;
  double bits_per_param;
  double rel_error;
  double sqnr_db;
  double ms;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "quickstart: %s (see --help)\n", message.c_str());
  std::exit(1);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(fmt::format("{} needs a value", arg));
      return argv[++i];
    };
    if (arg == "-h" || arg == "--help") {
      std::fwrite(usage.data(), 1, usage.size(), stdout);
      std::exit(0);
    } else if (arg == "--model") {
      o.model = value();
    } else if (arg == "--policy") {
      o.policies.push_back(value());
    } else if (arg == "--threads") {
      const std::string n = value();
      try {
        o.threads = std::stoi(n);
      } catch (const std::exception&) {
        usage_error(fmt::format("--threads '{}' is not a number", n));
      }
    } else if (arg == "--json") {
      o.json = true;
    } else {
      usage_error(fmt::format("unknown argument '{}'", arg));
    }
  }
  if (o.policies.empty()) o.policies = default_policies;
  return o;
}

/// Quantizes all `weights` with one policy and measures the model-wide cost and error.
Row measure(const std::string& policy, const std::vector<qlr::io::NamedWeight>& weights) {
  const qlr::quant::QuantSpec spec = qlr::quant::parse_quant_spec(policy);
  double bits = 0.0, err = 0.0, energy = 0.0, params = 0.0, seconds = 0.0;
  for (const auto& [name, w] : weights) {
    const auto start = std::chrono::steady_clock::now();
    const auto q = qlr::quant::quantize(*w, spec);
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double n = static_cast<double>(w->size());
    bits += qlr::quant::bits_per_parameter(q) * n;
    err += (*w - qlr::quant::dequantize(q)).cast<double>().squaredNorm();
    energy += w->cast<double>().squaredNorm();
    params += n;
  }
  return {qlr::quant::to_string(spec), bits / params, std::sqrt(err / energy),
          10.0 * std::log10(energy / err), seconds * 1e3};
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  try {
    if (options.threads) qlr::set_num_threads(*options.threads);
    const auto model = qlr::io::load_llama2c(options.model);
    const auto weights = model.linear_weights();
    long long params = 0;
    for (const auto& [name, w] : weights) params += w->size();
    std::vector<Row> rows;
    for (const auto& policy : options.policies) rows.push_back(measure(policy, weights));

    const auto& c = model.config;
    if (options.json) {
      nlohmann::json out = {{"model", options.model.string()},
                            {"linear_weights", weights.size()},
                            {"parameters", params},
                            {"threads", qlr::num_threads()},
                            {"results", nlohmann::json::array()}};
      for (const auto& r : rows) {
        out["results"].push_back({{"policy", r.policy},
                                  {"bits_per_param", r.bits_per_param},
                                  {"rel_frobenius_error", r.rel_error},
                                  {"sqnr_db", r.sqnr_db},
                                  {"milliseconds", r.ms}});
      }
      fmt::print("{}\n", out.dump(2));
      return 0;
    }
    fmt::print("qlr {} quickstart: {}\n", qlr::version_string, options.model.filename().string());
    fmt::print("model: dim {}, hidden {}, {} layers, {} heads ({} kv), vocab {}\n", c.dim,
               c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size);
    fmt::print("quantizing {} linear weights ({} parameters) on {} thread(s)\n\n",
               weights.size(), params, qlr::num_threads());
    fmt::print("{:<24} {:>10} {:>12} {:>9} {:>9}\n", "policy", "bits/param", "rel. error",
               "SQNR dB", "time ms");
    for (const auto& r : rows) {
      fmt::print("{:<24} {:>10.4f} {:>12.5f} {:>9.2f} {:>9.2f}\n", r.policy, r.bits_per_param,
                 r.rel_error, r.sqnr_db, r.ms);
    }
    fmt::print("\nbits/param counts codes, scales and zero points; the error is over all {} "
               "weights.\n", params);
  } catch (const qlr::Error& e) {
    std::fprintf(stderr, "quickstart: %s\n", e.what());
    return 1;
  }
  return 0;
}
