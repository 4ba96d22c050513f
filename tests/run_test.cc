// `cohort run` as a real process tree: a reward server, a learner and two
// actors on ephemeral ports. Kills roles with SIGKILL and checks the
// supervisor's reaction, and that no process is ever left behind.
#include <signal.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <grpcpp/grpcpp.h>

#include "cli/supervisor.h"
#include "cohort/v1/admin.grpc.pb.h"
#include "core/rpc.h"
#include "tests/cluster_util.h"

namespace cohort {
namespace {

using ::cohort::cli::ChildProcess;
using ::cohort::cli::DescribeWaitStatus;
using ::cohort::testing::Alive;
using ::cohort::testing::Binary;
using ::cohort::testing::CheckServing;
using ::cohort::testing::ParentPid;
using ::cohort::testing::ReadFile;
using ::cohort::testing::TempDir;
using ::cohort::testing::WaitForPortFile;
using ::cohort::testing::WaitUntil;
using ::cohort::testing::WriteFile;
using ::testing::HasSubstr;

constexpr int kStopTimeoutSeconds = 5;
const char* const kRoles[] = {"reward", "learner", "actor-0", "actor-1"};

class RunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = dir_ / "run.yaml";
    WriteFile(config_, absl::StrCat(R"(
run:
  name: run-test
actor:
  count: 2
  drain_grace_seconds: 2
supervisor:
  max_restarts: 3
  restart_window_seconds: 60
  backoff_initial_ms: 100
  backoff_max_ms: 1000
  stop_timeout_seconds: )",
                                    kStopTimeoutSeconds, R"(
  ready_timeout_seconds: 20
)"));
    out_ = dir_ / "out";
  }

  void TearDown() override {
    if (run_ != nullptr) run_->Stop(absl::Seconds(kStopTimeoutSeconds + 2));
    for (const auto& [role, pid] : seen_) {
      EXPECT_FALSE(Alive(pid)) << role << " (pid " << pid << ") left behind";
    }
  }

  // Starts `cohort run` and waits until every role is SERVING. Records
  // each role's pid and port file.
  void StartCluster(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"run", config_, "--out", out_};
    args.insert(args.end(), extra.begin(), extra.end());
    auto run = ChildProcess::Spawn(Binary("cli", "cohort"), args, run_log());
    ASSERT_TRUE(run.ok()) << run.status();
    run_ = *std::move(run);
    for (const char* role : kRoles) {
      absl::StatusOr<PortFile> ports =
          WaitForPortFile(absl::StrCat(out_, "/", role, ".port"), absl::Seconds(30));
      ASSERT_TRUE(ports.ok()) << role << ": " << ports.status() << "\n" << ReadFile(run_log());
      absl::Status serving = CheckServing(ports->grpc_port, absl::Seconds(10));
      ASSERT_TRUE(serving.ok()) << role << ": " << serving;
      ports_[role] = *ports;
      seen_[role] = ports->pid;
      EXPECT_EQ(ParentPid(ports->pid), run_->pid()) << role << " is not a child of cohort run";
    }
    // The supervisor logs once every actor is SERVING.
    ASSERT_TRUE(
        WaitUntil([&] { return ReadFile(run_log()).find("actor(s) SERVING") != std::string::npos; },
                  absl::Seconds(10)))
        << ReadFile(run_log());
  }

  // Waits for `cohort run` to exit; returns how it ended.
  std::string WaitForExit(absl::Duration timeout) {
    if (!run_->WaitFor(timeout)) return "still running";
    return DescribeWaitStatus(run_->wait_status());
  }

  void ExpectNothingLeft() {
    for (const auto& [role, pid] : seen_) {
      EXPECT_TRUE(WaitUntil([pid = pid] { return !Alive(pid); }, absl::Seconds(5)))
          << role << " (pid " << pid << ") left behind";
    }
  }

  // Kills `role` with SIGKILL and waits until it is back (a new pid,
  // SERVING). Returns the new port file.
  PortFile KillAndWaitForRestart(const std::string& role) {
    pid_t old = ports_[role].pid;
    EXPECT_EQ(::kill(old, SIGKILL), 0);
    absl::StatusOr<PortFile> ports =
        WaitForPortFile(absl::StrCat(out_, "/", role, ".port"), absl::Seconds(15), old);
    EXPECT_TRUE(ports.ok()) << role << ": " << ports.status() << "\n" << ReadFile(run_log());
    if (!ports.ok()) return {};
    EXPECT_TRUE(CheckServing(ports->grpc_port, absl::Seconds(10)).ok());
    ports_[role] = *ports;
    seen_[role + "#" + std::to_string(old)] = old;
    seen_[role] = ports->pid;
    return *ports;
  }

  std::string run_log() const { return dir_ / "cohort-run.log"; }

  TempDir dir_;
  std::string config_;
  std::string out_;
  std::unique_ptr<ChildProcess> run_;
  std::map<std::string, PortFile> ports_;
  std::map<std::string, pid_t> seen_;  // every role pid ever observed
};

