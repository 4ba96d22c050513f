#include "reward_server/scorer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <optional>
#include <utility>

#include <grpcpp/create_channel.h>
#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cohort/v1/reward.grpc.pb.h"
#include "core/logging.h"
#include "core/status.h"
#include "core/verifier_names.h"
#include "reward_server/code_verifier.h"
#include "reward_server/verifiers/verifiers.h"

namespace cohort::reward {
namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kComponents[] = {"accuracy", "format", "language", "length"};

Result NonOk(const std::string& id, Status status, std::string reason) {
  Result r;
  r.id = id;
  r.status = status;
  r.reason = std::move(reason);
  r.reward = std::numeric_limits<double>::quiet_NaN();
  return r;
}

Status FromProto(cohort::v1::RewardStatus s) {
  switch (s) {
    case cohort::v1::REWARD_STATUS_OK:
      return Status::kOk;
    case cohort::v1::REWARD_STATUS_INVALID:
      return Status::kInvalid;
    case cohort::v1::REWARD_STATUS_TIMEOUT:
      return Status::kTimeout;
    default:
      return Status::kError;
  }
}

}  // namespace

struct Scorer::Job {
  Sample sample;
  Callback done;
  std::shared_ptr<std::atomic<bool>> cancelled;
  Clock::time_point started{};
  double limit_seconds = 0;
  bool finished = false;  // guarded by Scorer::mu_
};

struct Scorer::TaskMetrics {
  Counter* by_status[4] = {};
};

ScorerOptions ScorerOptionsFromConfig(const RewardSection& reward) {
  ScorerOptions o;
  o.workers = reward.workers;
  o.sample_timeout_seconds = reward.sample_timeout_seconds;
  o.tasks = reward.tasks;
  return o;
}

Scorer::Scorer(ScorerOptions options) : options_(std::move(options)) {}

namespace {

// Checks one task and fills in its verifier from its name ("math" task:
// math verifier) when it has none and no endpoint.
absl::Status ValidateTask(const std::string& name, RewardTaskSpec& spec) {
  const std::string where = absl::StrCat("reward.tasks.", name);
  if (!spec.endpoint.empty()) return absl::OkStatus();
  if (spec.verifier.empty() && IsVerifierName(name)) spec.verifier = name;
  if (!IsVerifierName(spec.verifier)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".verifier: expected ",
                                                   VerifierNamesText(), ", got \"", spec.verifier,
                                                   "\" (or set an endpoint)"));
  }
  for (const auto& [key, weight] : spec.weights) {
    if (std::find(std::begin(kComponents), std::end(kComponents), key) == std::end(kComponents)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".weights.", key,
                       ": unknown component (expected accuracy, format, language or "
                       "length)"));
    }
    if (!std::isfinite(weight)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".weights.", key, ": not a finite number"));
    }
  }
  if (spec.weights.count("format") && !ParseFormatKind(spec.format).has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".format: expected r1, r1-zero or none, got \"", spec.format, "\""));
  }
  if (spec.weights.count("language") && spec.language != "en" && spec.language != "zh") {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".language: a language weight needs language en or zh, got \"",
                     spec.language, "\""));
  }
  if (spec.weights.count("length") &&
      (spec.max_length <= 0 || spec.cache_length < 0 || spec.cache_length > spec.max_length)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where,
                     ": a length weight needs max_length > 0 and 0 <= "
                     "cache_length <= max_length"));
  }
  return absl::OkStatus();
}

