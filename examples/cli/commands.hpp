// SPDX-License-Identifier: Apache-2.0
// The `qlr` subcommands; each parses argv[first] onwards, prints its result and throws
// qlr::Error (or std::exception) for bad input, which main turns into one line on stderr.
#pragma once

namespace qlr_cli {

/// `qlr inspect FILE|FOLDER [--json]`.
void inspect(int argc, char** argv, int first);
/// `qlr generate [options]`: a story from the llama2.c model.
void generate(int argc, char** argv, int first);
/// `qlr perplexity [options]`: next-token NLL and perplexity over a text file.
void perplexity(int argc, char** argv, int first);
/// The model options generate, perplexity and demo share, as `--help` prints them.
const char* engine_options_help();
/// `qlr loraquant ADAPTER_DIR [options]`: LoRAQuant of a PEFT adapter against uniform RTN.
void loraquant(int argc, char** argv, int first);
/// `qlr finetune --train FILE [options]`: adapters trained on the frozen (quantized) model.
void finetune(int argc, char** argv, int first);
/// `qlr demo [options]`: a quantized model writes a story; perplexity next to FP32's.
void demo(int argc, char** argv, int first);

}  // namespace qlr_cli
