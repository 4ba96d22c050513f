// Tests of the public Tokenizer (core/tokenizer.h): the Qwen3 golden file
// from Hugging Face's tokenizer, a Llama 3 style tokenizer.json, special
// tokens from tokenizer_config.json, and the errors for unsupported or
// malformed files. The components and BPE have tests of their own beside
// them (components_test, bpe_test, utf8_test, regex_test).
#include "core/tokenizer.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/testing/require.h"
#include "core/tokenizer/hf_cases_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace cohort {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;
using tok_testing::HandMadeTest;
using tok_testing::IdsToString;
using tok_testing::kLlama3Cases;
using tok_testing::Llama3Style;

const std::string kQwenDir = COHORT_SOURCE_DIR "/../shared/data/tokenizers/qwen3";

struct GoldenLine {
  std::string text;
  std::vector<int32_t> ids;
  bool decoded_equal;
};

std::vector<GoldenLine> ReadGolden() {
  std::vector<GoldenLine> out;
  std::ifstream in(kQwenDir + "/golden.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    Json j = Json::parse(line);
    out.push_back({j["text"].get<std::string>(), j["ids"].get<std::vector<int32_t>>(),
                   j["decoded_equal"].get<bool>()});
  }
  return out;
}

class QwenGoldenTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::ifstream(kQwenDir + "/tokenizer.json").good()) return;
    auto tok = Tokenizer::FromFile(kQwenDir + "/tokenizer.json");
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = tok->release();
    golden_ = new std::vector<GoldenLine>(ReadGolden());
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete golden_;
  }
  void SetUp() override {
    if (tokenizer_ == nullptr) {
      COHORT_SKIP_OR_FAIL("shared data not found at "
                          << kQwenDir
                          << " (it sits beside the repository in the project workspace)");
    }
  }
  static Tokenizer* tokenizer_;
  static std::vector<GoldenLine>* golden_;
};
Tokenizer* QwenGoldenTest::tokenizer_ = nullptr;
std::vector<GoldenLine>* QwenGoldenTest::golden_ = nullptr;

TEST_F(QwenGoldenTest, EncodesEveryTextLikeHuggingFace) {
  ASSERT_EQ(golden_->size(), 3658u);
  size_t mismatches = 0;
  for (size_t i = 0; i < golden_->size(); ++i) {
    const GoldenLine& g = (*golden_)[i];
    std::vector<int32_t> ids = tokenizer_->Encode(g.text);
    if (ids == g.ids) continue;
    if (mismatches++ == 0) {
      size_t k = 0;
      while (k < ids.size() && k < g.ids.size() && ids[k] == g.ids[k]) ++k;
      ADD_FAILURE() << "line " << i + 1 << " differs first at token " << k << "\ntext: " << g.text
                    << "\nwant: " << IdsToString(g.ids) << "\ngot:  " << IdsToString(ids)
                    << "\nwant token: "
                    << (k < g.ids.size() ? tokenizer_->IdToToken(g.ids[k]) : "<end>")
                    << "\ngot token:  "
                    << (k < ids.size() ? tokenizer_->IdToToken(ids[k]) : "<end>");
    }
  }
  EXPECT_EQ(mismatches, 0u) << "of " << golden_->size() << " texts";
}

TEST_F(QwenGoldenTest, DecodeGivesBackTheNfcText) {
  size_t mismatches = 0, changed_by_nfc = 0;
  for (size_t i = 0; i < golden_->size(); ++i) {
    const GoldenLine& g = (*golden_)[i];
    std::string decoded = tokenizer_->Decode(g.ids);
    if (decoded != g.text) ++changed_by_nfc;
    // decoded_equal says whether NFC(text) == text.
    if ((decoded == g.text) != g.decoded_equal) {
      if (mismatches++ == 0) {
        ADD_FAILURE() << "line " << i + 1 << ": decoded_equal=" << g.decoded_equal
                      << "\ntext:    " << g.text << "\ndecoded: " << decoded;
      }
    }
    // Whatever NFC did, encoding the decoded text gives the same ids.
    if (tokenizer_->Encode(decoded) != g.ids && mismatches++ == 0) {
      ADD_FAILURE() << "line " << i + 1 << ": re-encoding the decoded text differs";
    }
  }
  EXPECT_EQ(mismatches, 0u);
  EXPECT_GT(changed_by_nfc, 0u);
}

