#include "reward_server/verifiers/math_equiv.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <vector>

#include "reward_server/verifiers/answer_value.h"
#include "reward_server/verifiers/extract.h"
#include "reward_server/verifiers/latex_normalize.h"

namespace cohort::reward {
namespace answer {

bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

std::string StripSpaces(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c != ' ') out.push_back(c);
  }
  return out;
}

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

namespace {

constexpr int kMaxPlusMinus = 3;

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

// "1,5" (one comma between digits, nothing else but a sign).
bool IsDecimalCommaNumber(std::string_view s) {
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) s.remove_prefix(1);
  std::size_t comma = s.find(',');
  if (comma == std::string_view::npos || comma == 0 || comma + 1 == s.size()) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i != comma && !IsDigit(s[i])) return false;
  }
  return true;
}

// "1 000 000" / "12 345.5": groups of three digits after a space.
bool IsSpaceGroupedNumber(std::string_view s) {
  std::size_t i = 0;
  if (i < s.size() && s[i] == '-') ++i;
  std::size_t lead = i;
  while (i < s.size() && IsDigit(s[i])) ++i;
  if (i - lead < 1 || i - lead > 3) return false;
  int groups = 0;
  while (i < s.size() && s[i] == ' ') {
    ++i;
    std::size_t g = i;
    while (i < s.size() && IsDigit(s[i])) ++i;
    if (i - g != 3) return false;
    ++groups;
  }
  if (i < s.size() && s[i] == '.') {
    ++i;
    std::size_t f = i;
    while (i < s.size() && IsDigit(s[i])) ++i;
    if (i == f) return false;
  }
  return groups > 0 && i == s.size();
}

// Letters and digits only.
bool IsAlnumWord(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!IsAlpha(c) && !IsDigit(c)) return false;
  }
  return true;
}

constexpr std::string_view kDecorations[] = {
    "hat",   "bar",       "overline",       "vec",       "tilde", "widehat", "dot",
    "ddot",  "widetilde", "overrightarrow", "underline", "check", "breve",   "mathring",
    "acute", "grave"};
constexpr std::string_view kLabelFunctions[] = {"sin",    "cos",    "tan",    "cot", "sec", "csc",
                                                "arcsin", "arccos", "arctan", "log", "ln",  "exp"};

// One name: a letter or a Greek command, or a decorated name (\hat{x},
// \overline{AB}), with an optional subscript, primes and a ^*.
std::size_t NameAt(std::string_view s, std::size_t i, int depth = 0) {
  if (i >= s.size() || depth > 4) return 0;
  std::size_t j = i;
  if (IsAlpha(s[j])) {
    ++j;
  } else if (s[j] == '\\') {
    std::size_t k = j + 1;
    while (k < s.size() && IsAlpha(s[k])) ++k;
    std::string_view cmd = s.substr(j + 1, k - j - 1);
    if (cmd.empty()) return 0;
    bool decoration = false;
    for (std::string_view d : kDecorations) decoration |= d == cmd;
    for (std::string_view f : kLabelFunctions) {
      if (f == cmd) return 0;
    }
    if (decoration) {
      while (k < s.size() && s[k] == ' ') ++k;
      if (k >= s.size()) return 0;
      if (s[k] == '{') {
        std::size_t inner = k + 1;
        std::size_t end = inner;
        while (end < s.size() && s[end] != '}') ++end;
        if (end >= s.size() || end == inner) return 0;
        std::size_t p = inner;
        while (p < end) {
          std::size_t n = NameAt(s, p, depth + 1);
          if (n == 0) return 0;
          p += n;
        }
        j = end + 1;
      } else {
        std::size_t n = NameAt(s, k, depth + 1);
        if (n == 0) return 0;
        j = k + n;
      }
    } else {
      j = k;  // \alpha, \theta
    }
  } else {
    return 0;
  }
  if (j < s.size() && s[j] == '_') {
    ++j;
    if (j < s.size() && s[j] == '{') {
      std::size_t end = s.find('}', j);
      if (end == std::string_view::npos || !IsAlnumWord(s.substr(j + 1, end - j - 1))) return 0;
      j = end + 1;
    } else if (j < s.size() && (IsAlpha(s[j]) || IsDigit(s[j]))) {
      ++j;
    } else {
      return 0;
    }
  }
  while (j < s.size() && s[j] == '\'') ++j;
  if (s.compare(j, 2, "^*") == 0) j += 2;
  return j - i;
}

