#include "reward_server/verifiers/expr.h"

#include <cmath>
#include <algorithm>
#include <cstdlib>
#include <limits>

namespace cohort::reward::expr {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// NormalizeLatex spells every degree sign (^\circ, \degree, \circ) this way.
constexpr std::string_view kDegree = "\xC2\xB0";

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

struct FnName {
  std::string_view name;
  Fn fn;
};
constexpr FnName kFunctions[] = {
    {"sqrt", Fn::kSqrt},   {"sin", Fn::kSin},     {"cos", Fn::kCos},   {"tan", Fn::kTan},
    {"cot", Fn::kCot},     {"sec", Fn::kSec},     {"csc", Fn::kCsc},   {"arcsin", Fn::kAsin},
    {"arccos", Fn::kAcos}, {"arctan", Fn::kAtan}, {"ln", Fn::kLn},     {"log", Fn::kLn},
    {"exp", Fn::kExp},     {"asin", Fn::kAsin},   {"acos", Fn::kAcos}, {"atan", Fn::kAtan},
};

std::optional<Fn> LookupFunction(std::string_view name) {
  for (const FnName& f : kFunctions) {
    if (f.name == name) return f.fn;
  }
  return std::nullopt;
}

constexpr std::string_view kGreek[] = {
    "alpha",    "beta",    "gamma", "delta",  "epsilon", "varepsilon", "zeta",  "eta",   "theta",
    "vartheta", "iota",    "kappa", "lambda", "mu",      "nu",         "xi",    "rho",   "sigma",
    "tau",      "upsilon", "phi",   "varphi", "chi",     "psi",        "omega", "Gamma", "Delta",
    "Theta",    "Lambda",  "Xi",    "Sigma",  "Phi",     "Psi",        "Omega",
};

bool IsGreek(std::string_view name) {
  for (std::string_view g : kGreek) {
    if (g == name) return true;
  }
  return false;
}

bool IsDecoration(std::string_view name) {
  return name == "hat" || name == "bar" || name == "overline" || name == "vec" || name == "tilde" ||
         name == "widehat" || name == "widetilde" || name == "dot" || name == "ddot" ||
         name == "overrightarrow" || name == "underline" || name == "check";
}

// Commands that act as binary operators or relations; they never start an
// operand.
bool IsOperatorCommand(std::string_view name) {
  return name == "cdot" || name == "times" || name == "div" || name == "pm" || name == "mp" ||
         name == "cup" || name == "cap" || name == "le" || name == "leq" || name == "ge" ||
         name == "geq" || name == "neq" || name == "ne" || name == "in" || name == "to" ||
         name == "ldots" || name == "dots" || name == "cdots" || name == "lt" || name == "gt" ||
         name == "setminus" || name == "approx" || name == "equiv" || name == "quad" ||
         name == "qquad" || name == "right" || name == "end";
}

}  // namespace

class Parser {
 public:
  Parser(std::string_view s, Expression* out) : s_(s), out_(out) {}

  bool Run(std::string* error) {
    if (s_.size() > kMaxExprBytes) return Fail("expression too long", error);
    int root = ParseSum();
    SkipSpace();
    if (root < 0 || pos_ != s_.size()) {
      if (error_.empty()) error_ = "unexpected text at offset " + std::to_string(pos_);
      if (error) *error = error_;
      return false;
    }
    out_->root_ = root;
    return true;
  }

 private:
  bool Fail(std::string why, std::string* error) {
    if (error) *error = std::move(why);
    return false;
  }
  int Error(std::string why) {
    if (error_.empty()) error_ = std::move(why);
    return -1;
  }

  void SkipSpace() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool AtEnd() const { return pos_ >= s_.size(); }
  char Peek(std::size_t ahead = 0) const {
    return pos_ + ahead < s_.size() ? s_[pos_ + ahead] : '\0';
  }
  bool StartsWith(std::string_view p) const { return s_.substr(pos_, p.size()) == p; }
  // The command name at pos_ (which must be '\\'), without consuming it.
  std::string_view CommandAt(std::size_t at) const {
    std::size_t j = at + 1;
    while (j < s_.size() && IsAlpha(s_[j])) ++j;
    return s_.substr(at + 1, j - at - 1);
  }

