// Internal to the config library: the constraint types, the Binder
// interface every field is bound through, and the schema's Bind()
// overloads. Reading YAML, applying overrides, validating, printing and
// listing keys are each one Binder implementation (config.cc), so a field
// is declared once, in config_schema.cc, and every operation covers it.
//
// Adding a key: add the field (with its default) to its struct in
// config.h, then one binding line with its constraint and help text to the
// section's Bind() in config_schema.cc; add it to configs/example.yaml and
// regenerate docs/config.md's table (`cohort config keys --markdown`).
// config_test fails until all three agree.
//
// Thread-safety: plain value types and reentrant functions.
#ifndef COHORT_CORE_CONFIG_BINDER_H_
#define COHORT_CORE_CONFIG_BINDER_H_

#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/config.h"

namespace cohort::config_internal {

// ---------------------------------------------------------------------------
// Constraints. Each carries the text that completes "expected ...".

struct IntRule {
  int64_t min = INT64_MIN;
  int64_t max = INT64_MAX;
  // The field type's range (e.g. int's); checked, not shown in messages.
  int64_t type_min = INT64_MIN;
  int64_t type_max = INT64_MAX;
  std::string Expected() const {
    if (min == INT64_MIN && max == INT64_MAX) return "an integer";
    if (max == INT64_MAX) return absl::StrCat("an integer >= ", min);
    if (min == INT64_MIN) return absl::StrCat("an integer <= ", max);
    return absl::StrCat("an integer in [", min, ", ", max, "]");
  }
  bool Ok(int64_t v) const { return v >= min && v <= max && v >= type_min && v <= type_max; }
};

inline IntRule AtLeast(int64_t n) { return IntRule{n, INT64_MAX}; }
inline IntRule Port() { return IntRule{0, 65535}; }

inline std::string FormatDouble(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  std::string s(buf, ec == std::errc() ? end : buf);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // "1" -> "1.0"
  return s;
}

// Bounds in messages: "0", "0.5", "1e-06".
inline std::string BoundText(double v) { return absl::StrCat(v); }

struct DoubleRule {
  double lo = -HUGE_VAL;
  bool lo_open = false;
  double hi = HUGE_VAL;
  bool hi_open = false;
  std::string Expected() const {
    bool has_lo = lo != -HUGE_VAL, has_hi = hi != HUGE_VAL;
    if (!has_lo && !has_hi) return "a finite number";
    if (!has_hi) return absl::StrCat("a number ", lo_open ? ">" : ">=", " ", BoundText(lo));
    if (!has_lo) return absl::StrCat("a number ", hi_open ? "<" : "<=", " ", BoundText(hi));
    return absl::StrCat("a number in ", lo_open ? "(" : "[", BoundText(lo), ", ", BoundText(hi),
                        hi_open ? ")" : "]");
  }
  bool Ok(double v) const {
    if (!std::isfinite(v)) return false;
    if (lo_open ? !(v > lo) : !(v >= lo)) return false;
    if (hi_open ? !(v < hi) : !(v <= hi)) return false;
    return true;
  }
};

inline DoubleRule Positive() { return DoubleRule{0.0, true}; }

struct StringRule {
  std::string expected = "a string";
  std::function<bool(const std::string&)> ok;  // null = anything
};

inline StringRule OneOf(std::vector<std::string> choices) {
  StringRule r;
  r.expected = absl::StrCat("one of ",
                            absl::StrJoin(choices, "|", [](std::string* out, const std::string& c) {
                              out->append(c.empty() ? "\"\"" : c);
                            }));
  r.ok = [choices](const std::string& s) {
    for (const auto& c : choices) {
      if (s == c) return true;
    }
    return false;
  };
  return r;
}

inline StringRule NonEmpty() {
  return StringRule{"a non-empty string", [](const std::string& s) { return !s.empty(); }};
}

// "" or host:port (the port numeric); also accepts gRPC target URIs
// ("dns:///host:port", "unix:/path").
inline bool IsHostPort(const std::string& s) {
  if (s.find(":/") != std::string::npos) return true;  // a URI scheme
  size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size()) return false;
  for (size_t i = colon + 1; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
  }
  return s.size() - colon - 1 <= 5 && std::stoi(s.substr(colon + 1)) <= 65535;
}

inline StringRule OptionalHostPort() {
  return StringRule{"\"\" or host:port",
                    [](const std::string& s) { return s.empty() || IsHostPort(s); }};
}

// ---------------------------------------------------------------------------
// Binder: one interface that every field is bound through. Reading YAML,
// applying overrides, validating, printing and listing keys are each one
// implementation, so a field is declared once (in the Bind() functions
// below) and every operation covers it.

class Binder {
 public:
  virtual ~Binder() = default;