TEST_F(RunTest, AllRolesStartAndCtrlCStopsEverything) {
  StartCluster();
  // Actors were given both addresses.
  std::string actor_log = ReadFile(out_ + "/actor-0.log");
  EXPECT_THAT(actor_log,
              HasSubstr(absl::StrCat("--learner 127.0.0.1:", ports_["learner"].grpc_port,
                                     " --reward 127.0.0.1:", ports_["reward"].grpc_port)));
  EXPECT_TRUE(WaitUntil(
      [&] { return ReadFile(out_ + "/actor-0.log").find("is reachable") != std::string::npos; },
      absl::Seconds(10)))
      << ReadFile(out_ + "/actor-0.log");
  // Ctrl-C: a terminal sends SIGINT to the foreground process group, which
  // is cohort run alone (each role has its own group).
  run_->Signal(SIGINT);
  EXPECT_EQ(WaitForExit(absl::Seconds(kStopTimeoutSeconds + 5)), "exited with code 0")
      << ReadFile(run_log());
  ExpectNothingLeft();
  for (const char* role : kRoles) {
    EXPECT_THAT(ReadFile(absl::StrCat(out_, "/", role, ".log")), HasSubstr("stopping (SIGTERM)"))
        << role << " was not stopped with SIGTERM";
  }
  EXPECT_THAT(ReadFile(run_log()), HasSubstr("stop requested"));
}

TEST_F(RunTest, KilledActorIsRestarted) {
  StartCluster();
  pid_t old = ports_["actor-0"].pid;
  pid_t learner = ports_["learner"].pid;
  PortFile now = KillAndWaitForRestart("actor-0");
  EXPECT_NE(now.pid, old);
  EXPECT_TRUE(Alive(now.pid));
  EXPECT_EQ(ParentPid(now.pid), run_->pid());
  EXPECT_TRUE(Alive(learner)) << "the learner must not be touched";
  EXPECT_TRUE(Alive(ports_["actor-1"].pid));
  EXPECT_TRUE(WaitUntil(
      [&] {
        return ReadFile(run_log()).find(absl::StrCat("actor-0 restarted: pid ", now.pid)) !=
               std::string::npos;
      },
      absl::Seconds(5)))
      << ReadFile(run_log());
  EXPECT_THAT(ReadFile(run_log()), HasSubstr(absl::StrCat("actor-0 (pid ", old,
                                                          ") killed by signal 9 (SIGKILL); "
                                                          "restarting in")));
  run_->Signal(SIGTERM);
  EXPECT_EQ(WaitForExit(absl::Seconds(kStopTimeoutSeconds + 5)), "exited with code 0");
  ExpectNothingLeft();
}

TEST_F(RunTest, KilledRewardServerComesBackOnItsPort) {
  StartCluster();
  int port = ports_["reward"].grpc_port;
  PortFile now = KillAndWaitForRestart("reward");
  EXPECT_EQ(now.grpc_port, port) << "actors would lose the reward server";
  run_->Signal(SIGINT);
  EXPECT_EQ(WaitForExit(absl::Seconds(kStopTimeoutSeconds + 5)), "exited with code 0");
  ExpectNothingLeft();
}

// The learner resumes from its checkpoint, so a dead learner is restarted
// on its previous port and the run continues: actors keep its address and
// are not restarted.
TEST_F(RunTest, KilledLearnerIsRestartedOnItsPortAndTheRunContinues) {
  StartCluster();
  int port = ports_["learner"].grpc_port;
  pid_t old = ports_["learner"].pid;
  pid_t actor0 = ports_["actor-0"].pid, actor1 = ports_["actor-1"].pid;
  PortFile now = KillAndWaitForRestart("learner");
  EXPECT_NE(now.pid, old);
  EXPECT_EQ(now.grpc_port, port) << "actors would lose the learner";
  EXPECT_EQ(ParentPid(now.pid), run_->pid());
  EXPECT_TRUE(Alive(actor0));
  EXPECT_TRUE(Alive(actor1));
  EXPECT_TRUE(Alive(ports_["reward"].pid));
  EXPECT_THAT(ReadFile(run_log()),
              HasSubstr(absl::StrCat("learner (pid ", old, ") killed by signal 9 (SIGKILL); "
                                     "restarting in")));
  run_->Signal(SIGTERM);
  EXPECT_EQ(WaitForExit(absl::Seconds(3 * kStopTimeoutSeconds + 5)), "exited with code 0")
      << ReadFile(run_log());
  ExpectNothingLeft();
}

