// Internal to the math verifier (math_equiv.cc, math_compare.cc,
// relation.cc, matrix_expr.cc): the structured reading of one answer and
// the helpers the readers share. Not a public API; see math_equiv.h.
//
// Thread-safety: plain values; all functions are pure.
#ifndef COHORT_REWARD_SERVER_VERIFIERS_ANSWER_VALUE_H_
#define COHORT_REWARD_SERVER_VERIFIERS_ANSWER_VALUE_H_

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "reward_server/verifiers/expr.h"
#include "reward_server/verifiers/math_equiv.h"

namespace cohort::reward::answer {

using expr::Complex;
using expr::Expression;

inline constexpr int kPoints = 6;
inline constexpr std::size_t kMaxItems = 64;
inline constexpr int kMaxAnalyzeDepth = 6;

// One interval of the real line; infinite ends are open.
struct Interval {
  double lo = 0, hi = 0;
  bool lo_closed = false, hi_closed = false;
};
// A set of reals as sorted, disjoint, non-empty intervals.
using IntervalSet = std::vector<Interval>;

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
    kRelation,  // inequalities: items are lhs - rhs, rel_ops their relations
    kTime,      // a clock time, time_seconds after midnight
  };
  Kind kind = Kind::kText;
  std::string key;  // normalized text without white space
  std::optional<Expression> expr;
  // The expression's values, computed once: at the kPoints evaluation
  // points when it has variables, else points[0] is its value. A computed
  // constant (an entry of a matrix product) has no expr, only points[0].
  std::array<Complex, kPoints> points;
  bool percent = false;
  std::string int_text;  // canonical integer when the scalar is one literal
  std::string open, close;
  bool from_pm = false;
  bool from_set_braces = false;  // written \{ ... \}: compared as a set
  std::vector<Value> items;
  int rows = 0, cols = 0;

  // "lhs = value" answers: the left side when it applies a known function
  // (\sin x = ...), compared when both sides have one.
  std::string function_label;
  // "y = 2x + 3": also readable as the equation y - (2x + 3) = 0.
  std::shared_ptr<const Value> as_equation;

  // kRelation: one of '<' (strict), 'l' (<=), 'n' (!=) per item, each item
  // being lhs - rhs of "lhs op rhs" (a > b is read as b - a < 0).
  std::string rel_ops;
  // kRelation in one variable, linear in it: the solution set.
  std::optional<IntervalSet> solution;
  std::string variable;

  long time_seconds = 0;

  bool has_variables() const { return expr && expr->has_variables(); }
};

// --- shared text helpers (math_equiv.cc) ---
bool IsAlpha(char c);
bool IsDigit(char c);
std::string StripSpaces(std::string_view s);
// Splits at `sep` outside any brackets. Returns {s} when there is none.
std::vector<std::string_view> SplitTopLevel(std::string_view s, std::string_view sep);
// Fills v->points from v->expr.
void FillPoints(Value* v);

// The structured reading of a normalized answer (math_equiv.cc).
std::optional<Value> Analyze(std::string_view s, int depth, const MathOptions& opt,
                             std::string* why);

// --- comparison (math_compare.cc) ---
bool Equal(const Value& a, const Value& b, const MathOptions& opt);
bool Close(Complex a, Complex b, const MathOptions& opt);

// --- relations (relation.cc) ---
// Reads s as one inequality or a chain of them ("-2 \le x < 7", "x \neq 3",
// "5 \geq x"). nullopt when s has no relation at the top level; sets *why
// and returns nullopt with *why non-empty when it has one but is malformed.
std::optional<Value> AnalyzeRelation(std::string_view s, const MathOptions& opt, std::string* why);
// The union (any_of) or intersection of relations' solution sets, when all
// are solved in the same variable.
std::optional<Value> CombineRelations(std::vector<Value> parts, bool intersect);
// The set an interval-like value denotes: a tuple/interval with constant
// real ends, a union of such, a set of constants; nullopt otherwise.
std::optional<IntervalSet> AsIntervalSet(const Value& v);
bool SameIntervalSet(const IntervalSet& a, const IntervalSet& b, const MathOptions& opt);
// Whether two relations (as lhs - rhs with their ops) are the same
// constraint: the same ops and differences equal up to a positive factor
// (any non-zero factor for !=), in any order.
bool SameRelations(const Value& a, const Value& b, const MathOptions& opt);

// --- matrix arithmetic (matrix_expr.cc) ---
// Evaluates a sum / product of literal numeric matrices and scalars
// ("A + B", "2A", "AB", "A^T"). nullopt when s is not such an expression.
std::optional<Value> AnalyzeMatrixExpression(std::string_view s, std::string* why);

}  // namespace cohort::reward::answer

#endif  // COHORT_REWARD_SERVER_VERIFIERS_ANSWER_VALUE_H_
