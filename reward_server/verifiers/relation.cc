// Inequalities in answers: one vocabulary of relations, chains, their
// solution sets when linear in one variable, and interval sets.
#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "reward_server/verifiers/answer_value.h"
#include "reward_server/verifiers/extract.h"

namespace cohort::reward::answer {
namespace {

constexpr int kMaxRelations = 8;
constexpr double kInf = std::numeric_limits<double>::infinity();

// The relation tokens, longest first. kind: '<', 'L' (<=), '>', 'G' (>=),
// 'n' (!=).
struct RelToken {
  std::string_view text;
  char kind;
};
constexpr RelToken kTokens[] = {
    {"\\leqslant", 'L'},
    {"\\geqslant", 'G'},
    {"\\leq", 'L'},
    {"\\geq", 'G'},
    {"\\neq", 'n'},
    {"\\le", 'L'},
    {"\\ge", 'G'},
    {"\\lt", '<'},
    {"\\gt", '>'},
    {"\\ne", 'n'},
    {"<=", 'L'},
    {">=", 'G'},
    {"!=", 'n'},
    {"\xE2\x89\xA4", 'L'},
    {"\xE2\x89\xA5", 'G'},
    {"\xE2\x89\xA0", 'n'},
    {"\xE2\xA9\xBD", 'L'},
    {"\xE2\xA9\xBE", 'G'},
    {"<", '<'},
    {">", '>'},
};

// The relation token at s[i], or nullptr.
const RelToken* TokenAt(std::string_view s, std::size_t i) {
  char c = s[i];
  if (c != '\\' && c != '<' && c != '>' && c != '!' && c != '\xE2') return nullptr;
  for (const RelToken& t : kTokens) {
    if (s.compare(i, t.text.size(), t.text) != 0) continue;
    if (t.text[0] == '\\' && i + t.text.size() < s.size() && IsAlpha(s[i + t.text.size()])) {
      continue;  // \left, \leqq, \neg ...
    }
    return &t;
  }
  return nullptr;
}

bool Finite(Complex z) { return std::isfinite(z.real()) && std::isfinite(z.imag()); }

// Sorts and merges touching or overlapping intervals.
IntervalSet Normalize(IntervalSet set) {
  std::sort(set.begin(), set.end(), [](const Interval& a, const Interval& b) {
    if (a.lo != b.lo) return a.lo < b.lo;
    return a.lo_closed && !b.lo_closed;
  });
  IntervalSet out;
  for (const Interval& iv : set) {
    if (!out.empty()) {
      Interval& last = out.back();
      bool touch = iv.lo < last.hi || (iv.lo == last.hi && (iv.lo_closed || last.hi_closed));
      if (touch) {
        if (iv.hi > last.hi) {
          last.hi = iv.hi;
          last.hi_closed = iv.hi_closed;
        } else if (iv.hi == last.hi) {
          last.hi_closed = last.hi_closed || iv.hi_closed;
        }
        continue;
      }
    }
    out.push_back(iv);
  }
  return out;
}

IntervalSet Intersect(const IntervalSet& a, const IntervalSet& b) {
  IntervalSet out;
  for (const Interval& x : a) {
    for (const Interval& y : b) {
      Interval r;
      if (x.lo > y.lo || (x.lo == y.lo && !x.lo_closed)) {
        r.lo = x.lo;
        r.lo_closed = x.lo_closed;
      } else {
        r.lo = y.lo;
        r.lo_closed = y.lo_closed;
      }
      if (x.hi < y.hi || (x.hi == y.hi && !x.hi_closed)) {
        r.hi = x.hi;
        r.hi_closed = x.hi_closed;
      } else {
        r.hi = y.hi;
        r.hi_closed = y.hi_closed;
      }
      if (r.lo < r.hi || (r.lo == r.hi && r.lo_closed && r.hi_closed)) out.push_back(r);
    }
  }
  return Normalize(out);
}

// The set where f(t) op 0 for f(t) = a t + b (a != 0).
IntervalSet LinearSolution(double a, double b, char op) {
  double root = -b / a;
  if (op == 'n') return {{-kInf, root, false, false}, {root, kInf, false, false}};
  bool closed = op == 'l';
  if (a > 0) return {{-kInf, root, false, closed}};
  return {{root, kInf, closed, false}};
}

// f(t) = a t + b at the probe points, with a != 0.
bool LinearCoefficients(const Expression& e, double* a, double* b) {
  auto at = [&](double t) { return e.Evaluate({Complex(t, 0)}); };
  Complex f0 = at(0), f1 = at(1);
  if (!Finite(f0) || !Finite(f1) || f0.imag() != 0 || f1.imag() != 0) return false;
  *b = f0.real();
  *a = f1.real() - f0.real();
  if (std::abs(*a) < 1e-12) return false;
  for (double t : {-2.5, 3.7, 0.41, -17.0}) {
    Complex f = at(t);
    double want = *a * t + *b;
    if (!Finite(f) || std::abs(f.imag()) > 1e-9 ||
        std::abs(f.real() - want) > 1e-9 * (1 + std::abs(want))) {
      return false;
    }
  }
  return true;
}

bool ConstantReal(const Value& v, double* out) {
  if (v.kind != Value::Kind::kScalar || v.has_variables() || v.percent) return false;
  Complex z = v.points[0];
  if (std::isnan(z.real()) || std::isnan(z.imag()) || std::abs(z.imag()) > 1e-12) return false;
  *out = z.real();
  return true;
}

// Whether s may hold a relation token at all (a cheap first look).
bool MayHaveRelation(std::string_view s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    char d = i + 1 < s.size() ? s[i + 1] : '\0';
    if (c == '<' || c == '>' || (c == '!' && d == '=') ||
        (c == '\\' && (d == 'l' || d == 'g' || d == 'n')) ||
        (c == '\xE2' && (d == '\x89' || d == '\xA9'))) {
      return true;
    }
  }
  return false;
}

}  // namespace

