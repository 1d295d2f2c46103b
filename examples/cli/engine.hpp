// SPDX-License-Identifier: Apache-2.0
// What the engine's subcommands (generate, perplexity, demo, finetune) share: the model
// flags, calibration flags, and loading the model they name.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "llama/llama.hpp"
#include "qlr/model/tokenizer.hpp"

namespace qlr_cli {

/// Options every engine subcommand takes.
struct ModelFlags {
  std::filesystem::path model = QLR_DEFAULT_MODEL;
  std::filesystem::path tokenizer = QLR_DEFAULT_TOKENIZER;
  std::optional<qlr::layers::LinearSpec> linear;
  bool quantize_classifier = false;
  llama::RotationKind rotation = llama::RotationKind::none;
  std::uint64_t rotation_seed = 0;
  bool json = false;
  std::optional<std::filesystem::path> adapter;  ///< a PEFT folder added to the block linears
  std::optional<std::filesystem::path> layers;   ///< a layer file replacing block linears
};

/// The model and its tokenizer as the flags say.
struct Loaded {
  llama::Model model;
  qlr::model::Tokenizer tokenizer;
};

/// What `qlr perplexity` compresses with: GPTQ, a compensation term, the calibration text.
struct CalibrationFlags {
  bool gptq = false;
  qlr::index_t rank = 0;
  llama::CompensationKind kind = llama::CompensationKind::eora;
  int bits = 0;
  std::optional<std::filesystem::path> text;  ///< default: the scored text
  long tokens = 8192;

  /// Whether the model needs calibration statistics.
  [[nodiscard]] bool needs_statistics() const {
    return gptq || (rank > 0 && kind == llama::CompensationKind::eora);
  }
};

/// Takes argv[i] if it is a model flag (advancing i past its value); false otherwise.
/// --help prints `usage` and the model options.
bool parse_model_flag(int argc, char** argv, int& i, ModelFlags& f, std::string_view usage);

/// The file `flag` names, whole. Throws Errc::io naming the flag when it cannot be read.
std::string read_text_file(const std::filesystem::path& path, std::string_view flag = "--text");

/// Takes argv[i] if it is --adapter DIR or --layers FILE (generate and perplexity; finetune's
/// --adapter names a kind). False otherwise.
bool parse_adapter_flag(int argc, char** argv, int& i, ModelFlags& f);

/// Takes argv[i] if it is a calibration flag (advancing i past its value); false otherwise.
bool parse_calibration_flag(int argc, char** argv, int& i, CalibrationFlags& c);

/// The engine's options as the flags say.
llama::ModelOptions model_options(const ModelFlags& f, const CalibrationFlags& c);

/// The model and its tokenizer as the flags say; with calibration flags that need
/// statistics, they are taken first from the FP32 model over the calibration text (or
/// `default_text`) in windows of `window` (a progress bar on stderr).
Loaded load(const ModelFlags& f, const CalibrationFlags& c = {}, int window = 256,
            const std::string* default_text = nullptr);

/// "fp32" or the spec's name.
std::string spec_name(const ModelFlags& f);

/// "fp32", "int4-sym-g32+a4, randomized-hadamard rotation", ...
std::string setting_name(const ModelFlags& f);

/// Seconds since `start`.
double seconds_since(std::chrono::steady_clock::time_point start);

}  // namespace qlr_cli
