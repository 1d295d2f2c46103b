// SPDX-License-Identifier: Apache-2.0
// libFuzzer target of the PEFT adapter loader. The input is adapter_config.json's text, a NUL
// byte, then adapter_model.safetensors's bytes (no NUL: all config, no tensors). Any input
// either loads or throws qlr::Error; anything else is a bug. A loaded adapter's modules must
// agree with its config.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string_view>

#include "qlr/core/error.hpp"
#include "qlr/io/peft.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto* begin = reinterpret_cast<const char*>(data);
  const auto* nul = std::find(begin, begin + size, '\0');
  const std::string_view config(begin, static_cast<std::size_t>(nul - begin));
  const std::size_t rest = nul == begin + size ? size : static_cast<std::size_t>(nul - begin) + 1;
  const std::span<const std::byte> tensors(reinterpret_cast<const std::byte*>(data) + rest,
                                           size - rest);
  try {
    const auto adapter = qlr::io::load_peft_adapter(config, tensors);
    for (const auto& m : adapter.modules) {
      if (m.a.rows() != m.rank || m.b.cols() != m.rank || m.rank < 1) std::abort();
      if (m.magnitude.has_value() != adapter.config.use_dora) std::abort();
      if (m.magnitude && m.magnitude->size() != m.b.rows()) std::abort();
    }
    if (!std::is_sorted(adapter.modules.begin(), adapter.modules.end(),
                        [](const auto& x, const auto& y) { return x.name < y.name; }))
      std::abort();
  } catch (const qlr::Error&) {
  }
  return 0;
}
