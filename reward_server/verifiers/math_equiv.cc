#include "reward_server/verifiers/math_equiv.h"

#include <cmath>
#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "reward_server/verifiers/expr.h"
#include "reward_server/verifiers/extract.h"
#include "reward_server/verifiers/latex_normalize.h"

namespace cohort::reward {
namespace {

using expr::Complex;
using expr::Expression;

constexpr int kMaxAnalyzeDepth = 6;
constexpr std::size_t kMaxItems = 64;
constexpr int kMaxPlusMinus = 3;
constexpr int kPoints = 6;

bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

std::vector<Complex> PointValues(const Expression& e, int point);

// What an answer is, structurally.
struct Value {
  enum class Kind {
    kScalar,    // one expression (number or function of variables)
    kEquation,  // lhs = rhs with a non-trivial lhs, held as lhs - rhs
    kText,      // words that are not math
    kTuple,     // ordered, bracketed: (a, b), [a, b), intervals
    kList,      // bare a, b, c: unordered (roots, solutions)
    kSet,       // \{a, b\}: unordered; also the expansion of a \pm b
    kUnion,     // A \cup B: unordered
    kMatrix,    // pmatrix/bmatrix: rows x cols, row-major items
  };
  Kind kind = Kind::kText;
  std::string key;  // normalized text without white space
  std::optional<Expression> expr;
  // The expression's values, computed once: at the kPoints evaluation
  // points when it has variables, else points[0] is its value.
  std::array<Complex, kPoints> points;
  bool percent = false;
  std::string int_text;  // canonical integer when the scalar is one literal
  std::string open, close;
  bool from_pm = false;
  std::vector<Value> items;
  int rows = 0, cols = 0;
};

std::string StripSpaces(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c != ' ') out.push_back(c);
  }
  return out;
}

// Brackets of any kind balance (intervals mix them: "(1,2]").
bool Balanced(std::string_view s) {
  int depth = 0;
  for (char c : s) {
    if (c == '(' || c == '[' || c == '{') ++depth;
    if (c == ')' || c == ']' || c == '}') {
      if (--depth < 0) return false;
    }
  }
  return depth == 0;
}

// Splits at `sep` outside any brackets. Returns {s} when there is none.
std::vector<std::string_view> SplitTopLevel(std::string_view s, std::string_view sep) {
  std::vector<std::string_view> parts;
  int depth = 0;
  std::size_t start = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '(' || c == '[' || c == '{') ++depth;
    if (c == ')' || c == ']' || c == '}') --depth;
    if (depth == 0 && s.compare(i, sep.size(), sep) == 0) {
      if (sep[0] == '\\' && i + sep.size() < s.size() && IsAlpha(s[i + sep.size()])) {
        continue;  // "\in" inside "\infty"
      }
      parts.push_back(s.substr(start, i - start));
      start = i + sep.size();
      i = start - 1;
    }
  }
  parts.push_back(s.substr(start));
  return parts;
}

// True when every comma is a thousands separator: 1,000 / 11,111,100.5
bool HasOnlyThousandsCommas(std::string_view s) {
  bool any = false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != ',') continue;
    any = true;
    std::size_t left = i;
    while (left > 0 && IsDigit(s[left - 1])) --left;
    std::size_t lead = i - left;
    if (lead < 1 || lead > 3) return false;
    // The digits before may themselves follow a thousands comma.
    if (left > 0 && (s[left - 1] == '.' || IsAlpha(s[left - 1]))) return false;
    if (i + 4 > s.size()) return false;
    for (std::size_t k = i + 1; k <= i + 3; ++k) {
      if (!IsDigit(s[k])) return false;
    }
    if (i + 4 < s.size() && IsDigit(s[i + 4])) return false;
  }
  return any;
}

bool IsSimpleName(std::string_view s) {
  s = TrimAscii(s);
  if (s.empty()) return false;
  std::size_t i = 0;
  if (IsAlpha(s[0])) {
    i = 1;
  } else if (s[0] == '\\') {
    i = 1;
    while (i < s.size() && IsAlpha(s[i])) ++i;
    if (i == 1) return false;
  } else {
    return false;
  }
  if (i == s.size()) return true;
  if (s[i] == '_') {  // x_1, a_{n}
    std::string_view sub = s.substr(i + 1);
    if (sub.size() == 1 && (IsAlpha(sub[0]) || IsDigit(sub[0]))) return true;
    if (sub.size() >= 3 && sub.front() == '{' && sub.back() == '}') {
      for (char c : sub.substr(1, sub.size() - 2)) {
        if (!IsAlpha(c) && !IsDigit(c)) return false;
      }
      return true;
    }
    return false;
  }
  // f(x)
  std::string_view rest = s.substr(i);
  return rest.size() >= 3 && rest.front() == '(' && rest.back() == ')' &&
         rest.find(')') == rest.size() - 1;
}