// A role that exits 0 has finished: a drained learner ends the run, and
// `cohort run` exits 0 without restarting it.
TEST_F(RunTest, DrainedLearnerFinishesTheRunWithExitCode0) {
  StartCluster();
  pid_t learner = ports_["learner"].pid;
  auto channel = MakeChannel(absl::StrCat("127.0.0.1:", ports_["learner"].grpc_port),
                             ChannelOptions());
  ASSERT_TRUE(channel.ok());
  // `cohort status --json` prints the proto's field names.
  std::string status_log = dir_ / "status.json";
  auto status = ChildProcess::Spawn(
      Binary("cli", "cohort"),
      {"status", absl::StrCat("127.0.0.1:", ports_["learner"].grpc_port), "--json"}, status_log);
  ASSERT_TRUE(status.ok()) << status.status();
  ASSERT_TRUE((*status)->WaitFor(absl::Seconds(20)));
  EXPECT_EQ(DescribeWaitStatus((*status)->wait_status()), "exited with code 0");
  EXPECT_THAT(ReadFile(status_log), HasSubstr("\"kept_versions\":"));
  EXPECT_THAT(ReadFile(status_log), HasSubstr("\"run_id\":"));
  auto admin = v1::Admin::NewStub(*channel);
  grpc::ClientContext ctx;
  v1::DrainResponse drained;
  grpc::Status s = admin->Drain(&ctx, v1::DrainRequest(), &drained);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(WaitForExit(absl::Seconds(3 * kStopTimeoutSeconds + 10)), "exited with code 0")
      << ReadFile(run_log());
  ExpectNothingLeft();
  std::string text = ReadFile(run_log());
  EXPECT_THAT(text, HasSubstr(absl::StrCat("learner (pid ", learner,
                                           ") finished (exited with code 0); the run is "
                                           "complete")));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("learner restarted")));
}

TEST_F(RunTest, RoleThatKeepsDyingStopsTheRun) {
  StartCluster({"--set", "supervisor.max_restarts=1"});
  KillAndWaitForRestart("actor-1");
  ASSERT_EQ(::kill(ports_["actor-1"].pid, SIGKILL), 0);
  EXPECT_EQ(WaitForExit(absl::Seconds(kStopTimeoutSeconds + 5)), "exited with code 1");
  ExpectNothingLeft();
  std::string text = ReadFile(run_log());
  EXPECT_THAT(text, HasSubstr("actor-1 (pid "));
  EXPECT_THAT(text, HasSubstr("died 2 times within"));
  EXPECT_THAT(text, HasSubstr("supervisor.max_restarts = 1"));
}

TEST_F(RunTest, ForDurationStopsCleanly) {
  absl::Time start = absl::Now();
  StartCluster({"--for", "1s"});
  EXPECT_EQ(WaitForExit(absl::Seconds(kStopTimeoutSeconds + 10)), "exited with code 0")
      << ReadFile(run_log());
  EXPECT_GE(absl::Now() - start, absl::Seconds(1));
  ExpectNothingLeft();
  EXPECT_THAT(ReadFile(run_log()), HasSubstr("(--for); stopping"));
}

TEST_F(RunTest, SigkilledSupervisorLeavesNoRoleBehind) {
  StartCluster();
  run_->Signal(SIGKILL);
  EXPECT_EQ(WaitForExit(absl::Seconds(5)), "killed by signal 9 (SIGKILL)");
  // PR_SET_PDEATHSIG takes the roles down with it.
  ExpectNothingLeft();
}

TEST_F(RunTest, MissingBinariesAreAClearError) {
  auto run = ChildProcess::Spawn(Binary("cli", "cohort"),
                                 {"run", config_, "--out", out_, "--bin_dir", dir_ / "nowhere"},
                                 run_log());
  ASSERT_TRUE(run.ok());
  run_ = *std::move(run);
  EXPECT_EQ(WaitForExit(absl::Seconds(10)), "exited with code 2");
  EXPECT_THAT(ReadFile(run_log()), HasSubstr("cannot find the executable cohort-learner"));
}

TEST_F(RunTest, BadConfigIsAClearError) {
  auto run = ChildProcess::Spawn(Binary("cli", "cohort"),
                                 {"run", config_, "--set", "actor.count=-1"}, run_log());
  ASSERT_TRUE(run.ok());
  run_ = *std::move(run);
  EXPECT_EQ(WaitForExit(absl::Seconds(10)), "exited with code 2");
  EXPECT_THAT(ReadFile(run_log()), HasSubstr("actor.count"));
}

TEST_F(RunTest, HelpExplainsEveryFlag) {
  auto run = ChildProcess::Spawn(Binary("cli", "cohort"), {"run", "--help"}, run_log());
  ASSERT_TRUE(run.ok());
  run_ = *std::move(run);
  EXPECT_EQ(WaitForExit(absl::Seconds(10)), "exited with code 0");
  std::string help = ReadFile(run_log());
  for (const char* flag : {"--set", "--out", "--for", "--bin_dir", "CONFIG"}) {
    EXPECT_THAT(help, HasSubstr(flag));
  }
}

}  // namespace
}  // namespace cohort