TEST_F(QwenGoldenTest, SpecialTokensAndConfig) {
  EXPECT_EQ(tokenizer_->vocab_size(), 151669);
  EXPECT_EQ(tokenizer_->TokenToId("<|im_end|>"), 151645);
  EXPECT_EQ(tokenizer_->TokenToId("<think>"), 151667);
  EXPECT_EQ(tokenizer_->TokenToId("Ġthe"), 279);
  EXPECT_EQ(tokenizer_->TokenToId("no such token"), -1);
  EXPECT_EQ(tokenizer_->IdToToken(151644), "<|im_start|>");
  EXPECT_EQ(tokenizer_->IdToToken(-3), "");
  EXPECT_TRUE(tokenizer_->IsSpecial(151645));
  EXPECT_FALSE(tokenizer_->IsSpecial(279));
  EXPECT_EQ(tokenizer_->eos_id(), 151645);
  EXPECT_EQ(tokenizer_->pad_id(), 151643);
  EXPECT_FALSE(tokenizer_->bos_id().has_value());
  EXPECT_TRUE(tokenizer_->has_chat_template());
  // Qwen's post-processor adds nothing, even when asked.
  EXPECT_EQ(tokenizer_->Encode("Hello world!", true), tokenizer_->Encode("Hello world!"));
  std::vector<int32_t> ids = tokenizer_->Encode("<|im_start|>user\nhi<|im_end|>");
  EXPECT_EQ(tokenizer_->Decode(ids, /*skip_special_tokens=*/true), "user\nhi");
  EXPECT_EQ(tokenizer_->Decode(ids), "<|im_start|>user\nhi<|im_end|>");
}

TEST_F(QwenGoldenTest, InvalidUtf8AndPartialDecode) {
  // Invalid input bytes become U+FFFD.
  EXPECT_EQ(tokenizer_->Encode("a\xFF"
                               "b"),
            tokenizer_->Encode("a\xEF\xBF\xBD"
                               "b"));
  // A token that ends inside a multi-byte character decodes to U+FFFD.
  // U+10FFFD (private use) takes more than one token.
  std::vector<int32_t> ids = tokenizer_->Encode("\xF4\x8F\xBF\xBD");
  ASSERT_GT(ids.size(), 1u);
  EXPECT_EQ(tokenizer_->Decode(ids), "\xF4\x8F\xBF\xBD");
  ids.pop_back();
  EXPECT_THAT(tokenizer_->Decode(ids), HasSubstr("\xEF\xBF\xBD"));
  EXPECT_EQ(tokenizer_->Decode({-1, 99999999}), "");
}

// Random text from a mix of scripts, whitespace, digits, punctuation and
// special-token fragments (fixed seed).
std::string RandomText(std::mt19937* rng, size_t max_len) {
  static const std::vector<std::string> kAtoms = {
      "a",          "Z",
      "the",        " ",
      "  ",         "\n",
      "\t",         "\r\n",
      "7",          "42",
      "3.14",       "'s",
      "'LL",        "!",
      "...",        "$\\frac",
      "{",          "}",
      "é",          "e\xCC\x81",
      "ñ",          "ß",
      "Ω",          "я",
      "你",         "好",
      "こ",         "한",
      "ع",          "😀",
      "👍🏽",   "\xE2\x80\x8B",
      "\xC2\xA0",   "<|im_start|>",
      "<|im_end|>", "<think>",
      "<|im_",      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
  std::uniform_int_distribution<size_t> pick(0, kAtoms.size() - 1), len(0, max_len);
  std::string out;
  for (size_t i = 0, n = len(*rng); i < n; ++i) out += kAtoms[pick(*rng)];
  return out;
}

TEST_F(QwenGoldenTest, RandomTextRoundTrips) {
  std::mt19937 rng(1234);
  for (int i = 0; i < 500; ++i) {
    std::string text = RandomText(&rng, 40);
    std::vector<int32_t> ids = tokenizer_->Encode(text);
    std::string decoded = tokenizer_->Decode(ids);
    // NFC only changes the decomposed e + U+0301 atom.
    if (text.find("e\xCC\x81") == std::string::npos) {
      ASSERT_EQ(decoded, text) << "ids " << IdsToString(ids);
    }
    ASSERT_EQ(tokenizer_->Encode(decoded), ids) << text;
  }
  // Random bytes (mostly invalid UTF-8) never crash and decode to valid text.
  std::uniform_int_distribution<int> byte(0, 255);
  for (int i = 0; i < 200; ++i) {
    std::string junk;
    for (int k = 0; k < 64; ++k) junk.push_back(static_cast<char>(byte(rng)));
    std::vector<int32_t> ids = tokenizer_->Encode(junk);
    std::string decoded = tokenizer_->Decode(ids);
    EXPECT_EQ(tokenizer_->Encode(decoded), ids);
  }
}

TEST_F(QwenGoldenTest, ConcurrentEncodeAgrees) {
  std::vector<std::vector<int32_t>> want;
  for (size_t i = 0; i < 400; ++i) want.push_back((*golden_)[i].ids);
  std::vector<std::thread> threads;
  std::vector<int> bad(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = 0; i < want.size(); ++i) {
        if (tokenizer_->Encode((*golden_)[(i + t * 97) % want.size()].text) !=
            want[(i + t * 97) % want.size()]) {
          ++bad[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_THAT(bad, ElementsAre(0, 0, 0, 0));
}

TEST_F(HandMadeTest, Llama3StyleMatchesHuggingFace) { Check(Llama3Style(), kLlama3Cases); }

TEST_F(HandMadeTest, Llama3SpecialTokensFromConfig) {
  Json j = Llama3Style();
  Write(
      "tokenizer_config.json",
      R"({"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|eot_id|>"}, "pad_token": null,
            "chat_template": "{{ messages }}"})");
  auto tok = Load(j);
  ASSERT_NE(tok, nullptr);
  int32_t n = static_cast<int32_t>(j["model"]["vocab"].size());
  EXPECT_EQ(tok->bos_id(), n);
  EXPECT_EQ(tok->eos_id(), n + 1);
  EXPECT_FALSE(tok->pad_id().has_value());
  EXPECT_TRUE(tok->has_chat_template());
  EXPECT_EQ(tok->vocab_size(), n + 4);
  EXPECT_EQ(tok->Encode("", true), std::vector<int32_t>{n});

  Write("tokenizer_config.json", R"({"eos_token": "<|nope|>"})");
  auto bad = Tokenizer::FromFile(dir_ + "/tokenizer.json");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("eos_token \"<|nope|>\""));
}

TEST_F(HandMadeTest, UnsupportedComponentsAreRefusedByName) {
  struct Bad {
    const char* key;
    Json value;
    const char* name;
  };
  const std::vector<Bad> bad = {
      {"pre_tokenizer", {{"type", "Metaspace"}, {"replacement", "▁"}}, "Metaspace"},
      {"pre_tokenizer",
       {{"type", "Sequence"}, {"pretokenizers", {{{"type", "ByteLevel"}}, {{"type", "Digits"}}}}},
       "Digits"},
      {"normalizer", {{"type", "BertNormalizer"}}, "BertNormalizer"},
      {"normalizer",
       {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}, {{"type", "Precompiled"}}}}},
       "Precompiled"},
      {"decoder", {{"type", "WordPiece"}}, "WordPiece"},
      {"post_processor", {{"type", "Fancy"}}, "Fancy"},
      {"truncation", {{"max_length", 8}}, "truncation"},
  };
  for (const Bad& b : bad) {
    Json j = Llama3Style();
    j[b.key] = b.value;
    absl::Status status = LoadError(j);
    EXPECT_FALSE(status.ok()) << b.name;
    EXPECT_THAT(std::string(status.message()), HasSubstr(b.name));
  }
  Json j = Llama3Style();
  j["model"]["type"] = "WordPiece";
  EXPECT_EQ(LoadError(j).code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(LoadError(j).message()), HasSubstr("model type \"WordPiece\""));
  j = Llama3Style();
  j["model"]["dropout"] = 0.1;
  EXPECT_THAT(std::string(LoadError(j).message()), HasSubstr("dropout"));
}

