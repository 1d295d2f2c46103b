// SPDX-License-Identifier: Apache-2.0
// Strict JSON parsing for qlr's readers. nlohmann-json keeps the last of two equal keys in an
// object without a word; a file that says `"r": 8` and then `"r": 64` is ambiguous, so its
// readers refuse it. A parse callback sees every key and checks it against its object's keys.
#pragma once

#include <nlohmann/json.hpp>

#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "qlr/core/error.hpp"

namespace qlr::io::detail {

/// An object key as the text has it: its nesting depth (1 for the top-level object's keys)
/// and its name. nlohmann::json keeps an object's keys sorted; a reader that needs the file's
/// order (PEFT's first matching pattern) asks the parse for this list instead of using
/// ordered_json, whose key lookup is linear (quadratic parsing for a hostile header).
struct JsonKey {
  int depth;         ///< 1 for a key of the top-level object
  std::string name;  ///< the key
};

/// Parses `text` as JSON into `Json` (nlohmann::json or nlohmann::ordered_json); throws
/// Errc::corrupt_file naming `entity` and `what` (e.g. "header") for malformed JSON or a key
/// that appears twice in one object. `keys`, when given, receives every key in text order.
template <class Json>
Json parse_json_strict(std::string_view text, std::string_view entity, std::string_view what,
                       std::vector<JsonKey>* keys = nullptr) {
  std::vector<std::set<std::string, std::less<>>> open_objects;  // keys seen, innermost last
  const auto callback = [&](int depth, nlohmann::json::parse_event_t event, Json& parsed) {
    using Event = nlohmann::json::parse_event_t;
    if (event == Event::object_start) {
      open_objects.emplace_back();
    } else if (event == Event::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (event == Event::key && !open_objects.empty()) {
      const auto& key = parsed.template get_ref<const std::string&>();
      QLR_CHECK(open_objects.back().insert(key).second, corrupt_file,
                "{}: {} has the key \"{}\" twice in one object; expected unique keys", entity,
                what, key);
      if (keys != nullptr) keys->push_back({depth, key});
    }
    return true;
  };
  try {
    return Json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true,
                       /*ignore_comments=*/false);
  } catch (const nlohmann::json::exception& e) {
    ::qlr::detail::fail(Errc::corrupt_file, "{}: {} is not valid JSON ({}); expected JSON text",
                        entity, what, e.what());
  }
}

}  // namespace qlr::io::detail
