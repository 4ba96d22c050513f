// Per-task reward composition and dispatch on a worker pool.
//
// A Scorer is built from the run config's reward tasks. For a sample it
// looks up the task (unknown task: INVALID naming it), computes `accuracy`
// with the task's verifier (math, gsm8k, countdown, code), plus `format`,
// `language` and `length` when the task gives them a weight, and
//   reward = sum over weighted components of weight * value.
// Any non-OK component makes the sample non-OK: its status and reason are
// carried and `reward` is NaN ("not a number", never a silent 0); the
// components that did compute are still reported.
//
// A task with an `endpoint` is scored by calling that cohort.v1.Reward
// server (a user's reward model, say) with the sample; its answer is taken
// as is. RPC failures are ERROR, its deadline TIMEOUT.
//
// Time limit: each sample has sample_timeout_seconds from when a worker
// STARTS verifying it (queueing time does not count). A verification that
// overruns is answered TIMEOUT at once by a watchdog; the worker finishes
// it in the background and its late result is dropped. The pure C++
// verifiers are bounded; `code` gives the sandbox the sample's time as its
// budget (a program that loops fails its tests, status OK), and is TIMEOUT
// only if the verifier itself overruns that by more than a second.
//
// Thread-safety: all methods are thread-safe. Callbacks run on a worker or
// the watchdog thread, with no lock held; they must not block for long.
#ifndef COHORT_REWARD_SERVER_SCORER_H_
#define COHORT_REWARD_SERVER_SCORER_H_

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/channel.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/config.h"
#include "core/metrics.h"
#include "reward_server/sample.h"
#include "reward_server/sandbox.h"

namespace cohort::reward {

struct ScorerOptions {
  int workers = 0;                       // 0 = number of cores
  double sample_timeout_seconds = 10.0;  // > 0
  std::map<std::string, RewardTaskSpec> tasks;
  // Used when a task's verifier is `code`. The sandbox's per-run wall limit
  // is capped by the sample timeout.
  SandboxOptions sandbox;
  // Makes channels for tasks with an endpoint; default: insecure channel.
  std::function<absl::StatusOr<std::shared_ptr<grpc::Channel>>(const std::string& target)>
      make_channel;
  // Where the sample metrics go; default MetricsRegistry::Default().
  MetricsRegistry* metrics = nullptr;
};

// Options from the run config's reward section (tasks, workers, timeout).
ScorerOptions ScorerOptionsFromConfig(const RewardSection& reward);

class Scorer {
 public:
  using Callback = std::function<void(Result)>;

  // Validates every task (verifier, format, language, weights, length
  // settings); errors are INVALID_ARGUMENT naming the task and field. When
  // a task uses `code`, sets up the sandbox; if that fails the Scorer is
  // still created, logs why, and answers `code` samples with ERROR
  // (sandbox_error() says why) — it never runs code unsandboxed.
  static absl::StatusOr<std::unique_ptr<Scorer>> Create(ScorerOptions options);
  ~Scorer();  // Stop()s.

  // Queues `sample`; `done` is called exactly once with its result (or a
  // TIMEOUT, or ERROR "scorer stopped"). If `*cancelled` becomes true
  // before a worker starts the sample, it is skipped and `done` gets an
  // ERROR result saying so.
  void Submit(Sample sample, Callback done, std::shared_ptr<std::atomic<bool>> cancelled = nullptr)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Queues every sample of `samples`; `done` is called exactly once, by the
  // thread that finishes the last of them (possibly this one, before
  // SubmitBatch returns), with one result per sample in request order.
  // `cancelled` as for Submit. Returns how many samples are not finished
  // yet (for error messages); it reaches 0 just before `done` runs.
  using BatchCallback = std::function<void(std::vector<Result>)>;
  std::shared_ptr<const std::atomic<size_t>> SubmitBatch(
      std::vector<Sample> samples, BatchCallback done,
      std::shared_ptr<std::atomic<bool>> cancelled = nullptr) ABSL_LOCKS_EXCLUDED(mu_);

  // Scores `samples` on the pool and returns their results in order.
  // DEADLINE_EXCEEDED when `deadline` passes first (samples not started
  // are cancelled).
  absl::StatusOr<std::vector<Result>> ScoreBatch(std::vector<Sample> samples, absl::Time deadline)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Scores on the calling thread, without the pool's time limit.
  Result ScoreNow(const Sample& sample);

  // Samples queued and not yet started.
  int queue_depth() const ABSL_LOCKS_EXCLUDED(mu_);
  int workers() const { return static_cast<int>(threads_.size()); }
  // Why `code` samples get ERROR; empty when the sandbox works or no task
  // uses it.
  const std::string& sandbox_error() const { return sandbox_error_; }
  const std::map<std::string, RewardTaskSpec>& tasks() const { return options_.tasks; }

  // Stops the workers: queued samples get ERROR "scorer stopped"; running
  // ones finish. Idempotent.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Job;
  struct TaskMetrics;
  explicit Scorer(ScorerOptions options);
  // The steps of Create, in order.
  absl::Status ConnectEndpoints();  // one channel per remote endpoint
  void SetUpSandbox();              // sandbox_, or sandbox_error_ saying why not
  void RegisterMetrics();
  void StartThreads();  // the workers and the watchdog
  void WorkerLoop();
  void WatchdogLoop();
  Result Verify(const Sample& sample);
  Result VerifyRemote(const Sample& sample, const std::string& endpoint);
  double LimitSeconds(const Sample& sample) const;
  void Record(const std::string& task, const Result& result);

  // Constant after construction.
  ScorerOptions options_;
  std::unique_ptr<Sandbox> sandbox_;
  std::string sandbox_error_;
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels_;
  std::map<std::string, std::unique_ptr<TaskMetrics>> task_metrics_;
  Gauge* queue_gauge_ = nullptr;
  Histogram* verify_seconds_ = nullptr;
  std::vector<std::thread> threads_;
  std::thread watchdog_;

  mutable absl::Mutex mu_;
  std::deque<Job*> queue_ ABSL_GUARDED_BY(mu_);
  std::set<Job*> running_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace cohort::reward

#endif  // COHORT_REWARD_SERVER_SCORER_H_
