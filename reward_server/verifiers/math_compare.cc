// Comparison of two analyzed answers (answer_value.h); the rules are in
// docs/rewards.md.
#include <cmath>
#include <optional>
#include <vector>

#include "reward_server/verifiers/answer_value.h"

namespace cohort::reward::answer {
namespace {

using K = Value::Kind;

bool Finite(Complex z) { return std::isfinite(z.real()) && std::isfinite(z.imag()); }

// The value at point p: a constant side has the same value at every point.
Complex At(const Value& v, int p) { return v.has_variables() ? v.points[p] : v.points[0]; }

bool ScalarEqual(const Value& a, const Value& b, const MathOptions& opt) {
  if (!a.int_text.empty() && !b.int_text.empty() && a.percent == b.percent) {
    return a.int_text == b.int_text;
  }
  if (!a.has_variables() && !b.has_variables()) {
    Complex va = a.points[0];
    Complex vb = b.points[0];
    if (a.percent == b.percent) return Close(va, vb, opt);
    // One side has a percent sign: 50% matches 50 and 0.5.
    if (Close(va, vb, opt)) return true;
    return a.percent ? Close(va / 100.0, vb, opt) : Close(va, vb / 100.0, opt);
  }
  if (a.percent != b.percent) return false;
  int valid = 0;
  for (int p = 0; p < kPoints; ++p) {
    Complex va = At(a, p);
    Complex vb = At(b, p);
    bool fa = Finite(va);
    bool fb = Finite(vb);
    if (!fa && !fb) continue;
    if (fa != fb || !Close(va, vb, opt)) return false;
    ++valid;
  }
  return valid >= 2;
}

// Equations are the same when lhs - rhs agree up to a non-zero factor.
bool EquationEqual(const Value& a, const Value& b, const MathOptions& opt) {
  std::optional<Complex> ratio;
  int valid = 0;
  for (int p = 0; p < kPoints; ++p) {
    Complex va = At(a, p);
    Complex vb = At(b, p);
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
  return valid >= 2;
}

bool OrderedEqual(const std::vector<Value>& a, const std::vector<Value>& b,
                  const MathOptions& opt) {
  if (a.size() != b.size()) return false;
  for (std::size_t k = 0; k < a.size(); ++k) {
    if (!Equal(a[k], b[k], opt)) return false;
  }
  return true;
}

// Multisets: each element matched once.
bool UnorderedEqual(const std::vector<Value>& a, const std::vector<Value>& b,
                    const MathOptions& opt) {
  if (a.size() != b.size()) return false;
  std::vector<bool> used(b.size(), false);
  for (const Value& x : a) {
    bool found = false;
    for (std::size_t k = 0; k < b.size(); ++k) {
      if (!used[k] && Equal(x, b[k], opt)) {
        used[k] = true;
        found = true;
        break;
      }
    }
    if (!found) return false;
  }
  return true;
}

// Sets: every element of one is in the other (repeats do not count).
bool SetEqual(const std::vector<Value>& a, const std::vector<Value>& b, const MathOptions& opt) {
  auto contained = [&](const std::vector<Value>& x, const std::vector<Value>& y) {
    for (const Value& e : x) {
      bool found = false;
      for (const Value& f : y) {
        if (Equal(e, f, opt)) {
          found = true;
          break;
        }
      }
      if (!found) return false;
    }
    return true;
  };
  return !a.empty() && !b.empty() && contained(a, b) && contained(b, a);
}

bool IsParenTuple(const Value& v) { return v.kind == K::kTuple && v.open == "(" && v.close == ")"; }
// A tuple that can stand for a vector: (a, b, ...) or [a, b, c, ...] (two
// elements in square brackets are an interval).
bool IsVectorLike(const Value& v) {
  return IsParenTuple(v) || v.kind == K::kList ||
         (v.kind == K::kTuple && v.open == "[" && v.close == "]" && v.items.size() >= 3);
}
bool IsVector(const Value& v) { return v.kind == K::kMatrix && (v.rows == 1 || v.cols == 1); }

bool RelationEqual(const Value& a, const Value& b, const MathOptions& opt) {
  if (a.kind == K::kRelation && b.kind == K::kRelation) {
    if (a.solution && b.solution) {
      return a.variable == b.variable && SameIntervalSet(*a.solution, *b.solution, opt);
    }
    return SameRelations(a, b, opt);
  }
  const Value& rel = a.kind == K::kRelation ? a : b;
  const Value& other = a.kind == K::kRelation ? b : a;
  if (!rel.solution) return false;
  std::optional<IntervalSet> set = AsIntervalSet(other);
  return set && SameIntervalSet(*rel.solution, *set, opt);
}

}  // namespace

bool Close(Complex a, Complex b, const MathOptions& opt) {
  if (!Finite(a) || !Finite(b)) {
    if (std::isnan(a.real()) || std::isnan(b.real()) || std::isnan(a.imag()) ||
        std::isnan(b.imag())) {
      return false;
    }
    return std::isinf(a.real()) && a.real() == b.real() && std::abs(a.imag()) < 1e-9 &&
           std::abs(b.imag()) < 1e-9;
  }
  double scale = std::max(std::abs(a), std::abs(b));
  return std::abs(a - b) <= kAbsoluteTolerance + opt.relative_tolerance * scale;
}

bool Equal(const Value& a, const Value& b, const MathOptions& opt) {
  if (a.key == b.key && a.kind == b.kind && a.function_label == b.function_label) return true;
  // \sin x = 1/2 is not \cos x = 1/2.
  if (!a.function_label.empty() && !b.function_label.empty() &&
      a.function_label != b.function_label) {
    return false;
  }
  if (a.kind == K::kEquation && b.as_equation) return EquationEqual(a, *b.as_equation, opt);
  if (b.kind == K::kEquation && a.as_equation) return EquationEqual(*a.as_equation, b, opt);
  if (a.kind == K::kScalar && b.kind == K::kScalar) return ScalarEqual(a, b, opt);
  if (a.kind == K::kEquation && b.kind == K::kEquation) return EquationEqual(a, b, opt);
  if (a.kind == K::kTime || b.kind == K::kTime) {
    return a.kind == b.kind && a.time_seconds == b.time_seconds;
  }
  if (a.kind == K::kRelation || b.kind == K::kRelation) return RelationEqual(a, b, opt);
  if (a.kind == K::kText || b.kind == K::kText) {
    return a.kind == b.kind && a.key == b.key;
  }
  if (a.kind == K::kTuple && b.kind == K::kTuple) {
    return a.open == b.open && a.close == b.close && OrderedEqual(a.items, b.items, opt);
  }
  if ((a.kind == K::kList && IsParenTuple(b)) || (b.kind == K::kList && IsParenTuple(a))) {
    return OrderedEqual(a.items, b.items, opt);
  }
  auto unordered = [](K k) { return k == K::kList || k == K::kSet || k == K::kUnion; };
  if (unordered(a.kind) && unordered(b.kind)) {
    if ((a.kind == K::kUnion) != (b.kind == K::kUnion)) return false;
    if (opt.ordered_lists && a.kind == K::kList && b.kind == K::kList) {
      return OrderedEqual(a.items, b.items, opt);
    }
    if (a.from_set_braces || b.from_set_braces) return SetEqual(a.items, b.items, opt);
    return UnorderedEqual(a.items, b.items, opt);
  }
  if (a.kind == K::kMatrix && b.kind == K::kMatrix) {
    return a.rows == b.rows && a.cols == b.cols && OrderedEqual(a.items, b.items, opt);
  }
  if ((IsVector(a) && IsVectorLike(b)) || (IsVector(b) && IsVectorLike(a))) {
    return OrderedEqual(a.items, b.items, opt);
  }
  return false;
}

}  // namespace cohort::reward::answer