bool IsKnownWord(std::string_view w) {
  static constexpr std::string_view kWords[] = {
      "sqrt",   "sin", "cos", "tan", "cot",   "sec",  "csc", "arcsin",  "arccos",
      "arctan", "log", "exp", "pi",  "infty", "frac", "inf", "infinity"};
  for (std::string_view k : kWords) {
    if (k == w) return true;
  }
  return false;
}

bool IsShortUnit(std::string_view w) {
  static constexpr std::string_view kUnits[] = {"cm", "mm", "km", "ft", "in", "yd", "mi",
                                                "kg", "mg", "ml", "hr", "oz", "lb", "pt",
                                                "ms", "sq", "mL", "kL", "ha"};
  for (std::string_view k : kUnits) {
    if (k == w) return true;
  }
  return false;
}

// Removes trailing unit words ("5.4 cents", "864 inches^2", "15 cm^2").
void StripUnits(std::string* s) {
  for (int round = 0; round < 4; ++round) {
    std::string_view v = TrimAscii(*s);
    std::size_t end = v.size();
    // optional ^2 / ^{2}
    std::size_t j = end;
    if (j > 0 && v[j - 1] == '}') {
      std::size_t k = v.rfind("^{", j);
      if (k != std::string_view::npos) j = k;
    } else if (j >= 2 && IsDigit(v[j - 1]) && v[j - 2] == '^') {
      j -= 2;
    }
    while (j > 0 && v[j - 1] == ' ') --j;
    while (j > 0 && v[j - 1] == '.') --j;
    std::size_t dot_end = j;
    while (j > 0 && IsAlpha(v[j - 1])) --j;
    std::string_view word = v.substr(j, dot_end - j);
    if (word.empty()) return;
    if (j > 0 && v[j - 1] == '\\') return;  // a command
    if (j > 0 && v[j - 1] != ' ' && !IsDigit(v[j - 1])) return;
    bool unit = (word.size() >= 3 && !IsKnownWord(word)) || IsShortUnit(word);
    if (!unit) return;
    std::string_view rest = TrimAscii(v.substr(0, j));
    bool has_digit = false;
    for (char c : rest) has_digit |= IsDigit(c);
    if (!has_digit) return;
    *s = std::string(rest);
  }
}

std::string CanonicalInteger(std::string_view s) {
  bool neg = false;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    neg = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s.empty()) return "";
  for (char c : s) {
    if (!IsDigit(c)) return "";
  }
  while (s.size() > 1 && s[0] == '0') s.remove_prefix(1);
  if (s == "0") neg = false;
  return (neg ? "-" : "") + std::string(s);
}

// Replaces the first \pm (or \mp) with + and with -.
bool ExpandPlusMinus(const std::string& s, std::vector<std::string>* out, int budget) {
  std::size_t p = s.find("\\pm");
  std::size_t m = s.find("\\mp");
  std::size_t at = std::min(p, m);
  if (at == std::string::npos) {
    out->push_back(s);
    return true;
  }
  if (budget == 0) return false;
  bool minus_first = at == m;
  std::string plus = s.substr(0, at) + (minus_first ? "-" : "+") + s.substr(at + 3);
  std::string minus = s.substr(0, at) + (minus_first ? "+" : "-") + s.substr(at + 3);
  return ExpandPlusMinus(plus, out, budget - 1) && ExpandPlusMinus(minus, out, budget - 1);
}

std::optional<Value> Analyze(std::string_view raw, int depth, std::string* why);

