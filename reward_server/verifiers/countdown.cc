#include "reward_server/verifiers/countdown.h"

#include <algorithm>
#include <numeric>

#include "reward_server/verifiers/extract.h"

namespace cohort::reward {
namespace {

constexpr int kMaxDepth = 64;

bool Normalize(Rational* r) {
  if (r->den == 0) return false;
  if (r->den < 0) {
    if (r->den == INT64_MIN || r->num == INT64_MIN) return false;
    r->den = -r->den;
    r->num = -r->num;
  }
  std::int64_t g = std::gcd(r->num < 0 ? -r->num : r->num, r->den);
  if (g > 1) {
    r->num /= g;
    r->den /= g;
  }
  return true;
}

class CountdownParser {
 public:
  CountdownParser(std::string s, std::vector<std::int64_t>* used) : s_(std::move(s)), used_(used) {}

  std::optional<Rational> Run(std::string* why) {
    auto v = Sum();
    Skip();
    if (v && pos_ != s_.size()) Fail("unexpected character '" + std::string(1, s_[pos_]) + "'");
    if (!error_.empty()) {
      *why = error_;
      return std::nullopt;
    }
    return v;
  }

 private:
  void Skip() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n')) ++pos_;
  }
  std::optional<Rational> Fail(std::string why) {
    if (error_.empty()) error_ = std::move(why);
    return std::nullopt;
  }

  std::optional<Rational> Combine(Rational a, char op, Rational b) {
    Rational r;
    std::int64_t x, y;
    switch (op) {
      case '+':
      case '-':
        if (__builtin_mul_overflow(a.num, b.den, &x) || __builtin_mul_overflow(b.num, a.den, &y) ||
            __builtin_mul_overflow(a.den, b.den, &r.den)) {
          return Fail("overflow");
        }
        if (op == '+' ? __builtin_add_overflow(x, y, &r.num)
                      : __builtin_sub_overflow(x, y, &r.num)) {
          return Fail("overflow");
        }
        break;
      case '*':
        if (__builtin_mul_overflow(a.num, b.num, &r.num) ||
            __builtin_mul_overflow(a.den, b.den, &r.den)) {
          return Fail("overflow");
        }
        break;
      default:  // '/'
        if (b.num == 0) return Fail("division by zero");
        if (__builtin_mul_overflow(a.num, b.den, &r.num) ||
            __builtin_mul_overflow(a.den, b.num, &r.den)) {
          return Fail("overflow");
        }
    }
    if (!Normalize(&r)) return Fail("overflow");
    return r;
  }

  std::optional<Rational> Sum() {
    if (++depth_ > kMaxDepth) return Fail("expression nested too deeply");
    auto acc = Product();
    while (acc) {
      Skip();
      if (pos_ >= s_.size() || (s_[pos_] != '+' && s_[pos_] != '-')) break;
      char op = s_[pos_++];
      auto rhs = Product();
      if (!rhs) return std::nullopt;
      acc = Combine(*acc, op, *rhs);
    }
    --depth_;
    return acc;
  }

  std::optional<Rational> Product() {
    auto acc = Atom();
    while (acc) {
      Skip();
      if (pos_ >= s_.size() || (s_[pos_] != '*' && s_[pos_] != '/')) break;
      char op = s_[pos_++];
      auto rhs = Atom();
      if (!rhs) return std::nullopt;
      acc = Combine(*acc, op, *rhs);
    }
    return acc;
  }

  std::optional<Rational> Atom() {
    Skip();
    if (pos_ >= s_.size()) return Fail("unexpected end of expression");
    char c = s_[pos_];
    if (c == '(') {
      ++pos_;
      auto v = Sum();
      Skip();
      if (!v) return std::nullopt;
      if (pos_ >= s_.size() || s_[pos_] != ')') return Fail("expected ')'");
      ++pos_;
      return v;
    }
    if (c >= '0' && c <= '9') {
      std::int64_t v = 0;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, s_[pos_] - '0', &v)) {
          return Fail("number too large");
        }
        ++pos_;
      }
      if (used_->size() >= kMaxCountdownNumbers * 2) return Fail("too many numbers");
      used_->push_back(v);
      return Rational{v, 1};
    }
    if (c == '-' || c == '+') return Fail("unary signs are not allowed");
    return Fail(std::string("unexpected character '") + c + "'");
  }

  std::string s_;
  std::vector<std::int64_t>* used_;
  std::size_t pos_ = 0;
  int depth_ = 0;
  std::string error_;
};

std::string ReplaceAll(std::string s, std::string_view from, std::string_view to) {
  for (std::size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) {
    s.replace(p, from.size(), to);
  }
  return s;
}

}  // namespace

std::optional<Rational> EvaluateCountdown(std::string_view expression,
                                          std::vector<std::int64_t>* used, std::string* why) {
  if (expression.size() > kMaxCountdownExprBytes) {
    *why = "expression too long";
    return std::nullopt;
  }
  std::string s(expression);
  s = ReplaceAll(s, "\\times", "*");
  s = ReplaceAll(s, "\\cdot", "*");
  s = ReplaceAll(s, "\\div", "/");
  s = ReplaceAll(s, "\xC3\x97", "*");  // ×
  s = ReplaceAll(s, "\xC3\xB7", "/");  // ÷
  s = ReplaceAll(s, "\\left", "");
  s = ReplaceAll(s, "\\right", "");
  used->clear();
  CountdownParser parser(std::move(s), used);
  return parser.Run(why);
}

ComponentResult CountdownAccuracy(const Sample& sample) {
  const nlohmann::json& extra = sample.extra;
  if (!extra.is_object() || !extra.contains("numbers") || !extra.contains("target")) {
    return ComponentResult::Invalid("countdown sample needs \"numbers\" and \"target\"");
  }
  const nlohmann::json& numbers = extra["numbers"];
  const nlohmann::json& target_json = extra["target"];
  if (!numbers.is_array() || numbers.empty() || numbers.size() > kMaxCountdownNumbers) {
    return ComponentResult::Invalid("\"numbers\" must be a list of 1 to " +
                                    std::to_string(kMaxCountdownNumbers) + " integers");
  }
  std::vector<std::int64_t> given;
  for (const nlohmann::json& n : numbers) {
    if (!n.is_number_integer()) {
      return ComponentResult::Invalid("\"numbers\" must hold integers only");
    }
    given.push_back(n.get<std::int64_t>());
  }
  if (!target_json.is_number_integer()) {
    return ComponentResult::Invalid("\"target\" must be an integer");
  }
  std::int64_t target = target_json.get<std::int64_t>();

  std::optional<std::string> answer = ExtractAnswer(sample.completion);
  if (!answer) return ComponentResult::Ok(0.0, "no answer found in the completion");
  std::string_view expression = *answer;
  std::size_t eq = expression.find('=');
  if (eq != std::string_view::npos) expression = expression.substr(0, eq);

  std::vector<std::int64_t> used;
  std::string why;
  std::optional<Rational> value = EvaluateCountdown(expression, &used, &why);
  if (!value) return ComponentResult::Ok(0.0, "bad expression: " + why);
  std::sort(used.begin(), used.end());
  std::sort(given.begin(), given.end());
  if (used != given) {
    return ComponentResult::Ok(0.0, "must use each given number exactly once");
  }
  if (value->den != 1 || value->num != target) {
    return ComponentResult::Ok(0.0, "does not equal the target");
  }
  return ComponentResult::Ok(1.0);
}

}  // namespace cohort::reward
