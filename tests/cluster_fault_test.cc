// Fault tests of the real cluster: a real cohort-learner training GRPO on
// the tiny-quickstart model with the addition task's vocabulary, a real
// cohort-reward, real cohort-actor processes (started by `cohort run`, or
// directly), all on 127.0.0.1 with a bearer token. Processes are killed
// (actors, the learner, also while it writes a checkpoint), stopped
// (SIGTERM) and restarted, and the reward server is taken away for a while.
//
// Every case ends with an audit of the learner's journals (trained.jsonl,
// filtered.jsonl, failed.jsonl in run.out_dir) against the dataset: every
// (prompt, epoch) settled exactly once (duplicates = lost = 0), and the
// learner's own account (RunStatus.ledger, its "run complete" line)
// agreeing with the journals.
#include <signal.h>
#include <sys/types.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "cli/supervisor.h"
#include "cohort/v1/admin.grpc.pb.h"
#include "core/crc32c.h"
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
using ::cohort::cli::DescribeWaitStatus;
using ::cohort::testing::Alive;
using ::cohort::testing::Binary;
using ::cohort::testing::CheckServing;
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
using ::testing::HasSubstr;
using Json = nlohmann::json;

constexpr char kToken[] = "cluster-fault-test-token";

// What one run looks like; each case changes a few fields.
struct RunSpec {
  int prompts = 32;
  int epochs = 1;
  int prompts_per_step = 4;
  int actors = 2;
  int checkpoint_every = 0;  // 0: only the final checkpoint (and on stop)
  bool deterministic = false;
  int seed = 11;
  int max_new_tokens = 24;
  int lease_ttl_ms = 2000;
  int slots = 8;  // actor.slots
  // Every scored sample gets exactly 1.0 (instead of accuracy plus a length
  // term that varies), so a sample scored 0 shows.
  bool constant_reward = false;
};

// The learner's last "run complete: T trained, F filtered, X failed" line.
std::optional<std::array<int64_t, 3>> RunCompleteLine(const std::string& log) {
  static const std::regex re("run complete: ([0-9]+) trained, ([0-9]+) filtered, ([0-9]+) failed");
  std::optional<std::array<int64_t, 3>> last;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), re); it != std::sregex_iterator();
       ++it) {
    last = {std::stoll((*it)[1]), std::stoll((*it)[2]), std::stoll((*it)[3])};
  }
  return last;
}

int Count(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

// The highest N of "policy version N installed" in an actor's log.
int64_t HighestInstalledVersion(const std::string& log) {
  static const std::regex re("policy version ([0-9]+) installed");
  int64_t best = -1;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), re); it != std::sregex_iterator();
       ++it) {
    best = std::max<int64_t>(best, std::stoll((*it)[1]));
  }
  return best;
}

// CRC-32C of every file under `dir` (relative path -> checksum).
std::map<std::string, uint32_t> HashTree(const std::string& dir) {
  std::map<std::string, uint32_t> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file()) continue;
    std::string bytes = ReadFile(it->path().string());
    out[fs::relative(it->path(), dir).string()] = Crc32c(bytes);
  }
  return out;
}

// The newest complete checkpoint directory under `root` ("" if none).
std::string NewestCheckpoint(const std::string& root) {
  std::string best;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step-", 0) != 0 || !fs::exists(e.path() / "COMPLETE")) continue;
    if (name > fs::path(best).filename().string()) best = e.path().string();
  }
  return best;
}

// A checkpoint being written by `pid`: <root>/.tmp-step-*-<pid>.
std::string CheckpointInProgress(const std::string& root, pid_t pid) {
  std::error_code ec;
  const std::string suffix = absl::StrCat("-", pid);
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(".tmp-step-", 0) == 0 && name.size() > suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      return e.path().string();
    }
  }
  return "";
}

class ClusterFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(out_);
    WriteAdditionTokenizer(dir_ / "tok");
    WriteFile(dir_ / "token", std::string(kToken) + "\n");
    // What an operator hands a new actor: the security files, nothing else.
    WriteFile(dir_ / "actor-security.yaml",
              absl::StrCat("security:\n  token_file: ", dir_ / "token", "\n"));
  }

  void TearDown() override {
    ::unsetenv("COHORT_TEST_CHECKPOINT_PAUSE_MS");
    StopWatching();
    if (run_ != nullptr) run_->Stop(absl::Seconds(30));
    for (auto& [name, child] : roles_) {
      if (child != nullptr) child->Stop(absl::Seconds(10));
    }
    for (pid_t pid : pids_seen_) {
      EXPECT_TRUE(WaitUntil([pid] { return !Alive(pid); }, absl::Seconds(10)))
          << "pid " << pid << " left behind";
    }
  }

  // Writes the dataset (the addition task's train split) and run.yaml.
  void WriteRun(const RunSpec& spec) {
    spec_ = spec;
    tasks::AdditionOptions o;
    o.train_size = spec.prompts;
    o.eval_size = 10;
    o.fresh_size = 10;
    o.sft_size = 0;
    absl::StatusOr<tasks::AdditionSplits> splits = tasks::MakeAdditionSplits(o);
    ASSERT_TRUE(splits.ok()) << splits.status();
    WriteFile(dir_ / "prompts.jsonl", tasks::AdditionJsonl(splits->train, o.digits, false));
    ids_.clear();
    for (const auto& p : splits->train) ids_.push_back(p.id);
    // Rewards: accuracy plus a length term (-tokens / max_new_tokens) so
    // that groups have a spread and steps change the weights; or a
    // constant 1.0 for every scored sample (accuracy weighted 0, the length
    // term -1 for any completion of >= 1 token, weighted -1).
    const std::string reward_task =
        spec.constant_reward
            ? "      weights: {accuracy: 0.0, length: -1.0}\n      max_length: 1\n"
              "      cache_length: 1\n"
            : absl::StrCat("      weights: {accuracy: 1.0, length: 1.0}\n      max_length: ",
                           spec.max_new_tokens, "\n      cache_length: ", spec.max_new_tokens,
                           "\n");
    WriteFile(config_,
              absl::StrCat(
                  "run:\n  name: faults\n  seed: ", spec.seed, "\n  out_dir: ", run_dir_,
                  "\nmodel:\n  preset: tiny-quickstart\n  chat_template: plain\n"
                  "  tokenizer: ",
                  dir_ / "tok/tokenizer.json", "\nsampling:\n  group_size: 4\n  max_new_tokens: ",
                  spec.max_new_tokens, "\ndata:\n  train: ", dir_ / "prompts.jsonl",
                  "\n  id_key: id\n  task: math\n  epochs: ", spec.epochs,
                  "\ngrpo:\n  prompts_per_step: ", spec.prompts_per_step,
                  "\nlearner:\n  heartbeat_interval_ms: 250\n  lease_ttl_ms: ", spec.lease_ttl_ms,
                  "\n  checkpoint_on_stop_seconds: 20\n  determinism: ",
                  spec.deterministic ? "true" : "false",
                  "\ncheckpoint:\n  every_steps: ", spec.checkpoint_every,
                  "\n  keep_last: 2\nactor:\n  count: ", spec.actors, "\n  slots: ", spec.slots,
                  "\n  drain_grace_seconds: 3\n"
                  "reward:\n  retry_seconds: 60\n  tasks:\n    math:\n"
                  "      verifier: math\n",
                  reward_task, "security:\n  token_file: ", dir_ / "token",
                  "\nsupervisor:\n  max_restarts: 100\n  restart_window_seconds: 60\n"
                  "  backoff_initial_ms: 100\n  backoff_max_ms: 400\n"
                  "  stop_timeout_seconds: 5\n  ready_timeout_seconds: 60\n"));
  }

  // --- `cohort run` ---------------------------------------------------------

  void StartRun() {
    auto run =
        ChildProcess::Spawn(Binary("cli", "cohort"), {"run", config_, "--out", out_}, RunLog());
    ASSERT_TRUE(run.ok()) << run.status();
    run_ = *std::move(run);
    pids_seen_.insert(run_->pid());
    std::vector<std::string> roles = {"reward", "learner"};
    for (int i = 0; i < spec_.actors; ++i) roles.push_back(absl::StrCat("actor-", i));
    for (const std::string& role : roles) {
      absl::StatusOr<PortFile> ports = WaitForPortFile(PortPath(role), absl::Seconds(90));
      ASSERT_TRUE(ports.ok()) << role << ": " << ports.status() << "\n"
                              << ReadFile(RunLog()) << ReadFile(RoleLog(role));
      pids_seen_.insert(ports->pid);
      if (role == "learner") learner_port_ = ports->grpc_port;
    }
    StartWatching();
  }

  // Waits for `cohort run` to end; returns how it ended.
  std::string WaitForRun(absl::Duration timeout) {
    if (!run_->WaitFor(timeout)) return "still running";
    return DescribeWaitStatus(run_->wait_status());
  }

  // The current pid of a role `cohort run` started (0 if none yet).
  pid_t RolePid(const std::string& role) {
    absl::StatusOr<PortFile> p = ReadPortFile(PortPath(role));
    if (!p.ok() || !Alive(p->pid)) return 0;
    pids_seen_.insert(p->pid);
    return p->pid;
  }

  // --- roles started directly -------------------------------------------------

  // Starts `binary` as role `name` with the run config; returns its ports.
  PortFile StartRole(const std::string& name, const std::string& binary,
                     std::vector<std::string> extra, const std::string& config = "", int port = 0) {
    SpawnRole(name, binary, std::move(extra), config, port);
    return WaitForRole(name);
  }
  // Starts it without waiting.
  void SpawnRole(const std::string& name, const std::string& binary, std::vector<std::string> extra,
                 const std::string& config = "", int port = 0) {
    auto child = ::cohort::testing::SpawnRole(binary, config.empty() ? config_ : config, port,
                                              PortPath(name), RoleLog(name), extra);
    ASSERT_TRUE(child.ok()) << child.status();
    pids_seen_.insert((*child)->pid());
    roles_[name] = *std::move(child);
  }
  // Waits for the port file of a role SpawnRole started.
  PortFile WaitForRole(const std::string& name) {
    absl::StatusOr<PortFile> ports = WaitForPortFile(PortPath(name), absl::Seconds(60));
    EXPECT_TRUE(ports.ok()) << name << ": " << ports.status() << "\n" << ReadFile(RoleLog(name));
    if (!ports.ok() || roles_[name] == nullptr) return {};
    EXPECT_EQ(ports->pid, roles_[name]->pid());
    return *ports;
  }

  // Reward server and learner directly (the learner stays after the run
  // is done, so its final RunStatus can be read).
  void StartServers(int reward_port = 0) {
    PortFile reward =
        StartRole("reward", Binary("reward_server", "cohort-reward"), {}, "", reward_port);
    reward_port_ = reward.grpc_port;
    PortFile learner = StartRole(
        "learner", Binary("learner", "cohort-learner"),
        {"--set", absl::StrCat("reward.address=127.0.0.1:", reward_port_), "--stay_after_done"});
    learner_port_ = learner.grpc_port;
    StartWatching();
  }

  // An actor that knows only the learner's address and the security files.
  PortFile StartHandActor(const std::string& name) {
    SpawnHandActor(name);
    return WaitForRole(name);
  }
  void SpawnHandActor(const std::string& name) {
    SpawnRole(name, Binary("actor", "cohort-actor"),
              {"--learner", absl::StrCat("127.0.0.1:", learner_port_), "--name", name},
              dir_ / "actor-security.yaml");
  }

  // SIGTERM, then expects exit code 0 within `within`; returns the seconds
  // it took.
  double TermAndExpectExit0(const std::string& name, absl::Duration within) {
    absl::Time start = absl::Now();
    roles_[name]->Signal(SIGTERM);
    EXPECT_TRUE(roles_[name]->WaitFor(within)) << name << " did not exit within " << within;
    double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    if (roles_[name]->Exited()) {
      EXPECT_EQ(DescribeWaitStatus(roles_[name]->wait_status()), "exited with code 0")
          << name << "\n"
          << ReadFile(RoleLog(name));
    }
    return seconds;
  }

  // --- the learner's status --------------------------------------------------

  absl::StatusOr<v1::RunStatus> GetStatus() { return GetRunStatus(learner_port_, kToken); }

  // Polls GetStatus every 100 ms in the background, keeping the latest
  // answer and what was seen over the run.
  void StartWatching() {
    if (watcher_.joinable()) return;
    {
      absl::MutexLock lock(&status_mu_);
      last_status_ = v1::RunStatus();
      last_running_ = v1::RunStatus();
      actors_.clear();
      groups_when_all_joined_.clear();
      max_leases_.clear();
      max_epoch_ = 0;
    }
    watching_ = true;
    watcher_ = std::thread([this] {
      while (watching_) {
        absl::StatusOr<v1::RunStatus> s = GetStatus();
        if (s.ok()) {
          absl::MutexLock lock(&status_mu_);
          last_status_ = *s;
          // A finished run serves no stage (an empty ledger): keep the last
          // status of the running stage.
          if (s->ledger().prompts_total() > 0) last_running_ = *s;
          ++statuses_;
          int live = 0;
          for (const v1::ActorInfo& a : s->actors()) {
            max_leases_[a.pid()] = std::max(max_leases_[a.pid()], a.leases());
            actors_[a.pid()] = a;
            live += a.gone() ? 0 : 1;
          }
          if (groups_when_all_joined_.empty() && live == spec_.actors) {
            for (const v1::ActorInfo& a : s->actors()) {
              groups_when_all_joined_[a.pid()] = a.groups_submitted();
            }
          }
          max_epoch_ = std::max(max_epoch_, s->epoch());
        }
        absl::SleepFor(absl::Milliseconds(50));
      }
    });
  }
  void StopWatching() {
    watching_ = false;
    if (watcher_.joinable()) watcher_.join();
  }
  v1::RunStatus LastStatus() {
    absl::MutexLock lock(&status_mu_);
    return last_status_;
  }
  // The last status seen while the stage was running.
  v1::RunStatus LastRunning() {
    absl::MutexLock lock(&status_mu_);
    return last_running_;
  }
  std::map<int64_t, v1::ActorInfo> ActorsSeen() {
    absl::MutexLock lock(&status_mu_);
    return actors_;
  }
  // Groups each actor (by pid) had submitted when the first status showed
  // all spec_.actors actors joined and live; empty if none did.
  std::map<int64_t, int64_t> GroupsWhenAllJoined() {
    absl::MutexLock lock(&status_mu_);
    return groups_when_all_joined_;
  }
  int32_t MaxLeases(int64_t pid) {
    absl::MutexLock lock(&status_mu_);
    return max_leases_[pid];
  }
  int64_t Trained() { return LastRunning().ledger().trained(); }
  // Waits until the learner reports `n` trained groups.
  bool WaitForTrained(int64_t n, absl::Duration timeout) {
    return WaitUntil([&] { return Trained() >= n; }, timeout);
  }

  // --- the audit --------------------------------------------------------------

  // Every (prompt, epoch) of the dataset in exactly one journal, once; the
  // learner's counts agree. `status` is the final RunStatus when known.
  Journals Audit(const std::optional<v1::RunStatus>& status) {
    Journals j = ReadJournals(run_dir_);
    EXPECT_THAT(j.malformed, ::testing::IsEmpty());
    int64_t duplicates = 0, lost = 0, foreign = 0;
    std::vector<std::string> problems;
    for (int64_t p = 0; p < spec_.prompts; ++p) {
      for (int64_t e = 0; e < spec_.epochs; ++e) {
        auto it = j.items.find({p, e});
        const size_t n = it == j.items.end() ? 0 : it->second.size();
        if (n == 0) ++lost;
        if (n > 1) duplicates += static_cast<int64_t>(n) - 1;
        if (n != 1 && problems.size() < 10) {
          problems.push_back(absl::StrCat("(", p, ", ", e, ") settled ", n, " times"));
        }
      }
    }
    for (const auto& [key, where] : j.items) {
      if (key.first < 0 || key.first >= spec_.prompts || key.second < 0 ||
          key.second >= spec_.epochs) {
        ++foreign;
      }
    }
    const int64_t total = static_cast<int64_t>(spec_.prompts) * spec_.epochs;
    EXPECT_EQ(duplicates, 0) << absl::StrJoin(problems, "; ");
    EXPECT_EQ(lost, 0) << absl::StrJoin(problems, "; ");
    EXPECT_EQ(foreign, 0);
    EXPECT_EQ(j.trained + j.filtered + j.failed, total);
    EXPECT_EQ(j.failed, 0) << "a prompt failed: " << ReadFile(run_dir_ + "/failed.jsonl");
    // A trained group was in one batch of prompts_per_step groups.
    std::map<int64_t, int> per_step;
    for (const auto& [p, e, step] : j.trained_steps) ++per_step[step];
    for (const auto& [step, n] : per_step) {
      EXPECT_LE(n, spec_.prompts_per_step) << "step " << step;
    }
    // The learner's own account.
    std::string learner_log = LearnerLog();
    std::optional<std::array<int64_t, 3>> done = RunCompleteLine(learner_log);
    EXPECT_TRUE(done.has_value()) << "no \"run complete\" line in the learner's log";
    if (done) {
      EXPECT_EQ((*done)[0], j.trained);
      EXPECT_EQ((*done)[1], j.filtered);
      EXPECT_EQ((*done)[2], j.failed);
    }
    if (status) {
      // A finished run serves no stage: its counts are in RunStatus.stages.
      EXPECT_TRUE(status->done());
      v1::LedgerCounts l = status->ledger();
      for (const v1::StageStatus& st : status->stages()) {
        if (st.kind() == "grpo") l = st.ledger();
      }
      EXPECT_EQ(l.prompts_total(), total);
      EXPECT_EQ(l.trained(), j.trained);
      EXPECT_EQ(l.filtered(), j.filtered);
      EXPECT_EQ(l.failed(), j.failed);
      EXPECT_EQ(l.duplicates(), 0);
      EXPECT_EQ(l.lost(), 0);
      EXPECT_EQ(l.queued() + l.leased() + l.buffered(), 0);
      for (const v1::ActorInfo& a : status->actors()) {
        EXPECT_EQ(a.leases(), 0) << a.actor_name() << " holds leases after the run";
      }
    }
    // The watcher's last status mid-run never showed a duplicate or a loss,
    // and RunStatus.epoch reached the last epoch.
    v1::RunStatus last = LastRunning();
    EXPECT_GT(last.ledger().prompts_total(), 0) << "no status of the running stage was seen";
    EXPECT_EQ(last.ledger().duplicates(), 0);
    EXPECT_EQ(last.ledger().lost(), 0);
    {
      absl::MutexLock lock(&status_mu_);
      if (spec_.epochs > 1) EXPECT_EQ(max_epoch_, spec_.epochs - 1) << "RunStatus.epoch";
    }
    std::printf("audit: %lld trained, %lld filtered, %lld failed of %lld; %zu steps\n",
                static_cast<long long>(j.trained), static_cast<long long>(j.filtered),
                static_cast<long long>(j.failed), static_cast<long long>(total), j.steps.size());
    return j;
  }

  std::string PortPath(const std::string& role) const { return out_ + "/" + role + ".port"; }
  std::string RoleLog(const std::string& role) const { return out_ + "/" + role + ".log"; }
  std::string RunLog() const { return dir_ / "cohort-run.log"; }
  std::string LearnerLog() const { return ReadFile(RoleLog("learner")); }
  std::string Logs() const { return ReadFile(RunLog()) + LogTails(out_); }

  TempDir dir_;
  // The run directory: run.out_dir (the learner's journals, metrics and
  // checkpoints) and `cohort run --out` (role logs and port files).
  const std::string run_dir_ = dir_ / "run";
  const std::string out_ = run_dir_;
  const std::string config_ = dir_ / "run.yaml";
  RunSpec spec_;
  std::vector<std::string> ids_;
  std::unique_ptr<ChildProcess> run_;
  std::map<std::string, std::unique_ptr<ChildProcess>> roles_;
  std::set<pid_t> pids_seen_;
  int learner_port_ = 0;
  int reward_port_ = 0;

  std::thread watcher_;
  std::atomic<bool> watching_{false};
  absl::Mutex status_mu_;
  v1::RunStatus last_status_ ABSL_GUARDED_BY(status_mu_);
  v1::RunStatus last_running_ ABSL_GUARDED_BY(status_mu_);
  int64_t statuses_ ABSL_GUARDED_BY(status_mu_) = 0;
  std::map<int64_t, v1::ActorInfo> actors_ ABSL_GUARDED_BY(status_mu_);  // by pid
  std::map<int64_t, int64_t> groups_when_all_joined_ ABSL_GUARDED_BY(status_mu_);
  std::map<int64_t, int32_t> max_leases_ ABSL_GUARDED_BY(status_mu_);
  int32_t max_epoch_ ABSL_GUARDED_BY(status_mu_) = 0;
};