  virtual void String(const char* key, std::string* v, const StringRule& rule = {},
                      const char* help = "") = 0;
  virtual void Int64(const char* key, int64_t* v, const IntRule& rule = {},
                     const char* help = "") = 0;
  virtual void Double(const char* key, double* v, const DoubleRule& rule = {},
                      const char* help = "") = 0;
  virtual void Bool(const char* key, bool* v, const char* help = "") = 0;
  virtual void StringList(const char* key, std::vector<std::string>* v, const char* help = "") = 0;
  // name -> number; names are non-empty.
  virtual void NumberMap(const char* key, std::map<std::string, double>* v,
                         const DoubleRule& rule = {}, const char* help = "") = 0;
  // name -> scalar text (numbers, booleans and strings kept as written).
  virtual void StringMap(const char* key, std::map<std::string, std::string>* v,
                         const char* help = "") = 0;
  virtual void Section(const char* key, const std::function<void(Binder&)>& bind) = 0;

  // A map of name -> section.
  struct MapOps {
    std::function<std::vector<std::string>()> names;
    // Binds the entry `name`, creating it (with defaults) when missing.
    std::function<void(const std::string& name, Binder&)> bind_entry;
    std::function<void()> clear;
    // Binds a default-constructed entry (for listing keys).
    std::function<void(Binder&)> bind_template;
  };
  virtual void SectionMap(const char* key, const MapOps& ops) = 0;

  // A list of sections (e.g. `pipeline:`). A file or an override replaces
  // the whole list.
  struct ListOps {
    std::function<size_t()> size;
    std::function<void(size_t)> resize;  // new entries take their defaults
    std::function<void(size_t index, Binder&)> bind_item;
    std::function<void(Binder&)> bind_template;
  };
  virtual void SectionList(const char* key, const ListOps& ops) = 0;

  // int fields go through Int64 with the rule clamped to int's range.
  void Int(const char* key, int* v, IntRule rule = {}, const char* help = "") {
    rule.type_min = INT_MIN;
    rule.type_max = INT_MAX;
    int64_t wide = *v;
    Int64(key, &wide, rule, help);
    *v = static_cast<int>(std::clamp<int64_t>(wide, INT_MIN, INT_MAX));
  }
};

// The schema's Bind() overloads (config_schema.cc), declared first so the
// templates can name them.
void Bind(Binder& b, RunSection& s);
void Bind(Binder& b, ModelSection& s);
void Bind(Binder& b, SamplingSection& s);
void Bind(Binder& b, LearnerSection& s);
void Bind(Binder& b, ActorSection& s);
void Bind(Binder& b, RewardTaskSpec& s);
void Bind(Binder& b, RewardSection& s);
void Bind(Binder& b, TlsSection& s);
void Bind(Binder& b, SecuritySection& s);
void Bind(Binder& b, SupervisorSection& s);
void Bind(Binder& b, GrpoSection& s);
void Bind(Binder& b, OptimSection& s);
void Bind(Binder& b, DataSection& s);
void Bind(Binder& b, CheckpointSection& s);
void Bind(Binder& b, TaskSection& s);
void Bind(Binder& b, DatasetSpec& s);
void Bind(Binder& b, ModelSpec& s);
void Bind(Binder& b, PipelineStage& s);
void Bind(Binder& b, EvalSection& s);
void Bind(Binder& b, RunConfig& c);

template <typename T>
void BindSection(Binder& b, const char* key, T* section) {
  b.Section(key, [section](Binder& sb) { Bind(sb, *section); });
}

// `init` runs on a newly created entry before its fields are bound.
template <typename T>
void BindSectionMap(Binder& b, const char* key, std::map<std::string, T>* map,
                    std::function<void(const std::string&, T*)> init = nullptr) {
  Binder::MapOps ops;
  ops.names = [map] {
    std::vector<std::string> names;
    for (const auto& [name, unused] : *map) names.push_back(name);
    return names;
  };
  ops.bind_entry = [map, init](const std::string& name, Binder& eb) {
    auto it = map->find(name);
    if (it == map->end()) {
      it = map->emplace(name, T{}).first;
      if (init) init(name, &it->second);
    }
    Bind(eb, it->second);
  };
  ops.clear = [map] { map->clear(); };
  ops.bind_template = [](Binder& eb) {
    T entry;
    Bind(eb, entry);
  };
  b.SectionMap(key, ops);
}

template <typename T>
void BindSectionList(Binder& b, const char* key, std::vector<T>* list) {
  Binder::ListOps ops;
  ops.size = [list] { return list->size(); };
  ops.resize = [list](size_t n) { list->resize(n); };
  ops.bind_item = [list](size_t i, Binder& ib) { Bind(ib, (*list)[i]); };
  ops.bind_template = [](Binder& ib) {
    T entry;
    Bind(ib, entry);
  };
  b.SectionList(key, ops);
}

// Range, enum and cross-field checks that one field's rule cannot express
// (config_schema.cc).
absl::Status CrossFieldChecks(const RunConfig& c);

// Names of the verifiers a task may use (config_schema.cc).
const std::vector<std::string>& Verifiers();
bool IsVerifier(const std::string& name);

}  // namespace cohort::config_internal

#endif  // COHORT_CORE_CONFIG_BINDER_H_
