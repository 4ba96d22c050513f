#include "core/config.h"

#include <cerrno>
#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <utility>

#include <yaml-cpp/yaml.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/status.h"

namespace cohort {
namespace {

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

IntRule AtLeast(int64_t n) { return IntRule{n, INT64_MAX}; }
IntRule Port() { return IntRule{0, 65535}; }

std::string FormatDouble(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  std::string s(buf, ec == std::errc() ? end : buf);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // "1" -> "1.0"
  return s;
}

// Bounds in messages: "0", "0.5", "1e-06".
std::string BoundText(double v) { return absl::StrCat(v); }

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

DoubleRule Positive() { return DoubleRule{0.0, true}; }

struct StringRule {
  std::string expected = "a string";
  std::function<bool(const std::string&)> ok;  // null = anything
};

StringRule OneOf(std::vector<std::string> choices) {
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

StringRule NonEmpty() {
  return StringRule{"a non-empty string", [](const std::string& s) { return !s.empty(); }};
}

// "" or host:port (the port numeric); also accepts gRPC target URIs
// ("dns:///host:port", "unix:/path").
bool IsHostPort(const std::string& s) {
  if (s.find(":/") != std::string::npos) return true;  // a URI scheme
  size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size()) return false;
  for (size_t i = colon + 1; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
  }
  return s.size() - colon - 1 <= 5 && std::stoi(s.substr(colon + 1)) <= 65535;
}

StringRule OptionalHostPort() {
  return StringRule{"\"\" or host:port",
                    [](const std::string& s) { return s.empty() || IsHostPort(s); }};
}

const std::vector<std::string>& Verifiers() {
  static const auto* v = new std::vector<std::string>{"math", "gsm8k", "countdown", "code"};
  return *v;
}

bool IsVerifier(const std::string& name) {
  for (const auto& v : Verifiers()) {
    if (v == name) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------
// Binder: one interface that every field is bound through. Reading YAML,
// applying overrides, validating, printing and listing keys are each one
// implementation, so a field is declared once (in the Bind() functions
// below) and every operation covers it.

class Binder {
 public:
  virtual ~Binder() = default;

  virtual void String(const char* key, std::string* v, const StringRule& rule = {}) = 0;
  virtual void Int64(const char* key, int64_t* v, const IntRule& rule = {}) = 0;
  virtual void Double(const char* key, double* v, const DoubleRule& rule = {}) = 0;
  virtual void Bool(const char* key, bool* v) = 0;
  virtual void StringList(const char* key, std::vector<std::string>* v) = 0;
  // name -> number; names are non-empty.
  virtual void NumberMap(const char* key, std::map<std::string, double>* v,
                         const DoubleRule& rule = {}) = 0;
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

  // int fields go through Int64 with the rule clamped to int's range.
  void Int(const char* key, int* v, IntRule rule = {}) {
    rule.type_min = INT_MIN;
    rule.type_max = INT_MAX;
    int64_t wide = *v;
    Int64(key, &wide, rule);
    *v = static_cast<int>(std::clamp<int64_t>(wide, INT_MIN, INT_MAX));
  }
};

// The schema's Bind() overloads (defined below), declared first so the
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
void Bind(Binder& b, RunConfig& c);

template <typename T>
void BindSection(Binder& b, const char* key, T* section);

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

// ---------------------------------------------------------------------------
// The schema. One line per field; the struct in config.h holds the default.

void Bind(Binder& b, RunSection& s) {
  b.String("name", &s.name, NonEmpty());
  b.Int64("seed", &s.seed, AtLeast(0));
  b.String("out_dir", &s.out_dir, NonEmpty());
  b.String("log_level", &s.log_level, OneOf({"debug", "info", "warning", "error"}));
}

void Bind(Binder& b, ModelSection& s) {
  b.String("path", &s.path);
  b.String("preset", &s.preset);
  b.String("tokenizer", &s.tokenizer);
  b.String("dtype", &s.dtype, OneOf({"float32", "bfloat16"}));
  b.String("chat_template", &s.chat_template, OneOf({"chatml", "llama3", "r1-zero", "plain"}));
}

void Bind(Binder& b, SamplingSection& s) {
  b.Int("group_size", &s.group_size, AtLeast(1));
  b.Double("temperature", &s.temperature, Positive());
  b.Double("top_p", &s.top_p, DoubleRule{0.0, true, 1.0, false});
  b.Int("top_k", &s.top_k, AtLeast(0));
  b.Int("max_new_tokens", &s.max_new_tokens, AtLeast(1));
  b.StringList("stop", &s.stop);
}

void Bind(Binder& b, LearnerSection& s) {
  b.String("host", &s.host, NonEmpty());
  b.Int("port", &s.port, Port());
  b.Int("metrics_port", &s.metrics_port, Port());
  b.Int("heartbeat_interval_ms", &s.heartbeat_interval_ms, AtLeast(1));
  b.Int("lease_ttl_ms", &s.lease_ttl_ms, AtLeast(1));
  b.Int("max_staleness", &s.max_staleness, AtLeast(0));
}

void Bind(Binder& b, ActorSection& s) {
  b.Int("count", &s.count, AtLeast(0));
  b.Int("slots", &s.slots, AtLeast(1));
  b.Int("metrics_port", &s.metrics_port, Port());
}

void Bind(Binder& b, RewardTaskSpec& s) {
  b.String("verifier", &s.verifier, OneOf(Verifiers()));
  b.String("format", &s.format, OneOf({"r1", "r1-zero", "none"}));
  b.String("language", &s.language, OneOf({"", "en", "zh"}));
  b.NumberMap("weights", &s.weights);
  b.Int("max_length", &s.max_length, AtLeast(0));
  b.Int("cache_length", &s.cache_length, AtLeast(0));
  b.String("endpoint", &s.endpoint, OptionalHostPort());
}

void Bind(Binder& b, RewardSection& s) {
  b.String("host", &s.host, NonEmpty());
  b.Int("port", &s.port, Port());
  b.Int("metrics_port", &s.metrics_port, Port());
  b.Int("workers", &s.workers, AtLeast(0));
  b.Int("max_batch", &s.max_batch, AtLeast(1));
  b.Double("sample_timeout_seconds", &s.sample_timeout_seconds, Positive());
  b.String("address", &s.address, OptionalHostPort());
  BindSectionMap<RewardTaskSpec>(b, "tasks", &s.tasks,
                                 [](const std::string& name, RewardTaskSpec* t) {
                                   t->verifier = IsVerifier(name) ? name : "";
                                 });
}

void Bind(Binder& b, TlsSection& s) {
  b.String("cert_file", &s.cert_file);
  b.String("key_file", &s.key_file);
  b.String("ca_file", &s.ca_file);
  b.Bool("require_client_cert", &s.require_client_cert);
}

void Bind(Binder& b, SecuritySection& s) {
  BindSection(b, "tls", &s.tls);
  b.String("token_file", &s.token_file);
}

void Bind(Binder& b, SupervisorSection& s) {
  b.Int("max_restarts", &s.max_restarts, AtLeast(0));
  b.Int("restart_window_seconds", &s.restart_window_seconds, AtLeast(1));
  b.Int("backoff_initial_ms", &s.backoff_initial_ms, AtLeast(1));
  b.Int("backoff_max_ms", &s.backoff_max_ms, AtLeast(1));
  b.Int("stop_timeout_seconds", &s.stop_timeout_seconds, AtLeast(1));
  b.Int("ready_timeout_seconds", &s.ready_timeout_seconds, AtLeast(1));
}

void Bind(Binder& b, RunConfig& c) {
  BindSection(b, "run", &c.run);
  BindSection(b, "model", &c.model);
  BindSection(b, "sampling", &c.sampling);
  BindSection(b, "learner", &c.learner);
  BindSection(b, "actor", &c.actor);
  BindSection(b, "reward", &c.reward);
  BindSection(b, "security", &c.security);
  BindSection(b, "supervisor", &c.supervisor);
}

template <typename T>
void BindSection(Binder& b, const char* key, T* section) {
  b.Section(key, [section](Binder& sb) { Bind(sb, *section); });
}

// ---------------------------------------------------------------------------
// Shared helpers.

std::string Quote(const std::string& s) { return absl::StrCat("\"", absl::CHexEscape(s), "\""); }

// How a value looks in an error message.
std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return "null (no value)";
    case YAML::NodeType::Scalar:
      return Quote(node.Scalar());
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    default:
      return "nothing";
  }
}

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// ---------------------------------------------------------------------------
// YamlReader: assigns the keys present in a YAML map; absent keys keep
// their current value. Reports the first error with its source.

class YamlReader : public Binder {
 public:
  // `source` is a file name (lines are appended from marks) or, when
  // `override_text` is set, ignored in favour of "--set <override_text>".
  YamlReader(YAML::Node node, std::string path, std::string source, bool with_lines,
             bool merge_maps, absl::Status* error)
      : node_(std::move(node)),
        path_(std::move(path)),
        source_(std::move(source)),
        with_lines_(with_lines),
        merge_maps_(merge_maps),
        error_(error) {}