  int NewNode(Node n) {
    if (static_cast<int>(out_->nodes_.size()) >= kMaxExprNodes) {
      return Error("expression too large");
    }
    out_->nodes_.push_back(std::move(n));
    return static_cast<int>(out_->nodes_.size()) - 1;
  }
  int Leaf(Op op, double v = 0.0) {
    Node n;
    n.op = op;
    n.value = v;
    return NewNode(std::move(n));
  }
  int Unary(Op op, int kid) {
    if (kid < 0) return -1;
    Node n;
    n.op = op;
    n.kids = {kid};
    return NewNode(std::move(n));
  }
  int Binary(Op op, int a, int b) {
    if (a < 0 || b < 0) return -1;
    Node n;
    n.op = op;
    n.kids = {a, b};
    return NewNode(std::move(n));
  }
  int Func(Fn fn, int a, int b = -1) {
    if (a < 0) return -1;
    Node n;
    n.op = Op::kFunc;
    n.fn = fn;
    n.kids = {a};
    if (b >= 0) n.kids.push_back(b);
    return NewNode(std::move(n));
  }
  int Var(const std::string& name) {
    auto& vars = out_->variables_;
    int idx = -1;
    for (std::size_t k = 0; k < vars.size(); ++k) {
      if (vars[k] == name) idx = static_cast<int>(k);
    }
    if (idx < 0) {
      vars.push_back(name);
      idx = static_cast<int>(vars.size()) - 1;
    }
    Node n;
    n.op = Op::kVar;
    n.var = idx;
    return NewNode(std::move(n));
  }

  struct DepthGuard {
    explicit DepthGuard(int* d) : d_(d) { ++*d_; }
    ~DepthGuard() { --*d_; }
    int* d_;
  };

  bool StartsOperand() const {
    char c = Peek();
    if (IsDigit(c) || IsAlpha(c) || c == '(' || c == '[' || c == '{') return true;
    if (c == '.') return IsDigit(Peek(1));
    if (c == '\\') {
      std::string_view cmd = CommandAt(pos_);
      return !cmd.empty() && !IsOperatorCommand(cmd);
    }
    if (StartsWith("\xCF\x80") || StartsWith("\xE2\x88\x9E") || StartsWith("\xE2\x88\x9A")) {
      return true;  // π ∞ √
    }
    return false;
  }

  // sum := product (('+'|'-') product)*
  int ParseSum() {
    DepthGuard g(&depth_);
    if (depth_ > kMaxExprDepth) return Error("expression nested too deeply");
    std::vector<int> kids;
    std::vector<std::uint8_t> neg;
    SkipSpace();
    int first = ParseProduct();
    if (first < 0) return -1;
    kids.push_back(first);
    neg.push_back(0);
    for (;;) {
      SkipSpace();
      char c = Peek();
      if (c != '+' && c != '-') break;
      ++pos_;
      SkipSpace();
      int t = ParseProduct();
      if (t < 0) return -1;
      kids.push_back(t);
      neg.push_back(c == '-' ? 1 : 0);
    }
    if (kids.size() == 1) return kids[0];
    Node n;
    n.op = Op::kSum;
    n.kids = std::move(kids);
    n.flags = std::move(neg);
    return NewNode(std::move(n));
  }

  bool IsIntLiteral(int node) const {
    const Node& n = out_->nodes_[node];
    if (n.op == Op::kNum) return n.int_literal;
    return false;
  }

