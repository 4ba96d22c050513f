// An actor SIGKILLed while its SubmitGroup call is inside the learner loses
// nothing. A real cohort-learner (GRPO on the tiny-quickstart model with the
// addition task's vocabulary), a real cohort-reward and two real cohort-actor
// processes run on 127.0.0.1 with a bearer token. The learner runs with its
// test hook COHORT_TEST_SUBMIT_STALL_DIR (learner/service.cc): once the test
// arms it, the next SubmitGroup writes which actor and lease it carries and
// waits, before the learner looks at the group, until the test releases it
// (and says when that call has answered).
// The test SIGKILLs that actor while the call is held (so the kill provably
// lands while the RPC is in flight), waits until the process is gone, and
// only then lets the call go on:
//   1. at once: the dead actor's group arrives while its lease is valid;
//   2. only once its prompt has been trained from another actor's group
//      (the lease expired and the prompt was leased again), while the run
//      goes on: the late group must not count a second time.
// Each case ends with an audit of trained.jsonl / filtered.jsonl /
// failed.jsonl against the dataset: every prompt exactly once.
#include <signal.h>
#include <stdlib.h>
#include <sys/types.h>

#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "cli/supervisor.h"
#include "cohort/v1/admin.grpc.pb.h"
#include "core/rpc.h"
#include "core/service.h"
#include "core/tasks/addition.h"
#include "tests/cluster_run.h"
#include "tests/cluster_util.h"