// 1. One learner, one reward server, two actors (each started with only the
// learner's address): groups flow, steps are taken, versions advance in
// both actors, and the run trains every prompt exactly once.
TEST_F(ClusterFaultTest, TwoActorsTrainEveryPromptOnce) {
  RunSpec spec;
  // 48 prompts took 1.7 s on an idle machine, about as long as the second
  // actor takes to join: long enough that both contribute.
  spec.prompts = 160;
  // Each actor asks for more than the window of (K + 1) * P = 8 leases (32
  // slots: 9 groups in the engine and 8 ahead), so that the first to ask
  // would take them all without fair shares.
  spec.slots = 32;
  ASSERT_NO_FATAL_FAILURE(WriteRun(spec));
  ASSERT_NO_FATAL_FAILURE(StartServers());
  // Both at once, so that both are up before the run is over.
  SpawnHandActor("actor-0");
  SpawnHandActor("actor-1");
  PortFile a0 = WaitForRole("actor-0");
  PortFile a1 = WaitForRole("actor-1");
  ASSERT_TRUE(WaitUntil([&] { return LastStatus().done(); }, absl::Seconds(150))) << Logs();
  absl::StatusOr<v1::RunStatus> status = GetStatus();
  ASSERT_TRUE(status.ok()) << status.status();
  Journals j = Audit(*status);
  EXPECT_EQ(j.trained, spec.prompts);
  // 12 batches of 4 groups, one version each.
  EXPECT_EQ(status->step(), spec.prompts / spec.prompts_per_step);
  EXPECT_EQ(status->policy_version(), spec.prompts / spec.prompts_per_step);
  EXPECT_EQ(j.steps.size(), static_cast<size_t>(spec.prompts / spec.prompts_per_step));
  // Both actors contributed, and their generators moved past version 1.
  int64_t groups = 0;
  std::set<int64_t> contributors;
  for (const v1::ActorInfo& a : status->actors()) {
    groups += a.groups_submitted();
    if (a.groups_submitted() > 0) contributors.insert(a.pid());
    EXPECT_EQ(a.joins(), 1) << a.actor_name();
  }
  EXPECT_EQ(contributors, (std::set<int64_t>{a0.pid, a1.pid}));
  EXPECT_GE(groups, j.trained);
  // Fair shares of the lease window: from the moment both had joined, each
  // actor submitted at least a fifth of the groups (first come, first served,
  // one actor could hold every lease the window allows: one submitted 0 of
  // 48 groups).
  std::map<int64_t, int64_t> at_join = GroupsWhenAllJoined();
  std::map<int64_t, int64_t> since_join;
  int64_t total_since_join = 0;
  for (const v1::ActorInfo& a : status->actors()) {
    since_join[a.pid()] = a.groups_submitted() - at_join[a.pid()];
    total_since_join += since_join[a.pid()];
    std::printf("%s: %lld groups, %lld after both had joined\n", a.actor_name().c_str(),
                static_cast<long long>(a.groups_submitted()),
                static_cast<long long>(since_join[a.pid()]));
  }
  EXPECT_FALSE(at_join.empty()) << "no status showed both actors joined";
  if (total_since_join >= 40) {
    for (const auto& [pid, n] : since_join) {
      EXPECT_GE(5 * n, total_since_join) << "actor pid " << pid << " submitted " << n << " of the "
                                         << total_since_join << " groups after both had joined";
    }
  } else {
    std::printf("only %lld groups after both actors had joined: shares not checked\n",
                static_cast<long long>(total_since_join));
  }
  // ActorInfo.leases is sampled by the status poll (every 50 ms); on an idle
  // machine the whole run takes ~3 s, so one actor may never be caught
  // holding a lease: at least one must be.
  int32_t max_leases = 0;
  for (const char* name : {"actor-0", "actor-1"}) {
    EXPECT_GE(HighestInstalledVersion(ReadFile(RoleLog(name))), 2) << ReadFile(RoleLog(name));
    max_leases = std::max(max_leases, MaxLeases(roles_[name]->pid()));
  }
  EXPECT_GT(max_leases, 0) << "ActorInfo.leases never > 0 for either actor";
  for (const char* name : {"actor-0", "actor-1", "learner", "reward"}) {
    TermAndExpectExit0(name, absl::Seconds(30));
  }
}

