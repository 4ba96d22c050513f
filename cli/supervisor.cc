#include "cli/supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/logging.h"
#include "core/service.h"
#include "core/status.h"
#include "core/subprocess.h"

namespace cohort::cli {
namespace {

namespace fs = std::filesystem;

constexpr absl::Duration kTick = absl::Milliseconds(100);
constexpr size_t kReportLines = 20;

std::string SignalName(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev != nullptr ? absl::StrCat("SIG", abbrev) : "unknown signal";
}

// Waits up to `timeout` for `fd` to become readable; false for fd < 0.
bool WaitReadable(int fd, absl::Duration timeout) {
  int ms = static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(timeout)));
  if (fd < 0) {
    if (ms > 0) ::poll(nullptr, 0, ms);
    return false;
  }
  struct pollfd p = {fd, POLLIN, 0};
  int n;
  do {
    n = ::poll(&p, 1, ms);
  } while (n < 0 && errno == EINTR);
  return n > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR)) != 0;
}

}  // namespace

std::string DescribeWaitStatus(int wait_status) {
  if (WIFEXITED(wait_status)) {
    return absl::StrCat("exited with code ", WEXITSTATUS(wait_status));
  }
  if (WIFSIGNALED(wait_status)) {
    int sig = WTERMSIG(wait_status);
    return absl::StrCat("killed by signal ", sig, " (", SignalName(sig), ")",
                        WCOREDUMP(wait_status) ? ", core dumped" : "");
  }
  return absl::StrCat("ended with wait status ", wait_status);
}

std::vector<std::string> TailLines(const std::string& path, size_t n) {
  std::ifstream in(path, std::ios::binary);
  if (!in || n == 0) return {};
  in.seekg(0, std::ios::end);
  std::streamoff size = in.tellg();
  constexpr std::streamoff kMax = 1 << 20;
  std::streamoff start = size > kMax ? size - kMax : 0;
  in.seekg(start);
  std::string text(static_cast<size_t>(size - start), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  // A partial first line (cut by the 1 MiB window) is dropped.
  if (start > 0 && !lines.empty()) lines.erase(lines.begin());
  if (lines.size() > n) lines.erase(lines.begin(), lines.end() - n);
  return lines;
}

absl::StatusOr<std::string> FindRoleBinary(const std::string& binary, const std::string& role_dir,
                                           const std::string& bin_dir,
                                           const std::string& self_exe) {
  std::vector<fs::path> candidates;
  if (!bin_dir.empty()) {
    candidates.push_back(fs::path(bin_dir) / binary);
  } else {
    fs::path dir = fs::path(self_exe).parent_path();
    candidates.push_back(dir / binary);
    candidates.push_back(dir.parent_path() / role_dir / binary);
  }
  std::vector<std::string> tried;
  for (const fs::path& p : candidates) {
    std::error_code ec;
    fs::path abs = fs::weakly_canonical(p, ec);
    if (ec) abs = p;
    if (::access(abs.c_str(), X_OK) == 0 && fs::is_regular_file(abs, ec)) {
      return abs.string();
    }
    tried.push_back(abs.string());
  }
  return absl::NotFoundError(
      absl::StrCat("cannot find the executable ", binary, " (tried ", absl::StrJoin(tried, ", "),
                   "); build it (it needs COHORT_WITH_TORCH=ON for the learner and the "
                   "actor) or point --bin_dir at the directory that holds it"));
}

// ---------------------------------------------------------------------------
// ChildProcess

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Spawn(
    const std::string& binary, const std::vector<std::string>& args, const std::string& log_path) {
  int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open log file ", log_path, ": ", std::strerror(errno)));
  }
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) {
    int err = errno;
    ::close(log_fd);
    return absl::InternalError(absl::StrCat("cannot open /dev/null: ", std::strerror(err)));
  }
  SpawnOptions spawn;
  spawn.binary = binary;
  spawn.argv.push_back(binary);
  spawn.argv.insert(spawn.argv.end(), args.begin(), args.end());
  spawn.fds = {null_fd, log_fd, log_fd};
  spawn.new_process_group = true;
  spawn.die_with_parent = true;
  absl::StatusOr<pid_t> pid = cohort::Spawn(spawn);
  ::close(log_fd);
  ::close(null_fd);
  if (!pid.ok()) return pid.status();
  return std::unique_ptr<ChildProcess>(new ChildProcess(*pid, log_path));
}