TEST_F(HandMadeTest, MalformedFilesGiveClearErrors) {
  absl::Status status = Tokenizer::FromJson("{\"model\": {\"type\": \"BPE\", ").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("not valid JSON"));

  auto missing = Tokenizer::FromFile(dir_ + "/absent/tokenizer.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("absent/tokenizer.json"));

  Json j = Llama3Style();
  j["model"]["merges"].push_back({"Ġ", "nosuchtoken"});
  EXPECT_THAT(std::string(LoadError(j).message()),
              HasSubstr("uses a token missing from the vocab: \"nosuchtoken\""));
  j = Llama3Style();
  j["model"]["merges"] = Json::array({"a b c"});
  EXPECT_THAT(std::string(LoadError(j).message()), HasSubstr("merge 0 \"a b c\""));
  j = Llama3Style();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  EXPECT_THAT(std::string(LoadError(j).message()), HasSubstr("does not compile"));
  j = Llama3Style();
  j["model"]["vocab"] = Json::array();
  EXPECT_THAT(std::string(LoadError(j).message()), HasSubstr("\"vocab\" must be an object"));
  j = Llama3Style();
  j["model"]["vocab"]["Ġ"] = "x";
  EXPECT_THAT(std::string(LoadError(j).message()),
              HasSubstr("vocab entry \"Ġ\" has id \"x\", not an integer"));
  j = Llama3Style();
  j["model"]["merges"] = Json::array({Json::array({"a", "b", "c"})});
  EXPECT_THAT(std::string(LoadError(j).message()),
              HasSubstr("merge 0 is not a pair of two strings"));
  j = Llama3Style();
  j["model"]["merges"] = Json::array({5});
  EXPECT_THAT(std::string(LoadError(j).message()), HasSubstr("merge 0 is neither"));
  j = Llama3Style();
  j["model"]["merges"] = Json::object();
  EXPECT_THAT(std::string(LoadError(j).message()), HasSubstr("\"merges\" must be an array"));
  j = Llama3Style();
  j["added_tokens"][0]["id"] = "seven";
  EXPECT_THAT(std::string(LoadError(j).message()), HasSubstr("unexpected structure"));
}

}  // namespace
}  // namespace cohort
