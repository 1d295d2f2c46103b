// SPDX-License-Identifier: Apache-2.0
// `qlr generate` and `qlr perplexity`: the example engine (examples/llama) on a llama2.c
// checkpoint, with every linear layer FP32 or the qlr layer a --linear spec names.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/engine.hpp"
#include "cli/support.hpp"
#include "llama/llama.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr/io/peft.hpp"
#include "qlr/layers/layer_file.hpp"

namespace qlr_cli {
namespace {

constexpr std::string_view common_options = R"(
model options (generate, perplexity, demo):
  --model FILE          llama2.c checkpoint (default: the vendored stories260K.bin)
  --tokenizer FILE      its tokenizer.bin (default: the vendored tok512.bin)
  --linear SPEC         every linear layer as SPEC (default: fp32, the FP32 weights). SPEC
                        is the weights' format, then options joined by '+':
                          int2|int3|int4|int8|nf4  bits (nf4: the QLoRA codebook)
                          -sym|-asym               symmetric, or with a zero point
                          -g<N>|-pc                groups of N inputs, or one per row
                          -clip                    MSE clip search (else round to nearest)
                          -f16                     f16 scales (else f32)
                          +a8|+a4                  8- or 4-bit per-token activations
                                                   (else FP32 activations)
                          +rht<seed>               an online randomized Hadamard at every
                                                   layer's input
                        e.g. int4-asym-g32-f16, int4-sym-g128+a8, nf4-g64, int3-sym-g32-clip
  --quantize-classifier the classifier as SPEC too (default: FP32)
  --rotation KIND       rotate the model before quantizing it (RoLoRA/QuaRot: RMSNorm gains
                        folded, R1 on the residual stream merged into the weights, R4 online
                        before down_proj): none (the default), hadamard, randomized-hadamard,
                        random-orthogonal
  --rotation-seed S     the rotation's seed (default: 0)
  --adapter DIR         (generate, perplexity) a PEFT adapter folder, e.g. `qlr finetune
                        --save DIR`'s, added to the block linears it names: beside quantized
                        layers, merged into FP32 ones
  --layers FILE         (generate, perplexity) a qlr layer file, e.g. a merged model's,
                        replacing the block linears it names
  --threads N           threads (default: QLR_NUM_THREADS or all cores)
  --json                print one JSON object with the figures
  -h, --help            show this help
)";

constexpr std::string_view generate_usage = R"(usage: qlr generate [--prompt TEXT] [--steps N] [options]

Runs the model from BOS and TEXT for up to N positions (llama2.c's run.c: the prompt is fed
token by token, then each sampled token, until BOS), printing the text as it comes.

options:
  --prompt TEXT         the start of the story (default: empty)
  --steps N             positions to run, at most seq_len (default: 256)
  --temperature T       0 picks the likeliest token (default: 0)
  --top-p P             nucleus sampling mass when T > 0 (default: 0.9)
  --seed S              the sampler's seed, not 0 (default: 42)
)";

constexpr std::string_view perplexity_usage = R"(usage: qlr perplexity [--text FILE] [--window N] [--max-tokens N] [options]

Average next-token negative log-likelihood (nats/token) and perplexity of FILE. The text is
split on <|endoftext|>; each piece, stripped of surrounding whitespace, is encoded with BOS
and the pieces are concatenated (a text without the separator is one piece). The tokens are
cut into non-overlapping windows of N; each runs from position 0 with an empty cache, and
position t predicts token t + 1 of its window. A progress bar is drawn on stderr.

options:
  --text FILE           the text to score (default: the vendored TinyStories slice)
  --window N            window length, at most seq_len (default: 256)
  --max-tokens N        score the first N tokens only; 0 = all (default: 0)
  --skip-tokens N       leave out the text's first N tokens (e.g. the calibration's) first
                        (default: 0)

