// cohort's roles on separate network hosts: network namespaces joined by a
// bridge (tests/netns.h), one host each for the learner, a reward server,
// two actors and an operator's probe, with mutual TLS and the run's bearer
// token. Checks
// health and /metrics across hosts, then cuts one actor's link (and
// restores it) and kills the other: the rest keeps serving, the cut actor
// notices and recovers.
//
// Root only (CI runs as root); skipped without root or iproute2 unless
// COHORT_REQUIRE_DATA=1. The lab's namespaces are deleted when the test
// ends, pass or fail, and stale ones of dead test processes at the start.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <memory>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/supervisor.h"
#include "core/tasks/addition.h"
#include "core/testing/require.h"
#include "tests/cluster_util.h"
#include "tests/netns.h"

namespace cohort {
namespace {

using ::cohort::cli::ChildProcess;
using ::cohort::testing::Binary;
using ::cohort::testing::NetnsLab;
using ::cohort::testing::ReadFile;
using ::cohort::testing::TempDir;
using ::cohort::testing::WaitUntil;
using ::cohort::testing::WriteFile;
using ::testing::HasSubstr;

constexpr int kLearnerPort = 50051;
constexpr int kRewardPort = 50052;
constexpr int kActorPort = 50053;
constexpr int kMetricsPort = 9100;
// Everything the lab may send, all hosts together, over the whole test.
constexpr long long kMaxTrafficBytes = 64LL << 20;

class NetnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status available = NetnsLab::Available();
    if (!available.ok()) {
      COHORT_SKIP_OR_FAIL("network namespaces unavailable: " << available.message());
    }
    auto lab = NetnsLab::Create({"learner", "reward", "actor0", "actor1", "probe"});
    ASSERT_TRUE(lab.ok()) << lab.status();
    lab_ = *std::move(lab);
    // Mutual TLS and a bearer token, as a cluster would run: one
    // certificate naming every host's address.
    if (std::system("openssl version >/dev/null 2>&1") != 0) {
      COHORT_SKIP_OR_FAIL("the openssl command is not installed");
    }
    ASSERT_TRUE(MakeCertificates());
    WriteFile(dir_ / "token", "netns-test-token\n");
    // A GRPO stage the test never lets finish: a tiny model with the
    // addition task's character vocabulary, 64 prompts, many epochs.
    std::filesystem::create_directories(dir_ / "tok");
    WriteFile(dir_ / "tok/tokenizer.json", tasks::AdditionTokenizerJson());
    WriteFile(dir_ / "tok/tokenizer_config.json", tasks::AdditionTokenizerConfigJson());
    std::string prompts;
    for (int i = 0; i < 64; ++i) {
      absl::StrAppend(&prompts, "{\"prompt\": \"", 10 + i, "+", 20 + i, "=\", \"answer\": \"",
                      30 + 2 * i, "\"}\n");
    }
    WriteFile(dir_ / "prompts.jsonl", prompts);
    WriteFile(dir_ / "run.yaml",
              absl::StrCat("run:\n  name: netns\n  out_dir: ", dir_ / "run",
                           "\nmodel:\n  preset: tiny\n  chat_template: plain\n  tokenizer: ",
                           dir_ / "tok/tokenizer.json",
                           "\nsampling:\n  group_size: 4\n  max_new_tokens: 8\n"
                           "data:\n  train: ",
                           dir_ / "prompts.jsonl",
                           "\n  task: math\n  epochs: 1000\n"
                           "grpo:\n  prompts_per_step: 2\n"
                           "learner:\n  heartbeat_interval_ms: 300\n  lease_ttl_ms: 3000\n"
                           "  checkpoint_on_stop_seconds: 20\n"
                           "actor:\n  drain_grace_seconds: 2\n"
                           "supervisor:\n  stop_timeout_seconds: 5\n"
                           "security:\n  token_file: ",
                           dir_ / "token", "\n  tls:\n    cert_file: ", dir_ / "tls.crt",
                           "\n    key_file: ", dir_ / "tls.key", "\n    ca_file: ", dir_ / "ca.crt",
                           "\n    require_client_cert: true\n"));
  }
  void TearDown() override {
    // Children first (while their namespaces exist), then the lab.
    for (auto& [name, child] : roles_) {
      if (child) child->Stop(absl::Seconds(5));
    }
    roles_.clear();
    if (lab_) lab_->Destroy();
  }

