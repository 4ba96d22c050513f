#include "learner/dataset.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/file.h"

namespace cohort::learner {
namespace {

using nlohmann::json;

std::string KeyList(const json& object) {
  std::vector<std::string> keys;
  for (auto it = object.begin(); it != object.end(); ++it) keys.push_back(it.key());
  return keys.empty() ? "none" : absl::StrJoin(keys, ", ");
}

const char* TypeName(const json& v) { return v.type_name(); }

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Fills `record` from one parsed line; returns the problem, or "".
std::string FillRecord(const json& line, const DatasetOptions& options, PromptRecord* record) {
  if (!line.is_object()) return absl::StrCat("expected a JSON object, got ", TypeName(line));
  auto prompt = line.find(options.prompt_key);
  if (prompt == line.end()) {
    return absl::StrCat("missing prompt field \"", options.prompt_key, "\" (keys: ", KeyList(line),
                        ")");
  }
  if (prompt->is_string()) {
    record->prompt = prompt->get<std::string>();
  } else if (prompt->is_array()) {
    for (size_t i = 0; i < prompt->size(); ++i) {
      const json& m = (*prompt)[i];
      if (!m.is_object() || !m.contains("role") || !m.contains("content") ||
          !m["role"].is_string() || !m["content"].is_string()) {
        return absl::StrCat("\"", options.prompt_key, "\"[", i,
                            "]: expected {\"role\": string, \"content\": string}");
      }
      record->messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    }
    if (record->messages.empty()) {
      return absl::StrCat("\"", options.prompt_key, "\": empty message list");
    }
  } else {
    return absl::StrCat("\"", options.prompt_key,
                        "\": expected a string or a list of messages, got ", TypeName(*prompt));
  }
  if (!options.answer_key.empty()) {
    auto answer = line.find(options.answer_key);
    if (answer == line.end() || answer->is_null()) {
      if (options.require_answer) {
        return absl::StrCat("missing answer field \"", options.answer_key,
                            "\" (keys: ", KeyList(line), ")");
      }
    } else if (answer->is_string()) {
      record->answer = answer->get<std::string>();
    } else if (answer->is_number() || answer->is_boolean()) {
      record->answer = answer->dump();
    } else {
      return absl::StrCat("\"", options.answer_key, "\": expected a string or number, got ",
                          TypeName(*answer));
    }
  }
  if (options.require_completion) {
    auto completion = line.find(options.completion_key);
    if (completion == line.end() || !completion->is_string()) {
      return absl::StrCat(
          "\"", options.completion_key, "\": ",
          completion == line.end() ? "missing (keys: " + KeyList(line) + ")" : "expected a string");
    }
    record->completion = completion->get<std::string>();
  }
  if (!options.id_key.empty()) {
    auto id = line.find(options.id_key);
    if (id == line.end()) {
      return absl::StrCat("missing id field \"", options.id_key, "\" (keys: ", KeyList(line), ")");
    }
    if (id->is_string()) {
      record->id = id->get<std::string>();
      if (record->id.empty()) return absl::StrCat("\"", options.id_key, "\": empty id");
    } else if (id->is_number_integer()) {
      record->id = id->dump();
    } else {
      return absl::StrCat("\"", options.id_key, "\": expected a string or integer id, got ",
                          TypeName(*id));
    }
  } else {
    record->id = absl::StrCat(record->line);
  }
  record->task = options.task;
  return "";
}

}  // namespace

DatasetOptions DatasetOptions::FromConfig(const DataSection& data) {
  DatasetOptions o;
  o.prompt_key = data.prompt_key;
  o.answer_key = data.answer_key;
  o.completion_key = data.completion_key;
  o.id_key = data.id_key;
  o.task = data.task;
  o.max_prompt_tokens = data.max_prompt_tokens;
  return o;
}

absl::StatusOr<Dataset> Dataset::Load(const std::string& path, const DatasetOptions& options) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    return absl::Status(text.status().code(), absl::StrCat("dataset: ", text.status().message()));
  }
  return Parse(*text, path, options);
}

absl::StatusOr<Dataset> Dataset::Parse(std::string_view text, const std::string& source,
                                       const DatasetOptions& options) {
  Dataset out;
  out.source_ = source;
  std::unordered_map<std::string, int64_t> first_line;  // id -> line, dropped lines included
  int64_t line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view raw = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!raw.empty() && raw.back() == '\r') raw.remove_suffix(1);
    if (raw.find_first_not_of(" \t") == std::string_view::npos) continue;
    auto fail = [&](const std::string& problem) {
      return absl::InvalidArgumentError(absl::StrCat(source, ":", line_no, ": ", problem));
    };
    json parsed = json::parse(raw, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_discarded()) {
      // Parse again with exceptions for the parser's position message.
      std::string why = "malformed JSON";
      try {
        (void)json::parse(raw);
      } catch (const json::parse_error& e) {
        why = absl::StrCat("malformed JSON: ", e.what());
      }
      return fail(why);
    }
    PromptRecord record;
    record.line = line_no;
    if (std::string problem = FillRecord(parsed, options, &record); !problem.empty()) {
      return fail(problem);
    }
    auto [it, inserted] = first_line.emplace(record.id, line_no);
    if (!inserted) {
      return fail(
          absl::StrCat("duplicate id \"", record.id, "\" (first on line ", it->second, ")"));
    }
    if (options.max_prompt_tokens > 0 && options.count_prompt_tokens) {
      absl::StatusOr<int64_t> n = options.count_prompt_tokens(record);
      if (!n.ok()) return fail(absl::StrCat("counting prompt tokens: ", n.status().message()));
      if (*n > options.max_prompt_tokens) {
        ++out.dropped_too_long_;
        continue;
      }
    }
    out.index_.emplace(record.id, static_cast<int64_t>(out.records_.size()));
    out.records_.push_back(std::move(record));
  }
  return out;
}

int64_t Dataset::IndexOf(const std::string& id) const {
  auto it = index_.find(id);
  return it == index_.end() ? -1 : it->second;
}

std::vector<int64_t> Dataset::EpochOrder(int64_t epoch, uint64_t seed, bool shuffle) const {
  std::vector<int64_t> order(records_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  if (!shuffle) return order;
  uint64_t state = seed * 0x100000001B3ULL + static_cast<uint64_t>(epoch) + 1;
  for (size_t i = order.size(); i > 1; --i) {
    const uint64_t j = SplitMix64(state) % i;
    std::swap(order[i - 1], order[j]);
  }
  return order;
}

}  // namespace cohort::learner
