// Unit tests of the supervisor's process layer (real processes: /bin/sh).
// The whole `cohort run` is exercised in tests/run_test.cc.
#include "cli/supervisor.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace cohort::cli {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "supervisor_test.XXXXXX");
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Read(const fs::path& p) {
    std::ifstream in(p);
    return std::string((std::istreambuf_iterator<char>(in)), {});
  }
  void MakeExecutable(const fs::path& p) {
    fs::create_directories(p.parent_path());
    std::ofstream(p) << "#!/bin/sh\nexit 0\n";
    fs::permissions(p, fs::perms::owner_all);
  }
  fs::path dir_;
};

// True while `pid` exists and is not a zombie.
bool Alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return false;
  std::string text((std::istreambuf_iterator<char>(stat)), {});
  size_t close = text.rfind(')');
  return close != std::string::npos && close + 2 < text.size() && text[close + 2] != 'Z';
}

TEST(DescribeWaitStatusTest, NamesExitCodesAndSignals) {
  EXPECT_EQ(DescribeWaitStatus(3 << 8), "exited with code 3");
  EXPECT_EQ(DescribeWaitStatus(0), "exited with code 0");
  EXPECT_EQ(DescribeWaitStatus(SIGKILL), "killed by signal 9 (SIGKILL)");
  EXPECT_EQ(DescribeWaitStatus(SIGTERM), "killed by signal 15 (SIGTERM)");
}

TEST_F(TempDir, TailLinesKeepsTheLastLines) {
  fs::path p = dir_ / "log";
  {
    std::ofstream out(p);
    for (int i = 1; i <= 30; ++i) out << "line " << i << "\n";
  }
  std::vector<std::string> tail = TailLines(p, 20);
  ASSERT_EQ(tail.size(), 20u);
  EXPECT_EQ(tail.front(), "line 11");
  EXPECT_EQ(tail.back(), "line 30");
  EXPECT_EQ(TailLines(p, 100).size(), 30u);
  EXPECT_TRUE(TailLines(dir_ / "missing", 5).empty());
  std::ofstream(dir_ / "nonl") << "a\nb";
  EXPECT_EQ(TailLines(dir_ / "nonl", 5), (std::vector<std::string>{"a", "b"}));
}

TEST_F(TempDir, FindRoleBinaryFollowsTheDocumentedOrder) {
  fs::path self = dir_ / "build" / "cli" / "cohort";
  MakeExecutable(self);
  // Build tree: ../learner/cohort-learner.
  MakeExecutable(dir_ / "build" / "learner" / "cohort-learner");
  absl::StatusOr<std::string> found = FindRoleBinary("cohort-learner", "learner", "", self);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(*found, (dir_ / "build" / "learner" / "cohort-learner").string());
  // Next to the executable wins over the build-tree location.
  MakeExecutable(dir_ / "build" / "cli" / "cohort-learner");
  found = FindRoleBinary("cohort-learner", "learner", "", self);
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(*found, (dir_ / "build" / "cli" / "cohort-learner").string());
  // --bin_dir is the only place searched when set.
  fs::create_directories(dir_ / "bin");
  found = FindRoleBinary("cohort-learner", "learner", dir_ / "bin", self);
  ASSERT_FALSE(found.ok());
  EXPECT_THAT(std::string(found.status().message()),
              HasSubstr((dir_ / "bin" / "cohort-learner").string()));
  MakeExecutable(dir_ / "bin" / "cohort-learner");
  found = FindRoleBinary("cohort-learner", "learner", dir_ / "bin", self);
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(*found, (dir_ / "bin" / "cohort-learner").string());
  // Not found: the error lists every path tried.
  found = FindRoleBinary("cohort-actor", "actor", "", self);
  ASSERT_FALSE(found.ok());
  EXPECT_THAT(std::string(found.status().message()),
              HasSubstr((dir_ / "build" / "cli" / "cohort-actor").string()));
  EXPECT_THAT(std::string(found.status().message()),
              HasSubstr((dir_ / "build" / "actor" / "cohort-actor").string()));
}