  // Starts `binary` on `host`, listening on the host's own address.
  void StartRole(const std::string& name, const std::string& host, const std::string& binary,
                 int port, std::vector<std::string> extra = {}) {
    std::vector<std::string> command = {binary,
                                        "--config",
                                        config_,
                                        "--host",
                                        lab_->Address(host),
                                        "--port",
                                        absl::StrCat(port),
                                        "--metrics_port",
                                        absl::StrCat(kMetricsPort),
                                        "--port_file",
                                        dir_ / (name + ".port")};
    command.insert(command.end(), extra.begin(), extra.end());
    auto child =
        ChildProcess::Spawn(NetnsLab::IpBinary(), lab_->ExecArgs(host, command), Log(name));
    ASSERT_TRUE(child.ok()) << child.status();
    roles_[name] = *std::move(child);
  }
  std::string Log(const std::string& name) const { return dir_ / (name + ".log"); }

  bool MakeCertificates() {
    std::string sans = "subjectAltName=DNS:localhost";
    for (const char* host : {"learner", "reward", "actor0", "actor1", "probe"}) {
      absl::StrAppend(&sans, ",IP:", lab_->Address(host));
    }
    WriteFile(dir_ / "ext.cnf", sans + "\nextendedKeyUsage=serverAuth,clientAuth\n");
    const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    for (const std::string& command :
         {absl::StrCat("openssl req -x509 ", ec, " -days 2 -subj /CN=netns-ca -keyout ",
                       dir_ / "ca.key", " -out ", dir_ / "ca.crt"),
          absl::StrCat("openssl req ", ec, " -subj /CN=cohort -keyout ", dir_ / "tls.key", " -out ",
                       dir_ / "tls.csr"),
          absl::StrCat("openssl x509 -req -days 2 -in ", dir_ / "tls.csr", " -CA ", dir_ / "ca.crt",
                       " -CAkey ", dir_ / "ca.key", " -CAcreateserial -extfile ", dir_ / "ext.cnf",
                       " -out ", dir_ / "tls.crt")}) {
      if (std::system((command + " >>" + (dir_ / "openssl.log") + " 2>&1").c_str()) != 0) {
        ADD_FAILURE() << command << "\n" << ReadFile(dir_ / "openssl.log");
        return false;
      }
    }
    return true;
  }

  // `cohort health` run on the probe host, with the run's token.
  int Health(const std::string& host, int port, double timeout_seconds = 2) {
    std::vector<std::string> args = lab_->ExecArgs(
        "probe",
        {Binary("cli", "cohort"), "health", absl::StrCat(lab_->Address(host), ":", port),
         "--config", dir_ / "run.yaml", "--timeout_seconds", absl::StrCat(timeout_seconds)});
    auto child = ChildProcess::Spawn(NetnsLab::IpBinary(), args, dir_ / "health.log");
    if (!child.ok()) return -1;
    if (!(*child)->WaitFor(absl::Seconds(timeout_seconds + 10))) return -2;
    int status = (*child)->wait_status();
    return WIFEXITED(status) ? WEXITSTATUS(status) : -3;
  }
  bool WaitServing(const std::string& host, int port, absl::Duration timeout) {
    return WaitUntil([&] { return Health(host, port) == 0; }, timeout);
  }

  // GET /metrics of `host` from the probe host; "" when it fails.
  std::string Metrics(const std::string& host) {
    std::string body;
    absl::Status s = lab_->InNamespace("probe", [&] {
      httplib::Client http(lab_->Address(host), kMetricsPort);
      http.set_connection_timeout(2);
      http.set_read_timeout(2);
      auto res = http.Get("/metrics");
      if (res && res->status == 200) body = res->body;
    });
    EXPECT_TRUE(s.ok()) << s;
    return body;
  }

  // The learner's trained.jsonl, wherever under the run directory it is.
  std::string TrainedJsonl() const {
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(dir_ / "run", ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
      if (it->path().filename() == "trained.jsonl") return it->path().string();
    }
    return dir_ / "run/trained.jsonl";
  }

  long long TotalTraffic() {
    long long total = 0;
    for (const char* host : {"learner", "reward", "actor0", "actor1", "probe"}) {
      absl::StatusOr<long long> bytes = lab_->TrafficBytes(host);
      EXPECT_TRUE(bytes.ok()) << bytes.status();
      if (bytes.ok()) total += *bytes;
    }
    return total;
  }

  TempDir dir_;
  std::string config_ = dir_ / "run.yaml";
  std::unique_ptr<NetnsLab> lab_;
  std::map<std::string, std::unique_ptr<ChildProcess>> roles_;
};