  // product := unary (('*'|'/'|implicit) factor)*
  int ParseProduct() {
    std::vector<int> kids;
    std::vector<std::uint8_t> inv;
    int first = ParseUnary();
    if (first < 0) return -1;
    kids.push_back(first);
    inv.push_back(0);
    for (;;) {
      SkipSpace();
      bool divide = false;
      bool explicit_op = true;
      if (Peek() == '*' && Peek(1) != '*') {
        ++pos_;
      } else if (Peek() == '/') {
        ++pos_;
        divide = true;
      } else if (Peek() == '\\' && (CommandAt(pos_) == "cdot" || CommandAt(pos_) == "times")) {
        pos_ += 1 + CommandAt(pos_).size();
      } else if (Peek() == '\\' && CommandAt(pos_) == "div") {
        pos_ += 4;
        divide = true;
      } else if (StartsWith("\xC3\x97")) {  // ×
        pos_ += 2;
      } else if (StartsWith("\xC3\xB7")) {  // ÷
        pos_ += 2;
        divide = true;
      } else if (StartsOperand()) {
        explicit_op = false;
      } else {
        break;
      }
      SkipSpace();
      int f = explicit_op ? ParseUnary() : ParsePower();
      if (f < 0) return -1;
      // Mixed number: an integer directly followed by \frac{int}{int}.
      if (!explicit_op && kids.size() == 1 && out_->nodes_[f].from_frac) {
        int lead = kids[0];
        bool negated = false;
        if (out_->nodes_[lead].op == Op::kNeg && IsIntLiteral(out_->nodes_[lead].kids[0])) {
          negated = true;
          lead = out_->nodes_[lead].kids[0];
        }
        if (IsIntLiteral(lead)) {
          Node sum;
          sum.op = Op::kSum;
          sum.kids = {lead, f};
          sum.flags = {0, 0};
          int s = NewNode(std::move(sum));
          if (s < 0) return -1;
          kids[0] = negated ? Unary(Op::kNeg, s) : s;
          if (kids[0] < 0) return -1;
          continue;
        }
      }
      kids.push_back(f);
      inv.push_back(divide ? 1 : 0);
    }
    if (kids.size() == 1) return kids[0];
    Node n;
    n.op = Op::kProduct;
    n.kids = std::move(kids);
    n.flags = std::move(inv);
    return NewNode(std::move(n));
  }

  int ParseUnary() {
    DepthGuard g(&depth_);
    if (depth_ > kMaxExprDepth) return Error("expression nested too deeply");
    SkipSpace();
    if (Peek() == '-') {
      ++pos_;
      return Unary(Op::kNeg, ParseUnary());
    }
    if (Peek() == '+') {
      ++pos_;
      return ParseUnary();
    }
    return ParsePower();
  }

  int ParsePower() {
    DepthGuard g(&depth_);
    if (depth_ > kMaxExprDepth) return Error("expression nested too deeply");
    int base = ParsePostfix();
    if (base < 0) return -1;
    SkipSpace();
    if (Peek() == '^' || (Peek() == '*' && Peek(1) == '*')) {
      pos_ += Peek() == '^' ? 1 : 2;
      int e = ParseExponent();
      return Binary(Op::kPow, base, e);
    }
    return base;
  }

  // The exponent after '^': a brace group, a signed exponent, or one operand
  // (a whole number literal, a letter, a command, a parenthesized group).
  int ParseExponent() {
    DepthGuard g(&depth_);
    if (depth_ > kMaxExprDepth) return Error("expression nested too deeply");
    SkipSpace();
    if (Peek() == '-') {
      ++pos_;
      return Unary(Op::kNeg, ParseExponent());
    }
    if (Peek() == '+') {
      ++pos_;
      return ParseExponent();
    }
    int base = ParsePostfix();
    if (base < 0) return -1;
    SkipSpace();
    if (Peek() == '^') {
      ++pos_;
      return Binary(Op::kPow, base, ParseExponent());
    }
    return base;
  }

  int ParsePostfix() {
    int p = ParsePrimary();
    int bangs = 0;
    while (p >= 0 && Peek() == '!' && Peek(1) != '=') {
      if (++bangs > 3) return Error("too many factorials");
      ++pos_;
      p = Unary(Op::kFact, p);
    }
    SkipSpace();
    if (p >= 0 && StartsWith(kDegree)) {
      // Degrees: radians inside a trigonometric argument, else as written.
      pos_ += kDegree.size();
      if (trig_depth_ > 0) {
        int pi = Leaf(Op::kPi);
        int k = Leaf(Op::kNum, 180.0);
        if (pi < 0 || k < 0) return -1;
        Node n;
        n.op = Op::kProduct;
        n.kids = {p, pi, k};
        n.flags = {0, 0, 1};
        p = NewNode(std::move(n));
      }
    }
    return p;
  }

  int ParseGroup(char close) {
    int inner = ParseSum();
    if (inner < 0) return -1;
    SkipSpace();
    if (Peek() != close) return Error(std::string("expected '") + close + "'");
    ++pos_;
    return inner;
  }