// 2. SIGKILL one actor while it holds leases: the run goes on, those leases
// expire and their prompts are trained later, exactly once.
TEST_F(ClusterFaultTest, KilledActorsPromptsAreTrainedLaterExactlyOnce) {
  RunSpec spec;
  spec.prompts = 160;  // the run outlasts the kill and the lease expiry on an idle machine
  ASSERT_NO_FATAL_FAILURE(WriteRun(spec));
  ASSERT_NO_FATAL_FAILURE(StartRun());
  ASSERT_TRUE(WaitForTrained(8, absl::Seconds(90))) << Logs();
  // Kill an actor while the learner shows it holding leases (either one: on
  // a fast machine one actor may hold every lease the window allows). The
  // watcher's status can be 50 ms old, and a fast actor submits in less, so
  // the candidate is stopped first (SIGSTOP: it can submit nothing more) and
  // a fresh status must still show its leases; if not, it goes on and the
  // other one is tried.
  pid_t victim = 0;
  std::string victim_role;
  int64_t expired_before = 0;
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (victim == 0 && absl::Now() < give_up) {
    for (const char* role : {"actor-0", "actor-1"}) {
      const pid_t pid = RolePid(role);
      bool holding = false;
      const v1::RunStatus last = LastStatus();
      for (const v1::ActorInfo& a : last.actors()) {
        holding |= a.pid() == pid && a.leases() > 0 && !a.gone();
      }
      if (!holding || ::kill(pid, SIGSTOP) != 0) continue;
      absl::SleepFor(absl::Milliseconds(500));  // what it had sent is answered
      absl::StatusOr<v1::RunStatus> now = GetStatus();
      int32_t held = 0;
      if (now.ok()) {
        for (const v1::ActorInfo& a : now->actors()) held += a.pid() == pid ? a.leases() : 0;
      }
      if (held > 0) {
        victim = pid;
        victim_role = role;
        expired_before = now->ledger().leases_expired();
        break;
      }
      ::kill(pid, SIGCONT);
    }
    if (victim == 0) absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_NE(victim, 0) << "no actor was seen holding a lease\n" << Logs();
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  EXPECT_EQ(WaitForRun(absl::Seconds(150)), "exited with code 0") << Logs();
  StopWatching();
  Audit(std::nullopt);
  EXPECT_GT(LastRunning().ledger().leases_expired(), expired_before)
      << "the killed actor's leases did not expire";
  EXPECT_THAT(ReadFile(RunLog()),
              HasSubstr(absl::StrCat(victim_role, " (pid ", victim, ") killed by signal 9")));
}

// 3. The reward server goes away for a while and comes back on its port:
// actors back off and resume, and no sample is scored 0 because of the
// outage (every scored sample's reward is exactly 1.0 here, so a 0 or a
// non-OK sample shows in the learner's per-step metrics).
TEST_F(ClusterFaultTest, RewardServerOutageScoresNothingZero) {
  RunSpec spec;
  spec.prompts = 40;
  spec.constant_reward = true;
  ASSERT_NO_FATAL_FAILURE(WriteRun(spec));
  ASSERT_NO_FATAL_FAILURE(StartServers());
  SpawnHandActor("actor-0");
  SpawnHandActor("actor-1");
  WaitForRole("actor-0");
  WaitForRole("actor-1");
  ASSERT_TRUE(WaitForTrained(8, absl::Seconds(90))) << Logs();
  // Away for 4 s (SIGKILL: no goodbye).
  roles_["reward"]->Signal(SIGKILL);
  ASSERT_TRUE(roles_["reward"]->WaitFor(absl::Seconds(5)));
  const int64_t trained_at_outage = Trained();
  absl::SleepFor(absl::Seconds(4));
  EXPECT_LT(Trained(), spec.prompts) << "the run finished during the outage";
  const std::string tried0 = ReadFile(RoleLog("actor-0")), tried1 = ReadFile(RoleLog("actor-1"));
  EXPECT_TRUE(tried0.find("reward servers failing") != std::string::npos ||
              tried1.find("reward servers failing") != std::string::npos)
      << "no actor noticed the outage\n"
      << Logs();
  StartRole("reward", Binary("reward_server", "cohort-reward"), {}, "", reward_port_);
  ASSERT_TRUE(WaitUntil([&] { return LastStatus().done(); }, absl::Seconds(150))) << Logs();
  EXPECT_GT(Trained(), trained_at_outage);
  absl::StatusOr<v1::RunStatus> status = GetStatus();
  ASSERT_TRUE(status.ok()) << status.status();
  Audit(*status);
  // No group came back with fewer than 2 OK samples (it would be re-leased).
  EXPECT_EQ(status->ledger().leases_retried(), 0);
  std::istringstream metrics(ReadFile(run_dir_ + "/metrics.jsonl"));
  int steps = 0;
  for (std::string line; std::getline(metrics, line);) {
    Json m = Json::parse(line, nullptr, false);
    ASSERT_TRUE(m.is_object()) << line;
    ++steps;
    EXPECT_EQ(m.value("reward_mean", -1.0), 1.0) << line;
    EXPECT_EQ(m.value("reward_std", -1.0), 0.0) << line;
    EXPECT_EQ(m.value("non_ok_fraction", -1.0), 0.0) << line;
  }
  EXPECT_EQ(steps, spec.prompts / spec.prompts_per_step);
  for (const char* name : {"actor-0", "actor-1", "learner", "reward"}) {
    TermAndExpectExit0(name, absl::Seconds(30));
  }
}

// 4. The learner is SIGKILLed twice (checkpoint.every_steps 3): once while
// an actor holds a version newer than the newest checkpoint (the resumed
// learner is behind it), once in the middle of writing a checkpoint.
// `cohort run` restarts it on its port, it resumes from the newest complete
// checkpoint, actors reconnect (and go back to its version), and the run
// completes with every prompt trained exactly once.
TEST_F(ClusterFaultTest, LearnerKilledTwiceAlsoDuringACheckpointResumesExactlyOnce) {
  RunSpec spec;
  // Long enough that after the first restart both actors rejoin (one may be
  // in its reconnect backoff for seconds) and a checkpoint is still to come.
  spec.prompts = 128;
  spec.checkpoint_every = 3;
  // Every checkpoint write stays half-written for 150 ms (learner/checkpoint.cc's
  // test hook, inherited through `cohort run`), so the kill below lands inside
  // one however fast the machine is.
  ASSERT_EQ(::setenv("COHORT_TEST_CHECKPOINT_PAUSE_MS", "150", 1), 0);
  ASSERT_NO_FATAL_FAILURE(WriteRun(spec));
  ASSERT_NO_FATAL_FAILURE(StartRun());
  const std::string checkpoints = run_dir_ + "/checkpoints";
  const int port = learner_port_;
  // Kill 1: a checkpoint exists and an actor generates with a later version
  // (one version per step here, so a checkpoint of step k holds version k).
  ASSERT_TRUE(WaitUntil(
      [&] {
        const std::string newest = NewestCheckpoint(checkpoints);
        if (newest.empty()) return false;
        const int64_t k = std::stoll(newest.substr(newest.rfind("step-") + 5));
        for (const char* actor : {"actor-0", "actor-1"}) {
          const int64_t v = HighestInstalledVersion(ReadFile(RoleLog(actor)));
          if (v > k && v < k + spec.checkpoint_every) return true;
        }
        return false;
      },
      absl::Seconds(90)))
      << Logs();
  auto joins = [&](const char* actor) { return Count(ReadFile(RoleLog(actor)), "joined as"); };
  // Both actors have joined the first learner.
  ASSERT_TRUE(
      WaitUntil([&] { return joins("actor-0") >= 1 && joins("actor-1") >= 1; }, absl::Seconds(60)))
      << Logs();
  const int joins0 = joins("actor-0"), joins1 = joins("actor-1");
  pid_t first = RolePid("learner");
  ASSERT_GT(first, 0);
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  absl::StatusOr<PortFile> back = WaitForPortFile(PortPath("learner"), absl::Seconds(60), first);
  ASSERT_TRUE(back.ok()) << back.status() << Logs();
  EXPECT_EQ(back->grpc_port, port);
  pids_seen_.insert(back->pid);
  // Both actors rejoin the second learner before it is killed (an actor in
  // its reconnect backoff at the second kill would otherwise rejoin only
  // the third, or never if the other actor finishes the run first).
  ASSERT_TRUE(WaitUntil([&] { return joins("actor-0") > joins0 && joins("actor-1") > joins1; },
                        absl::Seconds(60)))
      << Logs();
  // Kill 2: while it writes a checkpoint (its temporary directory exists).
  const pid_t second = back->pid;
  ASSERT_TRUE(WaitForTrained(Trained() + 4, absl::Seconds(90))) << Logs();
  std::string in_progress;
  ASSERT_TRUE(WaitUntil(
      [&] {
        // Poll tightly: a checkpoint of the tiny model takes milliseconds.
        for (int i = 0; i < 2000 && in_progress.empty(); ++i) {
          in_progress = CheckpointInProgress(checkpoints, second);
          if (in_progress.empty()) ::usleep(100);
        }
        return !in_progress.empty();
      },
      absl::Seconds(60)))
      << Logs();
  ASSERT_EQ(::kill(second, SIGKILL), 0);
  EXPECT_TRUE(fs::exists(in_progress)) << "the checkpoint finished before the kill";
  std::printf("killed learner %d while writing %s\n", second, in_progress.c_str());
  back = WaitForPortFile(PortPath("learner"), absl::Seconds(60), second);
  ASSERT_TRUE(back.ok()) << back.status() << Logs();
  pids_seen_.insert(back->pid);
  EXPECT_EQ(WaitForRun(absl::Seconds(150)), "exited with code 0") << Logs();
  StopWatching();
  Journals j = Audit(std::nullopt);
  const std::string log = LearnerLog();
  EXPECT_EQ(Count(log, "resuming from"), 2) << log;
  // The interrupted write was not taken for a checkpoint.
  EXPECT_THAT(log, ::testing::Not(HasSubstr("resuming from " + in_progress)));
  // Actors rejoined the restarted learner (a join per learner incarnation).
  for (const char* actor : {"actor-0", "actor-1"}) {
    const std::string text = ReadFile(RoleLog(actor));
    EXPECT_GE(Count(text, "joined as"), 2) << text;
  }
  // At kill 1 an actor held a version newer than the checkpoint: the
  // resumed learner retired the numbers published after it and numbered
  // past them, and no trained group has a token of a retired version.
  static const std::regex retired_re("versions ([0-9]+)\\.\\.([0-9]+) were published after");
  std::vector<std::pair<int64_t, int64_t>> retired;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), retired_re);
       it != std::sregex_iterator(); ++it) {
    retired.emplace_back(std::stoll((*it)[1]), std::stoll((*it)[2]));
  }
  EXPECT_GE(retired.size(), 1u) << log;
  int64_t lines = 0;
  const std::string trained = ReadFile(run_dir_ + "/trained.jsonl");
  for (absl::string_view line : absl::StrSplit(trained, '\n', absl::SkipEmpty())) {
    ++lines;
    for (int64_t v : nlohmann::json::parse(line)["policy_versions"].get<std::vector<int64_t>>()) {
      for (const auto& [first, last] : retired) {
        EXPECT_TRUE(v < first || v > last) << "version " << v << " is retired: " << line;
      }
    }
  }
  EXPECT_EQ(lines, spec.prompts);
  EXPECT_EQ(j.trained, spec.prompts);
}

