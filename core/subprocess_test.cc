#include "core/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cohort {
namespace {

using ::testing::HasSubstr;

// Runs `script` under /bin/sh with stdout captured; returns stdout and
// sets *status to the wait status.
std::string RunShell(const std::string& script, SpawnOptions options, int* status) {
  int out[2];
  EXPECT_EQ(::pipe2(out, O_CLOEXEC), 0);
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  options.binary = "/bin/sh";
  options.argv = {"sh", "-c", script};
  options.fds = {null_fd, out[1], out[1]};
  absl::StatusOr<pid_t> pid = Spawn(options);
  ::close(out[1]);
  ::close(null_fd);
  std::string text;
  if (pid.ok()) {
    char buf[4096];
    ssize_t n;
    while ((n = ::read(out[0], buf, sizeof(buf))) > 0) text.append(buf, static_cast<size_t>(n));
    EXPECT_EQ(::waitpid(*pid, status, 0), *pid);
  } else {
    ADD_FAILURE() << pid.status();
  }
  ::close(out[0]);
  return text;
}

TEST(SubprocessTest, RunsWithArgvAndDescriptors) {
  int status = 0;
  std::string out = RunShell("echo \"$0 ok\"; exit 3", {}, &status);
  EXPECT_EQ(out, "sh ok\n");
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 3);
}

TEST(SubprocessTest, MissingBinaryIsAnError) {
  SpawnOptions o;
  o.binary = "/nonexistent/cohort-binary";
  absl::StatusOr<pid_t> pid = Spawn(o);
  ASSERT_FALSE(pid.ok());
  EXPECT_EQ(pid.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(pid.status().message()),
              HasSubstr("cannot execute /nonexistent/cohort-binary: No such file or directory"));
}

TEST(SubprocessTest, OnlyTheGivenDescriptorsAreOpen) {
  // An inheritable descriptor of the parent must not reach the child.
  int null_leak = ::open("/dev/null", O_RDONLY);
  int leak = ::fcntl(null_leak, F_DUPFD, 50);  // inheritable, above the child's 0-3
  ::close(null_leak);
  ASSERT_GE(leak, 50);
  int extra[2];
  ASSERT_EQ(::pipe2(extra, O_CLOEXEC), 0);
  ASSERT_EQ(::write(extra[1], "fd3 data", 8), 8);
  ::close(extra[1]);
  int out[2];
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  SpawnOptions o;
  o.binary = "/bin/sh";
  o.argv = {"sh", "-c",
            "cat <&3; if [ -e /proc/self/fd/" + std::to_string(leak) +
                " ]; then echo ' leaked'; else echo ' closed'; fi"};
  o.fds = {null_fd, out[1], out[1], extra[0]};
  absl::StatusOr<pid_t> pid = Spawn(o);
  ASSERT_TRUE(pid.ok()) << pid.status();
  ::close(out[1]);
  std::string got;
  char buf[256];
  ssize_t n;
  while ((n = ::read(out[0], buf, sizeof(buf))) > 0) got.append(buf, static_cast<size_t>(n));
  int status = 0;
  EXPECT_EQ(::waitpid(*pid, &status, 0), *pid);
  EXPECT_EQ(got, "fd3 data closed\n");
  ::close(out[0]);
  ::close(extra[0]);
  ::close(null_fd);
  ::close(leak);
}

TEST(SubprocessTest, EnvironmentIsReplaced) {
  SpawnOptions o;
  o.env = std::vector<std::string>{"COHORT_SPAWN_TEST=42"};
  int status = 0;
  std::string out = RunShell("echo \"$COHORT_SPAWN_TEST ${HOME:-nohome}\"", o, &status);
  EXPECT_EQ(out, "42 nohome\n");
}

TEST(SubprocessTest, SetsRlimits) {
  SpawnOptions o;
  o.rlimits = {{RLIMIT_NOFILE, 40}};
  int status = 0;
  EXPECT_EQ(RunShell("ulimit -n", o, &status), "40\n");
}

TEST(SubprocessTest, ProcessGroupIsSetBeforeSpawnReturns) {
  SpawnOptions o;
  o.binary = "/bin/sleep";
  o.argv = {"sleep", "30"};
  absl::StatusOr<pid_t> pid = Spawn(o);
  ASSERT_TRUE(pid.ok()) << pid.status();
  EXPECT_EQ(::getpgid(*pid), *pid);
  ASSERT_EQ(::kill(-*pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(*pid, &status, 0), *pid);
  EXPECT_TRUE(WIFSIGNALED(status));
}

TEST(SubprocessTest, FailedStepIsReported) {
  SpawnOptions o;
  o.binary = "/bin/true";
  o.rlimits = {{9999, 1}};  // not a resource
  absl::StatusOr<pid_t> pid = Spawn(o);
  ASSERT_FALSE(pid.ok());
  EXPECT_THAT(std::string(pid.status().message()),
              HasSubstr("cannot start /bin/true: setrlimit: Invalid argument"));
}

TEST(SubprocessTest, ChildDiesWithTheSpawningThread) {
  pid_t pid = -1;
  std::thread spawner([&] {
    SpawnOptions o;
    o.binary = "/bin/sleep";
    o.argv = {"sleep", "60"};
    absl::StatusOr<pid_t> p = Spawn(o);
    ASSERT_TRUE(p.ok()) << p.status();
    pid = *p;
  });
  spawner.join();
  ASSERT_GT(pid, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);  // SIGKILL when the thread exited
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
}

}  // namespace
}  // namespace cohort