  int ParseNumber() {
    std::size_t start = pos_;
    bool is_int = true;
    while (IsDigit(Peek())) ++pos_;
    if (Peek() == '.' && IsDigit(Peek(1))) {
      is_int = false;
      ++pos_;
      while (IsDigit(Peek())) ++pos_;
    } else if (Peek() == '.' && pos_ > start && !IsDigit(Peek(1)) && Peek(1) != '.') {
      ++pos_;  // "5." is 5
    }
    if ((Peek() == 'e' || Peek() == 'E') &&
        (IsDigit(Peek(1)) || ((Peek(1) == '-' || Peek(1) == '+') && IsDigit(Peek(2))))) {
      is_int = false;
      pos_ += 2;
      while (IsDigit(Peek())) ++pos_;
    }
    std::string text(s_.substr(start, pos_ - start));
    Node n;
    n.op = Op::kNum;
    n.value = std::strtod(text.c_str(), nullptr);
    n.int_literal = is_int;
    return NewNode(std::move(n));
  }

  // A LaTeX macro argument: {group} or a single digit / letter / command.
  int ParseArgument() {
    SkipSpace();
    char c = Peek();
    if (c == '{') {
      ++pos_;
      return ParseGroup('}');
    }
    if (IsDigit(c)) {
      ++pos_;
      Node n;
      n.op = Op::kNum;
      n.value = c - '0';
      n.int_literal = true;
      return NewNode(std::move(n));
    }
    if (IsAlpha(c)) {
      ++pos_;
      if (c == 'i') return Leaf(Op::kI);
      return Var(std::string(1, c));
    }
    if (c == '\\') return ParsePrimary();
    return Error("expected a macro argument");
  }

  // Subscript after '_': {group} text or one character, returned verbatim.
  std::string ParseSubscriptText() {
    SkipSpace();
    if (Peek() == '{') {
      std::size_t start = ++pos_;
      int depth = 1;
      while (!AtEnd() && depth > 0) {
        if (Peek() == '{') ++depth;
        if (Peek() == '}') --depth;
        ++pos_;
      }
      if (depth != 0) {
        Error("unbalanced subscript");
        return "";
      }
      std::string sub;
      for (char ch : s_.substr(start, pos_ - 1 - start)) {
        if (ch != ' ') sub.push_back(ch);
      }
      return sub;
    }
    if (AtEnd()) return "";
    return std::string(1, s_[pos_++]);
  }

  int ParseFunctionArgument() {
    SkipSpace();
    if (Peek() == '(') {
      ++pos_;
      return ParseGroup(')');
    }
    if (Peek() == '{') {
      ++pos_;
      return ParseGroup('}');
    }
    // \sin 2x: the juxtaposed factors up to the next operator or function.
    int a = ParsePower();
    if (a < 0) return -1;
    std::vector<int> kids{a};
    for (;;) {
      SkipSpace();
      if (!StartsOperand() || Peek() == '(' || Peek() == '\\') break;
      int f = ParsePower();
      if (f < 0) return -1;
      kids.push_back(f);
    }
    if (kids.size() == 1) return a;
    Node n;
    n.op = Op::kProduct;
    n.kids = kids;
    n.flags.assign(kids.size(), 0);
    return NewNode(std::move(n));
  }

  int ApplyFunction(Fn fn) {
    SkipSpace();
    int power = -1;
    int base = -1;
    if (fn == Fn::kLn && Peek() == '_') {
      ++pos_;
      base = ParseArgument();
      if (base < 0) return -1;
      fn = Fn::kLogBase;
      SkipSpace();
    }
    if (Peek() == '^') {  // \sin^2 x
      ++pos_;
      power = ParseExponent();
      if (power < 0) return -1;
    }
    bool trig = fn == Fn::kSin || fn == Fn::kCos || fn == Fn::kTan || fn == Fn::kCot ||
                fn == Fn::kSec || fn == Fn::kCsc;
    trig_depth_ += trig;
    int arg = ParseFunctionArgument();
    trig_depth_ -= trig;
    if (arg < 0) return -1;
    int f = Func(fn, arg, base);
    if (power >= 0) f = Binary(Op::kPow, f, power);
    return f;
  }

