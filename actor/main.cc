// cohort-actor: joins a learner, generates completions, has them scored by a
// reward server and submits the scored groups. Serves grpc.health.v1 and
// /metrics on its own port so probes and `cohort run` can see it.
//
// Until the generation and training issues land, the actor only watches
// that the learner is reachable (health check) and logs when that changes;
// it generates nothing.
#include <memory>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "core/logging.h"
#include "core/metrics.h"
#include "core/rpc.h"
#include "core/service.h"

namespace {

// Polls the learner's health until `stop` is notified; logs each change.
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

}  // namespace

int main(int argc, char** argv) {
  cohort::ServiceMain service(
      "actor", "cohort-actor",
      "A cohort actor: joins the learner, generates groups of completions, "
      "has them scored by a reward server and submits them. Serves "
      "grpc.health.v1 and /metrics on its own port. Stops cleanly on "
      "SIGTERM or SIGINT within supervisor.stop_timeout_seconds. Until the "
      "generation issue lands it only checks that the learner is reachable.");
  std::string learner;
  std::string reward;
  service.flags().String("learner", &learner,
                         "Learner address host:port; empty uses learner.host:learner.port from "
                         "the config (then learner.port must not be 0).");
  service.flags().String("reward", &reward,
                         "Reward server address host:port; empty uses reward.address from the "
                         "config.");
  if (!service.Init(argc, argv)) return 2;
  const cohort::RunConfig& config = service.config();
  if (learner.empty()) {
    if (config.learner.port == 0) {
      COHORT_LOG(ERROR) << "--learner is required (the config's learner.port is 0, "
                           "so the learner's address is not known)";
      return 2;
    }
    learner = absl::StrCat(config.learner.host, ":", config.learner.port);
  }
  if (reward.empty()) reward = config.reward.address;

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
  COHORT_LOG(INFO) << "learner " << learner << ", reward server "
                   << (reward.empty() ? "(none)" : reward);

  absl::Notification stop;
  std::thread watcher;
  cohort::ServiceMain::Hooks hooks;
  hooks.on_serving = [&] {
    watcher = std::thread(WatchLearner, learner, *channel,
                          absl::Milliseconds(config.learner.heartbeat_interval_ms), &stop);
    return absl::OkStatus();
  };
  hooks.on_stopping = [&] {
    stop.Notify();
    if (watcher.joinable()) watcher.join();
  };
  return service.Serve({}, hooks);
}