ChildProcess::~ChildProcess() {
  if (!exited_) {
    Signal(SIGKILL);
    WaitFor(absl::InfiniteDuration());
  }
}

bool ChildProcess::Exited() {
  if (exited_) return true;
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid_ || (r < 0 && errno == ECHILD)) {
    exited_ = true;
    wait_status_ = status;
    // The group may still hold grandchildren; they die with their leader's
    // group signal in Stop(), or here if the leader is already gone.
    ::kill(-pid_, SIGKILL);
  }
  return exited_;
}

bool ChildProcess::WaitFor(absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  absl::Duration step = absl::Milliseconds(2);
  while (!Exited()) {
    absl::Time now = absl::Now();
    if (now >= deadline) return false;
    absl::SleepFor(std::min(step, deadline - now));
    step = std::min(step * 2, absl::Milliseconds(50));
  }
  return true;
}

void ChildProcess::Signal(int sig) {
  if (exited_) return;
  // The child is our unreaped child, so its pid (and group id) cannot have
  // been reused yet.
  ::kill(-pid_, sig);
}

void ChildProcess::Stop(absl::Duration timeout) {
  if (Exited()) return;
  Signal(SIGTERM);
  if (!WaitFor(timeout)) {
    Signal(SIGKILL);
    WaitFor(absl::InfiniteDuration());
  }
}

// ---------------------------------------------------------------------------
// Supervisor

Supervisor::Supervisor(SupervisorOptions options) : options_(std::move(options)) {
  auto add = [this](std::string name, Kind kind, const std::string& binary) {
    auto role = std::make_unique<Role>();
    role->name = std::move(name);
    role->kind = kind;
    role->binary = binary;
    roles_.push_back(std::move(role));
    return roles_.back().get();
  };
  reward_ = add("reward", Kind::kReward, options_.reward_binary);
  learner_ = add("learner", Kind::kLearner, options_.learner_binary);
  for (int i = 0; i < options_.actor_count; ++i) {
    add(absl::StrCat("actor-", i), Kind::kActor, options_.actor_binary);
  }
}

Supervisor::~Supervisor() { StopAll(); }

std::string Supervisor::PortFilePath(const Role& role) const {
  return (fs::path(options_.out_dir) / (role.name + ".port")).string();
}

std::string Supervisor::LogFilePath(const Role& role) const {
  return (fs::path(options_.out_dir) / (role.name + ".log")).string();
}

std::string Supervisor::Address(const Role& role) const {
  return absl::StrCat(options_.host, ":", role.grpc_port);
}

absl::Status Supervisor::SpawnRole(Role& role, int port) {
  std::vector<std::string> args = {"--config", options_.config_path};
  for (const std::string& o : options_.overrides) {
    args.push_back("--set");
    args.push_back(o);
  }
  args.insert(args.end(), {"--host", options_.host, "--port", absl::StrCat(port), "--metrics_port",
                           "0", "--port_file", PortFilePath(role)});
  if (role.kind == Kind::kActor) {
    args.insert(args.end(), {"--learner", Address(*learner_), "--reward", Address(*reward_)});
  }
  if (role.kind == Kind::kLearner && reward_->grpc_port > 0) {
    // The learner names the run's reward server at Join, so that an actor
    // started by hand with only --learner finds it too.
    args.insert(args.end(), {"--set", "reward.address=" + Address(*reward_)});
  }
  std::error_code ec;
  fs::remove(PortFilePath(role), ec);
  // A banner in the role's log separates its runs (the log is appended).
  {
    std::ofstream log(LogFilePath(role), std::ios::app);
    log << "=== cohort run: starting " << role.name << " (start " << role.restarts + 1 << ") at "
        << absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone()) << ": "
        << role.binary << " " << absl::StrJoin(args, " ") << "\n";
  }
  ASSIGN_OR_RETURN(role.child, ChildProcess::Spawn(role.binary, args, LogFilePath(role)));
  role.state = State::kStarting;
  role.started = absl::Now();
  return absl::OkStatus();
}

