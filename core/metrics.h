// Prometheus metrics: counters, gauges, histograms, and a /metrics server.
//
//   auto* scored = MetricsRegistry::Default()->GetCounter(
//       "cohort_reward_samples_total", "Samples scored.", {{"task", "math"}});
//   scored->Increment();
//   ASSIGN_OR_RETURN(auto server, MetricsServer::Start("0.0.0.0", 0,
//                                                      MetricsRegistry::Default()));
//
// Naming rules (violations are programmer errors and CHECK-fail): names
// match [a-zA-Z_:][a-zA-Z0-9_:]* and start with "cohort_"; counters end in
// "_total"; other metrics must not; use base units (seconds, bytes) and say
// so in the name ("_seconds", "_bytes"). Label names match
// [a-zA-Z_][a-zA-Z0-9_]*, do not start with "__", and "le" is reserved.
//
// Thread-safety: everything here is thread-safe. Get* takes a lock (call it
// once and keep the pointer); Increment/Set/Add/Observe are lock-free.
// Metric objects live as long as their registry; the default registry lives
// for the whole process.
#ifndef COHORT_CORE_METRICS_H_
#define COHORT_CORE_METRICS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace cohort {

using Labels = std::vector<std::pair<std::string, std::string>>;

// A monotonically increasing value.
class Counter {
 public:
  // `delta` must be >= 0 (CHECK).
  void Increment(double delta = 1.0);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// A value that goes up and down.
class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double delta);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Counts observations into fixed buckets (upper bounds, inclusive); +Inf is
// implicit.
class Histogram {
 public:
  // `bounds` strictly increasing and finite (CHECK).
  explicit Histogram(std::vector<double> bounds);
  void Observe(double value);

  const std::vector<double>& bounds() const { return bounds_; }
  // Non-cumulative count per bucket; size bounds().size() + 1 (last: +Inf).
  std::vector<uint64_t> BucketCounts() const;
  uint64_t Count() const;
  double Sum() const { return sum_.load(std::memory_order_relaxed); }

  // Bucket helpers.
  static std::vector<double> ExponentialBuckets(double start, double factor, int count);
  static std::vector<double> LinearBuckets(double start, double width, int count);

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_.size() + 1
  std::atomic<double> sum_{0.0};
};

class MetricsRegistry {
 public:
  MetricsRegistry();
  ~MetricsRegistry();
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // The process-wide registry, with the process metrics registered
  // (cohort_process_start_time_seconds, cohort_process_resident_memory_bytes,
  // cohort_process_cpu_seconds_total, cohort_process_open_fds).
  static MetricsRegistry* Default();

  // The same name and labels (in any order) return the same object. The
  // same name with another type, help text or bucket layout CHECK-fails.
  Counter* GetCounter(const std::string& name, const std::string& help, const Labels& labels = {})
      ABSL_LOCKS_EXCLUDED(mu_);
  Gauge* GetGauge(const std::string& name, const std::string& help, const Labels& labels = {})
      ABSL_LOCKS_EXCLUDED(mu_);
  Histogram* GetHistogram(const std::string& name, const std::string& help,
                          std::vector<double> buckets, const Labels& labels = {})
      ABSL_LOCKS_EXCLUDED(mu_);

  // Runs `collector` at the start of every Render() (e.g. to refresh a gauge
  // from /proc). It must not call back into this registry's Get* or Render.
  void AddCollector(std::function<void()> collector) ABSL_LOCKS_EXCLUDED(mu_);

  // Registers the process metrics listed under Default().
  void AddProcessMetrics();

  // Prometheus text exposition format 0.0.4, families sorted by name.
  std::string Render() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Family;
  Family* GetFamily(const std::string& name, const std::string& help, int type,
                    const std::vector<double>* buckets) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<Family>> families_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void()>> collectors_ ABSL_GUARDED_BY(mu_);
};

// Serves GET /metrics (text/plain; version=0.0.4) and GET /healthz ("ok")
// over HTTP on its own thread.
class MetricsServer {
 public:
  // Binds host:port (0 picks a free port) and starts serving. `registry` is
  // not owned and must outlive the server.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& host, int port,
                                                              MetricsRegistry* registry);
  ~MetricsServer();  // Stop()s.

  int port() const { return port_; }
  // Stops serving and joins the thread. Idempotent.
  void Stop();

 private:
  struct Impl;
  MetricsServer(std::unique_ptr<Impl> impl, int port);
  std::unique_ptr<Impl> impl_;
  const int port_;
};

}  // namespace cohort

#endif  // COHORT_CORE_METRICS_H_