// One to four juxtaposed names ("x", "AB", "x_1", "\hat{y}").
bool IsNames(std::string_view s, int max_names = 4) {
  s = TrimAscii(s);
  if (s.empty()) return false;
  std::size_t i = 0;
  int names = 0;
  while (i < s.size()) {
    std::size_t n = NameAt(s, i);
    if (n == 0) return false;
    i += n;
    if (++names > max_names) return false;
  }
  return true;
}

// A name with an argument list of names: f(x), P(A), g(x, y).
bool IsFunctionOfNames(std::string_view s) {
  s = TrimAscii(s);
  std::size_t open = s.find('(');
  if (open == std::string_view::npos || open == 0 || s.back() != ')') return false;
  if (!IsNames(s.substr(0, open), 1)) return false;
  std::string_view args = s.substr(open + 1, s.size() - open - 2);
  for (std::string_view a : SplitTopLevel(args, ",")) {
    if (!IsNames(a, 2)) return false;
  }
  return true;
}

// A left-hand side that labels a value: x, x_1, \hat{x}, x', AB, f(x),
// (p, q), |x|, a/b, \frac{a}{b}, AB:BC, \sin x, \cos(\theta). For a known
// function applied to a name, *function_label is set to its text.
bool IsLabel(std::string_view s, std::string* function_label) {
  s = TrimAscii(s);
  if (s.empty()) return false;
  if (IsNames(s) || IsFunctionOfNames(s)) return true;
  if (s.size() >= 3 && s.front() == '(' && s.back() == ')') {
    auto parts = SplitTopLevel(s.substr(1, s.size() - 2), ",");
    if (parts.size() < 2) return false;
    for (std::string_view p : parts) {
      if (!IsNames(p)) return false;
    }
    return true;
  }
  if (s.size() >= 3 && s.front() == '|' && s.back() == '|') {
    return IsNames(s.substr(1, s.size() - 2));
  }
  if (s.substr(0, 5) == "\\frac") {
    std::string_view rest = TrimAscii(s.substr(5));
    if (rest.empty() || rest[0] != '{') return false;
    std::size_t mid = rest.find('}');
    if (mid == std::string_view::npos || mid + 1 >= rest.size() || rest[mid + 1] != '{' ||
        rest.back() != '}') {
      return false;
    }
    return IsNames(rest.substr(1, mid - 1)) && IsNames(rest.substr(mid + 2, rest.size() - mid - 3));
  }
  for (char sep : {'/', ':'}) {
    std::size_t at = s.find(sep);
    if (at != std::string_view::npos && s.find(sep, at + 1) == std::string_view::npos) {
      return IsNames(s.substr(0, at)) && IsNames(s.substr(at + 1));
    }
  }
  if (s[0] == '\\') {
    std::size_t k = 1;
    while (k < s.size() && IsAlpha(s[k])) ++k;
    std::string_view cmd = s.substr(1, k - 1);
    bool known = false;
    for (std::string_view f : kLabelFunctions) known |= f == cmd;
    if (!known) return false;
    std::string_view arg = TrimAscii(s.substr(k));
    if (arg.size() >= 2 && arg.front() == '(' && arg.back() == ')') {
      arg = arg.substr(1, arg.size() - 2);
    }
    if (!IsNames(arg, 2)) return false;
    if (function_label) *function_label = "\\" + std::string(cmd) + StripSpaces(arg);
    return true;
  }
  return false;
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
                                                "ms", "sq", "mL", "kL", "ha", "dm"};
  for (std::string_view k : kUnits) {
    if (k == w) return true;
  }
  return false;
}