  void String(const char* key, std::string* v, const StringRule& rule) override {
    YAML::Node n = Take(key);
    if (!n) return;
    std::string value;
    if (n.IsNull()) {
      value = "";
    } else if (n.IsScalar()) {
      value = n.Scalar();
    } else {
      return Fail(n, key, rule.expected);
    }
    if (rule.ok && !rule.ok(value)) return Fail(n, key, rule.expected);
    *v = value;
  }

  void Int64(const char* key, int64_t* v, const IntRule& rule) override {
    YAML::Node n = Take(key);
    if (!n) return;
    int64_t value;
    if (!n.IsScalar() || !YAML::convert<int64_t>::decode(n, value) || !rule.Ok(value)) {
      return Fail(n, key, rule.Expected());
    }
    *v = value;
  }

  void Double(const char* key, double* v, const DoubleRule& rule) override {
    YAML::Node n = Take(key);
    if (!n) return;
    double value;
    if (!ReadNumber(n, &value) || !rule.Ok(value)) return Fail(n, key, rule.Expected());
    *v = value;
  }

  void Bool(const char* key, bool* v) override {
    YAML::Node n = Take(key);
    if (!n) return;
    bool value;
    if (!n.IsScalar() || !YAML::convert<bool>::decode(n, value)) {
      return Fail(n, key, "true or false");
    }
    *v = value;
  }