calibration (GPTQ, EoRA; the model's inputs are captured from the FP32 model, with the same
--rotation, over the calibration text in windows of N):
  --gptq                quantize --linear SPEC by GPTQ (error feedback with the inputs'
                        covariance) instead of round-to-nearest
  --compensation-rank R add a rank-R compensation term to every block layer (default: 0)
  --compensation KIND   eora (the default: minimizes the error on the calibration inputs)
                        or svd (minimizes |W - W^ - B*A|_F; needs no calibration)
  --compensation-bits B the term's factors quantized to B = 4 or 3 bits (groups of 32, f16
                        scales; counted in bits/param); 0 = FP32 (default: 0)
  --calibration-text F  the calibration text (default: the --text FILE)
  --calibration-tokens N  its first N tokens (default: 8192)
)";

constexpr std::string_view demo_usage = R"(usage: qlr demo [--linear SPEC] [--prompt TEXT] [--steps N] [options]

qlr's demo on the vendored stories260K model: every linear layer quantized to SPEC writes a
story (greedy), then the perplexity of the vendored TinyStories slice (first 8192 tokens,
windows of 256) is printed for FP32, SPEC, SPEC with 8- and 4-bit activations, and the
4-bit activations again on the model rotated with a randomized Hadamard (R1 + R4).

options:
  --prompt TEXT         the start of the story (default: "Once upon a time")
  --steps N             positions to generate (default: 200)
  --text FILE           the text to score (default: the vendored TinyStories slice)
  --max-tokens N        tokens of it to score; 0 = all (default: 8192)
)";

/// ", gptq, eora r=8 (4-bit)" and the like; empty without calibration flags.
std::string compression_name(const CalibrationFlags& c) {
  std::string name = c.gptq ? ", gptq" : "";
  if (c.rank > 0)
    name += fmt::format(", {} r={} ({})", llama::to_string(c.kind), c.rank,
                        c.bits == 0 ? std::string("fp32") : fmt::format("{}-bit", c.bits));
  return name;
}

/// The NLL of a text's first `max_tokens` tokens (0: all) and how long it took.
struct Scored {
  llama::NllResult nll;
  std::size_t tokens = 0;
  double seconds = 0;
};

Scored score_text(const Loaded& loaded, const std::string& text, int window, long max_tokens,
                  const std::string& bar_label, long skip_tokens = 0) {
  QLR_CHECK(max_tokens >= 0, invalid_argument, "qlr: --max-tokens = {}; expected >= 0", max_tokens);
  QLR_CHECK(skip_tokens >= 0, invalid_argument, "qlr: --skip-tokens = {}; expected >= 0",
            skip_tokens);
  std::vector<int> tokens = llama::story_tokens(loaded.tokenizer, text);
  tokens.erase(tokens.begin(),
               tokens.begin() + std::min<std::ptrdiff_t>(skip_tokens, std::ssize(tokens)));
  if (max_tokens > 0 && static_cast<std::size_t>(max_tokens) < tokens.size())
    tokens.resize(static_cast<std::size_t>(max_tokens));
  const ProgressBar bar(bar_label);
  const auto start = std::chrono::steady_clock::now();
  const llama::NllResult r =
      llama::score_windows(loaded.model, tokens, window,
                           [&](qlr::index_t done, qlr::index_t total) { bar.update(done, total); });
  return {r, tokens.size(), seconds_since(start)};
}

}  // namespace

const char* engine_options_help() {
  return common_options.data();
}

/// Takes argv[i] if it is a model flag (advancing i past its value); false otherwise.
bool parse_model_flag(int argc, char** argv, int& i, ModelFlags& f, std::string_view usage) {
  const std::string_view arg = argv[i];
  if (arg == "-h" || arg == "--help") {
    print_and_exit(std::string(usage) + std::string(common_options));
  } else if (arg == "--model") {
    f.model = std::string(flag_value(argc, argv, i));
  } else if (arg == "--tokenizer") {
    f.tokenizer = std::string(flag_value(argc, argv, i));
  } else if (arg == "--linear") {
    const std::string_view spec = flag_value(argc, argv, i);
    if (spec == "fp32")
      f.linear.reset();
    else
      f.linear = qlr::layers::parse_linear_spec(spec);
  } else if (arg == "--quantize-classifier") {
    f.quantize_classifier = true;
  } else if (arg == "--rotation") {
    f.rotation = llama::parse_rotation_kind(flag_value(argc, argv, i));
  } else if (arg == "--rotation-seed") {
    f.rotation_seed = parse_number<std::uint64_t>(arg, flag_value(argc, argv, i));
  } else if (arg == "--threads") {
    qlr::set_num_threads(parse_number<int>("--threads", flag_value(argc, argv, i)));
  } else if (arg == "--json") {
    f.json = true;
  } else {
    return false;
  }
  return true;
}

