// Tests of the pre-tokenizer's regular expressions (core/tokenizer/regex.h).
#include "core/tokenizer/regex.h"

#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cohort::tok {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<std::string> Matches(const Regex& re, std::string_view s) {
  std::vector<std::string> out;
  re.ForEachMatch(s, [&](size_t b, size_t e) { out.emplace_back(s.substr(b, e - b)); });
  return out;
}

TEST(RegexTest, UnicodePropertiesAndLookahead) {
  auto re = Regex::Compile(R"( ?\p{L}+| ?\p{N}+|\s+(?!\S)|\s+)", false);
  ASSERT_TRUE(re.ok()) << re.status();
  EXPECT_THAT(Matches(**re, "caf\xC3\xA9 42  x"), ElementsAre("caf\xC3\xA9", " 42", " ", " x"));
}

TEST(RegexTest, EmptyMatchesAdvanceByOneCharacter) {
  auto re = Regex::Compile("x*", false);
  ASSERT_TRUE(re.ok());
  // Empty matches before "\xC3\xA9" must step over the whole character.
  EXPECT_THAT(Matches(**re, "\xC3\xA9x"), ElementsAre("", "x", ""));
}

TEST(RegexTest, LiteralPatternsAreNotRegexes) {
  auto re = Regex::Compile("a.b", true);
  ASSERT_TRUE(re.ok());
  EXPECT_THAT(Matches(**re, "axb a.b"), ElementsAre("a.b"));
  std::string s = "a.b-a.b";
  (*re)->ReplaceAll(&s, "_");
  EXPECT_EQ(s, "_-_");
}

TEST(RegexTest, BadPatternNamesPatternAndOffset) {
  auto re = Regex::Compile("(unclosed", false);
  ASSERT_FALSE(re.ok());
  EXPECT_THAT(std::string(re.status().message()),
              HasSubstr("regex \"(unclosed\" does not compile at offset"));
}

TEST(RegexTest, ParsePatternTakesStringOrRegex) {
  auto s = ParsePattern(Json::parse(R"({"String": "."})"), "test");
  ASSERT_TRUE(s.ok());
  EXPECT_THAT(Matches(**s, "a.b"), ElementsAre("."));
  auto r = ParsePattern(Json::parse(R"({"Regex": "."})"), "test");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(Matches(**r, "ab").size(), 2u);
  auto bad = ParsePattern(Json::parse(R"({"Glob": "*"})"), "decoder Replace");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("decoder Replace"));
}

TEST(RegexTest, ConcurrentMatchingAgrees) {
  auto re = Regex::Compile(R"(\p{L}+)", false);
  ASSERT_TRUE(re.ok());
  const std::string text = "one two three four five six seven";
  const std::vector<std::string> want = Matches(**re, text);
  std::vector<std::thread> threads;
  std::vector<int> ok(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) ok[t] += Matches(**re, text) == want;
    });
  }
  for (auto& t : threads) t.join();
  for (int n : ok) EXPECT_EQ(n, 200);
}

}  // namespace
}  // namespace cohort::tok