TEST_F(NetnsTest, HostsAreIsolated) {
  // A host's only route is the lab's subnet: no default route, no way out.
  std::string routes =
      testing::RunIp({"-n", lab_->Namespace("probe"), "route", "show"}).value_or("?");
  EXPECT_THAT(routes, ::testing::Not(HasSubstr("default"))) << routes;
  EXPECT_THAT(routes, HasSubstr("10.231.7.0/24")) << routes;
  // Nothing of the lab lives in the test's own namespace.
  std::string addrs = testing::RunIp({"-o", "addr", "show"}).value_or("?");
  EXPECT_THAT(addrs, ::testing::Not(HasSubstr("10.231.7."))) << addrs;
  // Hosts reach each other over the bridge (the probe's ARP resolves the
  // learner's address once it has sent to it).
  StartRole("learner", "learner", Binary("learner", "cohort-learner"), kLearnerPort);
  EXPECT_TRUE(WaitServing("learner", kLearnerPort, absl::Seconds(30))) << ReadFile(Log("learner"));
}

// Learner (no training stage) and reward server across hosts: health with
// mutual TLS and the token, /metrics, a cut and restored link, a killed
// server; the learner keeps serving and stops cleanly.
TEST_F(NetnsTest, ServersAcrossHostsSurviveACutLinkAndAKill) {
  // No data.train: the learner serves without a training stage.
  WriteFile(dir_ / "serve.yaml",
            absl::StrCat("supervisor:\n  stop_timeout_seconds: 5\nactor:\n"
                         "  drain_grace_seconds: 2\nsecurity:\n  token_file: ",
                         dir_ / "token", "\n  tls:\n    cert_file: ", dir_ / "tls.crt",
                         "\n    key_file: ", dir_ / "tls.key", "\n    ca_file: ", dir_ / "ca.crt",
                         "\n    require_client_cert: true\n"));
  config_ = dir_ / "serve.yaml";
  StartRole("reward", "reward", Binary("reward_server", "cohort-reward"), kRewardPort);
  StartRole("learner", "learner", Binary("learner", "cohort-learner"), kLearnerPort);
  ASSERT_TRUE(WaitServing("learner", kLearnerPort, absl::Seconds(30))) << ReadFile(Log("learner"));
  ASSERT_TRUE(WaitServing("reward", kRewardPort, absl::Seconds(30))) << ReadFile(Log("reward"));
  for (const char* host : {"learner", "reward"}) {
    EXPECT_THAT(Metrics(host), HasSubstr("# TYPE cohort_process_start_time_seconds gauge")) << host;
  }
  {
    std::vector<std::string> args = lab_->ExecArgs(
        "probe", {Binary("cli", "cohort"), "health",
                  absl::StrCat(lab_->Address("learner"), ":", kLearnerPort), "--config", config_,
                  "--set", "security.token_file=", "--timeout_seconds", "2"});
    auto child = ChildProcess::Spawn(NetnsLab::IpBinary(), args, dir_ / "notoken.log");
    ASSERT_TRUE(child.ok());
    ASSERT_TRUE((*child)->WaitFor(absl::Seconds(10)));
    EXPECT_EQ(WEXITSTATUS((*child)->wait_status()), 1);
    EXPECT_THAT(ReadFile(dir_ / "notoken.log"), HasSubstr("UNAUTHENTICATED"));
  }
  ASSERT_TRUE(lab_->CutLink("reward").ok());
  EXPECT_NE(Health("reward", kRewardPort, 1), 0);
  EXPECT_EQ(Health("learner", kLearnerPort), 0);
  EXPECT_FALSE(roles_["reward"]->Exited());
  ASSERT_TRUE(lab_->RestoreLink("reward").ok());
  EXPECT_TRUE(WaitServing("reward", kRewardPort, absl::Seconds(30))) << ReadFile(Log("reward"));
  roles_["reward"]->Signal(SIGKILL);
  ASSERT_TRUE(roles_["reward"]->WaitFor(absl::Seconds(5)));
  EXPECT_NE(Health("reward", kRewardPort, 1), 0);
  EXPECT_EQ(Health("learner", kLearnerPort), 0);
  roles_["learner"]->Signal(SIGTERM);
  EXPECT_TRUE(roles_["learner"]->WaitFor(absl::Seconds(30)));
  EXPECT_EQ(cli::DescribeWaitStatus(roles_["learner"]->wait_status()), "exited with code 0")
      << ReadFile(Log("learner"));
  long long traffic = TotalTraffic();
  EXPECT_GT(traffic, 0);
  EXPECT_LT(traffic, kMaxTrafficBytes);
}