// Checks the options as a whole, then every task.
absl::Status ValidateOptions(ScorerOptions& options) {
  if (!(options.sample_timeout_seconds > 0)) {
    return absl::InvalidArgumentError("reward.sample_timeout_seconds: expected a number > 0");
  }
  if (options.workers < 0) {
    return absl::InvalidArgumentError("reward.workers: expected >= 0");
  }
  if (options.tasks.empty()) {
    return absl::InvalidArgumentError("reward.tasks: no task configured");
  }
  for (auto& [name, spec] : options.tasks) RETURN_IF_ERROR(ValidateTask(name, spec));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Scorer>> Scorer::Create(ScorerOptions options) {
  RETURN_IF_ERROR(ValidateOptions(options));
  std::unique_ptr<Scorer> scorer(new Scorer(std::move(options)));
  RETURN_IF_ERROR(scorer->ConnectEndpoints());
  const bool needs_sandbox = std::any_of(
      scorer->options_.tasks.begin(), scorer->options_.tasks.end(), [](const auto& task) {
        return task.second.endpoint.empty() && task.second.verifier == "code";
      });
  if (needs_sandbox) scorer->SetUpSandbox();
  scorer->RegisterMetrics();
  scorer->StartThreads();
  return scorer;
}

absl::Status Scorer::ConnectEndpoints() {
  if (!options_.make_channel) {
    options_.make_channel =
        [](const std::string& target) -> absl::StatusOr<std::shared_ptr<grpc::Channel>> {
      return grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
    };
  }
  for (const auto& [name, spec] : options_.tasks) {
    if (spec.endpoint.empty() || channels_.count(spec.endpoint)) {
      continue;
    }
    auto channel = options_.make_channel(spec.endpoint);
    if (!channel.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("reward.tasks.", name, ".endpoint: ", channel.status().message()));
    }
    channels_[spec.endpoint] = *channel;
  }
  return absl::OkStatus();
}

void Scorer::SetUpSandbox() {
  SandboxOptions so = options_.sandbox;
  so.limits.wall_seconds = std::min(so.limits.wall_seconds, options_.sample_timeout_seconds);
  auto sandbox = Sandbox::Create(so);
  if (sandbox.ok()) {
    sandbox_ = std::move(*sandbox);
    COHORT_LOG(INFO) << "code sandbox ready (bubblewrap"
                     << (sandbox_->uses_uid_pool() ? ", uid pool" : "") << ")";
  } else {
    sandbox_error_ = std::string(sandbox.status().message());
    COHORT_LOG(ERROR) << sandbox_error_;
  }
}

void Scorer::RegisterMetrics() {
  MetricsRegistry* reg = options_.metrics ? options_.metrics : MetricsRegistry::Default();
  auto make_task_metrics = [&](const std::string& task) {
    auto tm = std::make_unique<TaskMetrics>();
    for (Status s : {Status::kOk, Status::kInvalid, Status::kTimeout, Status::kError}) {
      tm->by_status[static_cast<int>(s)] =
          reg->GetCounter("cohort_reward_samples_total", "Samples scored, by task and status.",
                          {{"task", task}, {"status", StatusName(s)}});
    }
    return tm;
  };
  for (const auto& [name, spec] : options_.tasks) {
    task_metrics_[name] = make_task_metrics(name);
  }
  // Requests naming no configured task share one label value, so a caller
  // cannot grow the metric without bound.
  task_metrics_["(unknown)"] = make_task_metrics("(unknown)");
  queue_gauge_ = reg->GetGauge("cohort_reward_queue_depth", "Samples queued and not yet started.");
  verify_seconds_ = reg->GetHistogram("cohort_reward_verify_seconds",
                                      "Wall time verifying one sample, from its start.",
                                      Histogram::ExponentialBuckets(1e-5, 4, 12));
}

void Scorer::StartThreads() {
  int workers =
      options_.workers > 0 ? options_.workers : std::max(1u, std::thread::hardware_concurrency());
  for (int i = 0; i < workers; ++i) {
    threads_.emplace_back([s = this] { s->WorkerLoop(); });
  }
  watchdog_ = std::thread([s = this] { s->WatchdogLoop(); });
}

Scorer::~Scorer() { Stop(); }

void Scorer::Stop() {
  std::deque<Job*> dropped;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    dropped.swap(queue_);
  }
  queue_gauge_->Set(0);
  for (Job* job : dropped) {
    job->done(NonOk(job->sample.id, Status::kError, "scorer stopped"));
    delete job;
  }
  for (auto& t : threads_) t.join();
  watchdog_.join();
}