// Removes trailing unit words ("5.4 cents", "864 inches^2", "15 cm^2",
// "5 m^2" when the unit stands apart).
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
    bool spaced_meter =
        word == "m" && j > 0 && v[j - 1] == ' ' && (dot_end == v.size() || v[dot_end] == ' ');
    bool unit = (word.size() >= 3 && !IsKnownWord(word)) || IsShortUnit(word) || spaced_meter;
    if (!unit) return;
    std::string_view rest = TrimAscii(v.substr(0, j));
    bool has_digit = false;
    for (char c : rest) has_digit |= IsDigit(c);
    if (!has_digit || (spaced_meter && !IsDigit(rest.back()))) return;
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

bool AddItems(const std::vector<std::string_view>& parts, int depth, bool flatten_pm,
              const MathOptions& opt, Value* v, std::string* why) {
  if (parts.size() > kMaxItems) {
    *why = "too many elements";
    return false;
  }
  for (std::string_view part : parts) {
    auto item = Analyze(part, depth + 1, opt, why);
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

std::optional<Value> AnalyzeMatrix(std::string_view s, int depth, const MathOptions& opt,
                                   std::string* why) {
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
  if (body.find("\\begin{") != std::string_view::npos) return std::nullopt;  // two matrices
  if (env == "array" && !body.empty() && body[0] == '{') {                   // column spec
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
    if (!AddItems(cells, depth, false, opt, &v, why)) return std::nullopt;
  }
  v.rows = static_cast<int>(rows.size());
  return v;
}

// "20:34", "20:34:00", "8:34 PM", "8:34 a.m": seconds after midnight.
std::optional<long> ParseTime(std::string_view s) {
  std::size_t i = 0;
  auto number = [&](std::size_t min_digits, std::size_t max_digits) -> long {
    std::size_t start = i;
    while (i < s.size() && IsDigit(s[i]) && i - start < max_digits) ++i;
    if (i - start < min_digits || (i < s.size() && IsDigit(s[i]))) return -1;
    return std::stol(std::string(s.substr(start, i - start)));
  };
  long h = number(1, 2);
  if (h < 0 || i >= s.size() || s[i] != ':') return std::nullopt;
  ++i;
  long m = number(2, 2);
  if (m < 0 || m > 59) return std::nullopt;
  long sec = 0;
  if (i < s.size() && s[i] == ':') {
    ++i;
    sec = number(2, 2);
    if (sec < 0 || sec > 59) return std::nullopt;
  }
  std::string suffix;
  for (char c : s.substr(i)) {
    if (c == ' ' || c == '.') continue;
    suffix.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c));
  }
  if (suffix.empty()) {
    if (h > 24) return std::nullopt;
  } else if (suffix == "am" || suffix == "pm") {
    if (h < 1 || h > 12) return std::nullopt;
    if (h == 12) h = 0;
    if (suffix == "pm") h += 12;
  } else {
    return std::nullopt;
  }
  return (h % 24) * 3600 + m * 60 + sec;
}

// "3128 1/2" (an integer, a space, a proper fraction) as "(3128+1/2)".
std::optional<std::string> SpacedMixedNumber(std::string_view s) {
  std::size_t i = 0;
  bool neg = !s.empty() && s[0] == '-';
  if (neg) ++i;
  std::size_t a = i;
  while (i < s.size() && IsDigit(s[i])) ++i;
  if (i == a || i >= s.size() || s[i] != ' ') return std::nullopt;
  std::string_view whole = s.substr(a, i - a);
  ++i;
  std::size_t n = i;
  while (i < s.size() && IsDigit(s[i])) ++i;
  if (i == n || i >= s.size() || s[i] != '/') return std::nullopt;
  std::string_view num = s.substr(n, i - n);
  ++i;
  std::size_t d = i;
  while (i < s.size() && IsDigit(s[i])) ++i;
  if (i == d || i != s.size()) return std::nullopt;
  std::string_view den = s.substr(d);
  if (num.size() > 9 || den.size() > 9 ||
      std::stol(std::string(num)) >= std::stol(std::string(den))) {
    return std::nullopt;
  }
  return std::string(neg ? "-" : "") + "(" + std::string(whole) + "+" + std::string(num) + "/" +
         std::string(den) + ")";
}

