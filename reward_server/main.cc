// cohort-reward: serves cohort.v1.Reward, plus health, reflection and
// /metrics. Stateless: run as many as needed.
#include <cstdint>
#include <memory>
#include <string>

#include "core/logging.h"
#include "core/rpc.h"
#include "core/service.h"
#include "reward_server/scorer.h"
#include "reward_server/service.h"

int main(int argc, char** argv) {
  cohort::ServiceMain service("reward", "cohort-reward",
                              "A cohort reward server: serves cohort.v1.Reward (scores batches of "
                              "completions with the rule-based verifiers configured in the run "
                              "config's reward section), plus grpc.health.v1, reflection and "
                              "/metrics. Stateless. Stops cleanly on SIGTERM or SIGINT within "
                              "supervisor.stop_timeout_seconds.");
  int64_t workers = -1;
  service.flags().Int("workers", &workers,
                      "Verifier threads; overrides reward.workers (0 = one "
                      "per core; -1 keeps the config's value).");
  if (!service.Init(argc, argv)) return 2;
  const cohort::RunConfig& config = service.config();

  cohort::reward::ScorerOptions options = cohort::reward::ScorerOptionsFromConfig(config.reward);
  if (workers >= 0) options.workers = static_cast<int>(workers);
  auto channel_options = cohort::ChannelOptionsFromConfig(config.security);
  if (!channel_options.ok()) {
    COHORT_LOG(ERROR) << "security: " << channel_options.status().message();
    return 1;
  }
  options.make_channel = [co = *channel_options](const std::string& target) {
    return cohort::MakeChannel(target, co);
  };
  auto scorer = cohort::reward::Scorer::Create(std::move(options));
  if (!scorer.ok()) {
    COHORT_LOG(ERROR) << "reward config: " << scorer.status().message();
    return 1;
  }
  COHORT_LOG(INFO) << "scoring with " << (*scorer)->workers() << " workers, "
                   << (*scorer)->tasks().size() << " tasks";

  cohort::reward::RewardServiceOptions service_options;
  service_options.max_batch = config.reward.max_batch;
  cohort::reward::RewardService reward((*scorer).get(), service_options);
  int rc = service.Serve({&reward});
  (*scorer)->Stop();
  return rc;
}
