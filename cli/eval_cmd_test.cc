// `cohort eval`, run as the real binaries (cohort task, cohort init-model,
// cohort eval) on the addition task with a random tiny-quickstart model.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace cohort::cli {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

struct Result {
  int code = -1;
  std::string out, err;
};

class EvalCmdTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ =
        (fs::path(::testing::TempDir()) / ("eval_cmd_test_" + std::to_string(::getpid()))).string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    ASSERT_EQ(Run("task addition --eval_size 20 --train_size 100 --fresh_size 20 --sft_size 10 "
                  "--out " +
                  dir_ + "/data")
                  .code,
              0);
    ASSERT_EQ(Run("init-model --preset tiny-quickstart --tokenizer " + dir_ + "/data --out " +
                  dir_ + "/model")
                  .code,
              0);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static Result Run(const std::string& args) {
    std::string out = dir_ + "/stdout.txt", err = dir_ + "/stderr.txt";
    std::string cmd = std::string(COHORT_BINARY_DIR) + "/cli/cohort " + args + " > '" + out +
                      "' 2> '" + err + "'";
    int status = std::system(cmd.c_str());
    Result r;
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::stringstream a, b;
    a << std::ifstream(out).rdbuf();
    b << std::ifstream(err).rdbuf();
    r.out = a.str();
    r.err = b.str();
    return r;
  }
  static std::string dir_;
};

std::string EvalCmdTest::dir_;

std::string LastLine(const std::string& s) {
  std::string t = s;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  return t.substr(t.rfind('\n') == std::string::npos ? 0 : t.rfind('\n') + 1);
}

TEST_F(EvalCmdTest, JsonLineHasEveryKey) {
  Result r = Run("eval --model " + dir_ + "/model --dataset " + dir_ +
                 "/data/eval.jsonl --task addition --samples 4 --k 2 --max_new_tokens 32 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(LastLine(r.out));
  for (const char* key : {"pass_at_1", "cons_at_k", "pass_at_k", "format_rate", "k", "n"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["n"], 4);
  EXPECT_EQ(j["k"], 2);
  EXPECT_EQ(j["problems"], 20);
  EXPECT_EQ(j["chat_template"], "plain");  // inferred: no chat tokens in the vocabulary
  double p = j["pass_at_1"];
  EXPECT_GE(p, 0.0);
  EXPECT_LE(p, 1.0);
}

TEST_F(EvalCmdTest, GreedyTableAndBadInput) {
  Result r = Run("eval --model " + dir_ + "/model --dataset " + dir_ +
                 "/data/eval.jsonl --task addition --greedy --max_new_tokens 32 --limit 5");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("accuracy"));
  EXPECT_THAT(r.out, HasSubstr("n=1"));
  r = Run("eval --model " + dir_ + "/model --dataset " + dir_ +
          "/data/eval.jsonl --task countdown");
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("expected math, gsm8k or addition"));
  r = Run("eval --model " + dir_ + "/model --dataset " + dir_ +
          "/data/eval.jsonl --task addition --samples 2 --k 3");
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("must not exceed"));
  r = Run("eval --model " + dir_ + "/model --dataset " + dir_ +
          "/data/sft.jsonl --task gsm8k --prompt_key question");
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("\"question\""));
}

}  // namespace
}  // namespace cohort::cli
