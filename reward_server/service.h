// cohort.v1.Reward over gRPC, on a Scorer.
//
// Score(batch), a callback (reactor) handler: validates the request
// (INVALID_ARGUMENT naming the field, e.g. "samples[3].task: empty";
// RESOURCE_EXHAUSTED above max_batch samples) and queues every sample on the
// scorer's worker pool; no gRPC thread waits. The scorer callback that
// completes the batch answers it; if the caller's deadline passes first
// (DEADLINE_EXCEEDED: no partial results) or the caller cancels
// (CANCELLED), OnCancel answers and the samples not started yet are
// skipped. One result per sample, in request order; a sample that cannot
// be scored has a non-OK status, a reason and reward NaN.
//
// Metrics (registry of the scorer): cohort_reward_batches_total{code},
// plus the scorer's cohort_reward_samples_total{task,status},
// cohort_reward_verify_seconds, cohort_reward_queue_depth.
//
// Thread-safety: gRPC calls Score concurrently; the scorer is thread-safe;
// BatchCounter's map is constant after construction.
#ifndef COHORT_REWARD_SERVER_SERVICE_H_
#define COHORT_REWARD_SERVER_SERVICE_H_

#include <cstddef>
#include <map>
#include <string>

#include "cohort/v1/reward.grpc.pb.h"
#include "core/metrics.h"
#include "reward_server/scorer.h"

namespace cohort::reward {

struct RewardServiceOptions {
  int max_batch = 1024;  // samples per request
  // Per-sample text fields (prompt, completion, answer, extra_json).
  size_t max_field_bytes = 4 << 20;
  MetricsRegistry* metrics = nullptr;  // default MetricsRegistry::Default()
};

class RewardService final : public cohort::v1::Reward::CallbackService {
 public:
  // `scorer` is not owned and must outlive the service.
  RewardService(Scorer* scorer, RewardServiceOptions options);

  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* context,
                                  const cohort::v1::ScoreRequest* request,
                                  cohort::v1::ScoreResponse* response) override;

 private:
  Counter* BatchCounter(grpc::StatusCode code);

  // Constant after construction.
  Scorer* const scorer_;
  const RewardServiceOptions options_;
  MetricsRegistry* const metrics_;
  std::map<int, Counter*> batches_;
};

// Converts between the proto and the in-process types.
absl::StatusOr<Sample> SampleFromProto(const cohort::v1::ScoreSample& s, size_t index,
                                       size_t max_field_bytes);
void ResultToProto(const Result& r, cohort::v1::RewardResult* out);

}  // namespace cohort::reward

#endif  // COHORT_REWARD_SERVER_SERVICE_H_