bool AddItems(const std::vector<std::string_view>& parts, int depth, bool flatten_pm, Value* v,
              std::string* why) {
  if (parts.size() > kMaxItems) {
    *why = "too many elements";
    return false;
  }
  for (std::string_view part : parts) {
    auto item = Analyze(part, depth + 1, why);
    if (!item) return false;
    if (flatten_pm && item->kind == Value::Kind::kSet && item->from_pm) {
      for (Value& sub : item->items) v->items.push_back(std::move(sub));
    } else {
      v->items.push_back(std::move(*item));
    }
    if (v->items.size() > kMaxItems) {
      *why = "too many elements";
      return false;
    }
  }
  return true;
}

std::optional<Value> AnalyzeMatrix(std::string_view s, int depth, std::string* why) {
  // s = \begin{env} ... \end{env}
  std::size_t close = s.find('}');
  if (close == std::string_view::npos) return std::nullopt;
  std::string_view env = s.substr(7, close - 7);
  if (env != "pmatrix" && env != "bmatrix" && env != "matrix" && env != "vmatrix" &&
      env != "Bmatrix" && env != "smallmatrix" && env != "array") {
    return std::nullopt;
  }
  std::string end = "\\end{" + std::string(env) + "}";
  if (s.size() < close + 1 + end.size() || s.substr(s.size() - end.size()) != end) {
    return std::nullopt;
  }
  std::string_view body = TrimAscii(s.substr(close + 1, s.size() - end.size() - close - 1));
  if (env == "array" && !body.empty() && body[0] == '{') {  // column spec
    std::size_t spec_end = body.find('}');
    if (spec_end == std::string_view::npos) return std::nullopt;
    body = TrimAscii(body.substr(spec_end + 1));
  }
  Value v;
  v.kind = Value::Kind::kMatrix;
  v.open = env;
  std::vector<std::string_view> rows = SplitTopLevel(body, "\\\\");
  while (!rows.empty() && TrimAscii(rows.back()).empty()) rows.pop_back();
  if (rows.empty() || rows.size() > kMaxItems) {
    *why = "bad matrix";
    return std::nullopt;
  }
  for (std::string_view row : rows) {
    std::vector<std::string_view> cells = SplitTopLevel(row, "&");
    if (v.cols == 0) v.cols = static_cast<int>(cells.size());
    if (static_cast<int>(cells.size()) != v.cols || v.items.size() + cells.size() > kMaxItems) {
      *why = "ragged or too large matrix";
      return std::nullopt;
    }
    if (!AddItems(cells, depth, false, &v, why)) return std::nullopt;
  }
  v.rows = static_cast<int>(rows.size());
  return v;
}

void FillPoints(Value* v) {
  const Expression& e = *v->expr;
  if (!e.has_variables()) {
    v->points[0] = e.Evaluate({});
    return;
  }
  for (int p = 0; p < kPoints; ++p) v->points[p] = e.Evaluate(PointValues(e, p));
}

std::optional<Value> AnalyzeScalar(std::string s, int depth, std::string* why) {
  Value v;
  v.kind = Value::Kind::kScalar;
  std::string_view t = TrimAscii(s);
  if (!t.empty() && t.back() == '%') {
    v.percent = true;
    t.remove_suffix(1);
  }
  std::string body(TrimAscii(t));
  StripUnits(&body);
  if (body.empty()) {
    *why = "empty answer";
    return std::nullopt;
  }
  v.key = StripSpaces(body) + (v.percent ? "%" : "");
  if (body.find("\\pm") != std::string::npos || body.find("\\mp") != std::string::npos) {
    std::vector<std::string> variants;
    if (!ExpandPlusMinus(body, &variants, kMaxPlusMinus)) {
      *why = "too many \\pm";
      return std::nullopt;
    }
    Value set;
    set.kind = Value::Kind::kSet;
    set.from_pm = true;
    set.key = v.key;
    for (const std::string& var : variants) {
      auto item = AnalyzeScalar(var + (v.percent ? "%" : ""), depth + 1, why);
      if (!item) return std::nullopt;
      set.items.push_back(std::move(*item));
    }
    return set;
  }
  v.int_text = CanonicalInteger(StripSpaces(body));
  std::string error;
  v.expr = Expression::Parse(body, &error);
  if (v.expr) FillPoints(&v);
  if (!v.expr) {
    bool alnum = false;
    for (char c : body) alnum |= IsAlpha(c) || IsDigit(c);
    if (!alnum) {
      *why = "not an answer: " + error;
      return std::nullopt;
    }
    v.kind = Value::Kind::kText;
    v.key.clear();
    for (char c : body) {
      if (c == ' ' || c == '{' || c == '}') continue;
      v.key.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c));
    }
  }
  return v;
}