std::optional<Value> AnalyzeRelation(std::string_view s, const MathOptions& opt, std::string* why) {
  (void)opt;
  if (!MayHaveRelation(s)) return std::nullopt;
  std::vector<std::string_view> sides;
  std::string ops;
  int depth = 0;
  std::size_t start = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '(' || c == '[' || c == '{') ++depth;
    if (c == ')' || c == ']' || c == '}') --depth;
    if (depth != 0) continue;
    const RelToken* t = TokenAt(s, i);
    if (t == nullptr) continue;
    sides.push_back(TrimAscii(s.substr(start, i - start)));
    ops.push_back(t->kind);
    start = i + t->text.size();
    i = start - 1;
    if (static_cast<int>(ops.size()) > kMaxRelations) {
      *why = "too many relations";
      return std::nullopt;
    }
  }
  if (ops.empty()) return std::nullopt;
  sides.push_back(TrimAscii(s.substr(start)));
  for (std::string_view side : sides) {
    if (side.empty()) {
      *why = "an inequality with an empty side";
      return std::nullopt;
    }
  }
  Value v;
  v.kind = Value::Kind::kRelation;
  std::string variable;
  bool solvable = true;
  IntervalSet solution = {{-kInf, kInf, false, false}};
  for (std::size_t k = 0; k < ops.size(); ++k) {
    std::string_view lhs = sides[k];
    std::string_view rhs = sides[k + 1];
    char op = ops[k];
    if (op == '>' || op == 'G') std::swap(lhs, rhs);
    char kind = (op == '<' || op == '>') ? '<' : (op == 'n' ? 'n' : 'l');
    std::string diff = "(" + std::string(lhs) + ")-(" + std::string(rhs) + ")";
    auto e = Expression::Parse(diff);
    if (!e) {
      // Not math we can read: compared as written.
      v.items.clear();
      v.rel_ops.clear();
      v.solution.reset();
      return v;
    }
    Value item;
    item.kind = Value::Kind::kScalar;
    item.key = StripSpaces(diff);
    item.expr = std::move(e);
    FillPoints(&item);
    const auto& vars = item.expr->variables();
    if (vars.size() != 1 || (!variable.empty() && vars[0] != variable)) {
      solvable = false;
    } else {
      variable = vars[0];
      // f(2) < f(1) reads f as a variable times 2: not solved.
      for (std::string_view side : {lhs, rhs}) {
        for (std::size_t at = side.find(variable); at != std::string_view::npos;
             at = side.find(variable, at + 1)) {
          std::size_t after = at + variable.size();
          if (after < side.size() && side[after] == '(') solvable = false;
        }
      }
      double a = 0, b = 0;
      if (solvable && LinearCoefficients(*item.expr, &a, &b)) {
        solution = Intersect(solution, LinearSolution(a, b, kind));
      } else {
        solvable = false;
      }
    }
    v.items.push_back(std::move(item));
    v.rel_ops.push_back(kind);
  }
  if (solvable && !solution.empty()) {
    v.solution = std::move(solution);
    v.variable = variable;
  }
  return v;
}

