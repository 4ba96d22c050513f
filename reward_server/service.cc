#include "reward_server/service.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/tokenizer/utf8.h"

namespace cohort::reward {
namespace {

cohort::v1::RewardStatus ToProto(Status s) {
  switch (s) {
    case Status::kOk:
      return cohort::v1::REWARD_STATUS_OK;
    case Status::kInvalid:
      return cohort::v1::REWARD_STATUS_INVALID;
    case Status::kTimeout:
      return cohort::v1::REWARD_STATUS_TIMEOUT;
    case Status::kError:
      return cohort::v1::REWARD_STATUS_ERROR;
  }
  return cohort::v1::REWARD_STATUS_ERROR;
}

constexpr grpc::StatusCode kCodes[] = {
    grpc::StatusCode::OK, grpc::StatusCode::INVALID_ARGUMENT, grpc::StatusCode::RESOURCE_EXHAUSTED,
    grpc::StatusCode::DEADLINE_EXCEEDED, grpc::StatusCode::CANCELLED};

const char* CodeName(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    default:
      return "OTHER";
  }
}

}  // namespace

absl::StatusOr<Sample> SampleFromProto(const cohort::v1::ScoreSample& s, size_t index,
                                       size_t max_field_bytes) {
  const std::string at = absl::StrCat("samples[", index, "].");
  if (s.id().empty()) return absl::InvalidArgumentError(at + "id: empty");
  if (s.task().empty()) return absl::InvalidArgumentError(at + "task: empty");
  for (const auto& [name, value] :
       {std::pair<const char*, const std::string*>{"prompt", &s.prompt()},
        {"completion", &s.completion()},
        {"answer", &s.answer()},
        {"extra_json", &s.extra_json()}}) {
    if (value->size() > max_field_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          at, name, ": ", value->size(), " bytes, more than the limit of ", max_field_bytes));
    }
  }
  if (s.completion_tokens() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(at, "completion_tokens: negative (", s.completion_tokens(), ")"));
  }
  Sample out;
  out.id = s.id();
  out.task = s.task();
  out.prompt = s.prompt();
  out.completion = s.completion();
  out.answer = s.answer();
  out.completion_tokens = s.completion_tokens();
  if (!s.extra_json().empty()) {
    out.extra = nlohmann::json::parse(s.extra_json(), nullptr, false);
    if (out.extra.is_discarded() || !out.extra.is_object()) {
      return absl::InvalidArgumentError(at + "extra_json: not a JSON object");
    }
  }
  return out;
}

void ResultToProto(const Result& r, cohort::v1::RewardResult* out) {
  out->set_id(r.id);
  out->set_reward(r.reward);
  for (const auto& [k, v] : r.components) (*out->mutable_components())[k] = v;
  out->set_status(ToProto(r.status));
  // proto3 strings must be UTF-8 (a client refuses to parse anything
  // else), and reasons can quote pieces of a completion cut anywhere.
  out->set_reason(tok::ReplaceInvalidBytes(r.reason, '?'));
  out->set_verify_seconds(r.verify_seconds);
}

RewardService::RewardService(Scorer* scorer, RewardServiceOptions options)
    : scorer_(scorer),
      options_(std::move(options)),
      metrics_(options_.metrics ? options_.metrics : MetricsRegistry::Default()) {
  for (grpc::StatusCode c : kCodes) {
    batches_[static_cast<int>(c)] =
        metrics_->GetCounter("cohort_reward_batches_total",
                             "Score calls answered, by gRPC status code.", {{"code", CodeName(c)}});
  }
}

Counter* RewardService::BatchCounter(grpc::StatusCode code) {
  auto it = batches_.find(static_cast<int>(code));
  return it == batches_.end() ? batches_.at(0) : it->second;
}

namespace {

// One Score call in flight. It is finished exactly once: by the scorer
// callback that completes the batch (OK, every result), or by OnCancel (the
// caller cancelled or its deadline passed: no partial results, and the
// samples not started yet are skipped). gRPC deletes nothing: OnDone does.
// The scorer callbacks hold `shared_` and touch the reactor only if they
// win `finished`, which happens before Finish, so before OnDone.
class ScoreCall final : public grpc::ServerUnaryReactor {
 public:
  using Counters = std::function<Counter*(grpc::StatusCode)>;