// The training run across hosts: two actors generate, the learner trains,
// one actor's link is cut and restored, the other is killed; trained.jsonl
// has no (prompt, epoch) twice.
TEST_F(NetnsTest, TrainingRunAcrossHostsSurvivesACutLinkAndAKill) {
  absl::Time start = absl::Now();
  StartRole("reward", "reward", Binary("reward_server", "cohort-reward"), kRewardPort);
  StartRole("learner", "learner", Binary("learner", "cohort-learner"), kLearnerPort);
  ASSERT_TRUE(WaitServing("learner", kLearnerPort, absl::Seconds(30))) << ReadFile(Log("learner"));
  ASSERT_TRUE(WaitServing("reward", kRewardPort, absl::Seconds(30))) << ReadFile(Log("reward"));
  const std::string learner = absl::StrCat(lab_->Address("learner"), ":", kLearnerPort);
  const std::string reward = absl::StrCat(lab_->Address("reward"), ":", kRewardPort);
  for (const char* actor : {"actor0", "actor1"}) {
    StartRole(actor, actor, Binary("actor", "cohort-actor"), kActorPort,
              {"--learner", learner, "--reward", reward});
  }
  // Actors that export cohort_actor_learner_reachable report the learner
  // reachable on its host.
  bool reachable_gauge = false;
  for (const char* actor : {"actor0", "actor1"}) {
    ASSERT_TRUE(WaitServing(actor, kActorPort, absl::Seconds(30))) << ReadFile(Log(actor));
    reachable_gauge = Metrics(actor).find("cohort_actor_learner_reachable") != std::string::npos;
    if (!reachable_gauge) continue;
    ASSERT_TRUE(WaitUntil(
        [&] {
          return Metrics(actor).find("cohort_actor_learner_reachable 1") != std::string::npos;
        },
        absl::Seconds(20)))
        << Metrics(actor) << ReadFile(Log(actor));
  }
  // Every role's /metrics from the probe host.
  for (const char* host : {"learner", "reward", "actor0", "actor1"}) {
    EXPECT_THAT(Metrics(host), HasSubstr("# TYPE cohort_process_start_time_seconds gauge")) << host;
  }
  // The token is required across hosts too (TLS alone is not enough).
  {
    std::vector<std::string> args = lab_->ExecArgs(
        "probe", {Binary("cli", "cohort"), "health", learner, "--config", dir_ / "run.yaml",
                  "--set", "security.token_file=", "--timeout_seconds", "2"});
    auto child = ChildProcess::Spawn(NetnsLab::IpBinary(), args, dir_ / "notoken.log");
    ASSERT_TRUE(child.ok());
    ASSERT_TRUE((*child)->WaitFor(absl::Seconds(10)));
    EXPECT_EQ(WEXITSTATUS((*child)->wait_status()), 1);
    EXPECT_THAT(ReadFile(dir_ / "notoken.log"), HasSubstr("UNAUTHENTICATED"));
  }

  // Cut actor0's link: it notices that the learner is gone; everyone else
  // keeps serving; the probe cannot reach it.
  const size_t log_before_cut = ReadFile(Log("actor0")).size();
  ASSERT_TRUE(lab_->CutLink("actor0").ok());
  if (reachable_gauge) {
    EXPECT_TRUE(WaitUntil(
        [&] {
          return ReadFile(Log("actor0")).find("is not reachable", log_before_cut) !=
                 std::string::npos;
        },
        absl::Seconds(20)))
        << ReadFile(Log("actor0"));
  }
  EXPECT_NE(Health("actor0", kActorPort, 1), 0);
  EXPECT_EQ(Health("learner", kLearnerPort), 0);
  EXPECT_EQ(Health("reward", kRewardPort), 0);
  if (reachable_gauge) {
    EXPECT_THAT(Metrics("actor1"), HasSubstr("cohort_actor_learner_reachable 1"));
  }
  EXPECT_FALSE(roles_["actor0"]->Exited()) << ReadFile(Log("actor0"));

  // Restore it: it reaches the learner again, and the probe reaches it.
  ASSERT_TRUE(lab_->RestoreLink("actor0").ok());
  EXPECT_TRUE(WaitServing("actor0", kActorPort, absl::Seconds(30))) << ReadFile(Log("actor0"));
  if (reachable_gauge) {
    EXPECT_TRUE(WaitUntil(
        [&] {
          return Metrics("actor0").find("cohort_actor_learner_reachable 1") != std::string::npos;
        },
        absl::Seconds(30)))
        << ReadFile(Log("actor0"));
  }

  // Groups generated on the actors' hosts are trained on the learner's.
  EXPECT_TRUE(WaitUntil([&] { return !ReadFile(TrainedJsonl()).empty(); }, absl::Seconds(90)))
      << ReadFile(Log("learner")) << ReadFile(Log("actor0")) << ReadFile(Log("actor1"));

  // Kill actor1: nothing else notices.
  roles_["actor1"]->Signal(SIGKILL);
  ASSERT_TRUE(roles_["actor1"]->WaitFor(absl::Seconds(5)));
  EXPECT_NE(Health("actor1", kActorPort, 1), 0);
  EXPECT_EQ(Health("learner", kLearnerPort), 0);
  EXPECT_EQ(Health("reward", kRewardPort), 0);
  EXPECT_EQ(Health("actor0", kActorPort), 0);

  // Clean stop of the survivors, each within its deadline.
  for (const char* name : {"actor0", "learner", "reward"}) {
    roles_[name]->Signal(SIGTERM);
    EXPECT_TRUE(roles_[name]->WaitFor(absl::Seconds(10))) << name;
    EXPECT_EQ(cli::DescribeWaitStatus(roles_[name]->wait_status()), "exited with code 0")
        << name << "\n"
        << ReadFile(Log(name));
  }
  // Exactly once so far: no (prompt, epoch) trained twice.
  std::istringstream trained(ReadFile(TrainedJsonl()));
  std::set<std::string> seen;
  int lines = 0;
  for (std::string line; std::getline(trained, line);) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(j.is_object()) << line;
    std::string key = absl::StrCat(j.value("prompt_id", -1), "/", j.value("epoch", -1));
    EXPECT_TRUE(seen.insert(key).second) << "trained twice: " << line;
    ++lines;
  }
  EXPECT_GT(lines, 0);
  std::printf("netns: %d groups trained across hosts\n", lines);
  long long traffic = TotalTraffic();
  EXPECT_GT(traffic, 0);
  EXPECT_LT(traffic, kMaxTrafficBytes);
  std::printf("netns: %lld bytes on the lab's links, %.1f s, links shaped to %d Mbit/s: %s\n",
              traffic, absl::ToDoubleSeconds(absl::Now() - start), NetnsLab::kRateMbit,
              lab_->rate_limited() ? "yes" : "no");
}

