#include "core/config.h"

#include <cerrno>
#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstring>
#include <functional>
#include <set>
#include <utility>

#include <yaml-cpp/yaml.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/config_binder.h"
#include "core/file.h"
#include "core/status.h"

namespace cohort {
namespace {

using namespace config_internal;  // NOLINT: the binder types are this file's vocabulary

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

  void String(const char* key, std::string* v, const StringRule& rule, const char* help) override {
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

  void Int64(const char* key, int64_t* v, const IntRule& rule, const char* help) override {
    YAML::Node n = Take(key);
    if (!n) return;
    int64_t value;
    if (!n.IsScalar() || !YAML::convert<int64_t>::decode(n, value) || !rule.Ok(value)) {
      return Fail(n, key, rule.Expected());
    }
    *v = value;
  }

  void Double(const char* key, double* v, const DoubleRule& rule, const char* help) override {
    YAML::Node n = Take(key);
    if (!n) return;
    double value;
    if (!ReadNumber(n, &value) || !rule.Ok(value)) return Fail(n, key, rule.Expected());
    *v = value;
  }

  void Bool(const char* key, bool* v, const char* help) override {
    YAML::Node n = Take(key);
    if (!n) return;
    bool value;
    if (!n.IsScalar() || !YAML::convert<bool>::decode(n, value)) {
      return Fail(n, key, "true or false");
    }
    *v = value;
  }

  void StringList(const char* key, std::vector<std::string>* v, const char* help) override {
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

  void NumberMap(const char* key, std::map<std::string, double>* v, const DoubleRule& rule,
                 const char* help) override {
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

  void StringMap(const char* key, std::map<std::string, std::string>* v,
                 const char* help) override {
    YAML::Node n = Take(key);
    if (!n) return;
    if (!n.IsMap() && !n.IsNull()) return Fail(n, key, "a map of name: value");
    std::map<std::string, std::string> value =
        merge_maps_ ? *v : std::map<std::string, std::string>{};
    for (const auto& item : n) {
      std::string name = item.first.IsScalar() ? item.first.Scalar() : "";
      if (name.empty()) return Fail(item.first, key, "a map of name: value");
      if (!item.second.IsScalar()) {
        return Fail(item.second, absl::StrCat(key, ".", name), "a scalar value");
      }
      value[name] = item.second.Scalar();
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

  void SectionList(const char* key, const ListOps& ops) override {
    YAML::Node n = Take(key);
    if (!n) return;
    if (!n.IsSequence() && !n.IsNull()) return Fail(n, key, "a list of maps");
    ops.resize(0);
    if (n.IsNull()) return;
    ops.resize(n.size());
    for (size_t i = 0; i < n.size(); ++i) {
      const YAML::Node item = n[i];
      std::string item_key = absl::StrCat(key, "[", i, "]");
      if (!item.IsMap()) return Fail(item, item_key, "a map");
      YamlReader child(item, Join(item_key), source_, with_lines_, /*merge_maps=*/false, error_);
      ops.bind_item(i, child);
      child.CheckUnknownKeys();
      if (!error_->ok()) return;
    }
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

  void String(const char* key, std::string* v, const StringRule&, const char* help) override {
    out_ << YAML::Key << key << YAML::Value;
    EmitString(*v);
  }
  void Int64(const char* key, int64_t* v, const IntRule&, const char* help) override {
    out_ << YAML::Key << key << YAML::Value << *v;
  }
  void Double(const char* key, double* v, const DoubleRule&, const char* help) override {
    out_ << YAML::Key << key << YAML::Value << FormatDouble(*v);
  }
  void Bool(const char* key, bool* v, const char* help) override {
    out_ << YAML::Key << key << YAML::Value << (*v ? "true" : "false");
  }
  void StringList(const char* key, std::vector<std::string>* v, const char* help) override {
    out_ << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (const auto& s : *v) EmitString(s);
    out_ << YAML::EndSeq;
  }
  void NumberMap(const char* key, std::map<std::string, double>* v, const DoubleRule&,
                 const char* help) override {
    out_ << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginMap;
    for (const auto& [name, number] : *v) {
      out_ << YAML::Key;
      EmitString(name);
      out_ << YAML::Value << FormatDouble(number);
    }
    out_ << YAML::EndMap;
  }
  void StringMap(const char* key, std::map<std::string, std::string>* v,
                 const char* help) override {
    out_ << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginMap;
    for (const auto& [name, text] : *v) {
      out_ << YAML::Key;
      EmitString(name);
      out_ << YAML::Value;
      EmitString(text);
    }
    out_ << YAML::EndMap;
  }
  void Section(const char* key, const std::function<void(Binder&)>& bind) override {
    out_ << YAML::Key << key << YAML::Value << YAML::BeginMap;
    bind(*this);
    out_ << YAML::EndMap;
  }
  void SectionList(const char* key, const ListOps& ops) override {
    out_ << YAML::Key << key << YAML::Value;
    if (ops.size() == 0) out_ << YAML::Flow;
    out_ << YAML::BeginSeq;
    for (size_t i = 0; i < ops.size(); ++i) {
      out_ << YAML::BeginMap;
      ops.bind_item(i, *this);
      out_ << YAML::EndMap;
    }
    out_ << YAML::EndSeq;
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

  void String(const char* key, std::string* v, const StringRule& rule, const char* help) override {
    if (rule.ok && !rule.ok(*v)) Fail(key, rule.expected, Quote(*v));
  }
  void Int64(const char* key, int64_t* v, const IntRule& rule, const char* help) override {
    if (!rule.Ok(*v)) Fail(key, rule.Expected(), absl::StrCat(*v));
  }
  void Double(const char* key, double* v, const DoubleRule& rule, const char* help) override {
    if (!rule.Ok(*v)) Fail(key, rule.Expected(), FormatDouble(*v));
  }
  void Bool(const char*, bool*, const char* help) override {}
  void StringList(const char*, std::vector<std::string>*, const char* help) override {}
  void NumberMap(const char* key, std::map<std::string, double>* v, const DoubleRule& rule,
                 const char* help) override {
    for (const auto& [name, number] : *v) {
      if (name.empty()) Fail(key, "non-empty names", "\"\"");
      if (!rule.Ok(number))
        Fail(absl::StrCat(key, ".", name), rule.Expected(), FormatDouble(number));
    }
  }
  void StringMap(const char*, std::map<std::string, std::string>*, const char* help) override {}
  void Section(const char* key, const std::function<void(Binder&)>& bind) override {
    Validator child(Join(key), error_);
    bind(child);
  }
  void SectionList(const char* key, const ListOps& ops) override {
    for (size_t i = 0; i < ops.size(); ++i) {
      Validator child(Join(absl::StrCat(key, "[", i, "]")), error_);
      ops.bind_item(i, child);
    }
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

  void String(const char* key, std::string* v, const StringRule& rule, const char* help) override {
    Add(key, "string", EmitScalar(*v), rule.expected, help);
  }
  void Int64(const char* key, int64_t* v, const IntRule& rule, const char* help) override {
    Add(key, "int", absl::StrCat(*v), rule.Expected(), help);
  }
  void Double(const char* key, double* v, const DoubleRule& rule, const char* help) override {
    Add(key, "number", FormatDouble(*v), rule.Expected(), help);
  }
  void Bool(const char* key, bool* v, const char* help) override {
    Add(key, "bool", *v ? "true" : "false", "true or false", help);
  }
  void StringList(const char* key, std::vector<std::string>* v, const char* help) override {
    Add(key, "list", Emit([&](YamlWriter& w) { w.StringList("x", v, ""); }), "a list of strings",
        help);
  }
  void NumberMap(const char* key, std::map<std::string, double>* v, const DoubleRule& rule,
                 const char* help) override {
    Add(key, "map", Emit([&](YamlWriter& w) { w.NumberMap("x", v, rule, ""); }),
        absl::StrCat("a map of name: ", rule.Expected()), help);
  }
  void StringMap(const char* key, std::map<std::string, std::string>* v,
                 const char* help) override {
    Add(key, "map", Emit([&](YamlWriter& w) { w.StringMap("x", v, ""); }), "a map of name: value",
        help);
  }
  void Section(const char* key, const std::function<void(Binder&)>& bind) override {
    KeyLister child(Join(key), out_);
    bind(child);
  }
  void SectionList(const char* key, const ListOps& ops) override {
    KeyLister child(Join(absl::StrCat(key, "[]")), out_);
    ops.bind_template(child);
  }
  void SectionMap(const char* key, const MapOps& ops) override {
    KeyLister child(Join(absl::StrCat(key, ".<name>")), out_);
    ops.bind_template(child);
  }

 private:
  static std::string EmitScalar(const std::string& s) {
    return Emit([&](YamlWriter& w) {
      std::string copy = s;
      w.String("x", &copy, {}, "");
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
  void Add(const std::string& key, std::string type, std::string def, std::string expected,
           const char* help) {
    out_->push_back({Join(key), std::move(type), std::move(def), std::move(expected), help});
  }

  std::string path_;
  std::vector<ConfigKeyInfo>* out_;
};

}  // namespace

bool operator==(const RunConfig& a, const RunConfig& b) {
  // Printing is exact (doubles in shortest round-trip form) and covers
  // every field, so equal text means equal configs.
  return ConfigToYaml(a) == ConfigToYaml(b);
}

absl::StatusOr<RunConfig> LoadConfig(const std::string& path,
                                     const std::vector<std::string>& overrides) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    // NOT_FOUND stays NOT_FOUND; anything else is a bad --config argument.
    return absl::Status(text.status().code() == absl::StatusCode::kNotFound
                            ? absl::StatusCode::kNotFound
                            : absl::StatusCode::kInvalidArgument,
                        absl::StrCat("cannot read config file ",
                                     absl::StripPrefix(text.status().message(), "cannot read ")));
  }
  return ParseConfig(*text, overrides, path);
}

absl::StatusOr<RunConfig> LoadConfigOrDefaults(const std::string& path,
                                               const std::vector<std::string>& overrides) {
  return path.empty() ? ParseConfig("", overrides, "<defaults>") : LoadConfig(path, overrides);
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

std::string ConfigKeysMarkdown() {
  auto cell = [](const std::string& text) { return absl::StrReplaceAll(text, {{"|", "\\|"}}); };
  std::string out = "| key | type | default | allowed | meaning |\n|---|---|---|---|---|\n";
  for (const ConfigKeyInfo& key : ConfigKeys()) {
    absl::StrAppend(&out, "| `", key.path, "` | ", key.type, " | `", cell(key.default_value),
                    "` | ", cell(key.expected), " | ", cell(key.help), " |\n");
  }
  return out;
}

}  // namespace cohort
