#include "core/service.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/file.h"
#include "core/logging.h"
#include "core/metrics.h"
#include "core/rpc.h"
#include "core/status.h"

namespace cohort {
namespace {

std::string Errno(int err) { return std::strerror(err); }

// The thread that called BlockStopSignals (it blocks the signals, so they
// stay pending there for the signalfd).
std::atomic<pid_t> g_signal_tid{0};

// A thread that a library started before main() (LibTorch's static
// initialisers do) has SIGTERM/SIGINT unblocked, and the default action
// would kill the process there with no clean stop. This handler forwards
// such a signal to the blocking thread. Async-signal-safe.
void ForwardStopSignal(int sig) {
  pid_t tid = g_signal_tid.load();
  if (tid != 0) ::syscall(SYS_tgkill, ::getpid(), tid, sig);
}

}  // namespace

absl::Status WritePortFile(const std::string& path, const PortFile& ports) {
  nlohmann::json j = {
      {"grpc_port", ports.grpc_port}, {"metrics_port", ports.metrics_port}, {"pid", ports.pid}};
  return Annotate(WriteFileAtomically(path, j.dump() + "\n"), "cannot write port file");
}

absl::StatusOr<PortFile> ReadPortFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    // Not written yet, as far as a waiting reader is concerned.
    return absl::NotFoundError(absl::StrCat("no port file: ", text.status().message()));
  }
  nlohmann::json j = nlohmann::json::parse(*text, nullptr,
                                           /*allow_exceptions=*/false);
  auto port_field = [&j](const char* key, int64_t max, int64_t* out) {
    if (!j.is_object() || !j.contains(key) || !j[key].is_number_integer()) {
      return false;
    }
    *out = j[key].get<int64_t>();
    return *out >= 0 && *out <= max;
  };
  int64_t grpc_port = 0, metrics_port = 0, pid = 0;
  if (!port_field("grpc_port", 65535, &grpc_port) ||
      !port_field("metrics_port", 65535, &metrics_port) || !port_field("pid", INT32_MAX, &pid)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected {\"grpc_port\":N,\"metrics_port\":M,\"pid\":P}, got ",
                     text->substr(0, 200)));
  }
  PortFile ports;
  ports.grpc_port = static_cast<int>(grpc_port);
  ports.metrics_port = static_cast<int>(metrics_port);
  ports.pid = static_cast<pid_t>(pid);
  return ports;
}

absl::StatusOr<int> BlockStopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int err = ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
  if (err != 0) {
    return absl::InternalError(absl::StrCat("pthread_sigmask: ", Errno(err)));
  }
  int fd = ::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("signalfd: ", Errno(errno)));
  }
  g_signal_tid.store(static_cast<pid_t>(::syscall(SYS_gettid)));
  struct sigaction sa = {};
  sa.sa_handler = ForwardStopSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  return fd;
}

int ReadStopSignal(int signal_fd) {
  struct signalfd_siginfo info;
  ssize_t n;
  do {
    n = ::read(signal_fd, &info, sizeof(info));
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(sizeof(info))) return 0;
  return static_cast<int>(info.ssi_signo);
}

ServiceMain::ServiceMain(std::string role, std::string program, std::string description)
    : role_(std::move(role)), flags_(std::move(program), std::move(description)) {
  AddConfigFlags(flags_, &config_path_, &overrides_,
                 "Run config (YAML). Every role of a run reads the same file; "
                 "empty uses the built-in defaults.");
  flags_.String("host", &host_,
                "Address to listen on for gRPC and /metrics, e.g. 127.0.0.1 "
                "or 0.0.0.0 (all interfaces); empty uses the config (" +
                    role_ + ".host, else 127.0.0.1).");
  flags_.Int("port", &port_,
             "gRPC port; 0 picks a free one (see --port_file); -1 uses the "
             "config (" +
                 role_ + ".port, else 0).");
  flags_.Int("metrics_port", &metrics_port_,
             "HTTP port of /metrics (Prometheus) and /healthz; 0 picks a "
             "free one; -1 uses the config (" +
                 role_ + ".metrics_port).");
  flags_.String("port_file", &port_file_,
                "If set, once serving, atomically write "
                "{\"grpc_port\":N,\"metrics_port\":M,\"pid\":P} to this "
                "file (how `cohort run` learns ports picked with 0).");
  flags_.String("log_level", &log_level_,
                "debug | info | warning | error; empty uses the config "
                "(run.log_level).");
}