// 5. An actor started by hand after the run began (only --learner and the
// security files) joins and contributes; SIGTERM drains it within its grace
// and it exits 0; an actor of `cohort run` stopped with SIGTERM exits 0 the
// same way and is not restarted.
TEST_F(ClusterFaultTest, HandStartedActorJoinsAndSigtermDrains) {
  RunSpec spec;
  spec.prompts = 64;
  spec.epochs = 3;  // the run outlasts the hand actor's start and two of its groups
  ASSERT_NO_FATAL_FAILURE(WriteRun(spec));
  ASSERT_NO_FATAL_FAILURE(StartRun());
  ASSERT_TRUE(WaitForTrained(4, absl::Seconds(90))) << Logs();
  PortFile hand = StartHandActor("by-hand");
  ASSERT_GT(hand.pid, 0);
  // It contributes: the learner accepted groups from it.
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto actors = ActorsSeen();
        auto it = actors.find(hand.pid);
        return it != actors.end() && it->second.groups_submitted() >= 2;
      },
      absl::Seconds(60)))
      << ReadFile(RoleLog("by-hand")) << Logs();
  EXPECT_THAT(ReadFile(RoleLog("by-hand")), HasSubstr("joined as"));
  // SIGTERM: it drains within actor.drain_grace_seconds (5 s by default:
  // its config has only the security section) and exits 0.
  double seconds = TermAndExpectExit0("by-hand", absl::Seconds(20));
  EXPECT_LT(seconds, 5 + 3) << ReadFile(RoleLog("by-hand"));
  EXPECT_THAT(ReadFile(RoleLog("by-hand")), HasSubstr("drain finished"));
  // A supervised actor stopped with SIGTERM exits 0 and stays stopped.
  pid_t a1 = RolePid("actor-1");
  ASSERT_GT(a1, 0);
  absl::Time start = absl::Now();
  ASSERT_EQ(::kill(a1, SIGTERM), 0);
  ASSERT_TRUE(WaitUntil([&] { return !Alive(a1); }, absl::Seconds(20)));
  EXPECT_LT(absl::ToDoubleSeconds(absl::Now() - start), 3 + 3);
  EXPECT_TRUE(WaitUntil(
      [&] {
        return ReadFile(RunLog()).find(absl::StrCat("actor-1 (pid ", a1, ") finished")) !=
               std::string::npos;
      },
      absl::Seconds(5)))
      << ReadFile(RunLog());
  EXPECT_EQ(WaitForRun(absl::Seconds(150)), "exited with code 0") << Logs();
  StopWatching();
  Audit(std::nullopt);
  EXPECT_THAT(ReadFile(RunLog()), ::testing::Not(HasSubstr("actor-1 restarted")));
  EXPECT_EQ(Count(ReadFile(RoleLog("actor-1")), "=== cohort run: starting actor-1"), 1);
}