  int ParseCommand() {
    std::string_view cmd = CommandAt(pos_);
    if (cmd.empty()) return Error("stray backslash");
    pos_ += 1 + cmd.size();
    if (cmd == "frac" || cmd == "dfrac" || cmd == "tfrac" || cmd == "cfrac") {
      int num = ParseArgument();
      if (num < 0) return -1;
      int den = ParseArgument();
      if (den < 0) return -1;
      Node n;
      n.op = Op::kProduct;
      n.kids = {num, den};
      n.flags = {0, 1};
      n.from_frac = IsIntLiteral(num) && IsIntLiteral(den);
      return NewNode(std::move(n));
    }
    if (cmd == "sqrt") {
      SkipSpace();
      int index = -1;
      if (Peek() == '[') {
        ++pos_;
        index = ParseGroup(']');
        if (index < 0) return -1;
      }
      int arg = ParseArgument();
      if (index >= 0) return Func(Fn::kRoot, arg, index);
      return Func(Fn::kSqrt, arg);
    }
    if (cmd == "pi") return Leaf(Op::kPi);
    if (cmd == "infty" || cmd == "infinity") return Leaf(Op::kInf);
    if (cmd == "operatorname") {
      SkipSpace();
      if (Peek() != '{') return Error("expected {name} after \\operatorname");
      std::size_t close = s_.find('}', pos_);
      if (close == std::string_view::npos) return Error("unbalanced braces");
      std::string_view name = s_.substr(pos_ + 1, close - pos_ - 1);
      pos_ = close + 1;
      if (auto fn = LookupFunction(name)) return ApplyFunction(*fn);
      return Error("unknown function " + std::string(name));
    }
    if (auto fn = LookupFunction(cmd)) return ApplyFunction(*fn);
    if (IsGreek(cmd)) {
      std::string name = "\\" + std::string(cmd);
      if (Peek() == '_') {
        ++pos_;
        name += "_" + ParseSubscriptText();
      }
      return Var(name);
    }
    if (IsDecoration(cmd)) {  // \hat{x}, \overline{AB}: a variable of that name
      SkipSpace();
      std::string name = "\\" + std::string(cmd) + "{";
      if (Peek() == '{') {
        std::size_t close = s_.find('}', pos_);
        if (close == std::string_view::npos) return Error("unbalanced braces");
        for (char ch : s_.substr(pos_ + 1, close - pos_ - 1)) {
          if (ch != ' ') name.push_back(ch);
        }
        pos_ = close + 1;
      } else if (IsAlpha(Peek())) {
        name.push_back(s_[pos_++]);
      } else {
        return Error("expected a name after \\" + std::string(cmd));
      }
      name += "}";
      if (Peek() == '_') {
        ++pos_;
        name += "_" + ParseSubscriptText();
      }
      return Var(name);
    }
    if (cmd == "left" || cmd == "right" || cmd == "mathrm" || cmd == "text" || cmd == "mathbf" ||
        cmd == "boldsymbol") {
      // Normally removed by normalization; a group follows.
      return ParseArgument();
    }
    return Error("unknown command \\" + std::string(cmd));
  }