std::optional<Value> Analyze(std::string_view raw, int depth, std::string* why) {
  if (depth > kMaxAnalyzeDepth) {
    *why = "answer nested too deeply";
    return std::nullopt;
  }
  std::string_view s = TrimAscii(raw);
  if (s.empty()) {
    *why = "empty answer";
    return std::nullopt;
  }
  if (!Balanced(s)) {
    *why = "unbalanced brackets";
    return std::nullopt;
  }
  std::string key = StripSpaces(s);

  // Matrices, also inside \left( ... \right) (an array environment).
  std::string_view m_text = s;
  if (m_text.size() > 2 && (m_text[0] == '(' || m_text[0] == '[') &&
      (m_text.back() == ')' || m_text.back() == ']')) {
    std::string_view inner = TrimAscii(m_text.substr(1, m_text.size() - 2));
    if (inner.substr(0, 7) == "\\begin{" && inner.back() == '}') m_text = inner;
  }
  if (m_text.substr(0, 7) == "\\begin{") {
    std::string matrix_error;
    if (auto m = AnalyzeMatrix(m_text, depth, &matrix_error)) {
      m->key = key;
      return m;
    }
    if (!matrix_error.empty()) {  // a matrix environment, but malformed
      *why = matrix_error;
      return std::nullopt;
    }
  }

  // Unions of intervals.
  if (s.find("\\cup") != std::string_view::npos) {
    std::vector<std::string_view> parts = SplitTopLevel(s, "\\cup");
    if (parts.size() > 1) {
      Value v;
      v.kind = Value::Kind::kUnion;
      v.key = key;
      if (!AddItems(parts, depth, false, &v, why)) return std::nullopt;
      return v;
    }
  }

  // Thousands separators: "1,000" is one number when no brackets are around.
  std::string flat;
  if (s.find(',') != std::string_view::npos &&
      s.find_first_of("()[]{}") == std::string_view::npos && HasOnlyThousandsCommas(s)) {
    for (char c : s) {
      if (c != ',') flat.push_back(c);
    }
    s = flat;
  }

  // Bracketed tuples, intervals and sets.
  bool esc_open = s.substr(0, 2) == "\\{";
  char first = s[0];
  if (esc_open || first == '(' || first == '[' || first == '{') {
    // Find the closer that matches the first opener.
    int d = 0;
    std::size_t match = std::string_view::npos;
    for (std::size_t i = 0; i < s.size(); ++i) {
      char c = s[i];
      if (c == '(' || c == '[' || c == '{') ++d;
      if (c == ')' || c == ']' || c == '}') {
        if (--d == 0) {
          match = i;
          break;
        }
      }
    }
    if (match == s.size() - 1) {
      std::size_t open_len = esc_open ? 2 : 1;
      bool esc_close = esc_open && match >= 1 && s[match - 1] == '\\';
      std::size_t close_len = esc_close ? 2 : 1;
      if (match + 1 >= open_len + close_len) {
        std::string_view inner = s.substr(open_len, match + 1 - close_len - open_len);
        std::vector<std::string_view> parts = SplitTopLevel(inner, ",");
        bool is_set = first == '{' || esc_open;
        if (parts.size() > 1 || esc_open) {
          Value v;
          v.kind = is_set ? Value::Kind::kSet : Value::Kind::kTuple;
          v.key = key;
          v.open = std::string(1, first);
          v.close = std::string(1, s[match]);
          if (!AddItems(parts, depth, is_set, &v, why)) return std::nullopt;
          return v;
        }
      }
    }
  }

  // Bare lists: "3, 5, 7", "1,-2".
  {
    std::vector<std::string_view> parts = SplitTopLevel(s, ",");
    if (parts.size() == 1) parts = SplitTopLevel(s, ";");
    if (parts.size() > 1) {
      Value v;
      v.kind = Value::Kind::kList;
      v.key = key;
      if (!AddItems(parts, depth, true, &v, why)) return std::nullopt;
      return v;
    }
  }

  // "x = 5", "y = 2x + 3", "x \in [-2, 7]"; equations otherwise.
  {
    std::vector<std::string_view> parts = SplitTopLevel(s, "=");
    if (parts.size() == 1) parts = SplitTopLevel(s, "\\in");
    if (parts.size() >= 2) {
      bool all_names = true;
      for (std::size_t k = 0; k + 1 < parts.size(); ++k) {
        all_names &= IsSimpleName(parts[k]);
      }
      // "x = 5", "x = y = 5": the value after the names. Chains such as
      // "x = 2 or x = 3" are left to the text comparison below.
      if (all_names) return Analyze(parts.back(), depth + 1, why);
      if (parts.size() == 2 && s.find('=') != std::string_view::npos) {
        std::string diff = "(" + std::string(parts[0]) + ")-(" + std::string(parts[1]) + ")";
        std::string error;
        auto e = Expression::Parse(diff, &error);
        if (e) {
          Value v;
          v.kind = Value::Kind::kEquation;
          v.key = key;
          v.expr = std::move(e);
          FillPoints(&v);
          return v;
        }
      }
    }
  }

  auto v = AnalyzeScalar(std::string(s), depth, why);
  if (v && v->kind != Value::Kind::kText && !v->from_pm) v->key = key;
  return v;
}