void Supervisor::CheckStarting(Role& role) {
  if (role.state != State::kStarting) return;
  absl::StatusOr<cohort::PortFile> ports = ReadPortFile(PortFilePath(role));
  if (!ports.ok()) return;                      // not written yet
  if (ports->pid != role.child->pid()) return;  // stale (should not happen)
  role.grpc_port = ports->grpc_port;
  // The port file is written just before SERVING; a short probe suffices
  // and keeps the loop responsive.
  if (options_.check_serving(Address(role), absl::Milliseconds(500))) {
    role.state = State::kServing;
  }
}

absl::Status Supervisor::WaitReady(const std::vector<Role*>& roles) {
  absl::Time deadline = absl::Now() + options_.ready_timeout;
  while (true) {
    bool all = true;
    for (Role* role : roles) {
      if (role->child->Exited()) {
        role->state = State::kDown;
        return absl::UnavailableError(DeathReport(
            *role,
            absl::StrCat(DescribeWaitStatus(role->child->wait_status()), " while starting")));
      }
      CheckStarting(*role);
      all = all && role->state == State::kServing;
    }
    if (all) return absl::OkStatus();
    if (absl::Now() >= deadline) {
      for (Role* role : roles) {
        if (role->state != State::kServing) {
          return absl::DeadlineExceededError(DeathReport(
              *role,
              absl::StrCat("was not SERVING after ", absl::FormatDuration(options_.ready_timeout),
                           " (supervisor.ready_timeout_seconds)")));
        }
      }
    }
    if (WaitReadable(options_.stop_fd, kTick)) {
      return absl::CancelledError("stop requested while starting");
    }
  }
}

absl::Status Supervisor::Start() {
  // The reward server first: the learner is given its address.
  absl::Status ready;
  for (Role* role : {reward_, learner_}) {
    absl::Status s = SpawnRole(*role, 0);
    if (!s.ok()) {
      StopAll();
      return Annotate(s, absl::StrCat("starting ", role->name));
    }
    ready = WaitReady({role});
    if (!ready.ok()) {
      StopAll();
      return ready;
    }
  }
  Event(absl::StrCat("reward server SERVING on ", Address(*reward_), " (pid ",
                     reward_->child->pid(), "); learner SERVING on ", Address(*learner_), " (pid ",
                     learner_->child->pid(), ")"));
  std::vector<Role*> actors;
  for (auto& role : roles_) {
    if (role->kind != Kind::kActor) continue;
    absl::Status s = SpawnRole(*role, 0);
    if (!s.ok()) {
      StopAll();
      return Annotate(s, absl::StrCat("starting ", role->name));
    }
    actors.push_back(role.get());
  }
  ready = WaitReady(actors);
  if (!ready.ok()) {
    StopAll();
    return ready;
  }
  Event(absl::StrCat(actors.size(), " actor(s) SERVING; logs in ", options_.out_dir));
  return absl::OkStatus();
}

std::string Supervisor::DeathReport(const Role& role, const std::string& why) const {
  std::string report =
      absl::StrCat(role.name, " (pid ", role.child ? role.child->pid() : 0, ") ", why);
  std::vector<std::string> tail = TailLines(LogFilePath(role), kReportLines);
  if (tail.empty()) {
    absl::StrAppend(&report, "\n(", LogFilePath(role), " is empty)");
  } else {
    absl::StrAppend(&report, "\nlast ", tail.size(), " lines of ", LogFilePath(role), ":\n  ",
                    absl::StrJoin(tail, "\n  "));
  }
  return report;
}

