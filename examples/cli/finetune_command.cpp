// SPDX-License-Identifier: Apache-2.0
// `qlr finetune`: low-rank adapters trained on the engine's frozen model (FP32, or quantized
// as `qlr perplexity` quantizes it), with AdamW, resumable checkpoints and a PEFT export.
//
// A run is a pure function of its flags: the batches of step i and the dropout masks come
// from (seed, i), the schedule from i, so a run resumed from the checkpoint of step k
// continues bit for bit as the uninterrupted run would have.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/engine.hpp"
#include "cli/support.hpp"
#include "llama/train.hpp"
#include "qlr/core/numeric.hpp"
#include "qlr/io/detail/file.hpp"
#include "qlr/io/peft.hpp"
#include "qlr/io/safetensors.hpp"
#include "qlr/layers/layer_file.hpp"
#include "qlr/train/adamw.hpp"
#include "qlr/train/schedule.hpp"
#include <sys/resource.h>

namespace qlr_cli {
namespace {

using qlr::index_t;

constexpr std::string_view finetune_usage = R"(usage: qlr finetune --train FILE [options]

Trains low-rank adapters on the model's frozen base (FP32, or every block linear quantized
as --linear says, exactly as `qlr perplexity` quantizes it), with AdamW, and prints the
validation NLL (nats/token) before and after. Each step reads --accum micro-batches of
--batch windows of --seq + 1 tokens drawn from the training text. A progress line on stderr
shows the step, loss, validation NLL, tokens/s and the time left; Ctrl-C writes a resumable
checkpoint (with --save) and exits with status 130.

data:
  --train FILE          the training text: .txt as `qlr perplexity` reads it (stories split
                        on <|endoftext|>, each with BOS), or .jsonl lines {"prompt": ...,
                        "response": ...} trained on the responses only (prompt tokens masked)
  --valid FILE          the validation text (may be --train itself; default: the last
                        --valid-fraction of --train, cut at a line boundary)
  --valid-fraction F    (default: 0.1)
  --valid-tokens N      validate on the first N tokens, windows of --seq + 1; 0 = all
                        (default: 8192)

adapter:
  --adapter KIND        lora, rslora, dora or qa-lora (QA-LoRA pools over the base's groups)
                        (default: lora)
  --rank R              (default: 8)
  --alpha A             (default: 16)
  --dropout P           dropout on the adapters' input, 0 <= P < 1 (default: 0)
  --targets LIST        comma-separated block linears (default: all seven: q_proj,k_proj,
                        v_proj,o_proj,gate_proj,up_proj,down_proj)
  --init KIND           A's initialization: kaiming (PEFT's), gaussian or xavier (QA-LoRA's);
                        or, over a quantized base, the factors from its quantization error:
                        loftq (a rank-R SVD of W - Q) or eora (the same in the eigenspace of
                        the training text's activations); LoRA, rsLoRA and DoRA
                        (default: kaiming)
  --init-iterations T   loftq/eora alternations; T > 1 requantizes the base from W - s*B*A,
                        so score the merged layer file, not the PEFT folder (default: 1)
  --init-adapter DIR    start from a PEFT adapter folder (its kind, rank, alpha and targets
                        replace the flags')

optimization:
  --lr LR               peak learning rate, > 0 (default: 2e-3)
  --schedule KIND       after the warmup: constant or cosine (to 0 at --steps)
                        (default: constant)
  --warmup N            steps of linear warmup from 0 (default: 10)
  --steps N             optimizer steps (default: 100)
  --batch B             sequences per micro-batch (default: 8)
  --seq L               tokens per sequence (default: 256, at most the model's context)
  --accum K             micro-batches per step (default: 1)
  --clip C              clip the global gradient norm to C; 0 = off (default: 1.0)
  --weight-decay W      AdamW's decoupled weight decay (default: 0)
  --seed S              the adapters' initialization, the batches and dropout (default: 0)
  --recompute           keep only each block's input; recompute the block in the backward

output:
  --eval-every N        validate every N steps too; 0 = before and after only (default: 0)
  --save DIR            write the adapter as a PEFT folder (DIR/adapter_config.json,
                        DIR/adapter_model.safetensors), resumable checkpoints under
                        DIR/checkpoints/ (the last good one is always kept) and, over a
                        quantized base, the merged model as a qlr layer file
                        (DIR/merged_layers.safetensors, for --layers): QA-LoRA merged into
                        the zero points losslessly, LoRA and DoRA requantized (reported)
  --checkpoint-every N  steps between checkpoints with --save (default: 50)
  --resume DIR          continue the run saved in DIR (a --save folder or a checkpoint in
                        it) with the same flags; it continues bit for bit
  --merge-linear SPEC   merge into SPEC instead of the base's own spec (e.g. QLoRA's NF4 base
                        merged into int4-asym-g32; or an FP32 base, RoLoRA's, into W4A4)
  --gptq                quantize the base by GPTQ (calibrated on the training text)
)";

/// What `qlr finetune` was asked to do.
struct FinetuneFlags {
  ModelFlags model;
  bool gptq = false;
  std::optional<qlr::layers::LinearSpec> merge_linear;
  std::optional<std::filesystem::path> train, valid, save, resume, init_adapter;
  double valid_fraction = 0.1;
  long valid_tokens = 8192;
  std::string adapter = "lora";
  index_t rank = 8;
  double alpha = 16.0, dropout = 0.0;
  std::vector<std::string> targets{llama::target_modules.begin(), llama::target_modules.end()};
  std::string init = "kaiming";
  int init_iterations = 1;
  double lr = 2e-3;
  std::string schedule = "constant";
  long warmup = 10, steps = 100, batch = 8, seq = 256, accum = 1;
  double clip = 1.0, weight_decay = 0.0;
  std::uint64_t seed = 0;
  bool recompute = false;
  long eval_every = 0, checkpoint_every = 50;

  /// Whether the adapters start from the base's quantization error (LoftQ, EoRA).
  [[nodiscard]] bool error_init() const { return init == "loftq" || init == "eora"; }
};

/// `text` split on commas.
std::vector<std::string> split_list(std::string_view text) {
  std::vector<std::string> out;
  for (std::size_t begin = 0; begin <= text.size();) {
    const std::size_t end = std::min(text.find(',', begin), text.size());
    if (end > begin) out.emplace_back(text.substr(begin, end - begin));
    begin = end + 1;
  }
  return out;
}

FinetuneFlags parse_finetune(int argc, char** argv, int first) {
  FinetuneFlags f;
  for (int i = first; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (parse_model_flag(argc, argv, i, f.model, finetune_usage)) continue;
    const auto value = [&] { return flag_value(argc, argv, i); };
    const auto path = [&] { return std::filesystem::path(std::string(value())); };
    if (arg == "--train") f.train = path();
    else if (arg == "--valid") f.valid = path();
    else if (arg == "--valid-fraction") f.valid_fraction = parse_number<double>(arg, value());
    else if (arg == "--valid-tokens") f.valid_tokens = parse_number<long>(arg, value());
    else if (arg == "--adapter") f.adapter = value();
    else if (arg == "--rank") f.rank = parse_number<index_t>(arg, value());
    else if (arg == "--alpha") f.alpha = parse_number<double>(arg, value());
    else if (arg == "--dropout") f.dropout = parse_number<double>(arg, value());
    else if (arg == "--targets") f.targets = split_list(value());
    else if (arg == "--init") f.init = value();
    else if (arg == "--init-adapter") f.init_adapter = path();
    else if (arg == "--init-iterations")
      f.init_iterations = parse_number<int>(arg, value());
    else if (arg == "--lr") f.lr = parse_number<double>(arg, value());
    else if (arg == "--schedule") f.schedule = value();
    else if (arg == "--warmup") f.warmup = parse_number<long>(arg, value());
    else if (arg == "--steps") f.steps = parse_number<long>(arg, value());
    else if (arg == "--batch") f.batch = parse_number<long>(arg, value());
    else if (arg == "--seq") f.seq = parse_number<long>(arg, value());
    else if (arg == "--accum") f.accum = parse_number<long>(arg, value());
    else if (arg == "--clip") f.clip = parse_number<double>(arg, value());
    else if (arg == "--weight-decay") f.weight_decay = parse_number<double>(arg, value());
    else if (arg == "--seed") f.seed = parse_number<std::uint64_t>(arg, value());
    else if (arg == "--recompute") f.recompute = true;
    else if (arg == "--eval-every") f.eval_every = parse_number<long>(arg, value());
    else if (arg == "--save") f.save = path();
    else if (arg == "--checkpoint-every") f.checkpoint_every = parse_number<long>(arg, value());
    else if (arg == "--resume") f.resume = path();
    else if (arg == "--gptq") f.gptq = true;
    else if (arg == "--merge-linear")
      f.merge_linear = qlr::layers::parse_linear_spec(value());
    else usage_error(fmt::format("finetune: unknown argument '{}'", arg));
  }
  if (!f.train) usage_error("finetune needs --train FILE");
  const auto positive = [](std::string_view flag, long v) {
    QLR_CHECK(v >= 1, invalid_argument, "qlr finetune: {} = {}; expected >= 1", flag, v);
  };
  positive("--steps", f.steps);
  positive("--batch", f.batch);
  positive("--seq", f.seq);
  positive("--accum", f.accum);
  positive("--checkpoint-every", f.checkpoint_every);
  QLR_CHECK(f.warmup >= 0 && f.warmup <= f.steps, invalid_argument,
            "qlr finetune: --warmup = {}; expected 0 <= warmup <= --steps = {}", f.warmup, f.steps);
  QLR_CHECK(f.lr > 0 && std::isfinite(f.lr), invalid_argument,
            "qlr finetune: --lr = {}; expected a finite learning rate > 0", f.lr);
  QLR_CHECK(f.clip >= 0 && std::isfinite(f.clip), invalid_argument,
            "qlr finetune: --clip = {}; expected >= 0 (0: no clipping)", f.clip);
  QLR_CHECK(f.schedule == "constant" || f.schedule == "cosine", invalid_argument,
            "qlr finetune: --schedule '{}'; expected constant or cosine", f.schedule);
  QLR_CHECK(f.valid_fraction > 0 && f.valid_fraction < 1, invalid_argument,
            "qlr finetune: --valid-fraction = {}; expected 0 < F < 1", f.valid_fraction);
  QLR_CHECK(f.valid_tokens >= 0, invalid_argument,
            "qlr finetune: --valid-tokens = {}; expected >= 0", f.valid_tokens);
  QLR_CHECK(f.eval_every >= 0, invalid_argument, "qlr finetune: --eval-every = {}; expected >= 0",
            f.eval_every);
  positive("--init-iterations", f.init_iterations);
  QLR_CHECK(f.adapter != "qa-lora" || !f.merge_linear ||
                (f.model.linear && qlr::layers::to_string(*f.model.linear) ==
                                       qlr::layers::to_string(*f.merge_linear)),
            invalid_argument,
            "qlr finetune: --merge-linear {} with --adapter qa-lora; expected the base's own "
            "--linear (QA-LoRA merges into its zero points)",
            qlr::layers::to_string(*f.merge_linear));
  if (f.error_init()) {
    QLR_CHECK(f.model.linear.has_value(), invalid_argument,
              "qlr finetune: --init {} over an FP32 base; expected --linear SPEC (a quantization "
              "error to start from)",
              f.init);
    QLR_CHECK(!f.gptq && !f.init_adapter, invalid_argument,
              "qlr finetune: --init {} with {}; expected one of them", f.init,
              f.gptq ? "--gptq" : "--init-adapter");
  }
  return f;
}

/// The adapter configuration the flags name.
qlr::train::AdapterConfig adapter_config(const FinetuneFlags& f) {
  qlr::train::AdapterConfig c;
  if (f.adapter == "lora" || f.adapter == "rslora") {
    c.kind = qlr::train::AdapterKind::lora;
    if (f.adapter == "rslora") c.scaling = qlr::adapter::Scaling::rank_stabilized;
  } else if (f.adapter == "dora") {
    c.kind = qlr::train::AdapterKind::dora;
  } else if (f.adapter == "qa-lora") {
    c.kind = qlr::train::AdapterKind::qa_lora;
  } else {
    QLR_CHECK(false, invalid_argument,
              "qlr finetune: --adapter '{}'; expected lora, rslora, dora or qa-lora", f.adapter);
  }
  if (f.init == "kaiming")
    c.init = qlr::train::Init::kaiming_uniform;
  else if (f.init == "gaussian")
    c.init = qlr::train::Init::gaussian;
  else if (f.init == "xavier")
    c.init = qlr::train::Init::xavier_uniform;
  else if (!f.error_init())  // their A is set after construction (llama::set_error_start)
    QLR_CHECK(false, invalid_argument,
              "qlr finetune: --init '{}'; expected kaiming, gaussian, xavier, loftq or eora",
              f.init);
  c.rank = f.rank;
  c.alpha = f.alpha;
  c.dropout = f.dropout;
  c.seed = f.seed;
  return c;
}

/// A token stream with, per token, whether predicting it counts in the loss.
struct Stream {
  std::vector<int> tokens;
  std::vector<std::uint8_t> counted;
};

/// The stream of a text: stories as `qlr perplexity` reads them (all counted), or JSON lines
/// {"prompt", "response"} (responses counted). Throws naming `flag` and the bad line.
Stream read_stream(const qlr::model::Tokenizer& tokenizer, const std::string& text,
                   bool jsonl, std::string_view flag) {
  Stream s;
  if (!jsonl) {
    s.tokens = llama::story_tokens(tokenizer, text);
    s.counted.assign(s.tokens.size(), 1);
    return s;
  }
  std::size_t line_number = 0;
  for (std::size_t begin = 0; begin < text.size();) {
    const std::size_t end = std::min(text.find('\n', begin), text.size());
    const std::string_view line(text.data() + begin, end - begin);
    ++line_number;
    begin = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    QLR_CHECK(j.is_object() && j.contains("prompt") && j["prompt"].is_string() &&
                  j.contains("response") && j["response"].is_string(),
              invalid_argument,
              "qlr finetune: {} line {}; expected a JSON object with string fields \"prompt\" "
              "and \"response\"",
              flag, line_number);
    const std::vector<int> prompt = tokenizer.encode(j["prompt"].get<std::string>(), true, false);
    const std::vector<int> response =
        tokenizer.encode(j["response"].get<std::string>(), false, false);
    s.tokens.insert(s.tokens.end(), prompt.begin(), prompt.end());
    s.counted.insert(s.counted.end(), prompt.size(), 0);
    s.tokens.insert(s.tokens.end(), response.begin(), response.end());
    s.counted.insert(s.counted.end(), response.size(), 1);
  }
  return s;
}

/// Micro-batch `micro` of step `step`: `batch` windows of seq + 1 tokens at positions drawn
/// from (seed, step, micro); windows without a counted target are drawn again.
llama::Batch draw_batch(const Stream& s, const FinetuneFlags& f, long step, long micro) {
  std::mt19937_64 rng(llama::mix_seed(f.seed, static_cast<std::uint64_t>(step * f.accum + micro)));
  const auto span = static_cast<std::uint64_t>(s.tokens.size()) - static_cast<std::uint64_t>(f.seq);
  llama::Batch b{{}, {}, f.batch, f.seq};
  for (long i = 0; i < f.batch; ++i) {
    for (int attempt = 0;; ++attempt) {
      const auto start = static_cast<std::ptrdiff_t>(rng() % span);
      const auto counted_begin = s.counted.begin() + start + 1;
      if (std::find(counted_begin, counted_begin + f.seq, 1) == counted_begin + f.seq &&
          attempt < 64)
        continue;
      b.tokens.insert(b.tokens.end(), s.tokens.begin() + start,
                      s.tokens.begin() + start + f.seq + 1);
      b.counted.insert(b.counted.end(), counted_begin, counted_begin + f.seq);
      break;
    }
  }
  return b;
}

/// The mean NLL of the validation windows (non-overlapping, seq + 1 tokens, the last one
/// shorter), over their counted targets, in batches of `batch`.
double validate(llama::TrainableModel<float>& model, const Stream& s, long seq, long batch) {
  const auto n = static_cast<index_t>(s.tokens.size());
  double total = 0;
  index_t targets = 0;
  const auto run = [&](index_t begin, index_t windows, index_t length) {
    llama::Batch b{{}, {}, windows, length - 1};
    index_t counted = 0;
    for (index_t w = 0; w < windows; ++w) {
      const index_t at = begin + w * length;
      b.tokens.insert(b.tokens.end(), s.tokens.begin() + at, s.tokens.begin() + at + length);
      b.counted.insert(b.counted.end(), s.counted.begin() + at + 1, s.counted.begin() + at + length);
    }
    for (const std::uint8_t c : b.counted) counted += c;
    if (counted == 0) return;
    total += model.forward(b, false) * static_cast<double>(counted);
    targets += counted;
  };
  const index_t length = seq + 1, full = n / length;
  for (index_t w = 0; w < full; w += batch) run(w * length, std::min<index_t>(batch, full - w), length);
  if (n - full * length >= 2) run(full * length, 1, n - full * length);
  QLR_CHECK(targets > 0, invalid_argument,
            "qlr finetune: the validation text has no counted target; expected a longer text");
  return total / static_cast<double>(targets);
}

/// The run's identity: what a checkpoint must have been made with to be resumed.
nlohmann::ordered_json run_identity(const FinetuneFlags& f, std::uint64_t model_hash,
                                    std::uint64_t train_hash) {
  return {{"model_fnv1a64", fmt::format("{:016x}", model_hash)},
          {"train_fnv1a64", fmt::format("{:016x}", train_hash)},
          {"linear", spec_name(f.model)},
          {"rotation", llama::to_string(f.model.rotation)},
          {"rotation_seed", f.model.rotation_seed},
          {"gptq", f.gptq},
          {"adapter", f.adapter},
          {"rank", f.rank},
          {"alpha", f.alpha},
          {"dropout", f.dropout},
          {"targets", f.targets},
          {"init", f.init},
          {"init_iterations", f.init_iterations},
          {"lr", f.lr},
          {"schedule", f.schedule},
          {"warmup", f.warmup},
          {"cosine_steps", f.schedule == "cosine" ? f.steps : 0},
          {"batch", f.batch},
          {"seq", f.seq},
          {"accum", f.accum},
          {"clip", f.clip},
          {"weight_decay", f.weight_decay},
          {"seed", f.seed}};
}

/// Writes the checkpoint of `step` under save/checkpoints/ as a folder renamed into place,
/// then points save/checkpoints/latest at it and removes the older ones: a failure at any
/// point leaves the last good checkpoint as it was.
void write_checkpoint(const std::filesystem::path& save, long step,
                      const qlr::train::ParameterList& params, const qlr::train::AdamW& adam,
                      const nlohmann::ordered_json& identity) {
  constexpr std::string_view entity = "qlr finetune";
  const std::filesystem::path root = save / "checkpoints";
  const std::string name = fmt::format("step-{:07}", step);
  const std::filesystem::path temp = root / fmt::format(".{}.tmp-{}", name, ::getpid());
  std::error_code ec;
  std::filesystem::remove_all(temp, ec);
  std::filesystem::create_directories(temp, ec);
  QLR_CHECK(!ec, io, "{}: cannot create \"{}\": {}; expected a writable --save folder", entity,
            temp.string(), ec.message());
  try {
    qlr::io::SafetensorsWriter w;
    for (const auto& p : params)
      w.add(p.name, qlr::io::Dtype::f32, p.shape, std::as_bytes(std::span<const float>(p.value)));
    const auto bytes = w.to_bytes();
    qlr::io::detail::write_file_atomically(temp / "adapter.safetensors", bytes, entity);
    adam.save(temp / "optimizer.safetensors");
    const std::string state =
        nlohmann::ordered_json{{"format", "qlr-finetune-checkpoint-1"}, {"step", step}, {"run", identity}}
            .dump(2) + "\n";
    qlr::io::detail::write_file_atomically(
        temp / "state.json", std::as_bytes(std::span<const char>(state.data(), state.size())), entity);
    std::filesystem::remove_all(root / name, ec);
    std::filesystem::rename(temp, root / name, ec);
    QLR_CHECK(!ec, io, "{}: cannot rename \"{}\": {}", entity, temp.string(), ec.message());
  } catch (...) {
    std::filesystem::remove_all(temp, ec);
    throw;
  }
  const std::string latest = name + "\n";
  qlr::io::detail::write_file_atomically(
      root / "latest", std::as_bytes(std::span<const char>(latest.data(), latest.size())), entity);
  for (const auto& entry : std::filesystem::directory_iterator(root, ec)) {
    const std::string other = entry.path().filename().string();
    if (other.starts_with("step-") && other != name) std::filesystem::remove_all(entry.path(), ec);
  }
}

/// The checkpoint folder `resume` names: a checkpoint itself, or a --save folder's latest.
std::filesystem::path checkpoint_folder(const std::filesystem::path& resume) {
  if (std::filesystem::exists(resume / "state.json")) return resume;
  const std::filesystem::path latest = resume / "checkpoints" / "latest";
  QLR_CHECK(std::filesystem::exists(latest), invalid_argument,
            "qlr finetune: --resume '{}' has no checkpoint; expected a --save folder with "
            "checkpoints/latest, or a checkpoint folder with state.json",
            resume.string());
  std::string name = read_text_file(latest, "--resume");
  while (!name.empty() && (name.back() == '\n' || name.back() == '\r')) name.pop_back();
  QLR_CHECK(name.starts_with("step-") && name.find('/') == std::string::npos, invalid_argument,
            "qlr finetune: --resume '{}': checkpoints/latest names '{}'; expected step-N",
            resume.string(), name);
  return resume / "checkpoints" / name;
}

/// Restores the adapters and the optimizer from `folder`; returns the step it was taken
/// after. Throws when the run's identity differs, naming the first differing field.
long restore_checkpoint(const std::filesystem::path& folder, const qlr::train::ParameterList& params,
                        qlr::train::AdamW& adam, const nlohmann::ordered_json& identity) {
  const nlohmann::json state = nlohmann::json::parse(read_text_file(folder / "state.json", "--resume"),
                                                     nullptr, false);
  QLR_CHECK(state.is_object() && state.value("format", "") == "qlr-finetune-checkpoint-1" &&
                state.contains("step") && state["step"].is_number_integer() &&
                state.contains("run") && state["run"].is_object(),
            invalid_argument, "qlr finetune: --resume '{}': state.json is not a qlr checkpoint",
            folder.string());
  for (const auto& [key, value] : identity.items()) {
    const nlohmann::json saved = state["run"].value(key, nlohmann::json());
    QLR_CHECK(saved == nlohmann::json(value), invalid_argument,
              "qlr finetune: --resume '{}' was made with {} = {}; expected {} as this run has it",
              folder.string(), key, saved.dump(), nlohmann::json(value).dump());
  }
  const qlr::io::SafetensorsFile values(folder / "adapter.safetensors");
  for (const auto& p : params) {
    const qlr::io::TensorView& t = values.at(p.name);
    QLR_CHECK(t.dtype == qlr::io::Dtype::f32 && t.shape == p.shape, invalid_argument,
              "qlr finetune: --resume: tensor \"{}\" does not fit the model", p.name);
    std::memcpy(p.value.data(), t.bytes.data(), t.bytes.size());
    QLR_CHECK(qlr::all_finite(p.value.data(), static_cast<index_t>(p.value.size())),
              invalid_argument, "qlr finetune: --resume: tensor \"{}\" holds a NaN or an infinity",
              p.name);
  }
  const long step = state["step"].get<long>();
  QLR_CHECK(step >= 0, invalid_argument, "qlr finetune: --resume: step = {}; expected >= 0", step);
  adam.load(folder / "optimizer.safetensors");
  return step;
}

std::atomic<bool> interrupted{false};

/// Peak resident memory of the process in bytes.
std::size_t peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<std::size_t>(usage.ru_maxrss) * 1024;
}

/// LoftQ or EoRA (--init) for every targeted layer of `loaded`, whose bases it replaces: W from
/// the FP32 model with the same rotation; EoRA's eigenspaces from the training text's first
/// 8192 tokens through it.
llama::ErrorStart start_from_error(const FinetuneFlags& f, const llama::TrainOptions& options,
                                   Loaded& loaded, const std::string& fit_text) {
  llama::ModelOptions fp32_options = model_options(f.model, {});
  fp32_options.linear.reset();
  const llama::Model fp32(qlr::io::load_llama2c(f.model.model), fp32_options);
  std::optional<llama::Calibration> statistics;
  if (f.init == "eora") {
    std::vector<int> tokens = llama::story_tokens(loaded.tokenizer, fit_text);
    const CalibrationFlags defaults;
    if (tokens.size() > static_cast<std::size_t>(defaults.tokens))
      tokens.resize(static_cast<std::size_t>(defaults.tokens));
    const ProgressBar bar("calibrating");
    statistics = llama::calibrate(fp32, tokens, 256, [&](index_t done, index_t total) {
      bar.update(done, total);
      return true;
    });
  }
  llama::ErrorStart start = llama::error_start(fp32, *f.model.linear, options, f.init_iterations,
                                               statistics ? &*statistics : nullptr);
  loaded.model.replace_layers(std::move(start.bases));
  return start;
}

}  // namespace

void finetune(int argc, char** argv, int first) {
  const FinetuneFlags f = parse_finetune(argc, argv, first);
  const std::string train_text = read_text_file(*f.train, "--train");
  std::string valid_text;
  std::string fit_text = train_text;
  if (f.valid) {
    valid_text = read_text_file(*f.valid, "--valid");
  } else {
    // The last fraction, from the line boundary after its nominal start.
    const auto cut_at = static_cast<std::size_t>(static_cast<double>(train_text.size()) *
                                                 (1.0 - f.valid_fraction));
    const std::size_t cut = std::min(train_text.find('\n', cut_at), train_text.size());
    fit_text = train_text.substr(0, cut);
    valid_text = cut < train_text.size() ? train_text.substr(cut + 1) : std::string();
  }
  if (f.save) {
    // Before any training: a --save folder that cannot be written fails now, not at the end.
    std::error_code ec;
    std::filesystem::create_directories(*f.save / "checkpoints", ec);
    QLR_CHECK(!ec, io, "qlr finetune: --save '{}': {}; expected a writable folder",
              f.save->string(), ec.message());
  }
  CalibrationFlags calibration;
  calibration.gptq = f.gptq;
  Loaded loaded = load(f.model, calibration, 256, &fit_text);
  llama::Model& base = loaded.model;
  const bool jsonl = f.train->extension() == ".jsonl";
  const Stream train = read_stream(loaded.tokenizer, fit_text, jsonl, "--train");
  const Stream valid_all = read_stream(loaded.tokenizer, valid_text,
                                       (f.valid ? f.valid->extension() == ".jsonl" : jsonl), "--valid");
  const long seq = std::min<long>(f.seq, base.config().seq_len - 1);
  FinetuneFlags run = f;
  run.seq = seq;
  QLR_CHECK(static_cast<long>(train.tokens.size()) > seq + 1, invalid_argument,
            "qlr finetune: --train has {} tokens; expected more than one sequence of --seq + 1 "
            "= {}",
            train.tokens.size(), seq + 1);
  Stream valid = valid_all;
  if (f.valid_tokens > 0 && valid.tokens.size() > static_cast<std::size_t>(f.valid_tokens)) {
    valid.tokens.resize(static_cast<std::size_t>(f.valid_tokens));
    valid.counted.resize(static_cast<std::size_t>(f.valid_tokens));
  }
  QLR_CHECK(valid.tokens.size() >= 2, invalid_argument,
            "qlr finetune: the validation text has {} tokens; expected at least 2",
            valid.tokens.size());

  llama::TrainOptions options;
  options.adapter = adapter_config(run);
  options.targets = run.targets;
  options.recompute = run.recompute;
  std::optional<qlr::io::PeftAdapter> init;
  if (f.init_adapter) {
    init = qlr::io::load_peft_adapter(*f.init_adapter);
    options = llama::options_from_peft(init->config, init->modules, options);
    // The run's identity and export follow the adapter's own kind, rank, alpha and targets.
    const auto& a = options.adapter;
    run.adapter = a.kind == qlr::train::AdapterKind::dora               ? "dora"
                  : a.kind == qlr::train::AdapterKind::qa_lora          ? "qa-lora"
                  : a.scaling == qlr::adapter::Scaling::rank_stabilized ? "rslora"
                                                                        : "lora";
    run.rank = a.rank;
    run.alpha = a.alpha;
    run.targets = options.targets;
  }
  std::optional<llama::ErrorStart> error_start;
  if (f.error_init()) error_start = start_from_error(f, options, loaded, fit_text);
  llama::TrainableModel<float> model(base, options);
  if (init) llama::set_from_peft(model, *init);
  if (error_start) llama::set_error_start(model, *error_start);
  const qlr::train::ParameterList params = model.parameters();
  qlr::train::AdamW adam(params, {.weight_decay = run.weight_decay});
  const std::string model_bytes = read_text_file(f.model.model, "--model");
  const nlohmann::ordered_json identity =
      run_identity(run, fnv1a64(std::as_bytes(std::span(model_bytes))),
                   fnv1a64(std::as_bytes(std::span(train_text))));
  long start_step = 0;
  if (f.resume) start_step = restore_checkpoint(checkpoint_folder(*f.resume), params, adam, identity);
  QLR_CHECK(start_step <= run.steps, invalid_argument,
            "qlr finetune: --resume is at step {}; expected --steps >= it (now {})", start_step,
            run.steps);

  const qlr::train::WarmupCosineSchedule cosine{run.lr, run.warmup, run.steps};
  const qlr::train::WarmupConstantSchedule constant{run.lr, run.warmup};
  const auto lr_at = [&](long step) {
    return run.schedule == "cosine" ? cosine(step) : constant(step);
  };

  std::signal(SIGINT, [](int) { interrupted = true; });
  const auto start = std::chrono::steady_clock::now();
  const double valid_before = validate(model, valid, seq, run.batch);
  std::vector<double> losses;
  std::optional<double> valid_last;
  const ProgressBar bar("finetune");
  const auto tokens_per_step = static_cast<double>(run.batch * run.accum * seq);
  const auto train_start = std::chrono::steady_clock::now();
  long step = start_step;
  for (; step < run.steps && !interrupted; ++step) {
    model.zero_gradients();
    double loss = 0;
    try {
      for (long micro = 0; micro < run.accum; ++micro) {
        model.reseed_dropout(llama::mix_seed(run.seed ^ 0x5DEECE66Dull,
                                             static_cast<std::uint64_t>(step * run.accum + micro)));
        loss += model.forward(draw_batch(train, run, step, micro), true) / static_cast<double>(run.accum);
        model.backward();
      }
      if (run.accum > 1) qlr::train::scale_gradients(params, 1.0f / static_cast<float>(run.accum));
      if (run.clip > 0) qlr::train::clip_gradient_norm(params, run.clip);
      adam.step(params, lr_at(step));
    } catch (const qlr::Error& e) {
      throw qlr::Error(e.code(), fmt::format("step {}: {}{}", step, e.what(),
                                             f.save ? "; the last good checkpoint is kept" : ""));
    }
    losses.push_back(loss);
    if (run.eval_every > 0 && (step + 1) % run.eval_every == 0 && step + 1 < run.steps)
      valid_last = validate(model, valid, seq, run.batch);
    if (f.save && (step + 1) % run.checkpoint_every == 0)
      write_checkpoint(*f.save, step + 1, params, adam, identity);
    const double elapsed = seconds_since(train_start);
    const double rate = static_cast<double>(step + 1 - start_step) * tokens_per_step / elapsed;
    const double eta = static_cast<double>(run.steps - step - 1) * tokens_per_step / rate;
    bar.update(step + 1, run.steps,
               fmt::format(" loss {:.4f}{} {:.0f} tok/s ETA {:.0f}s", loss,
                           valid_last ? fmt::format(" valid {:.4f}", *valid_last) : "", rate, eta));
  }
  if (interrupted) {
    if (f.save) write_checkpoint(*f.save, step, params, adam, identity);
    std::fprintf(stderr, "\nqlr: interrupted after step %ld; %s\n", step,
                 f.save ? fmt::format("resume with --resume {}", f.save->string()).c_str()
                        : "nothing saved (no --save)");
    std::exit(130);
  }
  const double train_seconds = seconds_since(train_start);
  const double valid_after = validate(model, valid, seq, run.batch);
  std::vector<std::string> warnings, merge_reports;
  if (f.save) {
    write_checkpoint(*f.save, step, params, adam, identity);
    qlr::io::save_peft_adapter(*f.save, llama::to_peft(model, warnings));
  }
  std::optional<double> valid_merged;
  const std::optional<qlr::layers::LinearSpec>& merge_spec =
      f.merge_linear ? f.merge_linear : f.model.linear;
  if (merge_spec) {
    // The merged model as `qlr perplexity --linear SPEC --layers` runs it.
    llama::MergedLayers merged = llama::merge_adapters(model, f.merge_linear);
    if (f.save) qlr::layers::save_layers(*f.save / "merged_layers.safetensors", merged.layers);
    merge_reports = std::move(merged.reports);
    if (!jsonl && !f.valid) {
      ModelFlags served_flags = f.model;
      served_flags.linear = merge_spec;
      llama::Model served(qlr::io::load_llama2c(f.model.model), model_options(served_flags, {}));
      served.replace_layers(std::move(merged.layers));
      valid_merged = llama::score_windows(served, valid.tokens, static_cast<int>(seq + 1)).nll;
    }
  }
  for (const std::string& w : warnings) std::fprintf(stderr, "qlr: warning: %s\n", w.c_str());
  const long trained_steps = run.steps - start_step;
  const double tokens_per_s =
      trained_steps > 0 ? static_cast<double>(trained_steps) * tokens_per_step / train_seconds : 0.0;
  std::size_t trainable = 0;
  for (const auto& p : params) trainable += p.value.size();
  if (f.model.json) {
    nlohmann::ordered_json j = {
        {"linear", spec_name(f.model)},
        {"rotation", llama::to_string(f.model.rotation)},
        {"adapter", run.adapter},
        {"rank", run.rank},
        {"alpha", run.alpha},
        {"targets", run.targets},
        {"trainable_parameters", trainable},
        {"bits_per_param", base.bits_per_parameter(false)},
        {"steps", run.steps},
        {"resumed_from", start_step},
        {"seq", seq},
        {"train_tokens", static_cast<double>(run.steps) * tokens_per_step},
        {"valid_nll_before", valid_before},
        {"valid_nll_after", valid_after},
        {"losses", losses},
        {"tokens_per_s", tokens_per_s},
        {"seconds", seconds_since(start)},
        {"activation_bytes", model.activation_bytes()},
        {"peak_rss_bytes", peak_rss_bytes()},
        {"merge_linear", merge_spec ? qlr::layers::to_string(*merge_spec) : "none"},
        {"valid_nll_merged",
         valid_merged ? nlohmann::ordered_json(*valid_merged) : nlohmann::ordered_json(nullptr)},
        {"merge_reports", merge_reports},
        {"warnings", warnings}};
    fmt::print("{}\n", j.dump(2));
  } else {
    fmt::print("{} + {} r={} on {} ({} trainable parameters): validation NLL {:.4f} -> {:.4f} "
               "after {} steps of {} tokens ({:.0f} tokens/s)\n",
               setting_name(f.model), run.adapter, run.rank, fmt::join(run.targets, ","), trainable,
               valid_before, valid_after, run.steps, static_cast<long>(tokens_per_step),
               tokens_per_s);
    if (valid_merged)
      fmt::print("merged into {}: validation NLL {:.4f}\n", qlr::layers::to_string(*merge_spec),
                 *valid_merged);
    if (f.save) {
      fmt::print("adapter saved to {} (PEFT){}\n", f.save->string(),
                 merge_spec ? ", the merged model to merged_layers.safetensors" : "");
      if (!merge_reports.empty())
        fmt::print("{} layers merged by requantizing (lossy; --json lists each): {}\n",
                   merge_reports.size(), merge_reports.front());
    }
  }
}

}  // namespace qlr_cli
