// `cohort reward score` through the real binary: JSON lines in, one line
// out per line in, in order; malformed lines give ERROR lines; streaming.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/testing/require.h"
#include "core/testing/test_util.h"
#include "gtest/gtest.h"

namespace {

const std::string kCohort = COHORT_BINARY_DIR "/cli/cohort";

struct RunResult {
  int exit_code = -1;
  std::vector<nlohmann::json> lines;
  std::string raw;
};

RunResult RunScore(const std::string& input, const std::string& flags = "") {
  cohort::testutil::ScopedTempDir dir("reward_cmd_test");
  cohort::testutil::CommandResult run =
      cohort::testutil::RunCommand(kCohort + " reward score " + flags, dir.path(), input);
  RunResult r;
  r.raw = std::move(run.out);
  r.exit_code = run.exit_code;
  size_t start = 0;
  while (start < r.raw.size()) {
    size_t end = r.raw.find('\n', start);
    if (end == std::string::npos) end = r.raw.size();
    r.lines.push_back(nlohmann::json::parse(r.raw.substr(start, end - start), nullptr, false));
    start = end + 1;
  }
  return r;
}

class RewardCmdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access(kCohort.c_str(), X_OK) != 0) {
      COHORT_SKIP_OR_FAIL(kCohort << " not built");
    }
  }
};

TEST_F(RewardCmdTest, OneLineOutPerLineInInOrder) {
  std::string input;
  input +=
      R"({"id":"m1","task":"math","prompt":"p","completion":"so \\boxed{\\frac{1}{2}}","answer":"0.5"})"
      "\n";
  input += R"({"id":"g1","task":"gsm8k","completion":"#### 8","answer":"3+4=7\n#### 7"})"
           "\n";
  input += "this is not json\n";
  input += R"({"id":"nt","completion":"x"})"
           "\n";
  input +=
      R"({"id":"c1","task":"countdown","completion":"<answer>(6-2)*6</answer>","numbers":[6,2,6],"target":24})"
      "\n";
  input += R"({"id":"u1","task":"astrology","completion":"x","answer":"y"})"
           "\n";
  input += R"({"id":7,"task":"gsm8k","completion":"#### 42","answer":42})"
           "\n";
  input += R"({"id":"bad","task":"math","completion":5})"
           "\n";
  input +=
      R"({"id":"code1","task":"code","completion":"```python\ndef f(x):\n    return x + 1\n```","tests":["assert f(1) == 2","assert f(2) == 4"]})"
      "\n";
  RunResult r = RunScore(input, "--workers 2");
  ASSERT_EQ(r.exit_code, 0) << r.raw;
  ASSERT_EQ(r.lines.size(), 9u) << r.raw;
  for (const auto& l : r.lines) {
    ASSERT_TRUE(l.is_object()) << r.raw;
    for (const char* k : {"id", "reward", "status", "reason", "components"}) {
      EXPECT_TRUE(l.contains(k)) << k << " in " << l.dump();
    }
    // A failure never looks like a score.
    if (l["status"] != "OK") {
      EXPECT_TRUE(l["reward"].is_null()) << l.dump();
    }
  }
  EXPECT_EQ(r.lines[0]["id"], "m1");
  EXPECT_EQ(r.lines[0]["status"], "OK");
  EXPECT_EQ(r.lines[0]["reward"], 1.0);
  EXPECT_EQ(r.lines[0]["components"]["accuracy"], 1.0);
  EXPECT_EQ(r.lines[1]["id"], "g1");
  EXPECT_EQ(r.lines[1]["reward"], 0.0);
  EXPECT_EQ(r.lines[2]["id"], "line 3");
  EXPECT_EQ(r.lines[2]["status"], "ERROR");
  EXPECT_EQ(r.lines[2]["reason"], "line 3: not valid JSON");
  EXPECT_EQ(r.lines[3]["id"], "nt");
  EXPECT_EQ(r.lines[3]["status"], "ERROR");
  EXPECT_EQ(r.lines[3]["reason"], "line 4: task: missing or empty");
  EXPECT_EQ(r.lines[4]["id"], "c1");
  EXPECT_EQ(r.lines[4]["reward"], 1.0) << r.lines[4].dump();
  EXPECT_EQ(r.lines[5]["status"], "INVALID");
  EXPECT_NE(r.lines[5]["reason"].get<std::string>().find("astrology"), std::string::npos);
  EXPECT_EQ(r.lines[6]["id"], 7);
  EXPECT_EQ(r.lines[6]["reward"], 1.0) << r.lines[6].dump();
  EXPECT_EQ(r.lines[7]["status"], "ERROR");
  EXPECT_EQ(r.lines[7]["reason"], "line 8: completion: expected a string");
  EXPECT_EQ(r.lines[8]["id"], "code1");
  if (r.lines[8]["status"] == "OK") {
    EXPECT_EQ(r.lines[8]["reward"], 0.5) << r.lines[8].dump();
  } else {  // no sandbox on this machine: ERROR saying why, never 0
    EXPECT_EQ(r.lines[8]["status"], "ERROR");
  }
}

