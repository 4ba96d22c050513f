// Tests `cohort status` through the real binary against a cohort.v1.Admin
// server in this process that answers GetStatus with a given RunStatus: the
// table (the run's failure included), --json, an unreachable address.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "cohort/v1/admin.grpc.pb.h"
#include "core/rpc.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cohort {
namespace {

namespace v1 = ::cohort::v1;
using ::testing::HasSubstr;
using ::testing::Not;

const std::string kCohort = COHORT_BINARY_DIR "/cli/cohort";

class FakeAdmin final : public v1::Admin::Service {
 public:
  explicit FakeAdmin(v1::RunStatus status) : status_(std::move(status)) {}
  grpc::Status GetStatus(grpc::ServerContext*, const v1::GetStatusRequest*,
                         v1::RunStatus* response) override {
    *response = status_;
    return grpc::Status::OK;
  }

 private:
  const v1::RunStatus status_;
};

struct Result {
  int exit_code;
  std::string out, err;
};

class StatusCmdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "status_cmd_test_" + std::to_string(::getpid());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(2));
    std::filesystem::remove_all(dir_);
  }

  static std::string Slurp(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  // Serves `status`; returns the address.
  std::string Serve(const v1::RunStatus& status) {
    admin_ = std::make_unique<FakeAdmin>(status);
    auto server = RpcServer::Start(ServerOptions(), {admin_.get()});
    EXPECT_TRUE(server.ok()) << server.status();
    if (!server.ok()) return "";
    server_ = *std::move(server);
    return absl::StrCat("127.0.0.1:", server_->port());
  }
  Result Run(const std::string& args) {
    const std::string out = dir_ + "/out", err = dir_ + "/err";
    std::string cmd = kCohort + " status " + args + " > " + out + " 2> " + err;
    int status = std::system(cmd.c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, Slurp(out), Slurp(err)};
  }

  std::string dir_;
  std::unique_ptr<FakeAdmin> admin_;
  std::unique_ptr<RpcServer> server_;
};

v1::RunStatus Running() {
  v1::RunStatus s;
  s.set_run_id("run-7");
  s.set_stage("grpo");
  s.set_stage_kind("grpo");
  s.set_step(12);
  s.set_policy_version(12);
  s.mutable_ledger()->set_prompts_total(64);
  s.mutable_ledger()->set_trained(48);
  v1::ActorInfo* a = s.add_actors();
  a->set_actor_name("actor-0");
  a->set_actor_id("A1-0");
  a->set_groups_submitted(30);
  return s;
}

TEST_F(StatusCmdTest, TableShowsTheRunsFailure) {
  v1::RunStatus s = Running();
  s.set_failure("stage rejection: no completion reached the threshold 0.5 (3 attempts)");
  const std::string address = Serve(s);
  Result r = Run(address);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("run        run-7 (failed)\n"));
  EXPECT_THAT(r.out, HasSubstr("failure    stage rejection: no completion reached the threshold "
                               "0.5 (3 attempts)\n"));
  EXPECT_THAT(r.out, HasSubstr("step 12  version 12"));
  EXPECT_THAT(r.out, HasSubstr("actor-0"));
  // --json: the proto's field name.
  r = Run(address + " --json");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"failure\":\"stage rejection: no completion"));
}

TEST_F(StatusCmdTest, TableOfARunWithoutFailureHasNoFailureLine) {
  Result r = Run(Serve(Running()));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("run        run-7\n"));
  EXPECT_THAT(r.out, Not(HasSubstr("failure")));
  EXPECT_THAT(r.out, Not(HasSubstr("(failed)")));
}

TEST_F(StatusCmdTest, UnreachableIsExit1) {
  // A port nothing listens on: a server started and shut down.
  const std::string address = Serve(Running());
  server_->Shutdown(absl::Seconds(1));
  server_.reset();
  Result r = Run(address + " --timeout_seconds 2");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("GetStatus on " + address + " failed"));
}

}  // namespace
}  // namespace cohort