TEST(NetnsLabTest, CleansUpAfterItselfAndAfterDeadTests) {
  if (absl::Status available = NetnsLab::Available(); !available.ok()) {
    COHORT_SKIP_OR_FAIL("network namespaces unavailable: " << available.message());
  }
  // A namespace left by a test process that no longer exists.
  pid_t dead = fork();
  if (dead == 0) _exit(0);
  ASSERT_GT(dead, 0);
  int status;
  ASSERT_EQ(waitpid(dead, &status, 0), dead);
  std::string stale = absl::StrCat(NetnsLab::kPrefix, dead, "-old");
  ASSERT_TRUE(testing::RunIp({"netns", "add", stale}).ok());
  std::string mine;
  {
    auto lab = NetnsLab::Create({"a", "b"});
    ASSERT_TRUE(lab.ok()) << lab.status();
    mine = (*lab)->Namespace("a");
    std::string list = testing::RunIp({"netns", "list"}).value_or("");
    EXPECT_THAT(list, ::testing::Not(HasSubstr(stale)));  // removed by Create
    EXPECT_THAT(list, HasSubstr(mine));
    // A process left running in the lab is killed with it.
    auto sleeper = ChildProcess::Spawn(NetnsLab::IpBinary(),
                                       (*lab)->ExecArgs("a", {"/bin/sleep", "600"}), "/dev/null");
    ASSERT_TRUE(sleeper.ok());
    (*lab)->Destroy();
    EXPECT_TRUE((*sleeper)->WaitFor(absl::Seconds(5)));
  }
  std::string list = testing::RunIp({"netns", "list"}).value_or("");
  EXPECT_THAT(list, ::testing::Not(HasSubstr(mine)));
  EXPECT_THAT(list, ::testing::Not(HasSubstr(absl::StrCat(NetnsLab::kPrefix, getpid()))));
}

}  // namespace
}  // namespace cohort