  int ParsePrimary() {
    DepthGuard g(&depth_);
    if (depth_ > kMaxExprDepth) return Error("expression nested too deeply");
    SkipSpace();
    if (AtEnd()) return Error("unexpected end of expression");
    char c = Peek();
    if (IsDigit(c) || (c == '.' && IsDigit(Peek(1)))) return ParseNumber();
    if (c == '(') {
      ++pos_;
      return ParseGroup(')');
    }
    if (c == '[') {
      ++pos_;
      return ParseGroup(']');
    }
    if (c == '{') {
      ++pos_;
      return ParseGroup('}');
    }
    if (c == '|') {
      ++pos_;
      return Unary(Op::kAbs, ParseGroup('|'));
    }
    if (c == '\\') return ParseCommand();
    if (StartsWith("\xCF\x80")) {
      pos_ += 2;
      return Leaf(Op::kPi);
    }
    if (StartsWith("\xE2\x88\x9E")) {
      pos_ += 3;
      return Leaf(Op::kInf);
    }
    if (StartsWith("\xE2\x88\x9A")) {
      pos_ += 3;
      return Func(Fn::kSqrt, ParseArgument());
    }
    if (IsAlpha(c)) {
      std::size_t j = pos_;
      while (j < s_.size() && IsAlpha(s_[j])) ++j;
      std::string_view word = s_.substr(pos_, j - pos_);
      // A function name, also glued to its argument ("sinx", "ln2").
      for (std::size_t len = std::min<std::size_t>(word.size(), 6); len >= 2; --len) {
        if (auto fn = LookupFunction(word.substr(0, len))) {
          pos_ += len;
          return ApplyFunction(*fn);
        }
      }
      if (word == "pi") {
        pos_ = j;
        return Leaf(Op::kPi);
      }
      if (word == "inf" || word == "infty" || word == "infinity") {
        pos_ = j;
        return Leaf(Op::kInf);
      }
      if (word.size() >= 3) return Error("text, not math: " + std::string(word));
      ++pos_;  // one letter is one variable; "xy" is x*y
      if (c == 'i' && Peek() != '_') return Leaf(Op::kI);
      std::string name(1, c);
      if (Peek() == '_') {
        ++pos_;
        name += "_" + ParseSubscriptText();
      }
      return Var(name);
    }
    return Error(std::string("unexpected character '") + c + "'");
  }

  std::string_view s_;
  Expression* out_;
  std::size_t pos_ = 0;
  int depth_ = 0;
  int trig_depth_ = 0;  // inside the argument of sin, cos, ...: degrees convert
  std::string error_;
};

std::optional<Expression> Expression::Parse(std::string_view text, std::string* error) {
  Expression e;
  Parser p(text, &e);
  if (!p.Run(error)) return std::nullopt;
  return e;
}

bool Expression::is_literal() const {
  if (root_ < 0) return false;
  const Node* n = &nodes_[root_];
  if (n->op == Op::kNeg) n = &nodes_[n->kids[0]];
  return n->op == Op::kNum;
}

Complex Expression::Evaluate(const std::vector<Complex>& values) const {
  if (root_ < 0) return {kNaN, 0};
  return Eval(root_, values);
}

namespace {

bool IsReal(Complex z) { return z.imag() == 0.0; }

// p / q with q odd and at most 99 when y is such a fraction.
bool OddDenominator(double y, long* p) {
  for (int q = 3; q <= 99; q += 2) {
    double n = y * q;
    double r = std::round(n);
    if (std::abs(n - r) < 1e-9 * std::max(1.0, std::abs(n))) {
      *p = static_cast<long>(r);
      return true;
    }
  }
  return false;
}

Complex Power(Complex b, Complex e) {
  if (std::abs(e) > kMaxExponent) return {kNaN, 0};
  if (IsReal(b) && IsReal(e)) {
    double x = b.real();
    double y = e.real();
    if (x >= 0 || y == std::floor(y)) return {std::pow(x, y), 0.0};
    // The real root for real x: (-8)^{1/3} = -2, x^{2/3} = (x^{1/3})^2.
    long p = 0;
    if (OddDenominator(y, &p)) {
      double m = std::pow(-x, y);
      return {p % 2 == 0 ? m : -m, 0.0};
    }
  }
  if (b == Complex(0, 0)) return {e.real() > 0 ? 0.0 : kNaN, 0};
  return std::pow(b, e);
}

Complex Root(Complex x, Complex n) {
  if (IsReal(x) && IsReal(n) && n.real() == std::floor(n.real()) && n.real() >= 1 &&
      n.real() <= kMaxExponent) {
    double k = n.real();
    if (x.real() >= 0) return {std::pow(x.real(), 1.0 / k), 0};
    if (std::fmod(k, 2.0) == 1.0) return {-std::pow(-x.real(), 1.0 / k), 0};
  }
  if (n == Complex(0, 0)) return {kNaN, 0};
  return Power(x, Complex(1, 0) / n);
}

Complex Factorial(Complex x) {
  if (!IsReal(x)) return {kNaN, 0};
  double v = x.real();
  if (v < 0 || v > 170 || v != std::floor(v)) return {kNaN, 0};
  double r = 1;
  for (int k = 2; k <= static_cast<int>(v); ++k) r *= k;
  return {r, 0};
}

}  // namespace

