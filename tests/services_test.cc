// The three service binaries as real processes: each reaches SERVING (gRPC
// health), serves /metrics, writes its port file, and stops cleanly (exit 0)
// on SIGTERM and SIGINT within the configured deadline; --help documents
// every flag; a bad config is a clear error.
#include <signal.h>

#include <cstdlib>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include "cli/supervisor.h"
#include "cohort/v1/admin.grpc.pb.h"
#include "cohort/v1/learner.grpc.pb.h"
#include "core/testing/require.h"
#include "tests/cluster_util.h"

namespace cohort {
namespace {

using ::cohort::cli::ChildProcess;
using ::cohort::cli::DescribeWaitStatus;
using ::cohort::testing::Binary;
using ::cohort::testing::CheckServing;
using ::cohort::testing::ReadFile;
using ::cohort::testing::TempDir;
using ::cohort::testing::WaitForPortFile;
using ::testing::HasSubstr;

struct Role {
  std::string name;  // for test names
  std::string dir;
  std::string binary;
  std::vector<std::string> extra_args;
  std::vector<std::string> extra_flags;  // role-specific flags in --help
};

// Keeps ctest's test names short (gtest would print the struct's bytes).
void PrintTo(const Role& role, std::ostream* os) { *os << role.name; }

std::vector<Role> Roles() {
  return {
      {"learner", "learner", "cohort-learner", {}, {}},
      {"reward", "reward_server", "cohort-reward", {}, {}},
      // Nothing listens on port 1: the actor serves anyway and logs that the
      // learner is not reachable.
      {"actor",
       "actor",
       "cohort-actor",
       {"--learner", "127.0.0.1:1", "--reward", "127.0.0.1:1"},
       {"--learner", "--reward"}},
  };
}

constexpr int kStopTimeoutSeconds = 5;

// `promtool check metrics` (Prometheus' own linter) accepts the exposition:
// names, HELP/TYPE lines, units, counters ending in _total. Without
// promtool this is skipped, unless COHORT_REQUIRE_DATA=1.
void PromtoolCheckMetrics(const std::string& body, const std::string& path) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) {
    EXPECT_FALSE(cohort::testutil::PrerequisitesRequired())
        << "COHORT_REQUIRE_DATA=1 but promtool is not installed (Debian package prometheus)";
    return;
  }
  cohort::testing::WriteFile(path, body);
  std::string out = path + ".promtool";
  int rc = std::system(("promtool check metrics < " + path + " > " + out + " 2>&1").c_str());
  EXPECT_EQ(rc, 0) << "promtool check metrics:\n" << ReadFile(out) << "\n" << body;
}

class ServiceTest : public ::testing::TestWithParam<Role> {
 protected:
  // Starts the binary with free ports; returns its port file once written.
  absl::StatusOr<PortFile> Start(std::vector<std::string> args = {}) {
    const Role& role = GetParam();
    std::vector<std::string> all = {
        "--port",         "0",
        "--metrics_port", "0",
        "--port_file",    dir_ / "ports",
        "--set",          absl::StrCat("supervisor.stop_timeout_seconds=", kStopTimeoutSeconds),
        // An actor's drain must fit inside the stop deadline.
        "--set",          "actor.drain_grace_seconds=1"};
    all.insert(all.end(), role.extra_args.begin(), role.extra_args.end());
    all.insert(all.end(), args.begin(), args.end());
    auto child = ChildProcess::Spawn(Binary(role.dir, role.binary), all, log());
    if (!child.ok()) return child.status();
    child_ = *std::move(child);
    return WaitForPortFile(dir_ / "ports", absl::Seconds(20));
  }
  std::string log() const { return dir_ / "service.log"; }

  TempDir dir_;
  std::unique_ptr<ChildProcess> child_;
};

TEST_P(ServiceTest, ServesHealthAndMetricsThenStopsOnSigterm) {
  absl::StatusOr<PortFile> ports = Start();
  ASSERT_TRUE(ports.ok()) << ports.status() << "\n" << ReadFile(log());
  EXPECT_EQ(ports->pid, child_->pid());
  EXPECT_GT(ports->grpc_port, 0);
  EXPECT_GT(ports->metrics_port, 0);
  absl::Status serving = CheckServing(ports->grpc_port, absl::Seconds(10));
  ASSERT_TRUE(serving.ok()) << serving << "\n" << ReadFile(log());

  httplib::Client http("127.0.0.1", ports->metrics_port);
  http.set_connection_timeout(5);
  auto res = http.Get("/metrics");
  ASSERT_TRUE(res) << "GET /metrics failed";
  EXPECT_EQ(res->status, 200);
  EXPECT_THAT(res->body, HasSubstr("# TYPE cohort_"));
  PromtoolCheckMetrics(res->body, dir_ / "metrics.txt");

  absl::Time start = absl::Now();
  child_->Signal(SIGTERM);
  ASSERT_TRUE(child_->WaitFor(absl::Seconds(kStopTimeoutSeconds + 2)))
      << "did not stop within the deadline\n"
      << ReadFile(log());
  absl::Duration took = absl::Now() - start;
  EXPECT_EQ(DescribeWaitStatus(child_->wait_status()), "exited with code 0") << ReadFile(log());
  EXPECT_LT(took, absl::Seconds(kStopTimeoutSeconds));
  std::string text = ReadFile(log());
  EXPECT_THAT(text, HasSubstr(absl::StrCat("serving on 127.0.0.1:", ports->grpc_port)));
  EXPECT_THAT(text, HasSubstr(absl::StrCat("metrics on :", ports->metrics_port)));
  EXPECT_THAT(text, HasSubstr("stopping (SIGTERM)"));
  EXPECT_THAT(text, HasSubstr("stopped in"));
}