  ScoreCall(grpc::CallbackServerContext* context, cohort::v1::ScoreResponse* response,
            Counters counters)
      : context_(context), response_(response), counters_(std::move(counters)) {}

  // Queues the samples. The call may be finished (by the last callback or
  // OnCancel) before Start returns; Start touches nothing after queueing.
  void Start(Scorer* scorer, std::vector<Sample> samples) {
    n_ = samples.size();
    std::shared_ptr<Shared> shared = shared_;
    shared->remaining = scorer->SubmitBatch(
        std::move(samples),
        [this, shared](std::vector<Result> results) {
          if (!shared->TryFinish()) return;  // cancelled first; `this` may be gone
          for (const Result& r : results) ResultToProto(r, response_->add_results());
          FinishWith(grpc::Status::OK);
        },
        shared->cancelled);
  }

  void OnCancel() override {
    shared_->cancelled->store(true);
    if (!shared_->TryFinish()) return;  // already answered
    // gRPC does not say why; a cancellation at the deadline is the
    // deadline (the slack covers the server's deadline being computed on
    // another clock than system_clock, off by a few milliseconds).
    const bool past_deadline =
        context_->deadline() <= std::chrono::system_clock::now() + std::chrono::milliseconds(100);
    if (past_deadline) {
      FinishWith(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                              absl::StrCat(shared_->Remaining(), " of ", n_,
                                           " samples not scored before the caller's "
                                           "deadline; no partial results")));
    } else {
      FinishWith(grpc::Status(grpc::StatusCode::CANCELLED, "the caller cancelled the call"));
    }
  }

  void OnDone() override { delete this; }

 private:
  // Outlives the reactor: the scorer's callbacks keep it.
  struct Shared {
    absl::Mutex mu;
    bool finished ABSL_GUARDED_BY(mu) = false;
    std::shared_ptr<std::atomic<bool>> cancelled = std::make_shared<std::atomic<bool>>(false);
    // Set by Start before any OnCancel can read it (OnCancel runs only
    // after the handler returned).
    std::shared_ptr<const std::atomic<size_t>> remaining;

    // True for the one caller that may finish the call.
    bool TryFinish() ABSL_LOCKS_EXCLUDED(mu) {
      absl::MutexLock lock(&mu);
      if (finished) return false;
      finished = true;
      return true;
    }
    size_t Remaining() const { return remaining ? remaining->load() : 0; }
  };

  void FinishWith(grpc::Status status) {
    counters_(status.error_code())->Increment();
    Finish(std::move(status));
  }

  grpc::CallbackServerContext* const context_;
  cohort::v1::ScoreResponse* const response_;
  const Counters counters_;
  size_t n_ = 0;
  const std::shared_ptr<Shared> shared_ = std::make_shared<Shared>();
};

}  // namespace

grpc::ServerUnaryReactor* RewardService::Score(grpc::CallbackServerContext* context,
                                               const cohort::v1::ScoreRequest* request,
                                               cohort::v1::ScoreResponse* response) {
  auto fail = [&](grpc::StatusCode code, std::string message) {
    BatchCounter(code)->Increment();
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status(code, std::move(message)));
    return reactor;
  };
  const int n = request->samples_size();
  if (n > options_.max_batch) {
    return fail(grpc::StatusCode::RESOURCE_EXHAUSTED,
                absl::StrCat("samples: ", n,
                             " in one request, more than "
                             "this server's max_batch of ",
                             options_.max_batch, "; split the batch"));
  }
  std::vector<Sample> samples;
  samples.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    auto s = SampleFromProto(request->samples(i), static_cast<size_t>(i), options_.max_field_bytes);
    if (!s.ok()) {
      return fail(grpc::StatusCode::INVALID_ARGUMENT, std::string(s.status().message()));
    }
    samples.push_back(std::move(*s));
  }
  auto* call = new ScoreCall(context, response,
                             [this](grpc::StatusCode code) { return BatchCounter(code); });
  call->Start(scorer_, std::move(samples));
  return call;
}

}  // namespace cohort::reward