/// The file `flag` names, whole.
std::string read_text_file(const std::filesystem::path& path, std::string_view flag) {
  std::ifstream in(path, std::ios::binary);
  QLR_CHECK(in.good() && std::filesystem::is_regular_file(path), io,
            "qlr: {} '{}'; expected a readable file", flag, path.string());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

bool parse_adapter_flag(int argc, char** argv, int& i, ModelFlags& f) {
  const std::string_view arg = argv[i];
  if (arg == "--adapter")
    f.adapter = std::string(flag_value(argc, argv, i));
  else if (arg == "--layers")
    f.layers = std::string(flag_value(argc, argv, i));
  else
    return false;
  return true;
}

/// Takes argv[i] if it is a calibration flag (advancing i past its value); false otherwise.
bool parse_calibration_flag(int argc, char** argv, int& i, CalibrationFlags& c) {
  const std::string_view arg = argv[i];
  if (arg == "--gptq") {
    c.gptq = true;
  } else if (arg == "--compensation-rank") {
    c.rank = parse_number<qlr::index_t>(arg, flag_value(argc, argv, i));
  } else if (arg == "--compensation") {
    const std::string_view kind = flag_value(argc, argv, i);
    if (kind == "eora")
      c.kind = llama::CompensationKind::eora;
    else if (kind == "svd")
      c.kind = llama::CompensationKind::svd;
    else
      usage_error(fmt::format("--compensation '{}'; expected eora or svd", kind));
  } else if (arg == "--compensation-bits") {
    c.bits = parse_number<int>(arg, flag_value(argc, argv, i));
  } else if (arg == "--calibration-text") {
    c.text = std::string(flag_value(argc, argv, i));
  } else if (arg == "--calibration-tokens") {
    c.tokens = parse_number<long>(arg, flag_value(argc, argv, i));
  } else {
    return false;
  }
  return true;
}

/// The engine's options as the flags say.
llama::ModelOptions model_options(const ModelFlags& f, const CalibrationFlags& c) {
  llama::ModelOptions options;
  options.linear = f.linear;
  options.quantize_classifier = f.quantize_classifier;
  options.rotation = f.rotation;
  options.rotation_seed = f.rotation_seed;
  options.gptq = c.gptq;
  options.compensation_rank = c.rank;
  options.compensation = c.kind;
  options.compensation_bits = c.bits;
  return options;
}

/// The model and its tokenizer as the flags say; with `calibration`, its statistics are taken
/// first from the FP32 model over the calibration text (a progress bar on stderr).
Loaded load(const ModelFlags& f, const CalibrationFlags& c, int window,
            const std::string* default_text) {
  // The defaults are the source tree's vendored files, known only to the program in its build
  // folder: an installed qlr has no source tree to take them from.
  std::error_code ec;
  const bool in_build_tree =
      std::filesystem::canonical("/proc/self/exe", ec).parent_path() ==
      std::filesystem::path(QLR_BUILT_IN);
  QLR_CHECK(f.model != QLR_DEFAULT_MODEL || in_build_tree, invalid_argument,
            "no --model given and an installed qlr has no default model; expected --model "
            "FILE (a llama2.c checkpoint) and --tokenizer FILE");
  const qlr::io::Llama2cModel checkpoint = qlr::io::load_llama2c(f.model);
  qlr::model::Tokenizer tokenizer = qlr::model::Tokenizer::load(f.tokenizer, checkpoint.config.vocab_size);
  std::optional<llama::Calibration> statistics;
  llama::check_options(checkpoint.config, model_options(f, c));  // before calibration's time
  if (c.needs_statistics()) {
    QLR_CHECK(c.tokens >= 1, invalid_argument, "qlr: --calibration-tokens = {}; expected >= 1",
              c.tokens);
    std::vector<int> tokens = llama::story_tokens(
        tokenizer, c.text ? read_text_file(*c.text, "--calibration-text") : *default_text);
    if (static_cast<std::size_t>(c.tokens) < tokens.size()) tokens.resize(static_cast<std::size_t>(c.tokens));
    llama::ModelOptions fp32 = model_options(f, {});
    fp32.linear.reset();
    const ProgressBar bar("calibrating");
    statistics = llama::calibrate(llama::Model(checkpoint, fp32), tokens, window,
                                  [&](qlr::index_t done, qlr::index_t total) {
                                    bar.update(done, total);
                                    return true;
                                  });
  }
  Loaded loaded{llama::Model(checkpoint, model_options(f, c), statistics ? &*statistics : nullptr),
                std::move(tokenizer)};
  if (f.layers) loaded.model.replace_layers(qlr::layers::load_layers(*f.layers));
  if (f.adapter) loaded.model.add_adapter(qlr::io::load_peft_adapter(*f.adapter));
  return loaded;
}

std::string spec_name(const ModelFlags& f) {
  return f.linear ? qlr::layers::to_string(*f.linear) : "fp32";
}

/// "fp32", "int4-sym-g32+a4", "int4-sym-g32+a4, randomized-hadamard rotation", ...
std::string setting_name(const ModelFlags& f) {
  if (f.rotation == llama::RotationKind::none) return spec_name(f);
  return fmt::format("{}, {} rotation", spec_name(f), llama::to_string(f.rotation));
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void generate(int argc, char** argv, int first) {
  ModelFlags f;
  std::string prompt;
  int steps = 256;
  float temperature = 0.0f, top_p = 0.9f;
  std::uint64_t seed = 42;
  for (int i = first; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (parse_model_flag(argc, argv, i, f, generate_usage)) continue;
    if (parse_adapter_flag(argc, argv, i, f)) continue;
    if (arg == "--prompt")
      prompt = flag_value(argc, argv, i);
    else if (arg == "--steps")
      steps = parse_number<int>(arg, flag_value(argc, argv, i));
    else if (arg == "--temperature")
      temperature = parse_number<float>(arg, flag_value(argc, argv, i));
    else if (arg == "--top-p")
      top_p = parse_number<float>(arg, flag_value(argc, argv, i));
    else if (arg == "--seed")
      seed = parse_number<std::uint64_t>(arg, flag_value(argc, argv, i));
    else
      usage_error(fmt::format("generate: unknown argument '{}'", arg));
  }
  QLR_CHECK(steps >= 1, invalid_argument, "qlr generate: --steps = {}; expected >= 1", steps);
  llama::Sampler sampler(temperature, top_p, seed);
  const Loaded loaded = load(f);
  std::string text;
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int> tokens =
      llama::generate(loaded.model, loaded.tokenizer, prompt, steps, sampler, [&](const std::string& t) {
        text += t;
        if (!f.json) {
          std::fwrite(t.data(), 1, t.size(), stdout);
          std::fflush(stdout);
        }
      });
  const double seconds = seconds_since(start);
  // Every position ran one forward: the prompt's and the generated ones.
  const auto positions = static_cast<double>(tokens.size() - (tokens.size() > 1 ? 1 : 0));
  if (f.json) {
    const nlohmann::ordered_json j = {{"linear", spec_name(f)},
                                      {"rotation", llama::to_string(f.rotation)},
                                      {"text", text},
                                      {"tokens", tokens.size()},
                                      {"bits_per_param", loaded.model.bits_per_parameter()},
                                      {"block_bits_per_param", loaded.model.bits_per_parameter(false)},
                                      {"weight_bytes", loaded.model.weight_bytes()},
                                      {"seconds", seconds},
                                      {"tokens_per_s", positions / seconds}};
    fmt::print("{}\n", j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
  } else {
    fmt::print("\n[{}: {} tokens, {:.1f} tokens/s, {:.2f} bits/param]\n", setting_name(f),
               tokens.size(), positions / seconds, loaded.model.bits_per_parameter());
  }
}

void perplexity(int argc, char** argv, int first) {
  ModelFlags f;
  std::filesystem::path text_path = QLR_DEFAULT_TEXT;
  int window = 256;
  long max_tokens = 0, skip_tokens = 0;
  CalibrationFlags c;
  for (int i = first; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (parse_model_flag(argc, argv, i, f, perplexity_usage)) continue;
    if (parse_adapter_flag(argc, argv, i, f)) continue;
    if (parse_calibration_flag(argc, argv, i, c)) continue;
    if (arg == "--text")
      text_path = std::string(flag_value(argc, argv, i));
    else if (arg == "--window")
      window = parse_number<int>(arg, flag_value(argc, argv, i));
    else if (arg == "--max-tokens")
      max_tokens = parse_number<long>(arg, flag_value(argc, argv, i));
    else if (arg == "--skip-tokens")
      skip_tokens = parse_number<long>(arg, flag_value(argc, argv, i));
    else
      usage_error(fmt::format("perplexity: unknown argument '{}'", arg));
  }
  const std::string text = read_text_file(text_path);
  const Loaded loaded = load(f, c, window, &text);
  const Scored scored = score_text(loaded, text, window, max_tokens, "perplexity", skip_tokens);
  const std::string compression = compression_name(c);
  const llama::NllResult& r = scored.nll;
  const double seconds = scored.seconds;
  const std::size_t token_count = scored.tokens;
  if (f.json) {
    const nlohmann::ordered_json j = {{"linear", spec_name(f)},
                                      {"rotation", llama::to_string(f.rotation)},
                                      {"gptq", c.gptq},
                                      {"compensation", c.rank > 0 ? llama::to_string(c.kind) : "none"},
                                      {"compensation_rank", c.rank},
                                      {"compensation_bits", c.rank > 0 ? (c.bits == 0 ? 32 : c.bits) : 0},
                                      {"calibration_tokens", c.needs_statistics() ? c.tokens : 0},
                                      {"nll", r.nll},
                                      {"ppl", r.perplexity()},
                                      {"tokens", token_count},
                                      {"targets", r.targets},
                                      {"bits_per_param", loaded.model.bits_per_parameter()},
                                      {"block_bits_per_param", loaded.model.bits_per_parameter(false)},
                                      {"weight_bytes", loaded.model.weight_bytes()},
                                      {"seconds", seconds},
                                      {"tokens_per_s", static_cast<double>(token_count) / seconds}};
    fmt::print("{}\n", j.dump(2));
  } else {
    fmt::print("{}{}: NLL {:.4f} nats/token, perplexity {:.3f} over {} targets ({:.2f} bits/param, "
               "{:.0f} tokens/s)\n",
               setting_name(f), compression, r.nll, r.perplexity(), r.targets, loaded.model.bits_per_parameter(),
               static_cast<double>(token_count) / seconds);
  }
}

void demo(int argc, char** argv, int first) {
  ModelFlags f;
  f.linear = qlr::layers::parse_linear_spec("int4-asym-g32-f16");
  std::string prompt = "Once upon a time";
  int steps = 200;
  std::filesystem::path text_path = QLR_DEFAULT_TEXT;
  long max_tokens = 8192;
  for (int i = first; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (parse_model_flag(argc, argv, i, f, demo_usage)) continue;
    if (arg == "--prompt")
      prompt = flag_value(argc, argv, i);
    else if (arg == "--steps")
      steps = parse_number<int>(arg, flag_value(argc, argv, i));
    else if (arg == "--text")
      text_path = std::string(flag_value(argc, argv, i));
    else if (arg == "--max-tokens")
      max_tokens = parse_number<long>(arg, flag_value(argc, argv, i));
    else
      usage_error(fmt::format("demo: unknown argument '{}'", arg));
  }
  if (!f.linear) usage_error("demo: --linear fp32; expected a quantized SPEC");
  QLR_CHECK(steps >= 1, invalid_argument, "qlr demo: --steps = {}; expected >= 1", steps);
  const std::string text = read_text_file(text_path);

  // The settings scored: FP32, SPEC, SPEC with 8- and 4-bit activations, and the last
  // one again on the rotated model (the rotation is what makes 4-bit activations usable).
  std::vector<ModelFlags> settings(5, f);
  settings[0].linear.reset();
  settings[2].linear->activation_bits = 8;
  settings[3].linear->activation_bits = 4;
  settings[4].linear->activation_bits = 4;
  settings[4].rotation = llama::RotationKind::randomized_hadamard;

  const Loaded quantized = load(f);
  const auto& c = quantized.model.config();
  nlohmann::ordered_json out = {{"model", f.model.filename().string()},
                                {"threads", qlr::num_threads()},
                                {"isa", std::string(qlr::kernels::to_string(qlr::kernels::best_isa()))}};
  if (!f.json)
    fmt::print("qlr demo: {} (dim {}, {} blocks, vocab {}), every linear layer as {}, {} thread(s), "
               "{} kernels\n\n",
               f.model.filename().string(), c.dim, c.n_layers, c.vocab_size, spec_name(f),
               qlr::num_threads(), qlr::kernels::to_string(qlr::kernels::best_isa()));
  llama::Sampler greedy(0.0f, 1.0f, 1);
  std::string story;
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int> tokens =
      llama::generate(quantized.model, quantized.tokenizer, prompt, steps, greedy, [&](const std::string& t) {
        story += t;
        if (!f.json) {
          std::fwrite(t.data(), 1, t.size(), stdout);
          std::fflush(stdout);
        }
      });
  const double tokens_per_s = static_cast<double>(tokens.size() - 1) / seconds_since(start);
  out["story"] = story;
  out["story_tokens_per_s"] = tokens_per_s;
  if (!f.json)
    fmt::print("\n[{} tokens, {:.0f} tokens/s]\n\nperplexity of {} (first {} tokens, windows of 256):\n"
               "{:<52} {:>11} {:>10} {:>8} {:>8} {:>9}\n",
               tokens.size(), tokens_per_s, text_path.filename().string(), max_tokens, "setting",
               "bits/weight", "weight KiB", "NLL", "ppl", "tokens/s");
  out["perplexity"] = nlohmann::ordered_json::array();
  std::optional<Loaded> other;
  for (std::size_t i = 0; i < settings.size(); ++i) {
    const ModelFlags& s = settings[i];
    // settings[1] is the model that wrote the story: score it as it is.
    const Loaded& loaded = i == 1 ? quantized : other.emplace(load(s));
    const Scored r = score_text(loaded, text, 256, max_tokens, setting_name(s));
    const double speed = static_cast<double>(r.tokens) / r.seconds;
    out["perplexity"].push_back({{"linear", spec_name(s)},
                                 {"rotation", llama::to_string(s.rotation)},
                                 {"bits_per_param", loaded.model.bits_per_parameter()},
                                 {"block_bits_per_param", loaded.model.bits_per_parameter(false)},
                                 {"weight_bytes", loaded.model.weight_bytes()},
                                 {"nll", r.nll.nll},
                                 {"ppl", r.nll.perplexity()},
                                 {"targets", r.nll.targets},
                                 {"tokens_per_s", speed}});
    if (!f.json)
      fmt::print("{:<52} {:>11.2f} {:>10.1f} {:>8.4f} {:>8.3f} {:>9.0f}\n", setting_name(s),
                 loaded.model.bits_per_parameter(false),
                 static_cast<double>(loaded.model.weight_bytes()) / 1024.0, r.nll.nll,
                 r.nll.perplexity(), speed);
  }
  if (f.json)
    fmt::print("{}\n", out.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
  else
    fmt::print("\nbits/weight: storage of the block layers (codes, scales, zeros); weight KiB: what "
               "every linear layer holds in memory; the classifier stays FP32 "
               "(--quantize-classifier).\n");
}

}  // namespace qlr_cli