namespace cohort {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::cohort::v1;
using ::cohort::cli::ChildProcess;
using ::cohort::testing::Alive;
using ::cohort::testing::Binary;
using ::cohort::testing::GetRunStatus;
using ::cohort::testing::Journals;
using ::cohort::testing::LogTails;
using ::cohort::testing::ReadFile;
using ::cohort::testing::ReadJournals;
using ::cohort::testing::TempDir;
using ::cohort::testing::WaitForPortFile;
using ::cohort::testing::WaitUntil;
using ::cohort::testing::WriteAdditionTokenizer;
using ::cohort::testing::WriteFile;
using Json = nlohmann::json;

constexpr char kToken[] = "actor-submit-kill-test-token";
constexpr int kPromptsPerStep = 4;

class ActorSubmitKillTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(run_dir_);
    fs::create_directories(stall_dir_);
    WriteAdditionTokenizer(dir_ / "tok");
    WriteFile(dir_ / "token", std::string(kToken) + "\n");
  }

  // The dataset (`prompts_` of the addition task's train split) and run.yaml.
  void WriteRun() {
    tasks::AdditionOptions o;
    o.train_size = prompts_;
    o.eval_size = 10;
    o.fresh_size = 10;
    o.sft_size = 0;
    absl::StatusOr<tasks::AdditionSplits> splits = tasks::MakeAdditionSplits(o);
    ASSERT_TRUE(splits.ok()) << splits.status();
    WriteFile(dir_ / "prompts.jsonl", tasks::AdditionJsonl(splits->train, o.digits, false));
    WriteFile(config_,
              absl::StrCat("run:\n  name: submit-kill\n  seed: 5\n  out_dir: ", run_dir_,
                           "\nmodel:\n  preset: tiny-quickstart\n  chat_template: plain\n"
                           "  tokenizer: ",
                           dir_ / "tok/tokenizer.json",
                           "\nsampling:\n  group_size: 4\n  max_new_tokens: 16\n"
                           "data:\n  train: ",
                           dir_ / "prompts.jsonl",
                           "\n  id_key: id\n  task: math\n  epochs: 1\n"
                           "grpo:\n  prompts_per_step: ",
                           kPromptsPerStep,
                           "\nlearner:\n  heartbeat_interval_ms: 250\n  lease_ttl_ms: 2000\n"
                           "  checkpoint_on_stop_seconds: 20\n"
                           "checkpoint:\n  every_steps: 0\n  keep_last: 2\n"
                           "actor:\n  slots: 8\n  drain_grace_seconds: 3\n"
                           "reward:\n  retry_seconds: 60\n  tasks:\n    math:\n"
                           "      verifier: math\n      weights: {accuracy: 1.0, length: 1.0}\n"
                           "      max_length: 16\n      cache_length: 16\n"
                           "security:\n  token_file: ",
                           dir_ / "token", "\n"));
  }

  void TearDown() override {
    // A call still held would keep the learner from stopping.
    WriteFile(stall_dir_ + "/release", "");
    for (auto& [name, child] : roles_) {
      if (child != nullptr) child->Stop(absl::Seconds(10));
    }
    for (pid_t pid : pids_) {
      EXPECT_TRUE(WaitUntil([pid] { return !Alive(pid); }, absl::Seconds(10)))
          << "pid " << pid << " left behind";
    }
  }

  // Starts `binary` as role `name` (port file and log in the run directory).
  void Spawn(const std::string& name, const std::string& binary,
             const std::vector<std::string>& extra) {
    auto child = ::cohort::testing::SpawnRole(binary, config_, 0, PortPath(name), Log(name), extra);
    ASSERT_TRUE(child.ok()) << child.status();
    pids_.insert((*child)->pid());
    roles_[name] = *std::move(child);
  }
  PortFile WaitForRole(const std::string& name) {
    absl::StatusOr<PortFile> ports = WaitForPortFile(PortPath(name), absl::Seconds(60));
    EXPECT_TRUE(ports.ok()) << name << ": " << ports.status() << "\n" << ReadFile(Log(name));
    return ports.ok() ? *ports : PortFile();
  }

  // The reward server, the learner (with the stall hook; it stays after the
  // run so its final status can be read) and two actors.
  void StartCluster() {
    ASSERT_NO_FATAL_FAILURE(WriteRun());
    Spawn("reward", Binary("reward_server", "cohort-reward"), {});
    const int reward_port = WaitForRole("reward").grpc_port;
    ASSERT_GT(reward_port, 0);
    // Only the learner reads it; set around its spawn (the child inherits
    // the environment).
    ASSERT_EQ(::setenv("COHORT_TEST_SUBMIT_STALL_DIR", stall_dir_.c_str(), 1), 0);
    Spawn("learner", Binary("learner", "cohort-learner"),
          {"--set", absl::StrCat("reward.address=127.0.0.1:", reward_port), "--stay_after_done"});
    ::unsetenv("COHORT_TEST_SUBMIT_STALL_DIR");
    learner_port_ = WaitForRole("learner").grpc_port;
    ASSERT_GT(learner_port_, 0);
    // Armed before any actor runs, so the first SubmitGroup of the run is
    // held (a later arming could come after the last one).
    WriteFile(stall_dir_ + "/arm", "");
    SpawnActor("actor-0");
    SpawnActor("actor-1");
    WaitForRole("actor-0");
    WaitForRole("actor-1");
  }
  void SpawnActor(const std::string& name) {
    Spawn(name, Binary("actor", "cohort-actor"),
          {"--learner", absl::StrCat("127.0.0.1:", learner_port_), "--name", name});
  }

  absl::StatusOr<v1::RunStatus> GetStatus() { return GetRunStatus(learner_port_, kToken); }
  bool WaitForStatus(const std::function<bool(const v1::RunStatus&)>& done,
                     absl::Duration timeout) {
    return WaitUntil(
        [&] {
          absl::StatusOr<v1::RunStatus> s = GetStatus();
          return s.ok() && done(*s);
        },
        timeout);
  }

  struct Held {
    std::string actor_id, lease_id, role;
    int64_t prompt_id = -1;
    pid_t pid = 0;
  };
  // Waits for the armed hook to hold a SubmitGroup, SIGKILLs the actor that
  // sent it and waits until that process is gone. The call is still held
  // when this returns (DIR/release does not exist yet).
  Held KillDuringSubmit() {
    Held h;
    const std::string inflight = stall_dir_ + "/inflight";
    EXPECT_TRUE(WaitUntil([&] { return fs::exists(inflight); }, absl::Seconds(90)))
        << "no SubmitGroup was held\n"
        << Logs();
    std::istringstream(ReadFile(inflight)) >> h.actor_id >> h.lease_id >> h.prompt_id;
    EXPECT_FALSE(h.actor_id.empty()) << ReadFile(inflight);
    absl::StatusOr<v1::RunStatus> status = GetStatus();
    EXPECT_TRUE(status.ok()) << status.status();
    if (!status.ok()) return h;
    for (const v1::ActorInfo& a : status->actors()) {
      if (a.actor_id() == h.actor_id) h.pid = static_cast<pid_t>(a.pid());
    }
    for (const auto& [name, child] : roles_) {
      if (child != nullptr && child->pid() == h.pid) h.role = name;
    }
    EXPECT_FALSE(h.role.empty()) << "the held call's actor " << h.actor_id << " (pid " << h.pid
                                 << ") is not one this test started";
    if (h.role.empty()) return h;
    roles_[h.role]->Signal(SIGKILL);
    EXPECT_TRUE(roles_[h.role]->WaitFor(absl::Seconds(20))) << h.role << " did not die";
    EXPECT_FALSE(fs::exists(stall_dir_ + "/release"));
    std::printf("killed %s (pid %d) while its SubmitGroup of lease %s was inside the learner\n",
                h.role.c_str(), static_cast<int>(h.pid), h.lease_id.c_str());
    return h;
  }
  // Lets the held call go on and waits until it has answered.
  void Release() {
    WriteFile(stall_dir_ + "/release", "");
    EXPECT_TRUE(WaitUntil([&] { return fs::exists(stall_dir_ + "/returned"); }, absl::Seconds(30)))
        << "the held SubmitGroup did not answer\n"
        << Logs();
  }

  // Every prompt of the dataset in exactly one journal, once; the learner's
  // final counts agree.
  void Audit(const v1::RunStatus& status) {
    Journals j = ReadJournals(run_dir_);
    EXPECT_TRUE(j.malformed.empty()) << absl::StrJoin(j.malformed, "\n");
    std::vector<std::string> problems;
    for (int64_t p = 0; p < prompts_; ++p) {
      auto it = j.items.find({p, 0});
      const size_t n = it == j.items.end() ? 0 : it->second.size();
      if (n != 1) problems.push_back(absl::StrCat("prompt ", p, " settled ", n, " times"));
    }
    for (const auto& [key, where] : j.items) {
      if (key.first < 0 || key.first >= prompts_ || key.second != 0) {
        problems.push_back(absl::StrCat("unknown item (", key.first, ", ", key.second, ")"));
      }
    }
    EXPECT_TRUE(problems.empty()) << absl::StrJoin(problems, "; ");
    EXPECT_EQ(j.trained + j.filtered + j.failed, prompts_);
    EXPECT_TRUE(status.done());
    v1::LedgerCounts l = status.ledger();
    for (const v1::StageStatus& st : status.stages()) {
      if (st.kind() == "grpo") l = st.ledger();
    }
    EXPECT_EQ(l.prompts_total(), prompts_);
    EXPECT_EQ(l.trained() + l.filtered() + l.failed(), prompts_);
    EXPECT_EQ(l.duplicates(), 0);
    EXPECT_EQ(l.lost(), 0);
  }

  std::string PortPath(const std::string& role) const { return run_dir_ + "/" + role + ".port"; }
  std::string Log(const std::string& role) const { return run_dir_ + "/" + role + ".log"; }
  std::string Logs() const { return LogTails(run_dir_); }

  // The journal lines that name `prompt_id`.
  int TrainedLines(int64_t prompt_id) {
    int n = 0;
    std::istringstream in(ReadFile(run_dir_ + "/trained.jsonl"));
    for (std::string line; std::getline(in, line);) {
      Json o = Json::parse(line, nullptr, false);
      if (o.is_object() && o.value("prompt_id", int64_t{-1}) == prompt_id) ++n;
    }
    return n;
  }

  int prompts_ = 24;
  TempDir dir_;
  const std::string run_dir_ = dir_ / "run";
  const std::string stall_dir_ = dir_ / "stall";
  const std::string config_ = dir_ / "run.yaml";
  std::map<std::string, std::unique_ptr<ChildProcess>> roles_;
  std::set<pid_t> pids_;
  int learner_port_ = 0;
};