bool Supervisor::HandleDeath(Role& role, std::string* report) {
  std::string how = DescribeWaitStatus(role.child->wait_status());
  pid_t pid = role.child->pid();
  absl::Time now = absl::Now();
  int ws = role.child->wait_status();
  if (WIFEXITED(ws) && WEXITSTATUS(ws) == 0) {
    role.state = State::kFinished;
    Event(absl::StrCat(role.name, " (pid ", pid, ") finished (exited with code 0)",
                       role.kind == Kind::kLearner ? "; the run is complete" : ""));
    return true;
  }
  if (role.kind == Kind::kLearner && WIFEXITED(ws) && WEXITSTATUS(ws) == kLearnerFailedExitCode) {
    // A restart would fail the same way (the learner recorded why).
    *report = DeathReport(role, absl::StrCat(how, ": the run failed; not restarting it"));
    role.state = State::kDown;
    return false;
  }
  role.deaths.push_back(now);
  while (!role.deaths.empty() && role.deaths.front() < now - options_.restart_window) {
    role.deaths.pop_front();
  }
  int deaths = static_cast<int>(role.deaths.size());
  if (deaths > options_.max_restarts) {
    *report = DeathReport(role, absl::StrCat(how, "; it died ", deaths, " times within ",
                                             absl::FormatDuration(options_.restart_window),
                                             " (more than supervisor.max_restarts = ",
                                             options_.max_restarts, "), so the run stops"));
    role.state = State::kDown;
    return false;
  }
  absl::Duration delay = options_.backoff_initial;
  for (int i = 1; i < deaths && delay < options_.backoff_max; ++i) delay *= 2;
  delay = std::min(delay, options_.backoff_max);
  role.state = State::kBackoff;
  role.restart_at = now + delay;
  Event(absl::StrCat(role.name, " (pid ", pid, ") ", how, "; restarting in ",
                     absl::FormatDuration(delay), " (", deaths, deaths == 1 ? " death" : " deaths",
                     " within ", absl::FormatDuration(options_.restart_window), "; more than ",
                     options_.max_restarts, " stops the run)"));
  return true;
}

int Supervisor::Run() {
  absl::Time start = absl::Now();
  absl::Time end = options_.run_for == absl::InfiniteDuration() ? absl::InfiniteFuture()
                                                                : start + options_.run_for;
  absl::Time next_status = start;
  std::string report;
  int exit_code = 0;
  while (true) {
    absl::Time now = absl::Now();
    if (now >= end) {
      Event(absl::StrCat("ran for ", absl::FormatDuration(options_.run_for), " (--for); stopping"));
      break;
    }
    bool fatal = false;
    for (auto& owned : roles_) {
      Role& role = *owned;
      switch (role.state) {
        case State::kStarting:
        case State::kServing:
          if (role.child->Exited()) {
            fatal = !HandleDeath(role, &report);
          } else if (role.state == State::kStarting) {
            CheckStarting(role);
            if (role.state == State::kServing) {
              Event(absl::StrCat(role.name, " restarted: pid ", role.child->pid(), ", SERVING on ",
                                 Address(role)));
            } else if (now - role.started > options_.ready_timeout) {
              Event(absl::StrCat(role.name, " (pid ", role.child->pid(), ") was not SERVING after ",
                                 absl::FormatDuration(options_.ready_timeout), "; killing it"));
              role.child->Signal(SIGKILL);
              role.child->WaitFor(absl::InfiniteDuration());
              fatal = !HandleDeath(role, &report);
            }
          }
          break;
        case State::kBackoff:
          if (now >= role.restart_at) {
            ++role.restarts;
            // The learner and the reward server keep their ports so actors
            // keep their addresses.
            int port = role.kind == Kind::kActor ? 0 : role.grpc_port;
            absl::Status s = SpawnRole(role, port);
            if (!s.ok()) {
              report = absl::StrCat("cannot restart ", role.name, ": ", s.message());
              fatal = true;
            }
          }
          break;
        case State::kDown:
        case State::kFinished:
          break;
      }
      if (fatal) break;
    }
    if (!fatal && learner_->state == State::kFinished) {
      Event("the learner finished the run; stopping the other roles");
      break;
    }
    if (fatal) {
      exit_code = 1;
      break;
    }
    if (options_.live_status && now >= next_status) {
      DrawStatus(start);
      next_status = now + absl::Seconds(1);
    }
    if (WaitReadable(options_.stop_fd, kTick)) {
      Event("stop requested; stopping all roles");
      break;
    }
  }
  StopAll();
  if (exit_code != 0) {
    if (status_drawn_) std::fputs("\r\033[K", stderr);
    std::fprintf(stderr, "cohort run: %s\ncohort run: stopped the run; logs in %s\n",
                 report.c_str(), options_.out_dir.c_str());
  } else {
    Event(absl::StrCat("all roles stopped; logs in ", options_.out_dir));
  }
  return exit_code;
}