TEST_F(TempDir, ChildWritesToItsLogAndReportsItsExitCode) {
  fs::path log = dir_ / "child.log";
  auto child = ChildProcess::Spawn("/bin/sh", {"-c", "echo out; echo err >&2; exit 3"}, log);
  ASSERT_TRUE(child.ok()) << child.status();
  ASSERT_TRUE((*child)->WaitFor(absl::Seconds(10)));
  EXPECT_EQ(DescribeWaitStatus((*child)->wait_status()), "exited with code 3");
  EXPECT_EQ(Read(log), "out\nerr\n");
  // The log is appended to, not truncated, by a second run.
  auto again = ChildProcess::Spawn("/bin/sh", {"-c", "echo second"}, log);
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE((*again)->WaitFor(absl::Seconds(10)));
  EXPECT_EQ(Read(log), "out\nerr\nsecond\n");
}

TEST_F(TempDir, ChildRunsInItsOwnProcessGroup) {
  auto child = ChildProcess::Spawn("/bin/sh", {"-c", "sleep 30"}, dir_ / "log");
  ASSERT_TRUE(child.ok());
  EXPECT_EQ(::getpgid((*child)->pid()), (*child)->pid());
  EXPECT_NE(::getpgid((*child)->pid()), ::getpgid(0));
  (*child)->Stop(absl::Seconds(5));
  EXPECT_EQ(DescribeWaitStatus((*child)->wait_status()), "killed by signal 15 (SIGTERM)");
}

TEST_F(TempDir, SpawnFailsClearlyForAMissingBinary) {
  auto child = ChildProcess::Spawn((dir_ / "no-such-binary").string(), {}, dir_ / "log");
  ASSERT_FALSE(child.ok());
  EXPECT_THAT(std::string(child.status().message()), HasSubstr("cannot execute"));
  EXPECT_THAT(std::string(child.status().message()), HasSubstr("No such file"));
  auto bad_log = ChildProcess::Spawn("/bin/true", {}, dir_ / "no" / "log");
  ASSERT_FALSE(bad_log.ok());
  EXPECT_THAT(std::string(bad_log.status().message()), HasSubstr("cannot open log file"));
}

TEST_F(TempDir, StopEscalatesToSigkillAndReachesGrandchildren) {
  fs::path pid_file = dir_ / "grandchild.pid";
  // Ignores SIGTERM, and starts a grandchild that would outlive it.
  auto child = ChildProcess::Spawn("/bin/sh",
                                   {"-c", "trap '' TERM; sleep 60 & echo $! > " +
                                              pid_file.string() + "; while true; do sleep 1; done"},
                                   dir_ / "log");
  ASSERT_TRUE(child.ok());
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (Read(pid_file).empty() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  pid_t grandchild = std::atoi(Read(pid_file).c_str());
  ASSERT_GT(grandchild, 0);
  ASSERT_TRUE(Alive(grandchild));
  absl::Time start = absl::Now();
  (*child)->Stop(absl::Milliseconds(300));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(300));
  EXPECT_EQ(DescribeWaitStatus((*child)->wait_status()), "killed by signal 9 (SIGKILL)");
  deadline = absl::Now() + absl::Seconds(5);
  while (Alive(grandchild) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_FALSE(Alive(grandchild)) << "grandchild " << grandchild << " survived";
}

TEST_F(TempDir, DestructorKillsARunningChild) {
  pid_t pid;
  {
    auto child = ChildProcess::Spawn("/bin/sleep", {"60"}, dir_ / "log");
    ASSERT_TRUE(child.ok());
    pid = (*child)->pid();
    EXPECT_FALSE((*child)->Exited());
  }
  EXPECT_FALSE(Alive(pid));
}

}  // namespace
}  // namespace cohort::cli
