// SPDX-License-Identifier: Apache-2.0
// stories260K and its tokenizer for the model tests, from data/ or ../shared/data.
#pragma once

#include <catch2/catch.hpp>

#include <filesystem>
#include <optional>

#include "qlr/io/llama2c.hpp"
#include "qlr/model/tokenizer.hpp"
#include "qlr_test_support.hpp"

namespace qlr::test {

/// tok512.bin from data/ or ../shared/data, or nullopt after a warning.
inline std::optional<std::filesystem::path> tok512_path() {
  for (const auto& p : {std::filesystem::path(QLR_DATA_DIR) / "stories260K" / "tok512.bin",
                        std::filesystem::path(QLR_SHARED_DATA_DIR) / "tok512.bin"})
    if (std::filesystem::exists(p)) return p;
  WARN("tok512.bin not found in data/ or ../shared/data: tokenizer checks skipped");
  return std::nullopt;
}

/// The stories260K checkpoint and its tokenizer.
struct Stories {
  io::Llama2cModel checkpoint;  ///< stories260K.bin
  model::Tokenizer tokenizer;   ///< tok512.bin
};

/// stories260K and tok512, or nullopt after a warning that the checks named `what` are skipped.
inline std::optional<Stories> load_stories(const char* what) {
  const auto model = stories260k_path_or_warn(what);
  const auto tok = tok512_path();
  if (!model || !tok) return std::nullopt;
  return Stories{io::load_llama2c(*model), model::Tokenizer::load(*tok, 512)};
}

}  // namespace qlr::test