TEST_F(RewardCmdTest, ManyLinesKeepOrder) {
  std::string input;
  for (int i = 0; i < 2000; ++i) {
    input += "{\"id\":\"" + std::to_string(i) + "\",\"task\":\"gsm8k\",\"completion\":\"#### " +
             std::to_string(i % 3) + "\",\"answer\":\"#### " + std::to_string(i % 2) + "\"}\n";
  }
  RunResult r = RunScore(input, "--workers 2");
  ASSERT_EQ(r.exit_code, 0);
  ASSERT_EQ(r.lines.size(), 2000u);
  for (int i = 0; i < 2000; ++i) {
    ASSERT_EQ(r.lines[i]["id"], std::to_string(i));
    EXPECT_EQ(r.lines[i]["reward"], (i % 3 == i % 2) ? 1.0 : 0.0) << i;
  }
}

TEST_F(RewardCmdTest, ConfigOverridesComposeTheReward) {
  std::string input =
      R"({"id":"a","task":"math","completion":"<think>easy</think> <answer>4</answer>","answer":"4"})"
      "\n";
  RunResult r = RunScore(input,
                         "--set reward.tasks.math.format=r1-zero "
                         "--set reward.tasks.math.weights.format=0.5");
  ASSERT_EQ(r.exit_code, 0) << r.raw;
  ASSERT_EQ(r.lines.size(), 1u);
  EXPECT_EQ(r.lines[0]["components"]["format"], 1.0) << r.raw;
  EXPECT_EQ(r.lines[0]["reward"], 1.5) << r.raw;

  RunResult bad = RunScore(input, "--set reward.tasks.math.weights.style=1");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_TRUE(bad.lines.empty());
}

TEST_F(RewardCmdTest, StreamsWithoutWaitingForEndOfInput) {
  int in_pipe[2], out_pipe[2];
  ASSERT_EQ(pipe(in_pipe), 0);
  ASSERT_EQ(pipe(out_pipe), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 2);
    close(in_pipe[1]);
    close(out_pipe[0]);
    execl(kCohort.c_str(), kCohort.c_str(), "reward", "score", nullptr);
    _exit(127);
  }
  close(in_pipe[0]);
  close(out_pipe[1]);
  std::string line = R"({"id":"first","task":"math","completion":"\\boxed{3}","answer":"3"})"
                     "\n";
  ASSERT_EQ(write(in_pipe[1], line.data(), line.size()), static_cast<ssize_t>(line.size()));
  // stdin stays open: the answer must come anyway.
  pollfd pfd{out_pipe[0], POLLIN, 0};
  ASSERT_EQ(poll(&pfd, 1, 10000), 1) << "no output before end of input";
  char buf[4096];
  ssize_t n = read(out_pipe[0], buf, sizeof(buf));
  ASSERT_GT(n, 0);
  auto j = nlohmann::json::parse(std::string(buf, static_cast<size_t>(n)));
  EXPECT_EQ(j["id"], "first");
  EXPECT_EQ(j["reward"], 1.0);
  close(in_pipe[1]);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  close(out_pipe[0]);
}

}  // namespace