TEST_P(ServiceTest, StopsOnSigint) {
  absl::StatusOr<PortFile> ports = Start();
  ASSERT_TRUE(ports.ok()) << ports.status() << "\n" << ReadFile(log());
  ASSERT_TRUE(CheckServing(ports->grpc_port, absl::Seconds(10)).ok());
  child_->Signal(SIGINT);
  ASSERT_TRUE(child_->WaitFor(absl::Seconds(kStopTimeoutSeconds + 2)));
  EXPECT_EQ(DescribeWaitStatus(child_->wait_status()), "exited with code 0");
  EXPECT_THAT(ReadFile(log()), HasSubstr("stopping (SIGINT)"));
}

TEST_P(ServiceTest, HelpExplainsEveryFlag) {
  const Role& role = GetParam();
  auto child = ChildProcess::Spawn(Binary(role.dir, role.binary), {"--help"}, log());
  ASSERT_TRUE(child.ok()) << child.status();
  ASSERT_TRUE((*child)->WaitFor(absl::Seconds(10)));
  EXPECT_EQ(DescribeWaitStatus((*child)->wait_status()), "exited with code 0");
  std::string help = ReadFile(log());
  EXPECT_THAT(help, HasSubstr(role.binary));
  std::vector<std::string> flags = {"--config",       "--set",       "--host",     "--port",
                                    "--metrics_port", "--port_file", "--log_level"};
  flags.insert(flags.end(), role.extra_flags.begin(), role.extra_flags.end());
  for (const std::string& flag : flags) {
    EXPECT_THAT(help, HasSubstr(flag)) << help;
  }
}

TEST_P(ServiceTest, BadConfigIsAClearErrorAndExitCode2) {
  const Role& role = GetParam();
  auto child = ChildProcess::Spawn(
      Binary(role.dir, role.binary),
      {"--set", "sampling.temperature=-1", "--port_file", dir_ / "ports"}, log());
  ASSERT_TRUE(child.ok()) << child.status();
  ASSERT_TRUE((*child)->WaitFor(absl::Seconds(10)));
  EXPECT_EQ(DescribeWaitStatus((*child)->wait_status()), "exited with code 2");
  EXPECT_THAT(ReadFile(log()), HasSubstr("sampling.temperature"));
  EXPECT_FALSE(std::filesystem::exists(dir_ / "ports"));
}

TEST_P(ServiceTest, MissingConfigFileIsAClearError) {
  const Role& role = GetParam();
  auto child =
      ChildProcess::Spawn(Binary(role.dir, role.binary), {"--config", dir_ / "nope.yaml"}, log());
  ASSERT_TRUE(child.ok()) << child.status();
  ASSERT_TRUE((*child)->WaitFor(absl::Seconds(10)));
  EXPECT_EQ(DescribeWaitStatus((*child)->wait_status()), "exited with code 2");
  EXPECT_THAT(ReadFile(log()), HasSubstr("nope.yaml"));
}

INSTANTIATE_TEST_SUITE_P(Binaries, ServiceTest, ::testing::ValuesIn(Roles()),
                         [](const ::testing::TestParamInfo<Role>& info) {
                           return info.param.name;
                         });

// The learner's RPCs answer for real: an actor of another protocol
// revision is refused naming both revisions, a current one joins, and Admin
// reports the run (without data.train the learner serves weights only).
TEST(LearnerServiceProcessTest, JoinChecksTheProtocolAndAdminAnswers) {
  TempDir dir;
  auto child = ChildProcess::Spawn(
      Binary("learner", "cohort-learner"),
      {"--port", "0", "--metrics_port", "0", "--port_file", dir / "ports", "--set",
       absl::StrCat("run.out_dir=", std::string(dir / "out"))},
      dir / "log");
  ASSERT_TRUE(child.ok()) << child.status();
  absl::StatusOr<PortFile> ports = WaitForPortFile(dir / "ports", absl::Seconds(20));
  ASSERT_TRUE(ports.ok()) << ports.status();
  ASSERT_TRUE(CheckServing(ports->grpc_port, absl::Seconds(10)).ok());
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", ports->grpc_port),
                                     grpc::InsecureChannelCredentials());
  {
    auto stub = v1::Learner::NewStub(channel);
    grpc::ClientContext ctx;
    v1::JoinRequest req;
    req.set_actor_name("old-actor");
    req.set_slots(1);
    v1::JoinResponse resp;
    grpc::Status s = stub->Join(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(s.error_message(), HasSubstr("speaks learner protocol 0, this learner speaks 1"));
    grpc::ClientContext ctx2;
    req.set_protocol_version(v1::LEARNER_PROTOCOL_CURRENT);
    s = stub->Join(&ctx2, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_FALSE(resp.actor_id().empty());
    EXPECT_FALSE(resp.model().config_json().empty());
  }
  {
    auto stub = v1::Admin::NewStub(channel);
    grpc::ClientContext ctx;
    v1::GetStatusRequest req;
    v1::RunStatus resp;
    grpc::Status s = stub->GetStatus(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_FALSE(resp.run_id().empty());
    ASSERT_EQ(resp.kept_versions_size(), 1);
    EXPECT_EQ(resp.kept_versions(0), 0);
  }
  // An idle client connection holds gRPC's server shutdown for up to ~5 s
  // (bounded by the stop deadline); close it first, as exiting actors do.
  channel.reset();
  (*child)->Stop(absl::Seconds(10));
  EXPECT_EQ(DescribeWaitStatus((*child)->wait_status()), "exited with code 0");
}

}  // namespace
}  // namespace cohort
