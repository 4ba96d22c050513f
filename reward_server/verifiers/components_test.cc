#include <gtest/gtest.h>

#include <string>

#include "reward_server/verifiers/verifiers.h"

namespace cohort::reward {
namespace {

Sample Make(std::string completion, std::string answer = "", std::string prompt = "") {
  Sample s;
  s.completion = std::move(completion);
  s.answer = std::move(answer);
  s.prompt = std::move(prompt);
  return s;
}

TEST(MathAccuracy, CorrectWrongMissingInvalid) {
  ComponentResult r = MathAccuracy(Make("so \\boxed{\\frac{1}{2}}", "0.5"));
  EXPECT_EQ(r.status, Status::kOk);
  EXPECT_EQ(r.value, 1.0);
  r = MathAccuracy(Make("so \\boxed{\\frac{1}{3}}", "0.5"));
  EXPECT_EQ(r.status, Status::kOk);
  EXPECT_EQ(r.value, 0.0);
  r = MathAccuracy(Make("I give up", "0.5"));
  EXPECT_EQ(r.status, Status::kOk);
  EXPECT_EQ(r.value, 0.0);
  EXPECT_NE(r.reason.find("no answer"), std::string::npos);
  r = MathAccuracy(Make("\\boxed{1}", "\\frac{1}{"));
  EXPECT_EQ(r.status, Status::kInvalid);
  EXPECT_FALSE(r.reason.empty());
  r = MathAccuracy(Make("nothing", ""));
  EXPECT_EQ(r.status, Status::kInvalid);
  // A whole reference solution: its last \boxed{} is the reference.
  r = MathAccuracy(Make("<answer>14/3</answer>", "so we get \\boxed{\\frac{14}{3}}."));
  EXPECT_EQ(r.value, 1.0);
  r = MathAccuracy(Make("\\boxed{18}", "She sells 9 eggs.\n#### 18"));
  EXPECT_EQ(r.value, 1.0);
}

TEST(Gsm8kAccuracy, ReferenceAfterHashes) {
  EXPECT_EQ(Gsm8kReference("blah\n#### 1,234").value_or("?"), "1234");
  EXPECT_EQ(Gsm8kReference("-5").value_or("?"), "-5");
  EXPECT_EQ(Gsm8kReference("#### $3.50").value_or("?"), "3.50");
  EXPECT_FALSE(Gsm8kReference("#### twelve").has_value());
  ComponentResult r = Gsm8kAccuracy(Make("... #### 18", "x\n#### 18"));
  EXPECT_EQ(r.value, 1.0);
  r = Gsm8kAccuracy(Make("The answer is $18.00.", "#### 18"));
  EXPECT_EQ(r.value, 1.0);
  r = Gsm8kAccuracy(Make("The answer is 18 dollars.", "#### 18"));
  EXPECT_EQ(r.value, 1.0);
  r = Gsm8kAccuracy(Make("#### 19", "#### 18"));
  EXPECT_EQ(r.status, Status::kOk);
  EXPECT_EQ(r.value, 0.0);
  r = Gsm8kAccuracy(Make("#### 18", "#### eighteen"));
  EXPECT_EQ(r.status, Status::kInvalid);
}

TEST(FormatReward, R1Zero) {
  auto fmt = [](const std::string& c, const std::string& prompt = "") {
    return FormatReward(Make(c, "", prompt), FormatKind::kR1Zero).value;
  };
  EXPECT_EQ(fmt("<think> a </think> <answer> 5 </answer>"), 1.0);
  EXPECT_EQ(fmt("<think>\nreason\n</think>\n<answer>\n5\n</answer>\n"), 1.0);
  EXPECT_EQ(fmt(" reason </think> <answer>5</answer>", "User: ... Assistant: <think>"), 1.0);
  EXPECT_EQ(fmt(" reason </think> <answer>5</answer>"), 0.0);  // no <think>
  EXPECT_EQ(fmt("<think> a </think> 5"), 0.0);
  EXPECT_EQ(fmt("<think> a </think> <answer> 5 </answer> extra"), 0.0);
  EXPECT_EQ(fmt("<think> a </think> hmm <answer> 5 </answer>"), 0.0);
  EXPECT_EQ(fmt("<think></think><answer>5</answer>"), 0.0);  // empty reasoning
  EXPECT_EQ(fmt("<think>a</think><answer> </answer>"), 0.0);
  EXPECT_EQ(fmt("<think>a<think>b</think><answer>5</answer>"), 0.0);
  EXPECT_EQ(fmt("<answer>5</answer><think>a</think>"), 0.0);
  EXPECT_EQ(fmt("x <think>a</think><answer>5</answer>"), 0.0);
}

TEST(FormatReward, R1AndNone) {
  auto fmt = [](const std::string& c, FormatKind k) { return FormatReward(Make(c), k).value; };
  EXPECT_EQ(fmt("<think>step by step</think>The answer is \\boxed{5}.", FormatKind::kR1), 1.0);
  EXPECT_EQ(fmt("<think>step by step</think>", FormatKind::kR1), 0.0);
  EXPECT_EQ(fmt("The answer is 5", FormatKind::kR1), 0.0);
  EXPECT_EQ(fmt("<think>a</think>5", FormatKind::kNone), 0.0);
  EXPECT_EQ(ParseFormatKind("r1-zero"), FormatKind::kR1Zero);
  EXPECT_EQ(ParseFormatKind("r1"), FormatKind::kR1);
  EXPECT_EQ(ParseFormatKind("none"), FormatKind::kNone);
  EXPECT_FALSE(ParseFormatKind("r2").has_value());
}

TEST(LanguageConsistency, EnglishChineseMixed) {
  auto lang = [](const std::string& c, const char* l) { return LanguageConsistency(Make(c), l); };
  EXPECT_DOUBLE_EQ(lang("<think>We add two and three.</think>5", "en").value, 1.0);
  EXPECT_DOUBLE_EQ(lang("<think>我们把两个数相加</think>5", "zh").value, 1.0);
  EXPECT_DOUBLE_EQ(lang("<think>我们把两个数相加</think>5", "en").value, 0.0);
  // 4 English words + 5 Han characters (one word each).
  EXPECT_DOUBLE_EQ(lang("<think>first we 相加 then 两个数 now</think>", "en").value, 4.0 / 9.0);
  EXPECT_DOUBLE_EQ(lang("first we 相加 then 两个数 now", "zh").value, 5.0 / 9.0);
  // LaTeX commands and digits are not words; accents stay Latin.
  EXPECT_DOUBLE_EQ(lang("<think>\\frac{1}{2} 所以 café</think>", "zh").value, 2.0 / 3.0);
  // Other scripts count against both.
  EXPECT_DOUBLE_EQ(lang("<think>привет hello</think>", "en").value, 0.5);
  ComponentResult none = lang("<think>1 + 2 = 3</think>", "en");
  EXPECT_EQ(none.status, Status::kOk);
  EXPECT_EQ(none.value, 0.0);
  EXPECT_EQ(lang("hello", "fr").status, Status::kInvalid);
  // Invalid UTF-8 does not crash.
  EXPECT_EQ(lang(std::string("ab\xff\xfe cd"), "en").status, Status::kOk);
}

TEST(OverlongPenalty, DapoSoftPenalty) {
  EXPECT_EQ(OverlongPenalty(100, 1000, 200).value, 0.0);
  EXPECT_EQ(OverlongPenalty(800, 1000, 200).value, 0.0);
  EXPECT_DOUBLE_EQ(OverlongPenalty(900, 1000, 200).value, -0.5);
  EXPECT_DOUBLE_EQ(OverlongPenalty(1000, 1000, 200).value, -1.0);
  EXPECT_EQ(OverlongPenalty(1001, 1000, 200).value, -1.0);
  EXPECT_EQ(OverlongPenalty(1000, 1000, 0).value, 0.0);
  EXPECT_EQ(OverlongPenalty(1001, 1000, 0).value, -1.0);
  EXPECT_EQ(OverlongPenalty(10, 0, 0).status, Status::kInvalid);
  EXPECT_EQ(OverlongPenalty(10, 100, 200).status, Status::kInvalid);
  EXPECT_EQ(OverlongPenalty(-1, 100, 20).status, Status::kInvalid);
}

Sample Countdown(std::string completion, nlohmann::json extra) {
  Sample s = Make(std::move(completion));
  s.extra = std::move(extra);
  return s;
}

TEST(CountdownAccuracy, Rules) {
  nlohmann::json t = {{"numbers", {3, 7, 25, 50}}, {"target", 79}};
  auto score = [&](const std::string& c) { return CountdownAccuracy(Countdown(c, t)); };
  EXPECT_EQ(score("<answer>50 + 25 + 7 - 3</answer>").value, 1.0);
  EXPECT_EQ(score("<answer>(50 + 25) + (7 - 3) = 79</answer>").value, 1.0);
  EXPECT_EQ(score("<answer>7 - 3 + 25 + 50</answer>").value, 1.0);
  EXPECT_EQ(score("<answer>50 + 25 + 7 + 3</answer>").value, 0.0);          // 85
  EXPECT_EQ(score("<answer>50 + 25 + 7 - 3 - 0</answer>").value, 0.0);      // 0 not given
  EXPECT_EQ(score("<answer>50 + 25 + 4</answer>").value, 0.0);              // 3, 7 unused
  EXPECT_EQ(score("<answer>50 + 25 + 7 - 3 + 7 - 7</answer>").value, 0.0);  // 7 thrice
  EXPECT_EQ(score("<answer>50 \\times 1 + 25 + 7 - 3</answer>").value, 0.0);
  EXPECT_EQ(score("<answer>-3 + 50 + 25 + 7</answer>").value, 0.0);  // unary minus
  EXPECT_EQ(score("<answer>50 + 25 + 7 - 3 + x</answer>").value, 0.0);
  EXPECT_EQ(score("<answer>50 ** 25</answer>").value, 0.0);
  ComponentResult none = score("no answer");
  EXPECT_EQ(none.status, Status::kOk);
  EXPECT_EQ(none.value, 0.0);
  // Exact rational arithmetic: 7 / 3 * 3 is 7.
  nlohmann::json r = {{"numbers", {7, 3, 3}}, {"target", 7}};
  EXPECT_EQ(CountdownAccuracy(Countdown("<answer>7 / 3 * 3</answer>", r)).value, 1.0);
  EXPECT_EQ(CountdownAccuracy(Countdown("<answer>7 / (3 - 3)</answer>", r)).value, 0.0);
}

TEST(CountdownAccuracy, MalformedExtraIsInvalid) {
  const char* c = "<answer>1+2</answer>";
  EXPECT_EQ(CountdownAccuracy(Countdown(c, nlohmann::json::object())).status, Status::kInvalid);
  EXPECT_EQ(CountdownAccuracy(Countdown(c, {{"numbers", {1, 2}}})).status, Status::kInvalid);
  EXPECT_EQ(CountdownAccuracy(Countdown(c, {{"numbers", "1,2"}, {"target", 3}})).status,
            Status::kInvalid);
  EXPECT_EQ(CountdownAccuracy(Countdown(c, {{"numbers", {1, 2.5}}, {"target", 3}})).status,
            Status::kInvalid);
  EXPECT_EQ(CountdownAccuracy(Countdown(c, {{"numbers", {1, 2}}, {"target", "3"}})).status,
            Status::kInvalid);
  EXPECT_EQ(
      CountdownAccuracy(Countdown(c, {{"numbers", nlohmann::json::array()}, {"target", 3}})).status,
      Status::kInvalid);
  EXPECT_EQ(CountdownAccuracy(Countdown(c, {{"numbers", {1, 2}}, {"target", 3}})).value, 1.0);
}

TEST(EvaluateCountdown, OverflowAndDepthAreErrors) {
  std::vector<std::int64_t> used;
  std::string why;
  EXPECT_FALSE(EvaluateCountdown("99999999999 * 99999999999 * 99999999999", &used, &why));
  EXPECT_EQ(why, "overflow");
  std::string deep(200, '(');
  deep += "1" + std::string(200, ')');
  EXPECT_FALSE(EvaluateCountdown(deep, &used, &why));
}

}  // namespace
}  // namespace cohort::reward
