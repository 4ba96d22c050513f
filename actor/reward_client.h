// Scores completions on one or more cohort.v1.Reward servers.
//
// Load spreading: one channel per configured address, each with gRPC's
// round_robin load-balancing policy, so a single DNS name that resolves to
// several addresses (a Kubernetes headless service) spreads calls over all
// of them, and a list of addresses is used in turn.
//
// Failures: a Score call that fails (UNAVAILABLE, DEADLINE_EXCEEDED, any
// other code but INVALID_ARGUMENT) puts that endpoint in a cool-down and
// the batch is retried on the next endpoint; once every endpoint has failed
// in a round, the client backs off exponentially (RetryPolicy) and goes
// round again, until `give_up_after` has passed since the batch's first
// attempt. Samples the server reports as REWARD_STATUS_ERROR
// (infrastructure) are retried once elsewhere. A sample that still has no
// result gets REWARD_STATUS_ERROR with a reason and reward NaN: a reward
// is never 0 because a server could not be reached.
//
// Metrics (`metrics` registry): cohort_actor_reward_rtt_seconds (per
// successful Score call), cohort_actor_reward_retries_total,
// cohort_actor_reward_unscored_samples_total.
//
// Thread-safety: Score() may be called from several threads. Shutdown()
// makes waiting and future calls return at once (unscored samples get
// ERROR "actor stopping").
#ifndef COHORT_ACTOR_REWARD_CLIENT_H_
#define COHORT_ACTOR_REWARD_CLIENT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cohort/v1/reward.pb.h"
#include "core/metrics.h"
#include "core/rpc.h"

namespace cohort::actor {

class RewardClient {
 public:
  virtual ~RewardClient() = default;
  // One result per sample, in order, ids echoed. Blocks; never fails as a
  // whole (see above).
  virtual std::vector<cohort::v1::RewardResult> Score(
      const std::vector<cohort::v1::ScoreSample>& samples) = 0;
  virtual void Shutdown() = 0;
};

struct RewardClientOptions {
  // host:port (or any gRPC target) of each reward server; non-empty.
  std::vector<std::string> addresses;
  ChannelOptions channel;
  absl::Duration rpc_timeout = absl::Seconds(60);    // per Score call
  absl::Duration give_up_after = absl::Seconds(60);  // per batch, from its first attempt
  RetryPolicy backoff = {/*max_attempts=*/1 << 30, absl::Milliseconds(100), absl::Seconds(5), 2.0,
                         0.2};
  int max_batch = 256;                 // samples per Score call
  MetricsRegistry* metrics = nullptr;  // default MetricsRegistry::Default()
};

absl::StatusOr<std::unique_ptr<RewardClient>> MakeGrpcRewardClient(RewardClientOptions options);

// A result for a sample that could not be scored: `status`, `reason`, NaN.
cohort::v1::RewardResult UnscoredResult(const std::string& id, cohort::v1::RewardStatus status,
                                        const std::string& reason);

}  // namespace cohort::actor

#endif  // COHORT_ACTOR_REWARD_CLIENT_H_