  void StringList(const char* key, std::vector<std::string>* v) override {
    YAML::Node n = Take(key);
    if (!n) return;
    std::vector<std::string> value;
    if (n.IsSequence()) {
      for (const auto& item : n) {
        if (!item.IsScalar()) return Fail(item, key, "a list of strings");
        value.push_back(item.Scalar());
      }
    } else if (!n.IsNull()) {
      return Fail(n, key, "a list of strings, e.g. [\"a\", \"b\"]");
    }
    *v = std::move(value);
  }

  void NumberMap(const char* key, std::map<std::string, double>* v,
                 const DoubleRule& rule) override {
    YAML::Node n = Take(key);
    if (!n) return;
    if (!n.IsMap() && !n.IsNull()) return Fail(n, key, "a map of name: number");
    std::map<std::string, double> value = merge_maps_ ? *v : std::map<std::string, double>{};
    for (const auto& item : n) {
      std::string name = item.first.IsScalar() ? item.first.Scalar() : "";
      std::string sub = absl::StrCat(key, ".", name);
      if (name.empty()) return Fail(item.first, key, "a map of name: number");
      double number;
      if (!ReadNumber(item.second, &number) || !rule.Ok(number)) {
        return Fail(item.second, sub, rule.Expected());
      }
      value[name] = number;
    }
    *v = std::move(value);
  }

  void Section(const char* key, const std::function<void(Binder&)>& bind) override {
    YAML::Node n = Take(key);
    if (!n || n.IsNull()) return;
    if (!n.IsMap()) return Fail(n, key, "a map");
    YamlReader child(n, Join(key), source_, with_lines_, merge_maps_, error_);
    bind(child);
    child.CheckUnknownKeys();
  }