std::optional<Value> CombineRelations(std::vector<Value> parts, bool intersect) {
  if (parts.empty()) return std::nullopt;
  IntervalSet acc;
  std::string variable;
  for (std::size_t k = 0; k < parts.size(); ++k) {
    const Value& p = parts[k];
    if (p.kind != Value::Kind::kRelation || !p.solution) return std::nullopt;
    if (k > 0 && p.variable != variable) return std::nullopt;
    variable = p.variable;
    if (k == 0) {
      acc = *p.solution;
    } else if (intersect) {
      acc = Intersect(acc, *p.solution);
    } else {
      acc.insert(acc.end(), p.solution->begin(), p.solution->end());
      acc = Normalize(acc);
    }
  }
  if (acc.empty()) return std::nullopt;
  Value v;
  v.kind = Value::Kind::kRelation;
  v.solution = std::move(acc);
  v.variable = variable;
  return v;
}

std::optional<IntervalSet> AsIntervalSet(const Value& v) {
  using K = Value::Kind;
  if (v.kind == K::kTuple && v.items.size() == 2 && (v.open == "(" || v.open == "[") &&
      (v.close == ")" || v.close == "]")) {
    double lo = 0, hi = 0;
    if (!ConstantReal(v.items[0], &lo) || !ConstantReal(v.items[1], &hi)) return std::nullopt;
    Interval iv{lo, hi, v.open == "[" && std::isfinite(lo), v.close == "]" && std::isfinite(hi)};
    if (!(lo < hi || (lo == hi && iv.lo_closed && iv.hi_closed))) return std::nullopt;
    return IntervalSet{iv};
  }
  if (v.kind == K::kUnion || v.kind == K::kSet) {
    IntervalSet all;
    for (const Value& item : v.items) {
      double c = 0;
      if (v.kind == K::kSet || item.kind == K::kSet) {
        const std::vector<Value>& points = v.kind == K::kSet ? v.items : item.items;
        for (const Value& p : points) {
          if (!ConstantReal(p, &c) || !std::isfinite(c)) return std::nullopt;
          all.push_back({c, c, true, true});
        }
        if (v.kind == K::kSet) break;
        continue;
      }
      auto part = AsIntervalSet(item);
      if (!part) return std::nullopt;
      all.insert(all.end(), part->begin(), part->end());
    }
    if (all.empty()) return std::nullopt;
    return Normalize(all);
  }
  return std::nullopt;
}

bool SameIntervalSet(const IntervalSet& a, const IntervalSet& b, const MathOptions& opt) {
  IntervalSet x = Normalize(a);
  IntervalSet y = Normalize(b);
  if (x.size() != y.size()) return false;
  for (std::size_t k = 0; k < x.size(); ++k) {
    if (!Close(x[k].lo, y[k].lo, opt) || !Close(x[k].hi, y[k].hi, opt)) return false;
    if (std::isfinite(x[k].lo) && x[k].lo_closed != y[k].lo_closed) return false;
    if (std::isfinite(x[k].hi) && x[k].hi_closed != y[k].hi_closed) return false;
  }
  return true;
}

namespace {

// d2 = c * d1 at every point where both are finite, with one c (> 0
// unless the relation is !=).
bool Proportional(const Value& a, const Value& b, bool any_sign, const MathOptions& opt) {
  std::optional<Complex> ratio;
  int valid = 0;
  for (int p = 0; p < kPoints; ++p) {
    Complex va = a.has_variables() ? a.points[p] : a.points[0];
    Complex vb = b.has_variables() ? b.points[p] : b.points[0];
    if (!Finite(va) || !Finite(vb)) continue;
    bool za = std::abs(va) < 1e-12;
    bool zb = std::abs(vb) < 1e-12;
    if (za || zb) {
      if (za != zb) return false;
      continue;
    }
    Complex r = vb / va;
    if (ratio && !Close(*ratio, r, opt)) return false;
    ratio = r;
    ++valid;
  }
  if (valid < 2 || !ratio) return false;
  if (std::abs(ratio->imag()) > 1e-9) return false;
  return any_sign || ratio->real() > 0;
}

}  // namespace

bool SameRelations(const Value& a, const Value& b, const MathOptions& opt) {
  if (a.items.empty() || a.items.size() != b.items.size()) return false;
  std::vector<bool> used(b.items.size(), false);
  for (std::size_t i = 0; i < a.items.size(); ++i) {
    bool found = false;
    for (std::size_t k = 0; k < b.items.size(); ++k) {
      if (used[k] || a.rel_ops[i] != b.rel_ops[k]) continue;
      if (Proportional(a.items[i], b.items[k], a.rel_ops[i] == 'n', opt)) {
        used[k] = true;
        found = true;
        break;
      }
    }
    if (!found) return false;
  }
  return true;
}

}  // namespace cohort::reward::answer
