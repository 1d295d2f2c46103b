// SPDX-License-Identifier: Apache-2.0
// libFuzzer target of the safetensors parser: any input either parses or throws qlr::Error;
// anything else (a crash, a sanitizer report, another exception) is a bug. A file that parses
// must also convert, and survive a rewrite by SafetensorsWriter with the same tensors.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "qlr/core/error.hpp"
#include "qlr/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  qlr::io::SafetensorsView view;
  try {
    view = qlr::io::parse_safetensors(bytes);
  } catch (const qlr::Error&) {
    return 0;
  }
  qlr::io::SafetensorsWriter writer;
  for (const auto& [key, value] : view.metadata) writer.set_metadata(key, value);
  for (const auto& t : view.tensors) {
    try {
      if (t.shape.size() == 2) (void)qlr::io::to_matrix(t);
      if (t.shape.size() == 1) (void)qlr::io::to_vector(t);
    } catch (const qlr::Error&) {
      // an integer dtype or a non-finite value: refused, as it should be
    }
    writer.add(t.name, t.dtype, t.shape, t.bytes);  // a parsed tensor is always writable
  }
  const auto again_bytes = writer.to_bytes();
  const auto again = qlr::io::parse_safetensors(again_bytes);
  if (again.tensors.size() != view.tensors.size() || again.metadata != view.metadata) std::abort();
  for (std::size_t i = 0; i < view.tensors.size(); ++i) {
    const auto& a = view.tensors[i];
    const auto& b = again.tensors[i];
    if (a.name != b.name || a.dtype != b.dtype || a.shape != b.shape ||
        !std::equal(a.bytes.begin(), a.bytes.end(), b.bytes.begin(), b.bytes.end()))
      std::abort();
  }
  return 0;
}
