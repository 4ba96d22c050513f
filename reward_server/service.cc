#include "reward_server/service.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <chrono>
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

grpc::Status RewardService::Score(grpc::ServerContext* context,
                                  const cohort::v1::ScoreRequest* request,
                                  cohort::v1::ScoreResponse* response) {
  auto fail = [&](grpc::StatusCode code, std::string message) {
    BatchCounter(code)->Increment();
    return grpc::Status(code, std::move(message));
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

  struct State {
    absl::Mutex mu;
    std::vector<Result> results ABSL_GUARDED_BY(mu);
    int remaining ABSL_GUARDED_BY(mu) = 0;
  };
  auto state = std::make_shared<State>();
  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  {
    absl::MutexLock lock(&state->mu);
    state->results.resize(static_cast<size_t>(n));
    state->remaining = n;
  }
  for (int i = 0; i < n; ++i) {
    scorer_->Submit(
        std::move(samples[static_cast<size_t>(i)]),
        [state, i](Result r) {
          absl::MutexLock lock(&state->mu);
          state->results[static_cast<size_t>(i)] = std::move(r);
          --state->remaining;
        },
        cancelled);
  }
  const absl::Time deadline = context->deadline() >= std::chrono::system_clock::time_point::max()
                                  ? absl::InfiniteFuture()
                                  : absl::FromChrono(context->deadline());
  absl::MutexLock lock(&state->mu);
  auto all_done = absl::Condition(
      +[](State* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu) { return s->remaining == 0; },
      state.get());
  while (true) {
    // Wake up now and then to notice a cancelled call.
    absl::Time until = std::min(deadline, absl::Now() + absl::Milliseconds(50));
    if (state->mu.AwaitWithDeadline(all_done, until)) break;
    if (context->IsCancelled()) {
      cancelled->store(true);
      return fail(grpc::StatusCode::CANCELLED, "the caller cancelled the call");
    }
    if (absl::Now() >= deadline) {
      cancelled->store(true);
      return fail(grpc::StatusCode::DEADLINE_EXCEEDED,
                  absl::StrCat(state->remaining, " of ", n,
                               " samples not scored before the caller's "
                               "deadline; no partial results"));
    }
  }
  for (const Result& r : state->results) ResultToProto(r, response->add_results());
  BatchCounter(grpc::StatusCode::OK)->Increment();
  return grpc::Status::OK;
}

}  // namespace cohort::reward