int Scorer::queue_depth() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

double Scorer::LimitSeconds(const Sample& sample) const {
  auto it = options_.tasks.find(sample.task);
  if (it != options_.tasks.end() && it->second.endpoint.empty() && it->second.verifier == "code") {
    // The sandbox works within sample_timeout_seconds; only the verifier
    // itself overrunning that is a TIMEOUT.
    return options_.sample_timeout_seconds + 1.0;
  }
  return options_.sample_timeout_seconds;
}

void Scorer::Submit(Sample sample, Callback done, std::shared_ptr<std::atomic<bool>> cancelled) {
  auto* job = new Job{std::move(sample), std::move(done), std::move(cancelled)};
  job->limit_seconds = LimitSeconds(job->sample);
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_) {
      queue_.push_back(job);
      queue_gauge_->Set(static_cast<double>(queue_.size()));
      return;
    }
  }
  job->done(NonOk(job->sample.id, Status::kError, "scorer stopped"));
  delete job;
}

void Scorer::WorkerLoop() {
  while (true) {
    Job* job = nullptr;
    bool skipped = false;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](Scorer* s)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) { return s->stopping_ || !s->queue_.empty(); },
          this));
      if (queue_.empty()) return;  // stopping
      job = queue_.front();
      queue_.pop_front();
      queue_gauge_->Set(static_cast<double>(queue_.size()));
      skipped = job->cancelled && job->cancelled->load();
      if (skipped) {
        job->finished = true;
      } else {
        job->started = Clock::now();
        running_.insert(job);
      }
    }
    if (skipped) {
      job->done(NonOk(job->sample.id, Status::kError, "cancelled before it started (caller gone)"));
      delete job;
      continue;
    }
    Result result = Verify(job->sample);
    result.verify_seconds = std::chrono::duration<double>(Clock::now() - job->started).count();
    bool deliver;
    {
      absl::MutexLock lock(&mu_);
      running_.erase(job);
      deliver = !job->finished;
      job->finished = true;
    }
    if (deliver) {
      Record(job->sample.task, result);
      job->done(std::move(result));
    }
    delete job;
  }
}

void Scorer::WatchdogLoop() {
  while (true) {
    struct Expired {
      Callback done;
      std::string task;
      Result result;
    };
    std::vector<Expired> expired;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_ && running_.empty()) return;
      auto now = Clock::now();
      Clock::time_point next = now + std::chrono::milliseconds(100);
      for (Job* job : running_) {
        if (job->finished) continue;
        auto due = job->started +
                   std::chrono::microseconds(static_cast<int64_t>(job->limit_seconds * 1e6));
        if (due <= now) {
          job->finished = true;
          Result r = NonOk(job->sample.id, Status::kTimeout,
                           absl::StrCat("verification overran its limit of ", job->limit_seconds,
                                        " s (task '", job->sample.task, "')"));
          r.verify_seconds = std::chrono::duration<double>(now - job->started).count();
          // The worker owns (and later deletes) the job; the callback is
          // taken from it here, once, under the lock.
          expired.push_back({std::move(job->done), job->sample.task, std::move(r)});
        } else {
          next = std::min(next, due);
        }
      }
      if (expired.empty()) {
        auto wait = std::chrono::duration_cast<std::chrono::microseconds>(next - now).count();
        mu_.AwaitWithTimeout(absl::Condition(
                                 +[](Scorer* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) {
                                   return s->stopping_ && s->running_.empty();
                                 },
                                 this),
                             absl::Microseconds(std::max<int64_t>(wait, 1000)));
        continue;
      }
    }
    for (Expired& e : expired) {
      COHORT_LOG(WARNING) << "sample " << e.result.id << ": " << e.result.reason;
      Record(e.task, e.result);
      e.done(std::move(e.result));
    }
  }
}

