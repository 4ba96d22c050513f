#include "actor/reward_client.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <utility>

#include <grpcpp/grpcpp.h>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "cohort/v1/reward.grpc.pb.h"
#include "core/grpc_status.h"
#include "core/logging.h"
#include "core/status.h"

namespace cohort::actor {

namespace v1 = ::cohort::v1;

v1::RewardResult UnscoredResult(const std::string& id, v1::RewardStatus status,
                                const std::string& reason) {
  v1::RewardResult r;
  r.set_id(id);
  r.set_status(status);
  r.set_reason(reason);
  r.set_reward(std::numeric_limits<double>::quiet_NaN());
  return r;
}

namespace {

class GrpcRewardClient final : public RewardClient {
 public:
  struct Endpoint {
    std::string address;
    std::unique_ptr<v1::Reward::Stub> stub;
    absl::Time cool_until ABSL_GUARDED_BY(mu);  // skipped before this
    absl::Mutex mu;
  };

  GrpcRewardClient(RewardClientOptions options, std::vector<std::unique_ptr<Endpoint>> endpoints)
      : options_(std::move(options)), endpoints_(std::move(endpoints)) {
    MetricsRegistry* m = options_.metrics ? options_.metrics : MetricsRegistry::Default();
    rtt_ = m->GetHistogram("cohort_actor_reward_rtt_seconds",
                           "Round-trip time of successful reward Score calls, seconds.",
                           Histogram::ExponentialBuckets(0.001, 2, 16));
    retries_ = m->GetCounter("cohort_actor_reward_retries_total",
                             "Reward Score calls retried after a failure.");
    unscored_ = m->GetCounter(
        "cohort_actor_reward_unscored_samples_total",
        "Samples submitted with REWARD_STATUS_ERROR because no reward server scored them.");
  }

  std::vector<v1::RewardResult> Score(const std::vector<v1::ScoreSample>& samples) override {
    std::vector<v1::RewardResult> results(samples.size());
    for (size_t begin = 0; begin < samples.size(); begin += options_.max_batch) {
      size_t end = std::min(samples.size(), begin + static_cast<size_t>(options_.max_batch));
      ScoreBatch(samples, begin, end, &results);
    }
    return results;
  }

  void Shutdown() override {
    absl::MutexLock lock(&calls_mu_);
    if (!shutdown_.HasBeenNotified()) shutdown_.Notify();
    for (grpc::ClientContext* c : calls_) c->TryCancel();
  }

 private:
  // Registers a call so that Shutdown() can cancel it.
  class ActiveCall {
   public:
    ActiveCall(GrpcRewardClient* client, grpc::ClientContext* context)
        : client_(client), context_(context) {
      absl::MutexLock lock(&client_->calls_mu_);
      client_->calls_.insert(context_);
      if (client_->shutdown_.HasBeenNotified()) context_->TryCancel();
    }
    ~ActiveCall() {
      absl::MutexLock lock(&client_->calls_mu_);
      client_->calls_.erase(context_);
    }

   private:
    GrpcRewardClient* client_;
    grpc::ClientContext* context_;
  };

