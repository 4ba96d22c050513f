// JSON helpers shared by the tokenizer.json component parsers (internal to
// core/tokenizer/).
#ifndef COHORT_CORE_TOKENIZER_JSON_UTIL_H_
#define COHORT_CORE_TOKENIZER_JSON_UTIL_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"

namespace cohort::tok {

using Json = nlohmann::json;

inline absl::Status Invalid(std::string_view what) {
  return absl::InvalidArgumentError(std::string(what));
}

// The "type" string of a component object; empty if there is none.
inline std::string TypeOf(const Json& j) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) return "";
  return j["type"].get<std::string>();
}

// j[key] as a bool; `dflt` when absent or null.
inline bool BoolOr(const Json& j, const char* key, bool dflt) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  return j[key].get<bool>();
}

}  // namespace cohort::tok

#endif  // COHORT_CORE_TOKENIZER_JSON_UTIL_H_
