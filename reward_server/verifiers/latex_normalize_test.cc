#include "reward_server/verifiers/latex_normalize.h"

#include <gtest/gtest.h>

namespace cohort::reward {
namespace {

TEST(NormalizeLatex, DelimitersSizingAndText) {
  EXPECT_EQ(NormalizeLatex("\\left( 3, \\frac{\\pi}{2} \\right)"), "( 3, \\frac{\\pi}{2} )");
  EXPECT_EQ(NormalizeLatex("$\\dfrac{1}{2}$"), "\\frac{1}{2}");
  EXPECT_EQ(NormalizeLatex("\\tfrac12"), "\\frac12");
  EXPECT_EQ(NormalizeLatex("5.4 \\text{ cents}"), "5.4 cents");
  EXPECT_EQ(NormalizeLatex("\\textbf{\\text{Evelyn}}"), "Evelyn");
  EXPECT_EQ(NormalizeLatex("50\\%."), "50%");
  EXPECT_EQ(NormalizeLatex("x_1"), "x_1");
  EXPECT_EQ(NormalizeLatex("52_8"), "52");
  EXPECT_EQ(NormalizeLatex("4210_{5}"), "4210");
  EXPECT_EQ(NormalizeLatex("\\langle 1, 2 \\rangle"), "( 1, 2 )");
  EXPECT_EQ(NormalizeLatex("3 \xE2\x88\x92 2"), "3 - 2");  // Unicode minus
}

TEST(NormalizeLatex, FontCommandsKeepTheirContent) {
  EXPECT_EQ(NormalizeLatex("\\mathcal{B}"), "B");
  EXPECT_EQ(NormalizeLatex("\\mathbb{R}"), "R");
  EXPECT_EQ(NormalizeLatex("\\mathbf{v}"), "v");
  EXPECT_EQ(NormalizeLatex("\\mathrm{(B)}"), "(B)");
  EXPECT_EQ(NormalizeLatex("\\mathscr{A}"), "A");
}

TEST(NormalizeLatex, DigitGroupSeparators) {
  EXPECT_EQ(NormalizeLatex("10,\\!080"), "10080");
  EXPECT_EQ(NormalizeLatex("\\$32,\\!348"), "32348");
  EXPECT_EQ(NormalizeLatex("11,\\! 111,\\! 111,\\! 100"), "11111111100");
  EXPECT_EQ(NormalizeLatex("1,\\!00,\\!000"), "100000");  // Indian grouping
  EXPECT_EQ(NormalizeLatex("1{,}000{,}000"), "1000000");
  EXPECT_EQ(NormalizeLatex("1\\,000"), "1000");
  EXPECT_EQ(NormalizeLatex("1\\,00\\,000"), "100000");
  EXPECT_EQ(NormalizeLatex("10\\!000"), "10000");
  EXPECT_EQ(NormalizeLatex("1\\ 000"), "1000");
  // Not between digit groups: plain spacing or a list.
  EXPECT_EQ(NormalizeLatex("(1,\\!2)"), "(1,2)");
  EXPECT_EQ(NormalizeLatex("x\\,dx"), "x dx");
  EXPECT_EQ(NormalizeLatex("1 \\ 2 \\ 3"), "1 ; 2 ; 3");
}

TEST(NormalizeLatex, SpacingCommandsAroundAnAnswer) {
  EXPECT_EQ(NormalizeLatex("\\; 5 \\;"), "5");
  EXPECT_EQ(NormalizeLatex("\\quad 5 \\qquad"), "5");
  EXPECT_EQ(NormalizeLatex("\\!5"), "5");
  EXPECT_EQ(NormalizeLatex("~5~"), "5");
}

TEST(NormalizeLatex, CurrencyUnitsAndSuperscripts) {
  EXPECT_EQ(NormalizeLatex("1,000.99\xE2\x82\xAC"), "1,000.99");  // €
  EXPECT_EQ(NormalizeLatex("\xC2\xA3"
                           "50"),
            "50");  // £
  EXPECT_EQ(NormalizeLatex("\xE2\x82\xB9"
                           "50"),
            "50");  // ₹
  EXPECT_EQ(NormalizeLatex("\\euro 5"), "5");
  EXPECT_EQ(NormalizeLatex("5m\xC2\xB2"), "5");   // 5m²
  EXPECT_EQ(NormalizeLatex("5cm\xC2\xB3"), "5");  // 5cm³
  EXPECT_EQ(NormalizeLatex("x\xC2\xB2"), "x^2");  // x²: a power
  EXPECT_EQ(NormalizeLatex("5x\xC2\xB2"), "5x^2");
}

TEST(NormalizeLatex, EveryDegreeSignIsOneMarker) {
  const std::string deg = "\xC2\xB0";
  EXPECT_EQ(NormalizeLatex("90^\\circ"), "90" + deg);
  EXPECT_EQ(NormalizeLatex("90^{\\circ}"), "90" + deg);
  EXPECT_EQ(NormalizeLatex("90 ^ { \\circ }"), "90 " + deg);
  EXPECT_EQ(NormalizeLatex("90\\degree"), "90" + deg);
  EXPECT_EQ(NormalizeLatex("90" + deg), "90" + deg);
  EXPECT_EQ(NormalizeLatex("\\sin(90^\\circ - x)"), "\\sin(90" + deg + " - x)");
}

TEST(NormalizeLatex, LinearOnHostileInput) {
  std::string s;
  for (int i = 0; i < 20000; ++i) s += "\\text{";
  EXPECT_FALSE(NormalizeLatex(s).empty());
  std::string groups;
  for (int i = 0; i < 20000; ++i) groups += "1,\\!";
  EXPECT_FALSE(NormalizeLatex(groups).empty());
}

}  // namespace
}  // namespace cohort::reward