void Scorer::Record(const std::string& task, const Result& result) {
  auto it = task_metrics_.find(task);
  if (it == task_metrics_.end()) it = task_metrics_.find("(unknown)");
  it->second->by_status[static_cast<int>(result.status)]->Increment();
  verify_seconds_->Observe(result.verify_seconds);
}

Result Scorer::ScoreNow(const Sample& sample) {
  auto start = Clock::now();
  Result r = Verify(sample);
  r.verify_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  Record(sample.task, r);
  return r;
}

Result Scorer::Verify(const Sample& sample) {
  if (sample.task.empty()) {
    return NonOk(sample.id, Status::kInvalid, "task: empty");
  }
  auto it = options_.tasks.find(sample.task);
  if (it == options_.tasks.end()) {
    std::vector<std::string> names;
    for (const auto& [name, spec] : options_.tasks) names.push_back(name);
    return NonOk(sample.id, Status::kInvalid,
                 absl::StrCat("unknown task '", sample.task,
                              "' (configured: ", absl::StrJoin(names, ", "), ")"));
  }
  const RewardTaskSpec& spec = it->second;
  if (!spec.endpoint.empty()) return VerifyRemote(sample, spec.endpoint);

  Result result;
  result.id = sample.id;
  std::vector<std::pair<std::string, ComponentResult>> parts;
  // accuracy: always computed, it is the task's verdict.
  ComponentResult acc;
  try {
    MathOptions math_options;
    math_options.decimal_comma = spec.decimal_comma;
    math_options.relative_tolerance = spec.relative_tolerance;
    math_options.ordered_lists = spec.ordered_lists;
    if (spec.verifier == "math") {
      acc = MathAccuracy(sample, math_options);
    } else if (spec.verifier == "gsm8k") {
      acc = Gsm8kAccuracy(sample, math_options);
    } else if (spec.verifier == "countdown") {
      acc = CountdownAccuracy(sample);
    } else if (spec.verifier == "code") {
      CodeVerifierOptions co;
      co.budget_seconds = options_.sample_timeout_seconds;
      acc = CodeAccuracy(sample, sandbox_.get(), sandbox_error_, co);
    } else {
      // A name in core/verifier_names.h without a branch here.
      acc = ComponentResult::Error(
          absl::StrCat("verifier \"", spec.verifier, "\" is not implemented by the scorer"));
    }
  } catch (const std::exception& e) {
    acc = ComponentResult::Error(absl::StrCat(spec.verifier, " verifier failed: ", e.what()));
  }
  parts.emplace_back("accuracy", std::move(acc));
  if (spec.weights.count("format")) {
    parts.emplace_back("format", FormatReward(sample, *ParseFormatKind(spec.format)));
  }
  if (spec.weights.count("language")) {
    parts.emplace_back("language", LanguageConsistency(sample, spec.language));
  }
  if (spec.weights.count("length")) {
    parts.emplace_back(
        "length", OverlongPenalty(sample.completion_tokens, spec.max_length, spec.cache_length));
  }
  double reward = 0;
  for (auto& [name, c] : parts) {
    if (c.status != Status::kOk) {
      if (result.status == Status::kOk) {
        result.status = c.status;
        result.reason = absl::StrCat(name, ": ", c.reason);
      }
      continue;
    }
    result.components[name] = c.value;
    auto w = spec.weights.find(name);
    if (w != spec.weights.end()) reward += w->second * c.value;
  }
  if (result.status == Status::kOk) {
    result.reward = reward;
    result.reason = parts[0].second.reason;
  } else {
    result.reward = std::numeric_limits<double>::quiet_NaN();
  }
  return result;
}

