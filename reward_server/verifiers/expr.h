// A small, bounded parser and evaluator for the math in answers: LaTeX
// (\frac, \sqrt, \pi, \cdot, ^{...}, \sin, \log_b, ...) and plain notation
// (a/b, sqrt(2), x^2, 2x, |x|, 5!). Values are complex doubles, so the square
// root of a negative number is a value, not a failure.
//
// Thread-safety: an Expression is immutable after Parse and may be evaluated
// from several threads at once.
//
// Bounds (untrusted input): at most kMaxExprBytes of text, kMaxExprNodes nodes
// and kMaxExprDepth levels of nesting; exponents beyond kMaxExponent and
// factorials beyond 170! evaluate to NaN. Parsing and evaluation are linear
// in the input.
#ifndef COHORT_REWARD_SERVER_VERIFIERS_EXPR_H_
#define COHORT_REWARD_SERVER_VERIFIERS_EXPR_H_

#include <complex>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cohort::reward::expr {

using Complex = std::complex<double>;

inline constexpr std::size_t kMaxExprBytes = 4096;
inline constexpr int kMaxExprNodes = 4096;
inline constexpr int kMaxExprDepth = 64;
inline constexpr double kMaxExponent = 1e6;

enum class Op : std::uint8_t {
  kNum,  // value
  kVar,  // var (index into variables())
  kPi,
  kI,        // imaginary unit
  kInf,      // +infinity
  kSum,      // kids, flags[k] = 1 when kid k is subtracted
  kProduct,  // kids, flags[k] = 1 when kid k divides
  kPow,      // kids[0] ^ kids[1]
  kNeg,      // -kids[0]
  kFunc,     // fn(kids[0] [, kids[1] = root index or log base])
  kFact,     // kids[0]!
  kAbs,      // |kids[0]|
};

enum class Fn : std::uint8_t {
  kSqrt,
  kRoot,
  kSin,
  kCos,
  kTan,
  kCot,
  kSec,
  kCsc,
  kAsin,
  kAcos,
  kAtan,
  kLn,
  kLogBase,
  kExp,
};

struct Node {
  Op op = Op::kNum;
  Fn fn = Fn::kSqrt;
  bool int_literal = false;  // kNum written as a plain integer
  bool from_frac = false;    // a \frac{..}{..} product
  int var = -1;
  double value = 0.0;
  std::vector<int> kids;
  std::vector<std::uint8_t> flags;
};

class Expression {
 public:
  // Parses `text` (already normalized by NormalizeLatex, or plain). Returns
  // nullopt and sets *error (if given) when it is not a single expression.
  static std::optional<Expression> Parse(std::string_view text, std::string* error = nullptr);

  // Evaluates with values[k] for variables()[k] (missing values read as 0).
  Complex Evaluate(const std::vector<Complex>& values) const;

  const std::vector<std::string>& variables() const { return variables_; }
  bool has_variables() const { return !variables_.empty(); }
  // True when the whole expression is one number literal (possibly signed).
  bool is_literal() const;

 private:
  friend class Parser;
  Complex Eval(int node, const std::vector<Complex>& values) const;

  std::vector<Node> nodes_;
  std::vector<std::string> variables_;
  int root_ = -1;
};

}  // namespace cohort::reward::expr

#endif  // COHORT_REWARD_SERVER_VERIFIERS_EXPR_H_