  void SectionMap(const char* key, const MapOps& ops) override {
    YAML::Node n = Take(key);
    if (!n) return;
    if (!n.IsMap() && !n.IsNull()) return Fail(n, key, "a map of name: {...}");
    if (!merge_maps_) ops.clear();
    for (const auto& item : n) {
      std::string name = item.first.IsScalar() ? item.first.Scalar() : "";
      if (name.empty() || name.find('.') != std::string::npos) {
        return Fail(item.first, key, "entry names that are non-empty and contain no '.'");
      }
      if (!item.second.IsMap() && !item.second.IsNull()) {
        return Fail(item.second, absl::StrCat(key, ".", name), "a map");
      }
      YamlReader child(item.second.IsMap() ? item.second : YAML::Node(YAML::NodeType::Map),
                       Join(absl::StrCat(key, ".", name)), source_, with_lines_, merge_maps_,
                       error_);
      ops.bind_entry(name, child);
      child.CheckUnknownKeys();
      if (!error_->ok()) return;
    }
  }

  // Call after binding: any key of this map that no field took is an error.
  void CheckUnknownKeys() {
    if (!error_->ok() || !node_.IsMap()) return;
    std::set<std::string> seen;
    for (const auto& item : node_) {
      std::string key = item.first.IsScalar() ? item.first.Scalar() : Describe(item.first);
      if (!seen.insert(key).second) {
        *error_ = absl::InvalidArgumentError(
            absl::StrCat(Where(item.first), Join(key), ": duplicate key"));
        return;
      }
    }
    for (const auto& item : node_) {
      std::string key = item.first.IsScalar() ? item.first.Scalar() : Describe(item.first);
      if (taken_.count(key)) continue;
      std::string best;
      size_t best_distance = 3;  // suggest only close matches
      for (const auto& known : known_) {
        size_t d = EditDistance(key, known);
        if (d < best_distance) best = known, best_distance = d;
      }
      std::string where = path_.empty() ? "at the top level" : absl::StrCat("under ", path_);
      *error_ = absl::InvalidArgumentError(
          absl::StrCat(Where(item.first), Join(key), ": unknown key",
                       best.empty() ? "" : absl::StrCat(" (did you mean \"", best, "\"?)"),
                       "; valid keys ", where, ": ", absl::StrJoin(known_, ", ")));
      return;
    }
  }

 private:
  // The child node for `key` if present and no error so far; records the
  // key as known either way.
  YAML::Node Take(const std::string& key) {
    known_.push_back(key);
    if (!error_->ok() || !node_.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    const YAML::Node& const_node = node_;
    YAML::Node child = const_node[key];
    if (!child.IsDefined()) return child;
    taken_.insert(key);
    return child;
  }

  static bool ReadNumber(const YAML::Node& n, double* value) {
    if (!n.IsScalar()) return false;
    const std::string& s = n.Scalar();
    // yaml-cpp also takes ".inf"/".nan" and hex; accept plain decimals only.
    if (s.empty() || s.find_first_not_of("0123456789+-.eE") != std::string::npos) return false;
    return YAML::convert<double>::decode(n, *value) && std::isfinite(*value);
  }

  std::string Join(const std::string& key) const {
    return path_.empty() ? key : absl::StrCat(path_, ".", key);
  }

  std::string Where(const YAML::Node& n) const {
    if (with_lines_ && n.Mark().line >= 0) {
      return absl::StrCat(source_, ":", n.Mark().line + 1, ": ");
    }
    return absl::StrCat(source_, ": ");
  }

  void Fail(const YAML::Node& n, const std::string& key, const std::string& expected) {
    if (!error_->ok()) return;
    *error_ = absl::InvalidArgumentError(
        absl::StrCat(Where(n), Join(key), ": expected ", expected, ", got ", Describe(n)));
  }

  YAML::Node node_;
  std::string path_;
  std::string source_;
  bool with_lines_;
  bool merge_maps_;
  absl::Status* error_;
  std::vector<std::string> known_;
  std::set<std::string> taken_;
};

// ---------------------------------------------------------------------------
// YamlWriter: emits every key.

class YamlWriter : public Binder {
 public:
  explicit YamlWriter(YAML::Emitter* out) : out_(*out) {}