// Deterministic pseudo-random evaluation points per variable name.
double PointValue(std::string_view name, int point) {
  std::uint64_t h = 1469598103934665603ULL;
  for (char c : name) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
  h ^= static_cast<std::uint64_t>(point + 1) * 0x9E3779B97F4A7C15ULL;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  double u = static_cast<double>(h >> 11) / static_cast<double>(1ULL << 53);
  double mag = 0.35 + 1.9 * u;         // (0.35, 2.25)
  return point % 3 == 2 ? -mag : mag;  // a third of the points negative
}

std::vector<Complex> PointValues(const Expression& e, int point) {
  std::vector<Complex> vals;
  vals.reserve(e.variables().size());
  for (const std::string& name : e.variables()) {
    vals.emplace_back(PointValue(name, point), 0.0);
  }
  return vals;
}

bool Finite(Complex z) { return std::isfinite(z.real()) && std::isfinite(z.imag()); }

bool Close(Complex a, Complex b) {
  if (!Finite(a) || !Finite(b)) {
    if (std::isnan(a.real()) || std::isnan(b.real()) || std::isnan(a.imag()) ||
        std::isnan(b.imag())) {
      return false;
    }
    return std::isinf(a.real()) && a.real() == b.real() && std::abs(a.imag()) < 1e-9 &&
           std::abs(b.imag()) < 1e-9;
  }
  double scale = std::max(std::abs(a), std::abs(b));
  return std::abs(a - b) <= kAbsoluteTolerance + kRelativeTolerance * scale;
}

bool ScalarEqual(const Value& a, const Value& b) {
  if (!a.int_text.empty() && !b.int_text.empty() && a.percent == b.percent) {
    return a.int_text == b.int_text;
  }
  const Expression& ea = *a.expr;
  const Expression& eb = *b.expr;
  if (!ea.has_variables() && !eb.has_variables()) {
    Complex va = a.points[0];
    Complex vb = b.points[0];
    if (a.percent == b.percent) return Close(va, vb);
    // One side has a percent sign: 50% matches 50 and 0.5.
    if (Close(va, vb)) return true;
    return a.percent ? Close(va / 100.0, vb) : Close(va, vb / 100.0);
  }
  if (a.percent != b.percent) return false;
  int valid = 0;
  for (int p = 0; p < kPoints; ++p) {
    // A constant side has the same value at every point.
    Complex va = ea.has_variables() ? a.points[p] : a.points[0];
    Complex vb = eb.has_variables() ? b.points[p] : b.points[0];
    bool fa = Finite(va);
    bool fb = Finite(vb);
    if (!fa && !fb) continue;
    if (fa != fb || !Close(va, vb)) return false;
    ++valid;
  }
  return valid >= 2;
}

// Equations are the same when lhs - rhs agree up to a non-zero factor.
bool EquationEqual(const Value& a, const Value& b) {
  std::optional<Complex> ratio;
  int valid = 0;
  for (int p = 0; p < kPoints; ++p) {
    Complex va = a.expr->has_variables() ? a.points[p] : a.points[0];
    Complex vb = b.expr->has_variables() ? b.points[p] : b.points[0];
    if (!Finite(va) || !Finite(vb)) continue;
    bool za = std::abs(va) < 1e-12;
    bool zb = std::abs(vb) < 1e-12;
    if (za || zb) {
      if (za != zb) return false;
      continue;
    }
    Complex r = vb / va;
    if (ratio && !Close(*ratio, r)) return false;
    ratio = r;
    ++valid;
  }
  return valid >= 2;
}

