#include "reward_server/verifiers/expr.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

namespace cohort::reward::expr {
namespace {

Complex Value(const std::string& s, std::vector<Complex> vars = {}) {
  auto e = Expression::Parse(s);
  EXPECT_TRUE(e.has_value()) << s;
  return e ? e->Evaluate(vars) : Complex(NAN, 0);
}

TEST(Expression, LatexAndPlainNotation) {
  EXPECT_DOUBLE_EQ(Value("\\frac{3}{4}").real(), 0.75);
  EXPECT_DOUBLE_EQ(Value("\\frac43").real(), 4.0 / 3);
  EXPECT_DOUBLE_EQ(Value("2^{10}").real(), 1024);
  EXPECT_DOUBLE_EQ(Value("2**3").real(), 8);
  EXPECT_DOUBLE_EQ(Value("-2^2").real(), -4);
  EXPECT_DOUBLE_EQ(Value("(-2)^3").real(), -8);
  EXPECT_DOUBLE_EQ(Value("2\\frac{1}{4}").real(), 2.25);  // mixed number
  EXPECT_DOUBLE_EQ(Value("2 \\cdot 3 + 4").real(), 10);
  EXPECT_DOUBLE_EQ(Value("6 \\div 4").real(), 1.5);
  EXPECT_DOUBLE_EQ(Value("|-3|").real(), 3);
  EXPECT_DOUBLE_EQ(Value("4!").real(), 24);
  EXPECT_DOUBLE_EQ(Value("1.5e-5").real(), 1.5e-5);
  EXPECT_DOUBLE_EQ(Value(".5").real(), 0.5);
  EXPECT_NEAR(Value("\\sqrt[3]{27}").real(), 3, 1e-12);
  EXPECT_NEAR(Value("\\log_2 8").real(), 3, 1e-12);
  EXPECT_NEAR(Value("\\sqrt{-9}").imag(), 3, 1e-12);
  EXPECT_NEAR(Value("(1+i)(1-i)").real(), 2, 1e-12);
}

TEST(Expression, RealRootsOfNegativeNumbers) {
  EXPECT_NEAR(Value("\\sqrt[3]{-8}").real(), -2, 1e-12);
  EXPECT_NEAR(Value("(-8)^{1/3}").real(), -2, 1e-12);
  EXPECT_NEAR(Value("(-8)^{2/3}").real(), 4, 1e-12);
  EXPECT_EQ(Value("(-8)^{2/3}").imag(), 0);
  // x^{2/3} = (x^{1/3})^2 at a negative x, as for \sqrt[3]{x}^2.
  EXPECT_NEAR(Value("x^{2/3}", {Complex(-0.7, 0)}).real(),
              Value("\\sqrt[3]{x}^2", {Complex(-0.7, 0)}).real(), 1e-12);
  // An even root of a negative number stays complex.
  EXPECT_NEAR(Value("(-4)^{1/2}").imag(), 2, 1e-12);
}

TEST(Expression, DegreesConvertOnlyInsideTrigonometricArguments) {
  const std::string deg = "\xC2\xB0";  // what NormalizeLatex makes of ^\circ
  EXPECT_NEAR(Value("\\sin 30" + deg).real(), 0.5, 1e-12);
  EXPECT_NEAR(Value("\\cos(60" + deg + ")").real(), 0.5, 1e-12);
  EXPECT_NEAR(Value("\\sin(90" + deg + " - x)", {Complex(0.3, 0)}).real(), std::cos(0.3), 1e-12);
  EXPECT_DOUBLE_EQ(Value("90" + deg).real(), 90);  // outside: as written
  EXPECT_NEAR(Value("\\sin 30").real(), std::sin(30.0), 1e-12);
}

TEST(Expression, VariablesAndDecoratedNames) {
  auto e = Expression::Parse("x^2 + 2xy");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->variables().size(), 2u);
  e = Expression::Parse("\\hat{x} + \\bar{y}_1 + x_1 + \\alpha");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->variables(), (std::vector<std::string>{"\\hat{x}", "\\bar{y}_1", "x_1", "\\alpha"}));
  EXPECT_TRUE(Expression::Parse("5")->is_literal());
  EXPECT_TRUE(Expression::Parse("-5")->is_literal());
  EXPECT_FALSE(Expression::Parse("5x")->is_literal());
}

TEST(Expression, RejectsWhatIsNotOneExpression) {
  for (const char* bad : {"Evelyn", "1 +", "(1", "\\frac{1}{", "1, 2", "\\unknown{x}", "", "?"}) {
    std::string error;
    EXPECT_FALSE(Expression::Parse(bad, &error).has_value()) << bad;
    EXPECT_FALSE(error.empty()) << bad;
  }
}

TEST(Expression, BoundsHold) {
  std::string deep(kMaxExprDepth + 10, '(');
  deep += "1" + std::string(kMaxExprDepth + 10, ')');
  std::string error;
  EXPECT_FALSE(Expression::Parse(deep, &error).has_value());
  EXPECT_NE(error.find("deep"), std::string::npos) << error;
  std::string wide;
  for (int i = 0; i < kMaxExprNodes; ++i) wide += "1+";
  wide += "1";
  EXPECT_FALSE(Expression::Parse(wide, &error).has_value());
  EXPECT_FALSE(Expression::Parse(std::string(kMaxExprBytes + 1, '1')).has_value());
  EXPECT_TRUE(std::isnan(Value("2^{10000000}").real()));
  EXPECT_TRUE(std::isnan(Value("171!").real()));
  EXPECT_TRUE(std::isnan(Value("1/0").real()));
}

}  // namespace
}  // namespace cohort::reward::expr