  void String(const char* key, std::string* v, const StringRule&) override {
    out_ << YAML::Key << key << YAML::Value;
    EmitString(*v);
  }
  void Int64(const char* key, int64_t* v, const IntRule&) override {
    out_ << YAML::Key << key << YAML::Value << *v;
  }
  void Double(const char* key, double* v, const DoubleRule&) override {
    out_ << YAML::Key << key << YAML::Value << FormatDouble(*v);
  }
  void Bool(const char* key, bool* v) override {
    out_ << YAML::Key << key << YAML::Value << (*v ? "true" : "false");
  }
  void StringList(const char* key, std::vector<std::string>* v) override {
    out_ << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (const auto& s : *v) EmitString(s);
    out_ << YAML::EndSeq;
  }
  void NumberMap(const char* key, std::map<std::string, double>* v, const DoubleRule&) override {
    out_ << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginMap;
    for (const auto& [name, number] : *v) {
      out_ << YAML::Key;
      EmitString(name);
      out_ << YAML::Value << FormatDouble(number);
    }
    out_ << YAML::EndMap;
  }
  void Section(const char* key, const std::function<void(Binder&)>& bind) override {
    out_ << YAML::Key << key << YAML::Value << YAML::BeginMap;
    bind(*this);
    out_ << YAML::EndMap;
  }
  void SectionMap(const char* key, const MapOps& ops) override {
    std::vector<std::string> names = ops.names();
    out_ << YAML::Key << key << YAML::Value;
    if (names.empty()) out_ << YAML::Flow;
    out_ << YAML::BeginMap;
    for (const auto& name : names) {
      out_ << YAML::Key;
      EmitString(name);
      out_ << YAML::Value << YAML::BeginMap;
      ops.bind_entry(name, *this);
      out_ << YAML::EndMap;
    }
    out_ << YAML::EndMap;
  }

 private:
  // Quotes what a reader would otherwise take as null; yaml-cpp quotes the
  // rest (":", "#", leading spaces, ...) as needed.
  void EmitString(const std::string& s) {
    if (s.empty() || YAML::IsNullString(s)) {
      out_ << YAML::DoubleQuoted << s;
    } else {
      out_ << s;
    }
  }

  YAML::Emitter& out_;
};

// ---------------------------------------------------------------------------
// Validator: re-checks every rule on values set in code or by overrides.

class Validator : public Binder {
 public:
  Validator(std::string path, absl::Status* error) : path_(std::move(path)), error_(error) {}

  void String(const char* key, std::string* v, const StringRule& rule) override {
    if (rule.ok && !rule.ok(*v)) Fail(key, rule.expected, Quote(*v));
  }
  void Int64(const char* key, int64_t* v, const IntRule& rule) override {
    if (!rule.Ok(*v)) Fail(key, rule.Expected(), absl::StrCat(*v));
  }
  void Double(const char* key, double* v, const DoubleRule& rule) override {
    if (!rule.Ok(*v)) Fail(key, rule.Expected(), FormatDouble(*v));
  }
  void Bool(const char*, bool*) override {}
  void StringList(const char*, std::vector<std::string>*) override {}
  void NumberMap(const char* key, std::map<std::string, double>* v,
                 const DoubleRule& rule) override {
    for (const auto& [name, number] : *v) {
      if (name.empty()) Fail(key, "non-empty names", "\"\"");
      if (!rule.Ok(number))
        Fail(absl::StrCat(key, ".", name), rule.Expected(), FormatDouble(number));
    }
  }
  void Section(const char* key, const std::function<void(Binder&)>& bind) override {
    Validator child(Join(key), error_);
    bind(child);
  }
  void SectionMap(const char* key, const MapOps& ops) override {
    for (const auto& name : ops.names()) {
      Validator child(Join(absl::StrCat(key, ".", name)), error_);
      ops.bind_entry(name, child);
    }
  }

