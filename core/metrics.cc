#include "core/metrics.h"

#include <dirent.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <fstream>
#include <sstream>
#include <thread>

#include <httplib.h>

#include "absl/strings/str_cat.h"
#include "core/logging.h"

namespace cohort {
namespace {

enum Type { kCounter = 0, kGauge = 1, kHistogram = 2 };
const char* TypeName(int type) {
  switch (type) {
    case kCounter:
      return "counter";
    case kGauge:
      return "gauge";
    default:
      return "histogram";
  }
}

bool IsNameChar(char c, bool first, bool allow_colon) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') return true;
  if (allow_colon && c == ':') return true;
  return !first && c >= '0' && c <= '9';
}

bool ValidName(const std::string& name, bool allow_colon) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (!IsNameChar(name[i], i == 0, allow_colon)) return false;
  }
  return true;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void CheckMetricName(const std::string& name, int type) {
  COHORT_CHECK(ValidName(name, /*allow_colon=*/true)) << "invalid metric name \"" << name << "\"";
  COHORT_CHECK(name.rfind("cohort_", 0) == 0)
      << "metric \"" << name << "\" must start with cohort_";
  if (type == kCounter) {
    COHORT_CHECK(EndsWith(name, "_total")) << "counter \"" << name << "\" must end in _total";
  } else {
    COHORT_CHECK(!EndsWith(name, "_total"))
        << TypeName(type) << " \"" << name << "\" must not end in _total (counters only)";
  }
  if (type == kHistogram) {
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      COHORT_CHECK(!EndsWith(name, suffix))
          << "histogram \"" << name << "\" must not end in " << suffix;
    }
  }
}

// Sorted by name so that label order does not matter; CHECKs the names.
Labels Canonical(const Labels& labels, int type) {
  Labels sorted = labels;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i) {
    const std::string& name = sorted[i].first;
    COHORT_CHECK(ValidName(name, /*allow_colon=*/false)) << "invalid label name \"" << name << "\"";
    COHORT_CHECK(name.rfind("__", 0) != 0) << "label name \"" << name << "\" is reserved";
    COHORT_CHECK(!(type == kHistogram && name == "le")) << "label \"le\" is reserved for buckets";
    COHORT_CHECK(i == 0 || sorted[i - 1].first != name) << "duplicate label \"" << name << "\"";
  }
  return sorted;
}

// Prometheus float text: shortest round-trip form, +Inf/-Inf/NaN.
std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, ec == std::errc() ? end : buf);
}

std::string EscapeLabelValue(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string EscapeHelp(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// {a="1",b="2"} (empty when there are no labels); `extra` is appended last.
std::string LabelText(const Labels& labels, const std::string& extra = "") {
  if (labels.empty() && extra.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i > 0) out += ",";
    absl::StrAppend(&out, labels[i].first, "=\"", EscapeLabelValue(labels[i].second), "\"");
  }
  if (!extra.empty()) absl::StrAppend(&out, labels.empty() ? "" : ",", extra);
  return out + "}";
}

void AtomicAdd(std::atomic<double>* value, double delta) {
  double current = value->load(std::memory_order_relaxed);
  while (!value->compare_exchange_weak(current, current + delta, std::memory_order_relaxed)) {
  }
}

}  // namespace

void Counter::Increment(double delta) {
  COHORT_CHECK(delta >= 0) << "counter increment must be >= 0, got " << delta;
  AtomicAdd(&value_, delta);
}

void Gauge::Add(double delta) { AtomicAdd(&value_, delta); }

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i < bounds_.size(); ++i) {
    COHORT_CHECK(std::isfinite(bounds_[i])) << "histogram bucket bounds must be finite";
    COHORT_CHECK(i == 0 || bounds_[i - 1] < bounds_[i])
        << "histogram buckets must increase strictly";
  }
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double value) {
  // Buckets are "less than or equal": the first bound >= value.
  size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  AtomicAdd(&sum_, value);
}

std::vector<uint64_t> Histogram::BucketCounts() const {
  std::vector<uint64_t> out(bounds_.size() + 1);
  for (size_t i = 0; i < out.size(); ++i) out[i] = counts_[i].load(std::memory_order_relaxed);
  return out;
}

uint64_t Histogram::Count() const {
  uint64_t total = 0;
  for (uint64_t c : BucketCounts()) total += c;
  return total;
}

std::vector<double> Histogram::ExponentialBuckets(double start, double factor, int count) {
  COHORT_CHECK(start > 0 && factor > 1 && count >= 1) << "bad exponential buckets";
  std::vector<double> out;
  for (int i = 0; i < count; ++i, start *= factor) out.push_back(start);
  return out;
}