// 1. The call goes on as soon as its actor is dead: the learner takes the
// group (its lease is still valid), the actor's successor (same name)
// rejoins, and the run trains every prompt once.
TEST_F(ActorSubmitKillTest, GroupOfAnActorKilledMidSubmitCountsOnce) {
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  Held held = KillDuringSubmit();
  ASSERT_FALSE(held.role.empty());
  Release();
  SpawnActor(held.role);
  WaitForRole(held.role);
  ASSERT_TRUE(WaitForStatus([](const v1::RunStatus& s) { return s.done(); }, absl::Seconds(120)))
      << Logs();
  absl::StatusOr<v1::RunStatus> status = GetStatus();
  ASSERT_TRUE(status.ok()) << status.status();
  Audit(*status);
  EXPECT_NE(ReadFile(Log("learner")).find("stalled for a test"), std::string::npos);
}

// 2. The call is held until its prompt has been trained from the other
// actor's group (the killed actor's lease expired, the prompt was leased
// again), and released while the run goes on (64 prompts: the run is far
// from done then; should it have ended meanwhile, the late group meets a
// finished stage instead): the late group must not count a second time.
TEST_F(ActorSubmitKillTest, LateGroupOfAnActorKilledMidSubmitIsNotTrainedTwice) {
  prompts_ = 64;
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  Held held = KillDuringSubmit();
  ASSERT_FALSE(held.role.empty());
  ASSERT_GE(held.prompt_id, 0);
  ASSERT_TRUE(WaitUntil([&] { return TrainedLines(held.prompt_id) == 1; }, absl::Seconds(120)))
      << "prompt " << held.prompt_id << " was not trained from another group\n"
      << Logs();
  absl::StatusOr<v1::RunStatus> before = GetStatus();
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_GT(before->ledger().leases_expired(), 0) << "the killed actor's lease did not expire";
  std::printf("releasing the held group of prompt %lld with the run %s\n",
              static_cast<long long>(held.prompt_id), before->done() ? "done" : "still running");
  Release();
  ASSERT_TRUE(WaitForStatus([](const v1::RunStatus& s) { return s.done(); }, absl::Seconds(120)))
      << Logs();
  absl::StatusOr<v1::RunStatus> status = GetStatus();
  ASSERT_TRUE(status.ok()) << status.status();
  Audit(*status);
  EXPECT_EQ(TrainedLines(held.prompt_id), 1);
}

}  // namespace
}  // namespace cohort