// 6. At least 20 random actor SIGKILLs (some while the learner writes a
// checkpoint, some right after a batch, when submissions are in flight),
// `cohort run` restarting each, then the audit.
TEST_F(ClusterFaultTest, TwentyRandomActorKillsLoseNothing) {
  RunSpec spec;
  spec.prompts = 64;
  spec.epochs = 7;  // long enough for 24 kills on a fast idle machine
  spec.checkpoint_every = 2;
  spec.lease_ttl_ms = 1500;
  // Checkpoint writes stay half-written for 100 ms, so kills meant for one land in one.
  ASSERT_EQ(::setenv("COHORT_TEST_CHECKPOINT_PAUSE_MS", "100", 1), 0);
  ASSERT_NO_FATAL_FAILURE(WriteRun(spec));
  ASSERT_NO_FATAL_FAILURE(StartRun());
  ASSERT_TRUE(WaitForTrained(4, absl::Seconds(90))) << Logs();
  // cohort run has seen every role SERVING (a role killed before that is a
  // failed start, not a crash to restart): actors can train before it has.
  ASSERT_TRUE(WaitUntil(
      [&] { return ReadFile(RunLog()).find("actor(s) SERVING") != std::string::npos; },
      absl::Seconds(60)))
      << Logs();
  std::mt19937 rng(20261201);
  const std::string checkpoints = run_dir_ + "/checkpoints";
  int kills = 0, during_checkpoint = 0, after_batch = 0;
  std::set<pid_t> killed;  // a killed process stays visible until it is reaped
  const absl::Time deadline = absl::Now() + absl::Seconds(100);
  while (kills < 24 && absl::Now() < deadline && !LastStatus().done() && !run_->Exited()) {
    const std::string role = absl::StrCat("actor-", rng() % 2);
    // The role's current process, once it has joined and leased.
    pid_t pid = 0;
    if (!WaitUntil(
            [&] {
              pid = RolePid(role);
              if (pid == 0 || killed.count(pid) > 0) return false;
              auto actors = ActorsSeen();
              auto it = actors.find(pid);
              return it != actors.end() && !it->second.gone();
            },
            absl::Seconds(30))) {
      break;
    }
    const int mode = kills % 3;
    if (mode == 0) {
      // While a checkpoint is being written.
      const pid_t learner = RolePid("learner");
      bool hit = false;
      for (int i = 0; i < 30000 && !hit; ++i) {  // up to ~3 s
        hit = !CheckpointInProgress(checkpoints, learner).empty();
        if (!hit) ::usleep(100);
      }
      during_checkpoint += hit ? 1 : 0;
    } else if (mode == 1) {
      // Right after a batch was trained: the next groups are being submitted.
      const int64_t now = Trained();
      after_batch += WaitUntil([&] { return Trained() > now; }, absl::Seconds(3)) ? 1 : 0;
    } else {
      absl::SleepFor(absl::Milliseconds(200 + rng() % 1200));
    }
    if (::kill(pid, SIGKILL) == 0) {
      killed.insert(pid);
      ++kills;
    }
  }
  std::printf(
      "%d actor kills (%d during a checkpoint, %d right after a batch), %lld trained "
      "when the kills ended\n",
      kills, during_checkpoint, after_batch, static_cast<long long>(Trained()));
  EXPECT_GE(kills, 20) << "the run ended before 20 kills: make the dataset bigger";
  EXPECT_GE(during_checkpoint, 1);
  EXPECT_EQ(WaitForRun(absl::Seconds(150)), "exited with code 0") << Logs();
  StopWatching();
  Audit(std::nullopt);
  // Each kill either killed its actor (`cohort run` logged the signal) or,
  // at the very end, hit an actor that had already exited 0 after the
  // learner's drain and was not reaped yet (kill() still succeeds then).
  const std::string run_log = ReadFile(RunLog());
  int effective = 0;
  for (pid_t pid : killed) {
    const std::string who = absl::StrCat("(pid ", pid, ") ");
    if (run_log.find(who + "killed by signal 9") != std::string::npos) {
      ++effective;
    } else {
      EXPECT_TRUE(run_log.find(who + "finished (exited with code 0)") != std::string::npos ||
                  run_log.find(who + "stopped: exited with code 0") != std::string::npos)
          << "killed actor pid " << pid << " has no end in the run log\n"
          << run_log;
    }
  }
  EXPECT_GE(effective, 20) << run_log;
}