ServiceMain::~ServiceMain() {
  if (signal_fd_ >= 0) ::close(signal_fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void ServiceMain::RequestStop(absl::Status status) {
  absl::MutexLock lock(&stop_mu_);
  if (stop_requested_) return;
  stop_requested_ = true;
  stop_status_ = std::move(status);
  if (wake_fd_ >= 0) {
    uint64_t one = 1;
    ssize_t n = ::write(wake_fd_, &one, sizeof(one));
    (void)n;
  }
}

bool ServiceMain::Init(int argc, char** argv) {
  // Before anything can start a thread: every thread inherits the mask.
  absl::StatusOr<int> fd = BlockStopSignals();
  if (!fd.ok()) {
    std::fprintf(stderr, "%s: %s\n", argv[0], std::string(fd.status().message()).c_str());
    return false;
  }
  signal_fd_ = *fd;
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    std::fprintf(stderr, "%s: eventfd: %s\n", argv[0], Errno(errno).c_str());
    return false;
  }
  std::vector<std::string> positional = ParseFlagsOrExit(flags_, argc, argv);
  InitLogging(role_);
  if (!positional.empty()) {
    COHORT_LOG(ERROR) << "unexpected argument '" << positional[0] << "' (see --help)";
    return false;
  }
  absl::StatusOr<RunConfig> config = LoadConfigOrDefaults(config_path_, overrides_);
  if (!config.ok()) {
    COHORT_LOG(ERROR) << "bad config: " << config.status().message();
    return false;
  }
  config_ = *std::move(config);
  std::string level_text = log_level_.empty() ? config_.run.log_level : log_level_;
  LogLevel level;
  if (!ParseLogLevel(level_text, &level)) {
    COHORT_LOG(ERROR) << "--log_level: expected debug, info, warning or error, got \"" << level_text
                      << "\"";
    return false;
  }
  InitLogging(role_, level);
  if (port_ < -1 || port_ > 65535 || metrics_port_ < -1 || metrics_port_ > 65535) {
    COHORT_LOG(ERROR) << "--port and --metrics_port: expected -1 (config), 0 (free "
                         "port) or 1..65535, got "
                      << port_ << " and " << metrics_port_;
    return false;
  }
  return true;
}

int ServiceMain::Serve(const std::vector<grpc::Service*>& services) {
  return Serve(services, Hooks());
}

int ServiceMain::Serve(const std::vector<grpc::Service*>& services, Hooks hooks) {
  Listen listen;
  if (role_ == "learner") {
    listen = {config_.learner.host, config_.learner.port, config_.learner.metrics_port};
  } else if (role_ == "reward") {
    listen = {config_.reward.host, config_.reward.port, config_.reward.metrics_port};
  } else if (role_ == "actor") {
    listen.metrics_port = config_.actor.metrics_port;
  }
  return Serve(services, std::move(hooks), listen);
}

int ServiceMain::Serve(const std::vector<grpc::Service*>& services, Hooks hooks,
                       const Listen& listen) {
  // Defaults from the binary; flags win.
  std::string host = listen.host;
  int port = listen.port, metrics_port = listen.metrics_port;
  if (!host_.empty()) host = host_;
  if (port_ >= 0) port = static_cast<int>(port_);
  if (metrics_port_ >= 0) metrics_port = static_cast<int>(metrics_port_);

  absl::StatusOr<ServerOptions> options = ServerOptionsFromConfig(config_.security, host, port);
  if (!options.ok()) {
    COHORT_LOG(ERROR) << "security config: " << options.status().message();
    return 1;
  }
  options->serving_at_start = false;
  absl::StatusOr<std::unique_ptr<RpcServer>> server = RpcServer::Start(*options, services);
  if (!server.ok()) {
    COHORT_LOG(ERROR) << "cannot start the gRPC server on " << host << ":" << port << ": "
                      << server.status().message();
    return 1;
  }
  MetricsRegistry* registry = MetricsRegistry::Default();
  absl::StatusOr<std::unique_ptr<MetricsServer>> metrics =
      MetricsServer::Start(host, metrics_port, registry);
  if (!metrics.ok()) {
    COHORT_LOG(ERROR) << "cannot start the metrics server on " << host << ":" << metrics_port
                      << ": " << metrics.status().message();
    (*server)->Shutdown(absl::Seconds(1));
    return 1;
  }
  absl::Duration stop_deadline = absl::Seconds(config_.supervisor.stop_timeout_seconds);
  auto shutdown = [&] {
    (*server)->SetServing(false);
    // Leave a little of the deadline for the metrics server and exit.
    (*server)->Shutdown(stop_deadline * 0.8);
    (*metrics)->Stop();
  };
  if (!port_file_.empty()) {
    absl::Status s = WritePortFile(port_file_, {(*server)->port(), (*metrics)->port(), ::getpid()});
    if (!s.ok()) {
      COHORT_LOG(ERROR) << s.message();
      shutdown();
      return 1;
    }
  }
  if (hooks.on_serving) {
    absl::Status s = hooks.on_serving();
    if (!s.ok()) {
      COHORT_LOG(ERROR) << "start-up failed: " << s.message();
      if (hooks.on_stopping) hooks.on_stopping();
      shutdown();
      return 1;
    }
  }
  (*server)->SetServing(true);
  COHORT_LOG(INFO) << role_ << " serving on " << (*server)->address()
                   << ", metrics on :" << (*metrics)->port() << " (pid " << ::getpid() << ")";

  int sig = 0;
  bool requested = false;
  while (sig == 0 && !requested) {
    {
      absl::MutexLock lock(&stop_mu_);
      requested = stop_requested_;
    }
    if (requested) break;
    struct pollfd p[2] = {{signal_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    int n = ::poll(p, 2, -1);
    if (n < 0 && errno != EINTR) {
      COHORT_LOG(ERROR) << "poll on the signal fd failed: " << Errno(errno) << "; stopping";
      break;
    }
    if (n > 0 && (p[0].revents & POLLIN)) sig = ReadStopSignal(signal_fd_);
    if (n > 0 && (p[1].revents & POLLIN)) {
      uint64_t value;
      ssize_t r = ::read(wake_fd_, &value, sizeof(value));
      (void)r;
    }
  }
  absl::Status stop_status;
  {
    absl::MutexLock lock(&stop_mu_);
    stop_status = stop_status_;
  }
  absl::Time stop_start = absl::Now();
  if (sig != 0) {
    const char* name = sigabbrev_np(sig);
    COHORT_LOG(INFO) << role_ << " stopping (SIG" << (name != nullptr ? name : "?")
                     << "), deadline " << absl::FormatDuration(hooks.stopping_budget) << " + "
                     << absl::FormatDuration(stop_deadline);
    stop_status = absl::OkStatus();
  } else if (stop_status.ok()) {
    COHORT_LOG(INFO) << role_ << " stopping: its work is done";
  } else {
    COHORT_LOG(ERROR) << role_ << " stopping: " << stop_status.message();
  }
  (*server)->SetServing(false);
  if (hooks.on_stopping) {
    hooks.on_stopping();
    absl::Duration took = absl::Now() - stop_start;
    if (took > hooks.stopping_budget) {
      COHORT_LOG(WARNING) << "on_stopping took " << absl::FormatDuration(took) << ", over its "
                          << absl::FormatDuration(hooks.stopping_budget);
    }
  }
  shutdown();
  COHORT_LOG(INFO) << role_ << " stopped in "
                   << absl::FormatDuration(
                          absl::Trunc(absl::Now() - stop_start, absl::Milliseconds(1)));
  return stop_status.ok() ? 0 : 1;
}

}  // namespace cohort