void Supervisor::StopAll() {
  // The roles that are running now; each one's end is logged below, so a
  // death in the last supervision tick (or during the stop) is in the log.
  std::vector<Role*> running;
  for (auto& role : roles_) {
    if (role->child && (role->state == State::kStarting || role->state == State::kServing)) {
      running.push_back(role.get());
    }
  }
  // SIGTERM to everyone first so they shut down in parallel, then wait.
  for (auto& role : roles_) {
    if (role->child && !role->child->Exited()) role->child->Signal(SIGTERM);
  }
  absl::Time start = absl::Now();
  for (auto& role : roles_) {
    if (!role->child) continue;
    absl::Duration grace =
        role->kind == Kind::kLearner ? options_.learner_stop_timeout : options_.stop_timeout;
    if (!role->child->WaitFor(std::max(absl::ZeroDuration(), start + grace - absl::Now()))) {
      COHORT_LOG(WARNING) << role->name << " (pid " << role->child->pid()
                          << ") did not stop within " << absl::FormatDuration(grace)
                          << " of SIGTERM; sending SIGKILL";
      role->child->Signal(SIGKILL);
      role->child->WaitFor(absl::InfiniteDuration());
    }
    role->state = State::kDown;
  }
  for (Role* role : running) {
    Event(absl::StrCat(role->name, " (pid ", role->child->pid(),
                       ") stopped: ", DescribeWaitStatus(role->child->wait_status())));
  }
}

std::map<std::string, pid_t> Supervisor::Pids() const {
  std::map<std::string, pid_t> pids;
  for (const auto& role : roles_) {
    if (role->child && (role->state == State::kStarting || role->state == State::kServing)) {
      pids[role->name] = role->child->pid();
    }
  }
  return pids;
}

void Supervisor::Event(const std::string& message) {
  if (status_drawn_) {
    std::fputs("\r\033[K", stderr);
    std::fflush(stderr);
    status_drawn_ = false;
  }
  COHORT_LOG(INFO) << message;
}

void Supervisor::DrawStatus(absl::Time start) {
  int actors = 0, actors_up = 0, restarts = 0;
  std::string reward = "down", learner = "down";
  auto state_name = [](State s) {
    switch (s) {
      case State::kServing:
        return "up";
      case State::kStarting:
        return "starting";
      case State::kBackoff:
        return "restarting";
      case State::kDown:
        return "down";
      case State::kFinished:
        return "finished";
    }
    return "?";
  };
  for (const auto& role : roles_) {
    restarts += role->restarts;
    if (role->kind == Kind::kActor) {
      ++actors;
      if (role->state == State::kServing) ++actors_up;
    } else if (role->kind == Kind::kReward) {
      reward = state_name(role->state);
    } else {
      learner = state_name(role->state);
    }
  }
  int64_t secs = absl::ToInt64Seconds(absl::Now() - start);
  std::fprintf(stderr,
               "\r\033[K[cohort run %02lld:%02lld] learner %s | reward %s | "
               "actors %d/%d up | restarts %d | Ctrl-C stops",
               static_cast<long long>(secs / 60), static_cast<long long>(secs % 60),
               learner.c_str(), reward.c_str(), actors_up, actors, restarts);
  std::fflush(stderr);
  status_drawn_ = true;
}

}  // namespace cohort::cli