 private:
  std::string Join(const std::string& key) const {
    return path_.empty() ? key : absl::StrCat(path_, ".", key);
  }
  void Fail(const std::string& key, const std::string& expected, const std::string& got) {
    if (!error_->ok()) return;
    *error_ =
        absl::InvalidArgumentError(absl::StrCat(Join(key), ": expected ", expected, ", got ", got));
  }

  std::string path_;
  absl::Status* error_;
};

// ---------------------------------------------------------------------------
// KeyLister: the reference table.

class KeyLister : public Binder {
 public:
  KeyLister(std::string path, std::vector<ConfigKeyInfo>* out)
      : path_(std::move(path)), out_(out) {}

  void String(const char* key, std::string* v, const StringRule& rule) override {
    Add(key, "string", EmitScalar(*v), rule.expected);
  }
  void Int64(const char* key, int64_t* v, const IntRule& rule) override {
    Add(key, "int", absl::StrCat(*v), rule.Expected());
  }
  void Double(const char* key, double* v, const DoubleRule& rule) override {
    Add(key, "number", FormatDouble(*v), rule.Expected());
  }
  void Bool(const char* key, bool* v) override {
    Add(key, "bool", *v ? "true" : "false", "true or false");
  }
  void StringList(const char* key, std::vector<std::string>* v) override {
    Add(key, "list", Emit([&](YamlWriter& w) { w.StringList("x", v); }), "a list of strings");
  }
  void NumberMap(const char* key, std::map<std::string, double>* v,
                 const DoubleRule& rule) override {
    Add(key, "map", Emit([&](YamlWriter& w) { w.NumberMap("x", v, rule); }),
        absl::StrCat("a map of name: ", rule.Expected()));
  }
  void Section(const char* key, const std::function<void(Binder&)>& bind) override {
    KeyLister child(Join(key), out_);
    bind(child);
  }
  void SectionMap(const char* key, const MapOps& ops) override {
    KeyLister child(Join(absl::StrCat(key, ".<name>")), out_);
    ops.bind_template(child);
  }

 private:
  static std::string EmitScalar(const std::string& s) {
    return Emit([&](YamlWriter& w) {
      std::string copy = s;
      w.String("x", &copy, {});
    });
  }
  // Emits {x: value} and returns the text after "x: ".
  static std::string Emit(const std::function<void(YamlWriter&)>& f) {
    YAML::Emitter out;
    out << YAML::BeginMap;
    YamlWriter w(&out);
    f(w);
    out << YAML::EndMap;
    std::string s = out.c_str();
    return s.size() > 3 ? s.substr(3) : s;
  }
  std::string Join(const std::string& key) const {
    return path_.empty() ? key : absl::StrCat(path_, ".", key);
  }
  void Add(const std::string& key, std::string type, std::string def, std::string expected) {
    out_->push_back({Join(key), std::move(type), std::move(def), std::move(expected)});
  }