  // Scores samples[begin, end) into (*results)[begin, end).
  void ScoreBatch(const std::vector<v1::ScoreSample>& samples, size_t begin, size_t end,
                  std::vector<v1::RewardResult>* results) {
    std::vector<size_t> todo;
    for (size_t i = begin; i < end; ++i) todo.push_back(i);
    std::vector<int> error_retries(end - begin, 0);
    const absl::Time give_up = absl::Now() + options_.give_up_after;
    int failed_rounds = 0;
    int failures_in_round = 0;
    std::string last_error = "no attempt";
    while (!todo.empty()) {
      if (shutdown_.HasBeenNotified()) {
        last_error = "actor stopping";
        break;
      }
      Endpoint* endpoint = PickEndpoint();
      v1::ScoreRequest request;
      for (size_t i : todo) *request.add_samples() = samples[i];
      v1::ScoreResponse response;
      grpc::ClientContext context;
      ActiveCall active(this, &context);
      context.set_deadline(absl::ToChronoTime(
          absl::Now() + std::min(options_.rpc_timeout,
                                 std::max(give_up - absl::Now(), absl::Milliseconds(100)))));
      absl::Time start = absl::Now();
      grpc::Status status = endpoint->stub->Score(&context, request, &response);
      if (status.ok() && response.results_size() != static_cast<int>(todo.size())) {
        status = grpc::Status(grpc::StatusCode::INTERNAL,
                              absl::StrCat("returned ", response.results_size(), " results for ",
                                           todo.size(), " samples"));
      }
      if (status.ok()) {
        rtt_->Observe(absl::ToDoubleSeconds(absl::Now() - start));
        std::vector<size_t> again;
        for (size_t k = 0; k < todo.size(); ++k) {
          const size_t i = todo[k];
          v1::RewardResult& r = *response.mutable_results(static_cast<int>(k));
          if (r.status() == v1::REWARD_STATUS_ERROR && endpoints_.size() > 1 &&
              error_retries[i - begin]++ == 0) {
            again.push_back(i);  // an infrastructure error: try another server once
          }
          (*results)[i] = std::move(r);
        }
        todo = std::move(again);
        if (!todo.empty()) retries_->Increment();
        continue;
      }
      last_error = absl::StrCat(endpoint->address, ": ", status.error_message(), " (",
                                FromGrpcStatus(status).code(), ")");
      if (status.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
        break;  // the request itself is refused: no server will take it
      }
      retries_->Increment();
      {
        absl::MutexLock lock(&endpoint->mu);
        endpoint->cool_until = absl::Now() + options_.backoff.initial_backoff *
                                                 std::pow(2.0, std::min(failed_rounds, 6));
      }
      if (absl::Now() >= give_up) break;
      if (++failures_in_round >= static_cast<int>(endpoints_.size())) {
        failures_in_round = 0;
        ++failed_rounds;
        absl::Duration delay = BackoffDelay(options_.backoff, failed_rounds);
        thread_local absl::BitGen bitgen;
        delay *=
            absl::Uniform(bitgen, 1.0 - options_.backoff.jitter, 1.0 + options_.backoff.jitter);
        delay = std::min(delay, give_up - absl::Now());
        if (failed_rounds == 1 || failed_rounds % 10 == 0) {
          COHORT_LOG(WARNING) << "reward servers failing (" << last_error << "); retrying in "
                              << absl::FormatDuration(absl::Trunc(delay, absl::Milliseconds(1)));
        }
        if (delay > absl::ZeroDuration()) shutdown_.WaitForNotificationWithTimeout(delay);
      }
    }
    if (!todo.empty()) {
      const std::string reason = absl::StrCat("not scored: ", last_error);
      for (size_t i : todo) {
        if ((*results)[i].status() != v1::REWARD_STATUS_UNSPECIFIED) continue;  // kept ERROR
        (*results)[i] = UnscoredResult(samples[i].id(), v1::REWARD_STATUS_ERROR, reason);
        unscored_->Increment();
      }
    }
  }

  // The next endpoint in turn that is not cooling down; if all are, the one
  // whose cool-down ends first.
  Endpoint* PickEndpoint() {
    const size_t n = endpoints_.size();
    const size_t start = next_.fetch_add(1, std::memory_order_relaxed);
    const absl::Time now = absl::Now();
    Endpoint* best = nullptr;
    absl::Time best_time = absl::InfiniteFuture();
    for (size_t k = 0; k < n; ++k) {
      Endpoint* e = endpoints_[(start + k) % n].get();
      absl::MutexLock lock(&e->mu);
      if (e->cool_until <= now) return e;
      if (e->cool_until < best_time) {
        best_time = e->cool_until;
        best = e;
      }
    }
    return best;
  }

  const RewardClientOptions options_;
  const std::vector<std::unique_ptr<Endpoint>> endpoints_;
  std::atomic<size_t> next_{0};
  absl::Notification shutdown_;
  absl::Mutex calls_mu_;
  std::set<grpc::ClientContext*> calls_ ABSL_GUARDED_BY(calls_mu_);
  Histogram* rtt_;
  Counter* retries_;
  Counter* unscored_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<RewardClient>> MakeGrpcRewardClient(RewardClientOptions options) {
  if (options.addresses.empty()) {
    return absl::InvalidArgumentError(
        "reward client: no reward server address (set reward.addresses, or the learner's Join "
        "must name them)");
  }
  if (options.max_batch < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("reward client: max_batch must be >= 1, got ", options.max_batch));
  }
  std::vector<std::unique_ptr<GrpcRewardClient::Endpoint>> endpoints;
  for (const std::string& address : options.addresses) {
    ChannelOptions channel_options = options.channel;
    channel_options.lb_policy = "round_robin";
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(address, channel_options);
    if (!channel.ok()) return Annotate(channel.status(), "reward server " + address);
    auto e = std::make_unique<GrpcRewardClient::Endpoint>();
    e->address = address;
    e->stub = v1::Reward::NewStub(*channel);
    endpoints.push_back(std::move(e));
  }
  return std::unique_ptr<RewardClient>(
      new GrpcRewardClient(std::move(options), std::move(endpoints)));
}

}  // namespace cohort::actor