Result Scorer::VerifyRemote(const Sample& sample, const std::string& endpoint) {
  auto stub = cohort::v1::Reward::NewStub(channels_.at(endpoint));
  cohort::v1::ScoreRequest request;
  auto* s = request.add_samples();
  s->set_id(sample.id);
  s->set_task(sample.task);
  s->set_prompt(sample.prompt);
  s->set_completion(sample.completion);
  s->set_answer(sample.answer);
  if (!sample.extra.empty()) s->set_extra_json(sample.extra.dump());
  s->set_completion_tokens(sample.completion_tokens);
  grpc::ClientContext ctx;
  ctx.set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::microseconds(static_cast<int64_t>(options_.sample_timeout_seconds * 1e6)));
  cohort::v1::ScoreResponse response;
  grpc::Status st = stub->Score(&ctx, request, &response);
  if (st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return NonOk(sample.id, Status::kTimeout,
                 absl::StrCat("remote reward server ", endpoint, " did not answer within ",
                              options_.sample_timeout_seconds, " s"));
  }
  if (!st.ok()) {
    return NonOk(sample.id, Status::kError,
                 absl::StrCat("remote reward server ", endpoint, ": ", st.error_message(),
                              " (code ", static_cast<int>(st.error_code()), ")"));
  }
  if (response.results_size() != 1) {
    return NonOk(sample.id, Status::kError,
                 absl::StrCat("remote reward server ", endpoint, " returned ",
                              response.results_size(), " results for 1 sample"));
  }
  const auto& r = response.results(0);
  Result out;
  out.id = sample.id;
  out.status = FromProto(r.status());
  out.reason = r.reason();
  for (const auto& [k, v] : r.components()) out.components[k] = v;
  out.reward = out.status == Status::kOk ? r.reward() : std::numeric_limits<double>::quiet_NaN();
  if (out.status != Status::kOk && out.reason.empty()) {
    out.reason = absl::StrCat("remote reward server ", endpoint, " gave no reason");
  }
  return out;
}

std::shared_ptr<const std::atomic<size_t>> Scorer::SubmitBatch(
    std::vector<Sample> samples, BatchCallback done, std::shared_ptr<std::atomic<bool>> cancelled) {
  struct Batch {
    explicit Batch(size_t n, BatchCallback cb) : results(n), done(std::move(cb)) {
      remaining->store(n);
    }
    std::vector<Result> results;  // slot i written only by sample i's callback
    BatchCallback done;
    std::shared_ptr<std::atomic<size_t>> remaining = std::make_shared<std::atomic<size_t>>();
  };
  auto batch = std::make_shared<Batch>(samples.size(), std::move(done));
  std::shared_ptr<const std::atomic<size_t>> remaining = batch->remaining;
  if (samples.empty()) {
    batch->done({});
    return remaining;
  }
  for (size_t i = 0; i < samples.size(); ++i) {
    Submit(
        std::move(samples[i]),
        [batch, i](Result r) {
          batch->results[i] = std::move(r);
          // acq_rel: the last callback sees every other slot's write.
          if (batch->remaining->fetch_sub(1, std::memory_order_acq_rel) == 1) {
            batch->done(std::move(batch->results));
          }
        },
        cancelled);
  }
  return remaining;
}

absl::StatusOr<std::vector<Result>> Scorer::ScoreBatch(std::vector<Sample> samples,
                                                       absl::Time deadline) {
  struct Wait {
    absl::Mutex mu;
    std::optional<std::vector<Result>> results ABSL_GUARDED_BY(mu);
  };
  auto wait = std::make_shared<Wait>();
  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  const size_t n = samples.size();
  auto remaining = SubmitBatch(
      std::move(samples),
      [wait](std::vector<Result> results) {
        absl::MutexLock lock(&wait->mu);
        wait->results = std::move(results);
      },
      cancelled);
  absl::MutexLock lock(&wait->mu);
  bool done = wait->mu.AwaitWithDeadline(
      absl::Condition(
          +[](Wait* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(w->mu) { return w->results.has_value(); },
          wait.get()),
      deadline);
  if (!done) {
    cancelled->store(true);
    return absl::DeadlineExceededError(
        absl::StrCat(remaining->load(), " of ", n, " samples not scored before the deadline"));
  }
  return std::move(*wait->results);
}

}  // namespace cohort::reward
