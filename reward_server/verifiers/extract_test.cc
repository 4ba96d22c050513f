#include "reward_server/verifiers/extract.h"

#include <gtest/gtest.h>

#include <string>

namespace cohort::reward {
namespace {

std::string Ex(const std::string& s) {
  auto a = ExtractAnswer(s);
  return a ? *a : "<none>";
}

TEST(ExtractAnswer, AnswerTagComesFirst) {
  EXPECT_EQ(Ex("<think>so \\boxed{3}</think> <answer> 42 </answer>"), "42");
  EXPECT_EQ(Ex("<answer>1</answer> then <answer>2</answer>"), "2");
  // A boxed answer inside the tag is unwrapped.
  EXPECT_EQ(Ex("<answer>The answer is $\\boxed{\\frac{1}{2}}$.</answer>"), "\\frac{1}{2}");
  // An unclosed tag (truncated) falls through to the other rules.
  EXPECT_EQ(Ex("\\boxed{7} <answer> 8"), "7");
}

TEST(ExtractAnswer, LastBoxedWithNestedBraces) {
  EXPECT_EQ(Ex("first \\boxed{1}, finally \\boxed{\\frac{a}{b^{2}}}"), "\\frac{a}{b^{2}}");
  EXPECT_EQ(Ex("\\fbox{12}"), "12");
  EXPECT_EQ(Ex("so $\\boxed 5$."), "5");
  EXPECT_EQ(Ex("\\boxed{\\{1, 2\\}}"), "\\{1, 2\\}");
  // A truncated last box: the previous well-formed one wins.
  EXPECT_EQ(Ex("\\boxed{3} and then \\boxed{\\frac{1}{2"), "3");
  EXPECT_EQ(Ex("\\boxedx"), "<none>");
}

TEST(ExtractAnswer, Gsm8kHashes) {
  EXPECT_EQ(Ex("She makes 9 * 2 = $18.\n#### 18"), "18");
  EXPECT_EQ(Ex("#### 1,000\nextra line"), "1,000");
  EXPECT_EQ(Ex("#### \n"), "<none>");
  // \boxed comes before ####.
  EXPECT_EQ(Ex("\\boxed{5}\n#### 6"), "5");
}

TEST(ExtractAnswer, AnswerIsPhrases) {
  EXPECT_EQ(Ex("So the answer is 3.5. Done"), "3.5");
  EXPECT_EQ(Ex("The Answer Is $12$."), "12");
  EXPECT_EQ(Ex("Final answer: x = 4\nthanks"), "x = 4");
  EXPECT_EQ(Ex("the answer is 7 and then the answer is 9."), "9");
  EXPECT_EQ(Ex("**Final Answer:** 10"), "10");
  EXPECT_EQ(Ex("**Final Answer**: 42"), "42");
  EXPECT_EQ(Ex("My final answer is 6"), "6");
  EXPECT_EQ(Ex("The answer is \\(18\\)."), "18");
  EXPECT_EQ(Ex("The answer is: $\\frac{1}{2}$"), "\\frac{1}{2}");
  EXPECT_EQ(Ex("so the answer is 5, right"), "5, right");
}

TEST(ExtractAnswer, NothingToExtract) {
  EXPECT_EQ(Ex(""), "<none>");
  EXPECT_EQ(Ex("I think it might be 5"), "<none>");
  EXPECT_EQ(Ex("<answer>   </answer>"), "<none>");
}

TEST(ExtractAnswer, HugeInputIsBounded) {
  std::string big(3 << 20, '{');
  big += "\\boxed{4}";
  EXPECT_EQ(Ex(big), "4");
  std::string braces = "\\boxed" + std::string(1 << 20, '{');
  EXPECT_EQ(Ex(braces), "<none>");
  // Many unclosed boxes: linear, not quadratic.
  std::string unclosed;
  while (unclosed.size() < (1u << 20)) unclosed += "\\boxed{";
  EXPECT_EQ(Ex(unclosed), "<none>");
}

TEST(ChainOfThought, InsideThinkTags) {
  EXPECT_EQ(ChainOfThought("<think>abc</think> x"), "abc");
  EXPECT_EQ(ChainOfThought("abc</think> x"), "abc");  // <think> was in the prompt
  EXPECT_EQ(ChainOfThought("no tags"), "no tags");
}

}  // namespace
}  // namespace cohort::reward
