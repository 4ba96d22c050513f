// cohort-actor: joins a learner, generates groups of completions with its
// own engine, has them scored by the reward servers and submits them (see
// actor/rollout.h and docs/actor.md). Serves grpc.health.v1 and /metrics on
// its own port so probes and `cohort run` can see it.
//
//   cohort-actor --learner HOST:PORT [--config FILE]
//
// Exit codes: 0 after a drain (SIGTERM, or the learner ended the run); 2
// for bad flags or config; 3 when the learner refuses the actor (model
// fingerprint or protocol version), with the reason in the log.
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include <ATen/Parallel.h>
#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "actor/engine_generator.h"
#include "actor/learner_client.h"
#include "actor/reward_client.h"
#include "actor/rollout.h"
#include "core/blas_threads.h"
#include "core/logging.h"
#include "core/malloc_tuning.h"
#include "core/metrics.h"
#include "core/rpc.h"
#include "core/service.h"
#include "model/model_config.h"

namespace {

namespace v1 = ::cohort::v1;

std::atomic<int> g_exit_code{0};
pid_t g_main_tid = 0;

// SIGTERM / SIGINT are blocked in every thread ServiceMain::Init's thread
// starts and read from a signalfd by that thread; but a thread that a
// library started before main() (LibTorch's static initialisers do) has
// them unblocked, and the default action would kill the process there
// without a drain. This handler hands such a signal to the main thread,
// where it stays pending for the signalfd. Async-signal-safe.
void ForwardStopSignal(int sig) { ::syscall(SYS_tgkill, ::getpid(), g_main_tid, sig); }

void InstallStopSignalForwarder() {
  g_main_tid = static_cast<pid_t>(::syscall(SYS_gettid));
  struct sigaction sa = {};
  sa.sa_handler = ForwardStopSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
}

// Ends ServiceMain::Serve() as SIGTERM does (its signalfd reads it).
void StopService() { ::syscall(SYS_tgkill, ::getpid(), g_main_tid, SIGTERM); }

// Polls the learner's health until `stop` is notified; logs each change and
// keeps cohort_actor_learner_reachable current (alerts and probes read it).
void WatchLearner(const std::string& address, std::shared_ptr<grpc::Channel> channel,
                  absl::Duration period, absl::Notification* stop) {
  cohort::Gauge* reachable = cohort::MetricsRegistry::Default()->GetGauge(
      "cohort_actor_learner_reachable",
      "1 if the learner answered its last health check with SERVING, else 0");
  int last = -1;  // unknown
  do {
    absl::Status health = cohort::CheckHealth(channel, "", std::min(period, absl::Seconds(2)));
    int now = health.ok() ? 1 : 0;
    reachable->Set(now);
    if (now != last) {
      if (now == 1) {
        COHORT_LOG(INFO) << "learner at " << address << " is reachable (SERVING)";
      } else {
        COHORT_LOG(WARNING) << "learner at " << address
                            << " is not reachable: " << health.message();
      }
      last = now;
    }
  } while (!stop->WaitForNotificationWithTimeout(period));
}

std::string DefaultActorName() {
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  return absl::StrCat(host[0] != '\0' ? host : "actor", ":", ::getpid());
}

// --reward, else reward.addresses, else what Join names, else reward.address.
std::vector<std::string> RewardAddresses(const std::string& flag, const cohort::RunConfig& config,
                                         const v1::JoinResponse& join) {
  std::vector<std::string> out;
  if (!flag.empty()) {
    for (absl::string_view a : absl::StrSplit(flag, ',', absl::SkipEmpty())) out.emplace_back(a);
    return out;
  }
  if (!config.reward.addresses.empty()) return config.reward.addresses;
  out.assign(join.reward_addresses().begin(), join.reward_addresses().end());
  if (out.empty() && !join.reward_address().empty()) out.push_back(join.reward_address());
  if (out.empty() && !config.reward.address.empty()) out.push_back(config.reward.address);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  // Weight streams: gRPC's read buffers are reused, not faulted in afresh.
  cohort::KeepLargeAllocations();
  cohort::ServiceMain service(
      "actor", "cohort-actor",
      "A cohort actor: joins the learner (its address is all it needs), fetches the policy's "
      "weights, leases prompts, generates groups of completions, has them scored by the reward "
      "servers and submits them. Serves grpc.health.v1 and /metrics on its own port. SIGTERM "
      "drains: no new leases, work in flight gets actor.drain_grace_seconds, the rest is handed "
      "back; then exit 0. Exit 3 when the learner refuses the actor.");
  std::string learner;
  std::string reward;
  std::string name;
  service.flags().String("learner", &learner,
                         "Learner address host:port; empty uses learner.host:learner.port from "
                         "the config (then learner.port must not be 0).");
  service.flags().String("reward", &reward,
                         "Reward server addresses, comma-separated host:port; empty uses "
                         "reward.addresses, else the servers the learner names at Join.");
  service.flags().String("name", &name, "Actor name shown by the learner (default hostname:pid).");
  if (!service.Init(argc, argv)) return 2;
  InstallStopSignalForwarder();
  const cohort::RunConfig& config = service.config();
  if (learner.empty()) {
    if (config.learner.port == 0) {
      COHORT_LOG(ERROR) << "--learner is required (the config's learner.port is 0, "
                           "so the learner's address is not known)";
      return 2;
    }
    learner = absl::StrCat(config.learner.host, ":", config.learner.port);
  }
  if (name.empty()) name = DefaultActorName();

  absl::StatusOr<cohort::ChannelOptions> channel_options =
      cohort::ChannelOptionsFromConfig(config.security);
  if (!channel_options.ok()) {
    COHORT_LOG(ERROR) << "security config: " << channel_options.status().message();
    return 2;
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      cohort::MakeChannel(learner, *channel_options);
  if (!channel.ok()) {
    COHORT_LOG(ERROR) << "--learner " << learner << ": " << channel.status().message();
    return 2;
  }
  // Torch's intra-op pool and the BLAS library's own pool: actor.threads
  // (one by default, so that the roles `cohort run` starts on a small
  // machine do not oversubscribe its cores).
  at::set_num_threads(config.actor.threads);
  cohort::SetBlasThreads(config.actor.threads);
  std::unique_ptr<cohort::actor::LearnerClient> client =
      cohort::actor::MakeGrpcLearnerClient(*channel);

  cohort::actor::RolloutOptions options;
  options.actor_name = name;
  options.pid = ::getpid();
  options.slots = config.actor.slots;
  options.drain_grace = absl::Seconds(config.actor.drain_grace_seconds);
  options.heartbeat_interval = absl::Milliseconds(config.learner.heartbeat_interval_ms);
  if (!config.model.path.empty()) {
    absl::StatusOr<cohort::model::ModelConfig> model =
        cohort::model::ModelConfig::FromFile(config.model.path + "/config.json");
    if (!model.ok()) {
      COHORT_LOG(ERROR) << "model.path: " << model.status().message();
      return 2;
    }
    options.model_fingerprint = model->Fingerprint();
  }
  options.make_generator = [&config](const v1::JoinResponse& join) {
    cohort::actor::EngineGeneratorOptions eo;
    eo.slots = config.actor.slots;
    eo.max_len = config.actor.max_len;
    eo.device = config.actor.device;
    eo.kv_cache_fraction = config.actor.kv_cache_fraction;
    return cohort::actor::MakeEngineGenerator(join.model(), eo);
  };
  options.make_reward_client = [&](const v1::JoinResponse& join) {
    cohort::actor::RewardClientOptions ro;
    ro.addresses = RewardAddresses(reward, config, join);
    ro.channel = *channel_options;
    ro.give_up_after = absl::Seconds(config.reward.retry_seconds);
    ro.rpc_timeout = absl::Seconds(std::max(10.0, 4 * config.reward.sample_timeout_seconds));
    ro.max_batch = config.reward.max_batch;
    if (!ro.addresses.empty()) {
      COHORT_LOG(INFO) << "reward servers: " << absl::StrJoin(ro.addresses, ", ");
    }
    return cohort::actor::MakeGrpcRewardClient(std::move(ro));
  };
  cohort::actor::Rollout rollout(std::move(options), client.get());

  std::thread runner;
  std::thread watcher;
  absl::Notification stop_watch;
  cohort::ServiceMain::Hooks hooks;
  hooks.on_serving = [&] {
    COHORT_LOG(INFO) << "actor " << name << ", learner " << learner << ", " << config.actor.slots
                     << " slots, " << config.actor.threads << " thread(s), " << config.actor.device;
    watcher = std::thread(WatchLearner, learner, *channel,
                          absl::Milliseconds(config.learner.heartbeat_interval_ms), &stop_watch);
    runner = std::thread([&] {
      absl::Status s = rollout.Run();
      if (!s.ok()) {
        COHORT_LOG(ERROR) << s.message();
        g_exit_code = 3;
      } else {
        COHORT_LOG(INFO) << "rollout finished";
      }
      // Ends Serve() unless it is already stopping.
      StopService();
    });
    return absl::OkStatus();
  };
  hooks.on_stopping = [&] {
    rollout.RequestDrain();
    if (runner.joinable()) runner.join();
    stop_watch.Notify();
    if (watcher.joinable()) watcher.join();
  };
  int code = service.Serve({}, hooks);
  if (runner.joinable()) {
    rollout.Stop();
    runner.join();
  }
  if (!stop_watch.HasBeenNotified()) stop_watch.Notify();
  if (watcher.joinable()) watcher.join();
  return code != 0 ? code : g_exit_code.load();
}