  std::string path_;
  std::vector<ConfigKeyInfo>* out_;
};

absl::Status CrossFieldChecks(const RunConfig& c) {
  const TlsSection& tls = c.security.tls;
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return absl::InvalidArgumentError(
        "security.tls: cert_file and key_file must be set together (got only " +
        std::string(tls.cert_file.empty() ? "key_file" : "cert_file") + ")");
  }
  if (tls.require_client_cert && tls.ca_file.empty()) {
    return absl::InvalidArgumentError(
        "security.tls.require_client_cert: true needs security.tls.ca_file (the CA that signs "
        "client certificates)");
  }
  if (tls.require_client_cert && tls.cert_file.empty()) {
    return absl::InvalidArgumentError(
        "security.tls.require_client_cert: true needs security.tls.cert_file and key_file");
  }
  if (c.supervisor.backoff_max_ms < c.supervisor.backoff_initial_ms) {
    return absl::InvalidArgumentError(absl::StrCat(
        "supervisor.backoff_max_ms: expected an integer >= supervisor.backoff_initial_ms (",
        c.supervisor.backoff_initial_ms, "), got ", c.supervisor.backoff_max_ms));
  }
  for (const auto& [name, task] : c.reward.tasks) {
    if (task.weights.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "reward.tasks.", name, ".weights: expected at least one weight, e.g. {accuracy: 1.0}"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::map<std::string, RewardTaskSpec> RewardSection::DefaultTasks() {
  std::map<std::string, RewardTaskSpec> tasks;
  for (const auto& verifier : Verifiers()) tasks[verifier].verifier = verifier;
  return tasks;
}

bool operator==(const RunConfig& a, const RunConfig& b) {
  // Printing is exact (doubles in shortest round-trip form) and covers
  // every field, so equal text means equal configs.
  return ConfigToYaml(a) == ConfigToYaml(b);
}

absl::StatusOr<RunConfig> LoadConfig(const std::string& path,
                                     const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    int err = errno;
    return absl::Status(
        err == ENOENT ? absl::StatusCode::kNotFound : absl::StatusCode::kInvalidArgument,
        absl::StrCat("cannot read config file ", path, ": ", std::strerror(err)));
  }
  std::stringstream text;
  text << in.rdbuf();
  return ParseConfig(text.str(), overrides, path);
}

absl::StatusOr<RunConfig> ParseConfig(const std::string& yaml_text,
                                      const std::vector<std::string>& overrides,
                                      const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ":", e.mark.line + 1, ":",
                                                   e.mark.column + 1, ": malformed YAML: ", e.msg));
  }
  RunConfig config;
  if (root.IsDefined() && !root.IsNull()) {
    if (!root.IsMap()) {
      return absl::InvalidArgumentError(absl::StrCat(
          source,
          ": expected a map of sections (run:, model:, sampling:, ...) at the top level, "
          "got ",
          Describe(root)));
    }
    absl::Status error;
    YamlReader reader(root, "", source, /*with_lines=*/true, /*merge_maps=*/false, &error);
    Bind(reader, config);
    reader.CheckUnknownKeys();
    RETURN_IF_ERROR(error);
  }
  for (const auto& o : overrides) RETURN_IF_ERROR(ApplyOverride(o, &config));
  RETURN_IF_ERROR(Annotate(ValidateConfig(config), source));
  return config;
}

absl::Status ApplyOverride(const std::string& override_text, RunConfig* config) {
  const std::string source = absl::StrCat("--set ", override_text);
  size_t eq = override_text.find('=');
  if (eq == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": expected section.key=value, e.g. sampling.temperature=0.7"));
  }
  std::vector<std::string> keys = absl::StrSplit(override_text.substr(0, eq), '.');
  for (const auto& k : keys) {
    if (k.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": expected a key path like section.key before '=', got \"",
                       override_text.substr(0, eq), "\""));
    }
  }
  YAML::Node value;
  try {
    value = YAML::Load(override_text.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": malformed value (YAML scalar, [list] or {map}): ", e.msg));
  }
  // Nest the value under the key path, then read it like a file in merge
  // mode: the same checks, the same messages.
  for (auto it = keys.rbegin(); it != keys.rend(); ++it) {
    YAML::Node parent(YAML::NodeType::Map);
    parent[*it] = value;
    value = parent;
  }
  absl::Status error;
  YamlReader reader(value, "", source, /*with_lines=*/false, /*merge_maps=*/true, &error);
  Bind(reader, *config);
  reader.CheckUnknownKeys();
  return error;
}

std::string ConfigToYaml(const RunConfig& config) {
  RunConfig copy = config;  // binders take non-const pointers
  YAML::Emitter out;
  out << YAML::BeginMap;
  YamlWriter writer(&out);
  Bind(writer, copy);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

absl::Status ValidateConfig(const RunConfig& config) {
  RunConfig copy = config;
  absl::Status error;
  Validator validator("", &error);
  Bind(validator, copy);
  RETURN_IF_ERROR(error);
  return CrossFieldChecks(config);
}

std::vector<ConfigKeyInfo> ConfigKeys() {
  RunConfig defaults;
  std::vector<ConfigKeyInfo> keys;
  KeyLister lister("", &keys);
  Bind(lister, defaults);
  return keys;
}

}  // namespace cohort
