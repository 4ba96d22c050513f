// Tests for core/tokenizer: the Qwen3 golden file from Hugging Face's
// tokenizer, and small hand-made tokenizer.json files.
#include "core/tokenizer.h"

#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace cohort {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

const std::string kQwenDir = COHORT_SOURCE_DIR "/../shared/data/tokenizers/qwen3";

std::string IdsToString(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s + "]";
}

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
      GTEST_SKIP() << "shared data not found at " << kQwenDir
                   << " (it sits beside the repository in the project workspace)";
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
                    << "\nwant token: " << (k < g.ids.size() ? tokenizer_->IdToToken(g.ids[k]) : "<end>")
                    << "\ngot token:  " << (k < ids.size() ? tokenizer_->IdToToken(ids[k]) : "<end>");
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
  EXPECT_EQ(tokenizer_->Encode("a\xFF" "b"), tokenizer_->Encode("a\xEF\xBF\xBD" "b"));
  // A token that ends inside a multi-byte character decodes to U+FFFD.
  // U+10FFFD (private use) takes more than one token.
  std::vector<int32_t> ids = tokenizer_->Encode("\xF4\x8F\xBF\xBD");
  ASSERT_GT(ids.size(), 1u);
  EXPECT_EQ(tokenizer_->Decode(ids), "\xF4\x8F\xBF\xBD");
  ids.pop_back();
  EXPECT_THAT(tokenizer_->Decode(ids), HasSubstr("\xEF\xBF\xBD"));
  EXPECT_EQ(tokenizer_->Decode({-1, 99999999}), "");
}

TEST_F(QwenGoldenTest, ConcurrentEncodeAgrees) {
  std::vector<std::vector<int32_t>> want;
  for (size_t i = 0; i < 400; ++i) want.push_back((*golden_)[i].ids);
  std::vector<std::thread> threads;
  std::vector<int> bad(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = 0; i < want.size(); ++i) {
        if (tokenizer_->Encode((*golden_)[(i + t * 97) % want.size()].text) != want[(i + t * 97) % want.size()]) {
          ++bad[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_THAT(bad, ElementsAre(0, 0, 0, 0));
}

}  // namespace
}  // namespace cohort