std::vector<double> Histogram::LinearBuckets(double start, double width, int count) {
  COHORT_CHECK(width > 0 && count >= 1) << "bad linear buckets";
  std::vector<double> out;
  for (int i = 0; i < count; ++i) out.push_back(start + i * width);
  return out;
}

struct MetricsRegistry::Family {
  std::string name;
  std::string help;
  int type;
  std::vector<double> buckets;  // histograms only
  std::map<Labels, std::unique_ptr<Counter>> counters;
  std::map<Labels, std::unique_ptr<Gauge>> gauges;
  std::map<Labels, std::unique_ptr<Histogram>> histograms;
};

MetricsRegistry::MetricsRegistry() = default;
MetricsRegistry::~MetricsRegistry() = default;

MetricsRegistry* MetricsRegistry::Default() {
  static MetricsRegistry* registry = [] {
    auto* r = new MetricsRegistry();
    r->AddProcessMetrics();
    return r;
  }();
  return registry;
}

MetricsRegistry::Family* MetricsRegistry::GetFamily(const std::string& name,
                                                    const std::string& help, int type,
                                                    const std::vector<double>* buckets) {
  auto it = families_.find(name);
  if (it == families_.end()) {
    CheckMetricName(name, type);
    auto family = std::make_unique<Family>();
    family->name = name;
    family->help = help;
    family->type = type;
    if (buckets) family->buckets = *buckets;
    it = families_.emplace(name, std::move(family)).first;
  }
  Family* f = it->second.get();
  COHORT_CHECK(f->type == type) << "metric \"" << name << "\" registered as " << TypeName(f->type)
                                << ", requested as " << TypeName(type);
  COHORT_CHECK(f->help == help) << "metric \"" << name << "\" registered with another help text";
  COHORT_CHECK(!buckets || f->buckets == *buckets)
      << "histogram \"" << name << "\" registered with other buckets";
  return f;
}

Counter* MetricsRegistry::GetCounter(const std::string& name, const std::string& help,
                                     const Labels& labels) {
  Labels key = Canonical(labels, kCounter);
  absl::MutexLock lock(&mu_);
  auto& slot = GetFamily(name, help, kCounter, nullptr)->counters[key];
  if (!slot) slot = std::make_unique<Counter>();
  return slot.get();
}

Gauge* MetricsRegistry::GetGauge(const std::string& name, const std::string& help,
                                 const Labels& labels) {
  Labels key = Canonical(labels, kGauge);
  absl::MutexLock lock(&mu_);
  auto& slot = GetFamily(name, help, kGauge, nullptr)->gauges[key];
  if (!slot) slot = std::make_unique<Gauge>();
  return slot.get();
}

Histogram* MetricsRegistry::GetHistogram(const std::string& name, const std::string& help,
                                         std::vector<double> buckets, const Labels& labels) {
  Labels key = Canonical(labels, kHistogram);
  absl::MutexLock lock(&mu_);
  auto& slot = GetFamily(name, help, kHistogram, &buckets)->histograms[key];
  if (!slot) slot = std::make_unique<Histogram>(std::move(buckets));
  return slot.get();
}

void MetricsRegistry::AddCollector(std::function<void()> collector) {
  absl::MutexLock lock(&mu_);
  collectors_.push_back(std::move(collector));
}

