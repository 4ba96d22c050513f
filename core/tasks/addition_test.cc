#include "core/tasks/addition.h"

#include <filesystem>
#include <regex>
#include <set>
#include <string>

#include "core/file.h"
#include "core/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "reward_server/verifiers/format.h"
#include "reward_server/verifiers/math_accuracy.h"

namespace cohort::tasks {
namespace {

std::set<std::pair<int64_t, int64_t>> Pairs(const std::vector<AdditionProblem>& v) {
  std::set<std::pair<int64_t, int64_t>> s;
  for (const auto& p : v) s.insert({p.a, p.b});
  return s;
}

TEST(AdditionTest, DemonstrationReasonsColumnByColumn) {
  EXPECT_EQ(AdditionPrompt(47, 85), "47+85=");
  EXPECT_EQ(AdditionAnswer(47, 85), "132");
  EXPECT_EQ(AdditionCompletion(47, 85, 2), "<think>7+5+0=12 4+8+1=13</think><answer>132</answer>");
  EXPECT_EQ(AdditionCompletion(105, 200, 3),
            "<think>5+0+0=05 0+0+0=00 1+2+0=03</think><answer>305</answer>");
  auto ab = ParseAdditionPrompt("47+85=");
  ASSERT_TRUE(ab.ok());
  EXPECT_EQ(ab->first, 47);
  EXPECT_EQ(ab->second, 85);
  EXPECT_FALSE(ParseAdditionPrompt("47+x=").ok());
  EXPECT_FALSE(ParseAdditionPrompt("47+85").ok());
}

class AdditionSplitsTest : public ::testing::TestWithParam<int> {};

TEST_P(AdditionSplitsTest, DisjointWithUnusedPairsAndOnlyOperandIntegers) {
  AdditionOptions o;
  o.digits = GetParam();
  o.train_size = o.digits == 2 ? 2000 : 5000;
  auto splits = MakeAdditionSplits(o);
  ASSERT_TRUE(splits.ok()) << splits.status();
  auto train = Pairs(splits->train), eval = Pairs(splits->eval), fresh = Pairs(splits->fresh);
  EXPECT_EQ(train.size(), static_cast<size_t>(o.train_size));
  EXPECT_EQ(eval.size(), static_cast<size_t>(o.eval_size));
  EXPECT_EQ(fresh.size(), static_cast<size_t>(o.fresh_size));
  for (const auto& p : eval) EXPECT_FALSE(train.count(p) || fresh.count(p));
  for (const auto& p : fresh) EXPECT_FALSE(train.count(p));
  EXPECT_GE(splits->space - static_cast<int64_t>(train.size() + eval.size()), kMinUnusedPairs);
  ASSERT_EQ(splits->sft.size(), static_cast<size_t>(o.sft_size));
  for (size_t i = 0; i < splits->sft.size(); ++i) EXPECT_EQ(splits->sft[i].id, splits->train[i].id);

  const std::regex integer("[0-9]+");
  int64_t lo = 1;
  for (int i = 1; i < o.digits; ++i) lo *= 10;
  for (const auto& p : splits->eval) {
    ASSERT_GE(p.a, lo);
    ASSERT_LT(p.a, lo * 10);
    std::string prompt = AdditionPrompt(p.a, p.b);
    std::vector<std::string> ints;
    for (auto it = std::sregex_iterator(prompt.begin(), prompt.end(), integer);
         it != std::sregex_iterator(); ++it) {
      ints.push_back(it->str());
    }
    ASSERT_EQ(ints.size(), 2u) << prompt;
    EXPECT_EQ(ints[0], std::to_string(p.a));
    EXPECT_EQ(ints[1], std::to_string(p.b));
  }
  // Deterministic in the options; another seed gives other splits.
  auto again = MakeAdditionSplits(o);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(Pairs(again->eval), eval);
  o.seed += 1;
  auto other = MakeAdditionSplits(o);
  ASSERT_TRUE(other.ok());
  EXPECT_NE(Pairs(other->eval), eval);
}

INSTANTIATE_TEST_SUITE_P(Digits, AdditionSplitsTest, ::testing::Values(2, 3, 4),
                         [](const auto& info) { return std::to_string(info.param) + "digits"; });

TEST(AdditionTest, RefusesSizesThatLeaveTooFewFreshPairs) {
  AdditionOptions o;
  o.digits = 2;  // 8100 pairs
  o.train_size = 7200;
  o.eval_size = 500;  // 400 left
  auto s = MakeAdditionSplits(o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("at least 500"), std::string::npos) << s.status();
  o.train_size = 2000;
  o.sft_size = 3000;
  EXPECT_NE(MakeAdditionSplits(o).status().message().find("sft_size"), std::string::npos);
  o.sft_size = 10;
  o.digits = 0;
  EXPECT_NE(MakeAdditionSplits(o).status().message().find("digits"), std::string::npos);
}

TEST(AdditionTest, TokenizerLoadsWithSpecialTagsAndRoundTrips) {
  auto tok = Tokenizer::FromJson(AdditionTokenizerJson(), AdditionTokenizerConfigJson());
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::string text = AdditionPrompt(47, 85) + AdditionCompletion(47, 85, 2);
  std::vector<int32_t> ids = (*tok)->Encode(text);
  EXPECT_EQ((*tok)->Decode(ids), text);
  // One token per character, tags one token each.
  EXPECT_EQ(static_cast<int64_t>((*tok)->Encode(AdditionCompletion(47, 85, 2)).size()) + 1,
            AdditionCompletionTokens(2));
  for (const char* tag : {"<think>", "</think>", "<answer>", "</answer>", "<|endoftext|>"}) {
    std::vector<int32_t> one = (*tok)->Encode(tag);
    ASSERT_EQ(one.size(), 1u) << tag;
    EXPECT_TRUE((*tok)->IsSpecial(one[0])) << tag;
  }
  ASSERT_TRUE((*tok)->eos_id().has_value());
  EXPECT_EQ(*(*tok)->eos_id(), (*tok)->TokenToId("<|endoftext|>"));
  EXPECT_EQ((*tok)->Decode(ids, /*skip_special_tokens=*/true), "47+85=7+5+0=12 4+8+1=13132");
  EXPECT_LE((*tok)->vocab_size(), 64);
}

TEST(AdditionTest, RewardVerifiersAcceptDemonstrations) {
  reward::Sample s;
  s.task = "addition";
  s.prompt = AdditionPrompt(47, 85);
  s.completion = AdditionCompletion(47, 85, 2);
  s.answer = AdditionAnswer(47, 85);
  EXPECT_EQ(reward::MathAccuracy(s).value, 1.0);
  EXPECT_EQ(reward::FormatReward(s, reward::FormatKind::kR1Zero).value, 1.0);
  s.completion = "<think>7+5+0=12 4+8+1=13</think><answer>131</answer>";
  EXPECT_EQ(reward::MathAccuracy(s).value, 0.0);
  EXPECT_EQ(reward::FormatReward(s, reward::FormatKind::kR1Zero).value, 1.0);
  s.completion = "<think>7+5+0=12</think>132";
  EXPECT_EQ(reward::FormatReward(s, reward::FormatKind::kR1Zero).value, 0.0);
}

TEST(AdditionTest, WritesTaskDirectory) {
  std::string dir = ::testing::TempDir() + "/addition_task";
  AdditionOptions o;
  ASSERT_TRUE(WriteAdditionTask(o, dir).ok());
  auto sft = ReadFile(dir + "/sft.jsonl");
  ASSERT_TRUE(sft.ok());
  size_t lines = 0;
  for (char c : *sft) lines += c == '\n';
  EXPECT_EQ(lines, static_cast<size_t>(o.sft_size));
  auto first = nlohmann::json::parse(sft->substr(0, sft->find('\n')));
  EXPECT_TRUE(first.contains("prompt") && first.contains("completion") && first.contains("answer"));
  auto tok = Tokenizer::FromFile(dir + "/tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_TRUE((*tok)->eos_id().has_value());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace cohort::tasks