std::optional<Value> AnalyzeScalar(std::string s, int depth, const MathOptions& opt,
                                   std::string* why) {
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
  if (auto mixed = SpacedMixedNumber(body)) body = *mixed;
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
      auto item = AnalyzeScalar(var + (v.percent ? "%" : ""), depth + 1, opt, why);
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

// The part of "exact \approx decimal" that decides: the exact one, or what
// follows a bare label ("x \approx 11").
std::optional<std::string_view> ApproxPart(std::string_view s) {
  for (std::string_view sep : {std::string_view("\\approx"), std::string_view("\xE2\x89\x88")}) {
    if (s.find(sep) == std::string_view::npos) continue;
    auto parts = SplitTopLevel(s, sep);
    if (parts.size() < 2) continue;
    std::string_view first = TrimAscii(parts[0]);
    if (first.empty() || IsLabel(first, nullptr)) return TrimAscii(parts[1]);
    return first;
  }
  return std::nullopt;
}

// " and " / " or " at the top level.
std::vector<std::string_view> SplitWords(std::string_view s, bool* any_or) {
  std::vector<std::string_view> parts;
  int depth = 0;
  std::size_t start = 0;
  *any_or = false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '(' || c == '[' || c == '{') ++depth;
    if (c == ')' || c == ']' || c == '}') --depth;
    if (depth != 0 || c != ' ') continue;
    std::size_t len = 0;
    if (s.compare(i, 5, " and ") == 0) len = 5;
    if (s.compare(i, 4, " or ") == 0) {
      len = 4;
      *any_or = true;
    }
    if (len == 0) continue;
    parts.push_back(s.substr(start, i - start));
    start = i + len;
    i = start - 1;
  }
  parts.push_back(s.substr(start));
  return parts;
}

// Puts a value's own label fields on the value of "lhs = rhs".
void AttachLabel(std::string_view lhs, std::string_view rhs, std::string function_label, Value* v) {
  v->function_label = std::move(function_label);
  std::string_view name = TrimAscii(lhs);
  bool one_letter = name.size() == 1 && IsAlpha(name[0]);
  if (!one_letter || v->kind != Value::Kind::kScalar || !v->expr) return;
  std::string diff = "(" + std::string(name) + ")-(" + std::string(rhs) + ")";
  auto e = Expression::Parse(diff);
  if (!e) return;
  auto eq = std::make_shared<Value>();
  eq->kind = Value::Kind::kEquation;
  eq->key = StripSpaces(name) + "=" + v->key;
  eq->expr = std::move(e);
  FillPoints(eq.get());
  v->as_equation = std::move(eq);
}

}  // namespace

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

void FillPoints(Value* v) {
  const Expression& e = *v->expr;
  if (!e.has_variables()) {
    v->points[0] = e.Evaluate({});
    return;
  }
  std::vector<Complex> vals(e.variables().size());
  for (int p = 0; p < kPoints; ++p) {
    for (std::size_t k = 0; k < vals.size(); ++k) {
      vals[k] = Complex(PointValue(e.variables()[k], p), 0.0);
    }
    v->points[p] = e.Evaluate(vals);
  }
}