// 7. Deterministic mode: the same seed gives bit-identical final weights
// with 1 actor or 2, and after a learner SIGKILL and resume.
TEST_F(ClusterFaultTest, DeterministicWeightsIndependentOfActorsAndRestarts) {
  RunSpec spec;
  spec.prompts = 16;
  spec.deterministic = true;
  spec.checkpoint_every = 1;
  spec.max_new_tokens = 16;
  struct Result {
    std::map<std::string, uint32_t> model;
    std::set<std::tuple<int64_t, int64_t, int64_t>> trained_steps;
  };
  auto run_once = [&](int actors, bool kill_learner, Result* out) {
    // A fresh run directory each time (the journals and checkpoints).
    std::error_code ec;
    fs::remove_all(run_dir_, ec);
    fs::remove_all(out_, ec);
    fs::create_directories(out_);
    RunSpec s = spec;
    s.actors = actors;
    ASSERT_NO_FATAL_FAILURE(WriteRun(s));
    ASSERT_NO_FATAL_FAILURE(StartRun());
    if (kill_learner) {
      ASSERT_TRUE(WaitForTrained(8, absl::Seconds(90))) << Logs();
      pid_t learner = RolePid("learner");
      ASSERT_EQ(::kill(learner, SIGKILL), 0);
      absl::StatusOr<PortFile> back =
          WaitForPortFile(PortPath("learner"), absl::Seconds(60), learner);
      ASSERT_TRUE(back.ok()) << back.status() << Logs();
      pids_seen_.insert(back->pid);
    }
    ASSERT_EQ(WaitForRun(absl::Seconds(150)), "exited with code 0") << Logs();
    StopWatching();
    Journals j = Audit(std::nullopt);
    out->trained_steps = j.trained_steps;
    const std::string last = NewestCheckpoint(run_dir_ + "/checkpoints");
    ASSERT_FALSE(last.empty()) << Logs();
    out->model = HashTree(last + "/trainer/model");
    ASSERT_FALSE(out->model.empty()) << last;
    if (kill_learner) {
      EXPECT_THAT(LearnerLog(), HasSubstr("resuming from"));
      // Deterministic mode keeps the checkpoint's numbering (version v is
      // the same weights in every attempt).
      EXPECT_THAT(LearnerLog(), ::testing::Not(HasSubstr("were published after")));
    }
    run_.reset();
  };
  Result one, two, resumed;
  ASSERT_NO_FATAL_FAILURE(run_once(1, false, &one));
  ASSERT_NO_FATAL_FAILURE(run_once(2, false, &two));
  ASSERT_NO_FATAL_FAILURE(run_once(2, true, &resumed));
  EXPECT_EQ(one.trained_steps, two.trained_steps) << "batches differ with 1 and 2 actors";
  EXPECT_EQ(one.trained_steps, resumed.trained_steps) << "batches differ after a resume";
  EXPECT_EQ(one.model, two.model) << "weights differ with 1 and 2 actors";
  EXPECT_EQ(one.model, resumed.model) << "weights differ after a learner restart";
}

}  // namespace
}  // namespace cohort
