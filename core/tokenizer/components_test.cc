// Tests of the tokenizer.json components (core/tokenizer/components.h):
// each component directly, and through whole tokenizers whose expected ids
// come from Hugging Face (normalizers and added-token flags, every Split
// behaviour of the pre-tokenizer, the ByteFallback decoder).
#include "core/tokenizer/components.h"

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "core/tokenizer/hf_cases_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cohort::tok_testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Normalize(const char* json, std::string s) {
  auto n = tok::ParseNormalizer(Json::parse(json));
  EXPECT_TRUE(n.ok()) << n.status();
  if (n.ok()) (*n)->Apply(&s);
  return s;
}

TEST(NormalizerTest, AppliesEachTypeAndSequences) {
  EXPECT_EQ(Normalize(R"({"type": "NFC"})", "e\xCC\x81"), "\xC3\xA9");
  EXPECT_EQ(Normalize(R"({"type": "NFD"})", "\xC3\xA9"), "e\xCC\x81");
  EXPECT_EQ(Normalize(R"({"type": "Lowercase"})", "HeLLo \xC3\x89"), "hello \xC3\xA9");
  EXPECT_EQ(Normalize(R"({"type": "Strip", "strip_left": true, "strip_right": false})", "  a  "),
            "a  ");
  EXPECT_EQ(Normalize(R"({"type": "Prepend", "prepend": "_"})", "ab"), "_ab");
  EXPECT_EQ(
      Normalize(R"({"type": "Replace", "pattern": {"String": " "}, "content": "_"})", "a b c"),
      "a_b_c");
  EXPECT_EQ(Normalize(R"({"type": "Sequence", "normalizers": [{"type": "Lowercase"},
                         {"type": "Prepend", "prepend": "x"}]})",
                      "AB"),
            "xab");
  auto bad = tok::ParseNormalizer(Json::parse(R"({"type": "BertNormalizer"})"));
  EXPECT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("BertNormalizer"));
}

TEST(PreTokenizerTest, SplitIsolatedKeepsEveryPiece) {
  std::vector<std::unique_ptr<tok::PreTokenizer>> stages;
  bool byte_level = false;
  ASSERT_TRUE(tok::ParsePreTokenizer(Json::parse(R"({"type": "Split", "pattern": {"String": "-"},
                                                     "behavior": "Isolated"})"),
                                     &stages, &byte_level)
                  .ok());
  ASSERT_EQ(stages.size(), 1u);
  EXPECT_FALSE(byte_level);
  tok::Pieces out;
  std::deque<std::string> owned;
  stages[0]->Apply({"a-b--c"}, &out, &owned);
  EXPECT_THAT(out, ElementsAre("a", "-", "b", "-", "-", "c"));
}

TEST(PreTokenizerTest, ByteLevelSetsTheFlagAndRefusesLaterStages) {
  std::vector<std::unique_ptr<tok::PreTokenizer>> stages;
  bool byte_level = false;
  absl::Status s = tok::ParsePreTokenizer(
      Json::parse(R"({"type": "Sequence", "pretokenizers": [{"type": "ByteLevel",
                     "add_prefix_space": false}, {"type": "Split", "pattern": {"String": "x"},
                     "behavior": "Removed"}]})"),
      &stages, &byte_level);
  EXPECT_TRUE(byte_level);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(s.message()), HasSubstr("after ByteLevel"));
}

TEST(DecoderTest, ChainAppliesInOrder) {
  std::vector<std::unique_ptr<tok::Decoder>> chain;
  ASSERT_TRUE(tok::ParseDecoder(Json::parse(R"({"type": "Sequence", "decoders": [
                                   {"type": "Replace", "pattern": {"String": "_"}, "content": " "},
                                   {"type": "Fuse"},
                                   {"type": "Strip", "content": " ", "start": 1, "stop": 0}]})"),
                                &chain)
                  .ok());
  ASSERT_EQ(chain.size(), 3u);
  std::vector<std::string> tokens = {"_hello", "_world"};
  for (const auto& d : chain) d->Apply(&tokens);
  EXPECT_THAT(tokens, ElementsAre("hello world"));
  EXPECT_FALSE(chain[0]->IsByteLevel());
}

TEST(PostProcessorTest, TemplateGivesPrefixAndSuffix) {
  std::vector<int32_t> prefix, suffix;
  ASSERT_TRUE(tok::ParsePostProcessor(Json::parse(R"({"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}},
                 {"SpecialToken": {"id": "</s>"}}],
      "special_tokens": {"<s>": {"ids": [1]}, "</s>": {"ids": [2]}}})"),
                                      &prefix, &suffix)
                  .ok());
  EXPECT_THAT(prefix, ElementsAre(1));
  EXPECT_THAT(suffix, ElementsAre(2));
}

TEST(AddedTokenMatcherTest, LeftmostLongestWithStripFlags) {
  tok::AddedToken a, ab, sp;
  a.id = 1, a.match = "<a>";
  ab.id = 2, ab.match = "<a><b>";
  sp.id = 3, sp.match = "<s>", sp.lstrip = true, sp.rstrip = true;
  tok::AddedTokenMatcher m;
  EXPECT_TRUE(m.empty());
  m.Add(&a);
  m.Add(&ab);
  m.Add(&sp);
  std::vector<std::pair<std::string, int32_t>> got;
  m.Split("x<a><b>y <a> z  <s>  w",
          [&](std::string_view s, int32_t id) { got.emplace_back(std::string(s), id); });
  EXPECT_THAT(got, ElementsAre(std::pair<std::string, int32_t>{"x", -1},
                               std::pair<std::string, int32_t>{"<a><b>", 2},
                               std::pair<std::string, int32_t>{"y ", -1},
                               std::pair<std::string, int32_t>{"<a>", 1},
                               std::pair<std::string, int32_t>{" z", -1},
                               std::pair<std::string, int32_t>{"  <s>  ", 3},
                               std::pair<std::string, int32_t>{"w", -1}));
}

// Whole tokenizers against Hugging Face's ids.
TEST_F(HandMadeTest, Gpt2StyleWithNormalizersAndAddedTokenFlags) { Check(Gpt2Style(), kGpt2Cases); }

TEST_F(HandMadeTest, CharLevelSplitRemoved) {
  Check(CharLevel("Removed", false), kCharRemoved0Cases);
}

TEST_F(HandMadeTest, CharLevelSplitRemovedInverted) {
  Check(CharLevel("Removed", true), kCharRemoved1Cases);
}

TEST_F(HandMadeTest, CharLevelSplitMergedWithNext) {
  Check(CharLevel("MergedWithNext", false), kCharMergedWithNext0Cases);
  // MergedWithPrevious inverted is the same split.
  Check(CharLevel("MergedWithPrevious", true), kCharMergedWithNext0Cases);
}

TEST_F(HandMadeTest, CharLevelSplitIsolatedAndContiguous) {
  Check(CharLevel("Isolated", false), kCharIsolated0Cases);
  Check(CharLevel("Contiguous", false), kCharIsolated0Cases);
  Check(CharLevel("MergedWithPrevious", false), kCharIsolated0Cases);
}

TEST_F(HandMadeTest, ByteFallbackAndItsDecoder) { Check(ByteFallbackStyle(), kByteFallbackCases); }

}  // namespace
}  // namespace cohort::tok_testing