std::optional<Value> Analyze(std::string_view raw, int depth, const MathOptions& opt,
                             std::string* why) {
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
  // Plain numbers, the common case, go straight to the scalar reader.
  bool plain = true;
  for (char c : s) plain &= IsDigit(c) || c == '.' || c == '-';
  if (plain) return AnalyzeScalar(std::string(s), depth, opt, why);

  std::string key = StripSpaces(s);

  // "\frac{\sqrt3}{3} \approx 0.577": the exact part decides.
  if (auto part = ApproxPart(s)) return Analyze(*part, depth + 1, opt, why);

  // Matrices, also inside \left( ... \right) (an array environment), and
  // sums and products of numeric matrices.
  if (s.find("\\begin{") != std::string_view::npos) {
    std::string_view m_text = s;
    if (m_text.size() > 2 && (m_text[0] == '(' || m_text[0] == '[') &&
        (m_text.back() == ')' || m_text.back() == ']')) {
      std::string_view inner = TrimAscii(m_text.substr(1, m_text.size() - 2));
      if (inner.substr(0, 7) == "\\begin{" && inner.back() == '}') m_text = inner;
    }
    std::string matrix_error;
    if (m_text.substr(0, 7) == "\\begin{") {
      if (auto m = AnalyzeMatrix(m_text, depth, opt, &matrix_error)) {
        m->key = key;
        return m;
      }
    }
    std::string arith_error;
    if (auto m = AnalyzeMatrixExpression(s, &arith_error)) {
      m->key = key;
      return m;
    }
    if (!matrix_error.empty() || !arith_error.empty()) {  // matrix syntax, but malformed
      *why = !matrix_error.empty() ? matrix_error : arith_error;
      return std::nullopt;
    }
  }

  // "12 and 13", "x = 2 or x = 3", "x < -1 or x > 2".
  if (s.find(" and ") != std::string_view::npos || s.find(" or ") != std::string_view::npos) {
    bool any_or = false;
    std::vector<std::string_view> parts = SplitWords(s, &any_or);
    if (parts.size() > 1) {
      Value v;
      v.kind = Value::Kind::kList;
      v.key = key;
      std::vector<std::string_view> items;
      for (std::string_view p : parts) {
        for (std::string_view q : SplitTopLevel(p, ",")) {
          if (!TrimAscii(q).empty()) items.push_back(q);
        }
      }
      if (!AddItems(items, depth, true, opt, &v, why)) return std::nullopt;
      bool relations = true;
      for (const Value& item : v.items) relations &= item.kind == Value::Kind::kRelation;
      if (relations) {
        if (auto combined = CombineRelations(std::move(v.items), !any_or)) {
          combined->key = key;
          return combined;
        }
        *why = "inequalities in different variables";
        return std::nullopt;
      }
      return v;
    }
  }

  // Unions of intervals.
  if (s.find("\\cup") != std::string_view::npos) {
    std::vector<std::string_view> parts = SplitTopLevel(s, "\\cup");
    if (parts.size() > 1) {
      Value v;
      v.kind = Value::Kind::kUnion;
      v.key = key;
      if (!AddItems(parts, depth, false, opt, &v, why)) return std::nullopt;
      return v;
    }
  }

  // Inequalities and chains of them.
  {
    std::string rel_error;
    if (auto rel = AnalyzeRelation(s, opt, &rel_error)) {
      rel->key = key;
      return rel;
    }
  }

  // Clock times.
  if (s.find(':') != std::string_view::npos) {
    if (auto t = ParseTime(s)) {
      Value v;
      v.kind = Value::Kind::kTime;
      v.key = key;
      v.time_seconds = *t;
      return v;
    }
  }

  // Thousands separators: "1,000" is one number when no brackets are around;
  // "1,5" is 1.5 under decimal_comma; "1 000 000" is one number.
  std::string flat;
  if (s.find(',') != std::string_view::npos &&
      s.find_first_of("()[]{}") == std::string_view::npos) {
    if (opt.decimal_comma && IsDecimalCommaNumber(s)) {
      flat = std::string(s);
      flat[flat.find(',')] = '.';
      s = flat;
    } else if (HasOnlyThousandsCommas(s)) {
      for (char c : s) {
        if (c != ',') flat.push_back(c);
      }
      s = flat;
    }
  } else if (s.find(' ') != std::string_view::npos && IsSpaceGroupedNumber(s)) {
    for (char c : s) {
      if (c != ' ') flat.push_back(c);
    }
    s = flat;
  }

  // Bracketed tuples, intervals and sets; plain braces only group.
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
        if (first == '{' && !esc_open) return Analyze(inner, depth + 1, opt, why);
        std::vector<std::string_view> parts = SplitTopLevel(inner, ",");
        if (parts.size() > 1 || esc_open) {
          Value v;
          v.kind = esc_open ? Value::Kind::kSet : Value::Kind::kTuple;
          v.from_set_braces = esc_open;
          v.key = key;
          v.open = std::string(1, first);
          v.close = std::string(1, s[match]);
          if (!AddItems(parts, depth, esc_open, opt, &v, why)) return std::nullopt;
          return v;
        }
      }
    }
  }

  // Bare lists: "3, 5, 7", "1,-2", "1; 2; 3".
  {
    std::vector<std::string_view> parts = SplitTopLevel(s, ",");
    if (parts.size() == 1) parts = SplitTopLevel(s, ";");
    if (parts.size() > 1) {
      Value v;
      v.kind = Value::Kind::kList;
      v.key = key;
      if (!AddItems(parts, depth, true, opt, &v, why)) return std::nullopt;
      return v;
    }
  }

  // Labelled values "x = 5", "(p, q) = (3, 2)", "x = 5 + 1 = 6",
  // "x \in [-2, 7]"; equations otherwise.
  {
    std::vector<std::string_view> parts = SplitTopLevel(s, "=");
    if (parts.size() == 1) parts = SplitTopLevel(s, "\\in");
    if (parts.size() >= 2) {
      std::string function_label;
      if (IsLabel(parts[0], &function_label)) {
        auto v = Analyze(parts.back(), depth + 1, opt, why);
        if (v && parts.size() == 2) AttachLabel(parts[0], parts[1], function_label, &*v);
        if (v && parts.size() > 2) v->function_label = function_label;
        return v;
      }
      if (parts.size() == 2 && s.find('=') != std::string_view::npos) {
        std::string diff = "(" + std::string(parts[0]) + ")-(" + std::string(parts[1]) + ")";
        auto e = Expression::Parse(diff);
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

  auto v = AnalyzeScalar(std::string(s), depth, opt, why);
  if (v && v->kind != Value::Kind::kText && !v->from_pm) v->key = key;
  return v;
}

}  // namespace answer

namespace {

std::optional<answer::Value> AnalyzeAnswer(std::string_view text, const MathOptions& opt,
                                           std::string* why) {
  if (text.size() > kMaxAnswerBytes) {
    *why = "answer longer than " + std::to_string(kMaxAnswerBytes) + " bytes";
    return std::nullopt;
  }
  std::string normalized = NormalizeLatex(text);
  // "1, 2, and 3": the conjunction after a comma only separates.
  for (std::string_view conj : {std::string_view(", and "), std::string_view(", or ")}) {
    for (std::size_t at = normalized.find(conj); at != std::string::npos;
         at = normalized.find(conj, at + 1)) {
      normalized.replace(at, conj.size(), ", ");
    }
  }
  return answer::Analyze(normalized, 0, opt, why);
}

}  // namespace

bool ReferenceParses(std::string_view reference, std::string* why, const MathOptions& options) {
  std::string reason;
  bool ok = AnalyzeAnswer(reference, options, &reason).has_value();
  if (why) *why = reason;
  return ok;
}

EquivalenceResult CompareAnswers(std::string_view predicted, std::string_view reference,
                                 const MathOptions& options) {
  std::string why;
  auto ref = AnalyzeAnswer(reference, options, &why);
  if (!ref) {
    return {Equivalence::kInvalidReference, "reference answer: " + why};
  }
  why.clear();
  auto pred = AnalyzeAnswer(predicted, options, &why);
  if (!pred) return {Equivalence::kDifferent, "predicted answer: " + why};
  if (answer::Equal(*pred, *ref, options)) return {Equivalence::kEqual, ""};
  return {Equivalence::kDifferent, "not equivalent to the reference"};
}

bool MathEquivalent(std::string_view predicted, std::string_view reference,
                    const MathOptions& options) {
  return CompareAnswers(predicted, reference, options).verdict == Equivalence::kEqual;
}

}  // namespace cohort::reward