Complex Expression::Eval(int id, const std::vector<Complex>& values) const {
  const Node& n = nodes_[id];
  switch (n.op) {
    case Op::kNum:
      return {n.value, 0};
    case Op::kVar:
      return n.var < static_cast<int>(values.size()) ? values[n.var] : Complex(0, 0);
    case Op::kPi:
      return {M_PI, 0};
    case Op::kI:
      return {0, 1};
    case Op::kInf:
      return {std::numeric_limits<double>::infinity(), 0};
    case Op::kSum: {
      Complex acc(0, 0);
      for (std::size_t k = 0; k < n.kids.size(); ++k) {
        Complex v = Eval(n.kids[k], values);
        // Keep infinities real: complex arithmetic would turn inf into NaN.
        if (IsReal(v) && IsReal(acc)) {
          acc = {n.flags[k] ? acc.real() - v.real() : acc.real() + v.real(), 0};
        } else {
          acc = n.flags[k] ? acc - v : acc + v;
        }
      }
      return acc;
    }
    case Op::kProduct: {
      Complex acc(1, 0);
      for (std::size_t k = 0; k < n.kids.size(); ++k) {
        Complex v = Eval(n.kids[k], values);
        if (n.flags[k] && v == Complex(0, 0)) return {kNaN, 0};  // x / 0
        if (IsReal(v) && IsReal(acc)) {
          acc = {n.flags[k] ? acc.real() / v.real() : acc.real() * v.real(), 0};
        } else if (n.flags[k]) {
          acc /= v;
        } else {
          acc *= v;
        }
      }
      return acc;
    }
    case Op::kPow:
      return Power(Eval(n.kids[0], values), Eval(n.kids[1], values));
    case Op::kNeg: {
      Complex v = Eval(n.kids[0], values);
      return IsReal(v) ? Complex(-v.real(), 0) : -v;
    }
    case Op::kFact:
      return Factorial(Eval(n.kids[0], values));
    case Op::kAbs:
      return {std::abs(Eval(n.kids[0], values)), 0};
    case Op::kFunc: {
      Complex x = Eval(n.kids[0], values);
      bool real = IsReal(x);
      double r = x.real();
      switch (n.fn) {
        case Fn::kSqrt:
          if (real && r >= 0) return {std::sqrt(r), 0};
          return std::sqrt(x);
        case Fn::kRoot:
          return Root(x, Eval(n.kids[1], values));
        case Fn::kSin:
          return real ? Complex(std::sin(r), 0) : std::sin(x);
        case Fn::kCos:
          return real ? Complex(std::cos(r), 0) : std::cos(x);
        case Fn::kTan:
          return real ? Complex(std::tan(r), 0) : std::tan(x);
        case Fn::kCot:
          return real ? Complex(1.0 / std::tan(r), 0) : Complex(1, 0) / std::tan(x);
        case Fn::kSec:
          return real ? Complex(1.0 / std::cos(r), 0) : Complex(1, 0) / std::cos(x);
        case Fn::kCsc:
          return real ? Complex(1.0 / std::sin(r), 0) : Complex(1, 0) / std::sin(x);
        case Fn::kAsin:
          return real && std::abs(r) <= 1 ? Complex(std::asin(r), 0) : std::asin(x);
        case Fn::kAcos:
          return real && std::abs(r) <= 1 ? Complex(std::acos(r), 0) : std::acos(x);
        case Fn::kAtan:
          return real ? Complex(std::atan(r), 0) : std::atan(x);
        case Fn::kLn:
          return real && r > 0 ? Complex(std::log(r), 0) : std::log(x);
        case Fn::kLogBase: {
          Complex b = Eval(n.kids[1], values);
          if (real && r > 0 && IsReal(b) && b.real() > 0 && b.real() != 1) {
            return {std::log(r) / std::log(b.real()), 0};
          }
          Complex lb = std::log(b);
          if (lb == Complex(0, 0)) return {kNaN, 0};
          return std::log(x) / lb;
        }
        case Fn::kExp:
          return real ? Complex(std::exp(r), 0) : std::exp(x);
      }
      return {kNaN, 0};
    }
  }
  return {kNaN, 0};
}

}  // namespace cohort::reward::expr
