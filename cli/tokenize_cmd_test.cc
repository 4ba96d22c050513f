// Tests `cohort tokenize` through the real binary: stdin lines in, JSON lines
// out, bad lines reported by number without losing the others.
#include <fstream>
#include <string>

#include "core/testing/require.h"
#include "core/testing/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;

const std::string kCohort = COHORT_BINARY_DIR "/cli/cohort";
const std::string kQwen = COHORT_SOURCE_DIR "/../shared/data/tokenizers/qwen3/tokenizer.json";

using Result = cohort::testutil::CommandResult;

class TokenizeCmdTest : public ::testing::Test {
 protected:
  Result Run(const std::string& args, const std::string& input) {
    return cohort::testutil::RunCommand(kCohort + " tokenize " + args, dir_, input);
  }

  // A byte-level tokenizer with no merges (one token per byte, ids 0..255)
  // and <s> (id 256) added by its post-processor.
  std::string TinyTokenizer() {
    Json vocab = Json::object();
    int n = 0;
    auto printable = [](int x) {
      return (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF);
    };
    for (int b = 0; b < 256; ++b) {
      int cp = printable(b) ? b : 256 + n++;
      std::string s;
      if (cp < 0x80) {
        s.push_back(static_cast<char>(cp));
      } else {
        s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
      }
      vocab[s] = b;
    }
    Json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
    Json j = {
        {"added_tokens", {{{"id", 256}, {"content", "<s>"}, {"special", true}}}},
        {"pre_tokenizer", byte_level},
        {"decoder", byte_level},
        {"post_processor",
         {{"type", "TemplateProcessing"},
          {"single",
           {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
            {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
          {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {256}}, {"tokens", {"<s>"}}}}}}}},
        {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", Json::array()}}}};
    std::string path = dir_ + "/tokenizer.json";
    std::ofstream(path) << j.dump();
    return path;
  }

  cohort::testutil::ScopedTempDir tmp_{"tokenize_cmd_test"};
  const std::string dir_ = tmp_.path();
};

TEST_F(TokenizeCmdTest, EncodesAndDecodesLines) {
  std::string tok = TinyTokenizer();
  Result r = Run("--tokenizer " + tok, "\"Hi!\"\n\"<s>a\"\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "{\"ids\":[72,105,33]}\n{\"ids\":[256,97]}\n");
  r = Run("--tokenizer " + tok + " --add-special-tokens", "\"Hi\"\n");
  EXPECT_EQ(r.out, "{\"ids\":[256,72,105]}\n");
  r = Run("--tokenizer " + tok + " --decode", "[72,105,33]\n[256,233,128]\n[]\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // 233 128 is an incomplete UTF-8 sequence: decoded as U+FFFD.
  EXPECT_EQ(r.out, "\"Hi!\"\n\"<s>\xEF\xBF\xBD\"\n\"\"\n");
  r = Run("--tokenizer " + tok + " --decode --skip-special-tokens", "[256,72]\n");
  EXPECT_EQ(r.out, "\"H\"\n");
}

TEST_F(TokenizeCmdTest, BadLinesAreReportedAndTheRunContinues) {
  std::string tok = TinyTokenizer();
  Result r = Run("--tokenizer " + tok, "\"a\"\nnot json\n[1,2]\n\"b\"\n");
  EXPECT_EQ(r.exit_code, 1);
  std::vector<std::string> lines;
  std::stringstream ss(r.out);
  for (std::string line; std::getline(ss, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 4u) << r.out;
  EXPECT_EQ(lines[0], "{\"ids\":[97]}");
  EXPECT_THAT(lines[1], HasSubstr("\"error\":\"line 2: not valid JSON"));
  EXPECT_THAT(lines[2], HasSubstr("\"error\":\"line 3: expected a JSON string, got a JSON array"));
  EXPECT_EQ(lines[3], "{\"ids\":[98]}");
  EXPECT_THAT(r.err, HasSubstr("line 2: not valid JSON"));
  EXPECT_THAT(r.err, HasSubstr("line 3: expected a JSON string"));

  r = Run("--tokenizer " + tok + " --decode", "[1,999]\n[\"x\"]\n[97]\n");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, HasSubstr("line 1: element 1 (999) is not a token id in [0, 257)"));
  EXPECT_THAT(r.out, HasSubstr("line 2: element 0 (\\\"x\\\")"));
  EXPECT_THAT(r.out, HasSubstr("\n\"a\"\n"));
}

TEST_F(TokenizeCmdTest, UsageErrors) {
  Result r = Run("", "");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--tokenizer PATH is required"));
  r = Run("--tokenizer " + dir_ + "/missing.json", "\"a\"\n");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("missing.json"));
  std::ofstream(dir_ + "/broken.json") << "{\"model\": ";
  r = Run("--tokenizer " + dir_ + "/broken.json", "\"a\"\n");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("not valid JSON"));
}

TEST_F(TokenizeCmdTest, QwenGoldenLines) {
  if (!std::ifstream(kQwen).good()) COHORT_SKIP_OR_FAIL("shared data not found at " << kQwen);
  Result r = Run("--tokenizer " + kQwen,
                 "\"Hello world!\"\n\"<|im_start|>user\\nWhat is 2+2?<|im_end|>\"\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "{\"ids\":[9707,1879,0]}\n"
            "{\"ids\":[151644,872,198,3838,374,220,17,10,17,30,151645]}\n");
  r = Run("--tokenizer " + kQwen + " --decode", "[108386,3837,99489,6313]\n");
  EXPECT_EQ(r.out, "\"你好，世界！\"\n");
}

}  // namespace
