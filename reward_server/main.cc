// cohort-reward: serves cohort.v1.Reward, plus health, reflection and
// /metrics. Stateless: run as many as needed.
#include <string>

#include <grpcpp/grpcpp.h>

#include "cohort/v1/reward.grpc.pb.h"
#include "core/service.h"

namespace {

// Stands in until reward_server/service.h (the verifiers) is wired in here.
class RewardPlaceholder final : public cohort::v1::Reward::Service {
  grpc::Status Score(grpc::ServerContext*, const cohort::v1::ScoreRequest*,
                     cohort::v1::ScoreResponse*) override {
    return grpc::Status(
        grpc::StatusCode::UNIMPLEMENTED,
        "cohort.v1.Reward/Score is not implemented in this build yet: the "
        "verifiers land with the reward server issue (issue 4)");
  }
};

}  // namespace

int main(int argc, char** argv) {
  cohort::ServiceMain service(
      "reward", "cohort-reward",
      "A cohort reward server: serves cohort.v1.Reward (scores batches of "
      "completions with the rule-based verifiers configured in the run "
      "config's reward section), plus grpc.health.v1, reflection and "
      "/metrics. Stateless. Stops cleanly on SIGTERM or SIGINT within "
      "supervisor.stop_timeout_seconds.");
  if (!service.Init(argc, argv)) return 2;
  RewardPlaceholder reward;
  return service.Serve({&reward});
}