bool Equal(const Value& a, const Value& b);

bool OrderedEqual(const std::vector<Value>& a, const std::vector<Value>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t k = 0; k < a.size(); ++k) {
    if (!Equal(a[k], b[k])) return false;
  }
  return true;
}

bool UnorderedEqual(const std::vector<Value>& a, const std::vector<Value>& b) {
  if (a.size() != b.size()) return false;
  std::vector<bool> used(b.size(), false);
  for (const Value& x : a) {
    bool found = false;
    for (std::size_t k = 0; k < b.size(); ++k) {
      if (!used[k] && Equal(x, b[k])) {
        used[k] = true;
        found = true;
        break;
      }
    }
    if (!found) return false;
  }
  return true;
}

bool IsParenTuple(const Value& v) {
  return v.kind == Value::Kind::kTuple && v.open == "(" && v.close == ")";
}
bool IsVector(const Value& v) {
  return v.kind == Value::Kind::kMatrix && (v.rows == 1 || v.cols == 1);
}

bool Equal(const Value& a, const Value& b) {
  using K = Value::Kind;
  if (a.key == b.key && a.kind == b.kind) return true;
  if (a.kind == K::kScalar && b.kind == K::kScalar) return ScalarEqual(a, b);
  if (a.kind == K::kEquation && b.kind == K::kEquation) return EquationEqual(a, b);
  if (a.kind == K::kText || b.kind == K::kText) {
    return a.kind == b.kind && a.key == b.key;
  }
  if (a.kind == K::kTuple && b.kind == K::kTuple) {
    return a.open == b.open && a.close == b.close && OrderedEqual(a.items, b.items);
  }
  if ((a.kind == K::kList && IsParenTuple(b)) || (b.kind == K::kList && IsParenTuple(a))) {
    return OrderedEqual(a.items, b.items);
  }
  auto unordered = [](K k) { return k == K::kList || k == K::kSet || k == K::kUnion; };
  if (unordered(a.kind) && unordered(b.kind)) {
    if ((a.kind == K::kUnion) != (b.kind == K::kUnion)) return false;
    return UnorderedEqual(a.items, b.items);
  }
  if (a.kind == K::kMatrix && b.kind == K::kMatrix) {
    return a.rows == b.rows && a.cols == b.cols && OrderedEqual(a.items, b.items);
  }
  if ((IsVector(a) && (IsParenTuple(b) || b.kind == K::kList)) ||
      (IsVector(b) && (IsParenTuple(a) || a.kind == K::kList))) {
    return OrderedEqual(a.items, b.items);
  }
  return false;
}

std::optional<Value> AnalyzeAnswer(std::string_view answer, std::string* why) {
  if (answer.size() > kMaxAnswerBytes) {
    *why = "answer longer than " + std::to_string(kMaxAnswerBytes) + " bytes";
    return std::nullopt;
  }
  std::string normalized = NormalizeLatex(answer);
  return Analyze(normalized, 0, why);
}

}  // namespace

bool ReferenceParses(std::string_view reference, std::string* why) {
  std::string reason;
  bool ok = AnalyzeAnswer(reference, &reason).has_value();
  if (why) *why = reason;
  return ok;
}

EquivalenceResult CompareAnswers(std::string_view predicted, std::string_view reference) {
  std::string why;
  auto ref = AnalyzeAnswer(reference, &why);
  if (!ref) {
    return {Equivalence::kInvalidReference, "reference answer: " + why};
  }
  why.clear();
  auto pred = AnalyzeAnswer(predicted, &why);
  if (!pred) return {Equivalence::kDifferent, "predicted answer: " + why};
  if (Equal(*pred, *ref)) return {Equivalence::kEqual, ""};
  return {Equivalence::kDifferent, "not equivalent to the reference"};
}

bool MathEquivalent(std::string_view predicted, std::string_view reference) {
  return CompareAnswers(predicted, reference).verdict == Equivalence::kEqual;
}

}  // namespace cohort::reward