namespace {

// Fields of /proc/self/stat after the command name; index 0 is field 3
// (state). Empty on failure.
std::vector<std::string> ProcSelfStat() {
  std::ifstream in("/proc/self/stat");
  std::string line;
  if (!std::getline(in, line)) return {};
  size_t paren = line.rfind(')');
  if (paren == std::string::npos) return {};
  std::istringstream rest(line.substr(paren + 1));
  std::vector<std::string> fields;
  for (std::string f; rest >> f;) fields.push_back(f);
  return fields;
}

// Seconds since the epoch when the process started, from the boot time and
// the process's start tick.
double ProcessStartTime() {
  std::vector<std::string> stat = ProcSelfStat();
  std::ifstream in("/proc/stat");
  double boot = 0;
  for (std::string key; in >> key;) {
    if (key == "btime") {
      in >> boot;
      break;
    }
  }
  if (stat.size() > 19 && boot > 0) {
    return boot + std::stod(stat[19]) / static_cast<double>(sysconf(_SC_CLK_TCK));  // field 22
  }
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

void MetricsRegistry::AddProcessMetrics() {
  GetGauge("cohort_process_start_time_seconds", "Start time of the process since the Unix epoch.")
      ->Set(ProcessStartTime());
  Gauge* rss = GetGauge("cohort_process_resident_memory_bytes", "Resident memory size.");
  Counter* cpu = GetCounter("cohort_process_cpu_seconds_total",
                            "User and system CPU time spent by the process.");
  Gauge* fds = GetGauge("cohort_process_open_fds", "Open file descriptors.");
  AddCollector([rss, cpu, fds] {
    long page = sysconf(_SC_PAGESIZE);
    std::ifstream statm("/proc/self/statm");
    long pages_total = 0, pages_resident = 0;
    if (statm >> pages_total >> pages_resident)
      rss->Set(static_cast<double>(pages_resident) * page);
    std::vector<std::string> stat = ProcSelfStat();
    if (stat.size() > 12) {  // utime, stime: fields 14, 15
      double seconds =
          (std::stod(stat[11]) + std::stod(stat[12])) / static_cast<double>(sysconf(_SC_CLK_TCK));
      double delta = seconds - cpu->Value();
      if (delta > 0) cpu->Increment(delta);
    }
    int open = 0;
    if (DIR* dir = opendir("/proc/self/fd")) {
      while (dirent* entry = readdir(dir)) {
        if (entry->d_name[0] != '.') ++open;
      }
      closedir(dir);
      fds->Set(open - 1);  // not counting the directory stream itself
    }
  });
}

std::string MetricsRegistry::Render() const {
  std::vector<std::function<void()>> collectors;
  {
    absl::MutexLock lock(&mu_);
    collectors = collectors_;
  }
  for (const auto& collect : collectors) collect();

  std::string out;
  absl::MutexLock lock(&mu_);
  for (const auto& [name, family] : families_) {
    absl::StrAppend(&out, "# HELP ", name, " ", EscapeHelp(family->help), "\n", "# TYPE ", name,
                    " ", TypeName(family->type), "\n");
    for (const auto& [labels, counter] : family->counters) {
      absl::StrAppend(&out, name, LabelText(labels), " ", FormatValue(counter->Value()), "\n");
    }
    for (const auto& [labels, gauge] : family->gauges) {
      absl::StrAppend(&out, name, LabelText(labels), " ", FormatValue(gauge->Value()), "\n");
    }
    for (const auto& [labels, histogram] : family->histograms) {
      // Read the buckets once so that _count equals the +Inf bucket.
      std::vector<uint64_t> counts = histogram->BucketCounts();
      double sum = histogram->Sum();
      uint64_t cumulative = 0;
      for (size_t i = 0; i < counts.size(); ++i) {
        cumulative += counts[i];
        std::string le = i < histogram->bounds().size() ? FormatValue(histogram->bounds()[i])
                                                        : std::string("+Inf");
        absl::StrAppend(&out, name, "_bucket", LabelText(labels, "le=\"" + le + "\""), " ",
                        cumulative, "\n");
      }
      absl::StrAppend(&out, name, "_sum", LabelText(labels), " ", FormatValue(sum), "\n");
      absl::StrAppend(&out, name, "_count", LabelText(labels), " ", cumulative, "\n");
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// MetricsServer

struct MetricsServer::Impl {
  httplib::Server server;
  std::thread thread;
  absl::Mutex mu;
  bool stopped ABSL_GUARDED_BY(mu) = false;
};

MetricsServer::MetricsServer(std::unique_ptr<Impl> impl, int port)
    : impl_(std::move(impl)), port_(port) {}

MetricsServer::~MetricsServer() { Stop(); }

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& host,
                                                                    int port,
                                                                    MetricsRegistry* registry) {
  COHORT_CHECK(registry != nullptr);
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics port: expected 0..65535, got ", port));
  }
  auto impl = std::make_unique<Impl>();
  httplib::Server& server = impl->server;
  // Scrapes are rare and cheap: two threads are plenty.
  server.new_task_queue = [] { return new httplib::ThreadPool(2); };
  // httplib's default also sets SO_REUSEPORT, which would let a second
  // process bind the same port silently; keep only SO_REUSEADDR.
  server.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  server.Get("/metrics", [registry](const httplib::Request&, httplib::Response& res) {
    res.set_content(registry->Render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  server.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  int bound =
      port == 0 ? server.bind_to_any_port(host) : (server.bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen for /metrics on ", host, ":", port,
                                               " (address in use or not local?)"));
  }
  impl->thread = std::thread([s = &impl->server] { s->listen_after_bind(); });
  // Stop() only interrupts a server that is already running.
  for (int i = 0; i < 5000 && !server.is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return std::unique_ptr<MetricsServer>(new MetricsServer(std::move(impl), bound));
}

void MetricsServer::Stop() {
  absl::MutexLock lock(&impl_->mu);
  if (impl_->stopped) return;
  impl_->stopped = true;
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace cohort
