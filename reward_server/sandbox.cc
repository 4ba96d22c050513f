#include "reward_server/sandbox.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/logging.h"
#include "core/status.h"
#include "core/subprocess.h"

namespace cohort::reward {
namespace {

using Clock = std::chrono::steady_clock;

// Closes an fd on scope exit.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { Reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      Reset();
      fd_ = o.fd_;
      o.fd_ = -1;
    }
    return *this;
  }
  int get() const { return fd_; }
  void Reset() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

absl::Status Errno(const std::string& what) {
  return absl::InternalError(absl::StrCat("sandbox: ", what, ": ", std::strerror(errno)));
}

// A sealed-size in-memory file holding `data`, positioned at 0.
absl::StatusOr<Fd> MemFile(const std::string& name, const std::string& data) {
  Fd fd(static_cast<int>(
      syscall(SYS_memfd_create, name.c_str(), static_cast<unsigned>(MFD_CLOEXEC))));
  if (fd.get() < 0) return Errno("memfd_create");
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = write(fd.get(), data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("writing memfd");
    }
    off += static_cast<size_t>(n);
  }
  if (lseek(fd.get(), 0, SEEK_SET) != 0) return Errno("lseek memfd");
  return fd;
}

struct Pipe {
  Fd read, write;
};

absl::StatusOr<Pipe> MakePipe() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return Errno("pipe2");
  Pipe p;
  p.read = Fd(fds[0]);
  p.write = Fd(fds[1]);
  return p;
}

// The real uid of a live process (-1 for zombies, which hold no resources
// but their pid until their parent reaps them, and for vanished ones).
int RealUidOf(const char* pid_dir, int* threads = nullptr) {
  std::string path = absl::StrCat("/proc/", pid_dir, "/status");
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[4096];
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = '\0';
  const char* state = std::strstr(buf, "\nState:");
  if (state != nullptr) {
    const char* c = state + 7;
    while (*c == ' ' || *c == '\t') ++c;
    if (*c == 'Z' || *c == 'X') return -1;
  }
  if (threads != nullptr) {
    const char* t = std::strstr(buf, "\nThreads:");
    *threads = t ? static_cast<int>(std::strtol(t + 9, nullptr, 10)) : 1;
  }
  const char* uid = std::strstr(buf, "\nUid:");
  if (uid == nullptr) return -1;
  return static_cast<int>(std::strtol(uid + 5, nullptr, 10));
}

template <typename Fn>
void ForEachPid(Fn fn) {
  DIR* dir = opendir("/proc");
  if (dir == nullptr) return;
  while (struct dirent* e = readdir(dir)) {
    int pid = 0;
    if (!absl::SimpleAtoi(e->d_name, &pid) || pid <= 0) continue;
    fn(pid, e->d_name);
  }
  closedir(dir);
}

// Parses `"exit-code": N` from bwrap's --json-status-fd output.
bool ParseExitCode(const std::string& json, int* code) {
  size_t at = json.find("\"exit-code\"");
  if (at == std::string::npos) return false;
  at = json.find(':', at);
  if (at == std::string::npos) return false;
  *code = static_cast<int>(std::strtol(json.c_str() + at + 1, nullptr, 10));
  return true;
}

// Reads what is available from `fd` into `out` up to `cap` bytes. Returns
// false at EOF or when the cap was hit (the caller closes the fd then).
bool DrainInto(int fd, std::string* out, int64_t cap, bool* truncated) {
  char buf[65536];
  while (true) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN;  // nothing more now; EIO etc. ends the stream
    }
    if (n == 0) return false;
    int64_t room = cap - static_cast<int64_t>(out->size());
    if (n > room) {
      out->append(buf, static_cast<size_t>(std::max<int64_t>(room, 0)));
      *truncated = true;
      return false;
    }
    out->append(buf, static_cast<size_t>(n));
  }
}

const char kSelfTest[] = R"PY(
import os, socket, sys
try:
    socket.create_connection(("1.1.1.1", 53), timeout=1)
    print("network reachable")
    sys.exit(1)
except OSError:
    pass
for path in ("/etc/passwd", "/root", "/work", "/home"):
    if os.path.exists(path):
        print("host path visible: " + path)
        sys.exit(1)
open("/tmp/probe", "w").write("x")
print("cohort-sandbox-ok uid=%d" % os.getuid())
)PY";

}  // namespace

int CountProcessesOfUid(int uid) {
  int count = 0;
  ForEachPid([&](int, const char* name) {
    if (RealUidOf(name) == uid) ++count;
  });
  return count;
}

// Tasks (threads) of live processes of `uid`: what RLIMIT_NPROC counts.
int CountTasksOfUid(int uid) {
  int count = 0;
  ForEachPid([&](int, const char* name) {
    int threads = 0;
    if (RealUidOf(name, &threads) == uid) count += std::max(threads, 1);
  });
  return count;
}

int KillProcessesOfUid(int uid) {
  int killed = 0;
  ForEachPid([&](int pid, const char* name) {
    if (RealUidOf(name) == uid && kill(pid, SIGKILL) == 0) ++killed;
  });
  return killed;
}

Sandbox::Sandbox(SandboxOptions options) : options_(std::move(options)), as_root_(geteuid() == 0) {
  for (int i = options_.uid_count - 1; i >= 0; --i) {
    free_uids_.push_back(options_.first_uid + i);
  }
}

absl::StatusOr<std::unique_ptr<Sandbox>> Sandbox::Create(SandboxOptions options) {
  if (access(options.bwrap_path.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("sandbox unavailable: bubblewrap not found at ", options.bwrap_path,
                     " (apt-get install bubblewrap); code samples will be answered with "
                     "ERROR"));
  }
  if (access(options.python_path.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("sandbox unavailable: python not found at ", options.python_path,
                     " (apt-get install python3); code samples will be answered with "
                     "ERROR"));
  }
  if (options.uid_count <= 0 || options.first_uid <= 0) {
    return absl::InvalidArgumentError("sandbox: uid pool must be non-empty");
  }
  std::unique_ptr<Sandbox> sandbox(new Sandbox(std::move(options)));
  SandboxRun probe;
  probe.files = {{"main.py", kSelfTest}};
  probe.args = {"/sandbox/main.py"};
  probe.wall_seconds = 20;
  auto result = sandbox->Run(probe);
  if (!result.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("sandbox self-test could not start bwrap (", result.status().message(),
                     "); code samples will be answered with ERROR"));
  }
  if (result->exit_code != 0 ||
      result->stdout_data.find("cohort-sandbox-ok") == std::string::npos) {
    return absl::FailedPreconditionError(absl::StrCat(
        "sandbox self-test failed (exit ", result->exit_code, "): stdout=",
        result->stdout_data.substr(0, 300), " stderr=", result->stderr_data.substr(0, 500),
        " — user namespaces may be forbidden here; code samples will be "
        "answered with ERROR"));
  }
  if (sandbox->as_root_ && result->stdout_data.find("uid=0") != std::string::npos) {
    return absl::FailedPreconditionError(
        "sandbox self-test: program ran as uid 0; refusing to run code");
  }
  return sandbox;
}

Sandbox::UidLease Sandbox::AcquireUid() {
  // In this process: a free uid of the pool. Across processes (several
  // reward servers or tests on one host share the pool): an exclusive
  // flock on a per-uid lock file, held for the whole run, so no two runs
  // ever share a uid and no sweep kills another server's run.
  while (true) {
    std::vector<int> tried;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](std::vector<int>* v) { return !v->empty(); }, &free_uids_));
      tried.swap(free_uids_);
    }
    UidLease lease;
    std::vector<int> back;
    for (int uid : tried) {
      if (lease.uid >= 0) {
        back.push_back(uid);
        continue;
      }
      std::string path = absl::StrCat(options_.lock_dir, "/cohort-sandbox-uid-", uid, ".lock");
      int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
      if (fd < 0) {
        // No lock directory: in-process exclusion only.
        lease.uid = uid;
        continue;
      }
      if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
        lease.uid = uid;
        lease.lock_fd = fd;
      } else {
        close(fd);
        back.push_back(uid);
      }
    }
    {
      absl::MutexLock lock(&mu_);
      for (int uid : back) free_uids_.push_back(uid);
    }
    if (lease.uid >= 0) return lease;
    // Every free uid is held by another process: wait a little.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void Sandbox::ReleaseUid(const UidLease& lease) {
  if (lease.lock_fd >= 0) close(lease.lock_fd);  // drops the flock
  absl::MutexLock lock(&mu_);
  free_uids_.push_back(lease.uid);
}

// ---------------------------------------------------------------------------
// Sandbox::Run and its steps

namespace {

// The descriptors of one run. Child fd i comes from Sources()[i]: 0 stdin,
// 1 stdout, 2 stderr, 3 fd3 data, 4 the channel, 5 bwrap's JSON status,
// 6... the files (bound at /sandbox/<name>).
struct RunFds {
  Fd stdin_fd;
  Pipe out, err;
  Fd fd3;
  Pipe chan, status;
  std::vector<Fd> files;

  std::vector<int> Sources() const {
    std::vector<int> sources = {stdin_fd.get(), out.write.get(),  err.write.get(),
                                fd3.get(),      chan.write.get(), status.write.get()};
    for (const Fd& f : files) sources.push_back(f.get());
    return sources;
  }
  // After the child has them: the parent keeps only the read ends, which
  // become non-blocking.
  void CloseChildEnds() {
    for (Fd* f : {&out.write, &err.write, &chan.write, &status.write}) f->Reset();
    for (Fd* f : {&out.read, &err.read, &chan.read, &status.read}) {
      fcntl(f->get(), F_SETFL, fcntl(f->get(), F_GETFL) | O_NONBLOCK);
    }
  }
};

absl::StatusOr<RunFds> MakeRunFds(const SandboxRun& run) {
  if (run.files.size() > 32) {
    return absl::InvalidArgumentError("sandbox: at most 32 files per run");
  }
  RunFds fds;
  ASSIGN_OR_RETURN(fds.stdin_fd, MemFile("stdin", run.stdin_data));
  ASSIGN_OR_RETURN(fds.out, MakePipe());
  ASSIGN_OR_RETURN(fds.err, MakePipe());
  ASSIGN_OR_RETURN(fds.fd3, MemFile("fd3", run.fd3_data));
  ASSIGN_OR_RETURN(fds.chan, MakePipe());
  ASSIGN_OR_RETURN(fds.status, MakePipe());
  for (const auto& [name, content] : run.files) {
    if (name.empty() || name.find('/') != std::string::npos || name[0] == '.') {
      return absl::InvalidArgumentError(absl::StrCat("sandbox: bad file name '", name, "'"));
    }
    ASSIGN_OR_RETURN(Fd f, MemFile(name, content));
    fds.files.push_back(std::move(f));
  }
  return fds;
}

// bwrap's command line: namespaces, the read-only host /usr, tmpfs, the
// files from fds 6..., the environment, then python and the run's args.
std::vector<std::string> BwrapArgs(const SandboxOptions& options, const SandboxRun& run) {
  const std::string tmp_size = absl::StrCat(options.limits.tmp_bytes);
  std::vector<std::string> args = {
      options.bwrap_path,
      // Namespaces and privileges.
      "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
      "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
      "--hostname", "sandbox",
      // File system: the host's /usr only, fresh /proc, /dev, tmpfs.
      "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
      "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin", "--proc", "/proc",
      "--dev", "/dev", "--size", tmp_size, "--tmpfs", "/tmp", "--size", tmp_size, "--tmpfs",
      "/dev/shm", "--dir", "/sandbox", "--json-status-fd", "5",
      // Environment.
      "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp", "--setenv",
      "LANG", "C.UTF-8", "--setenv", "PYTHONDONTWRITEBYTECODE", "1", "--setenv", "PYTHONHASHSEED",
      "0", "--chdir", "/tmp"};
  for (size_t i = 0; i < run.files.size(); ++i) {
    args.push_back("--ro-bind-data");
    args.push_back(absl::StrCat(6 + i));
    args.push_back("/sandbox/" + run.files[i].first);
  }
  args.push_back("--remount-ro");
  args.push_back("/");
  args.push_back(options.python_path);
  for (const auto& a : run.args) args.push_back(a);
  return args;
}

std::vector<std::pair<int, rlim_t>> RunRlimits(const SandboxLimits& lim, rlim_t nproc) {
  return {
      {RLIMIT_CPU, static_cast<rlim_t>(lim.cpu_seconds)},
      {RLIMIT_AS, static_cast<rlim_t>(lim.memory_bytes)},
      {RLIMIT_NPROC, nproc},
      {RLIMIT_FSIZE, static_cast<rlim_t>(lim.file_size_bytes)},
      {RLIMIT_NOFILE, static_cast<rlim_t>(lim.max_open_files)},
      {RLIMIT_CORE, 0},
  };
}

// Reads stdout, stderr, the channel and bwrap's status into `result` and
// `status_json` until bwrap has exited and the streams are drained (or a
// grace period after the exit has passed). Kills bwrap (and so the pid
// namespace) at `deadline`. Returns bwrap's wait status.
int CollectOutput(pid_t pid, RunFds& fds, const SandboxLimits& lim, Clock::time_point deadline,
                  SandboxResult* result, std::string* status_json) {
  Fd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  bool status_trunc = false, chan_trunc = false;
  struct Stream {
    Fd* fd;
    std::string* out;
    int64_t cap;
    bool* truncated;
  };
  Stream streams[] = {
      {&fds.out.read, &result->stdout_data, lim.output_bytes, &result->stdout_truncated},
      {&fds.err.read, &result->stderr_data, lim.output_bytes, &result->stderr_truncated},
      {&fds.chan.read, &result->channel, lim.output_bytes, &chan_trunc},
      {&fds.status.read, status_json, 1 << 16, &status_trunc},
  };
  bool exited = false;
  int wstatus = 0;
  Clock::time_point drain_until{};
  while (true) {
    std::vector<pollfd> pfds;
    std::vector<Stream*> which;
    for (Stream& s : streams) {
      if (s.fd->get() >= 0) {
        pfds.push_back({s.fd->get(), POLLIN, 0});
        which.push_back(&s);
      }
    }
    if (!exited && pidfd.get() >= 0) pfds.push_back({pidfd.get(), POLLIN, 0});
    auto now = Clock::now();
    if (exited && (which.empty() || now >= drain_until)) break;
    if (!exited && now >= deadline) {
      result->timed_out = true;
      kill(pid, SIGKILL);
      kill(-pid, SIGKILL);
      waitpid(pid, &wstatus, 0);
      exited = true;
      drain_until = Clock::now() + std::chrono::milliseconds(200);
      continue;
    }
    auto until = exited ? drain_until : deadline;
    if (!exited && pidfd.get() < 0) {
      until = std::min(until, now + std::chrono::milliseconds(20));
    }
    int timeout_ms =
        static_cast<int>(
            std::chrono::duration_cast<std::chrono::milliseconds>(until - now).count()) +
        1;
    int rc = poll(pfds.data(), pfds.size(), timeout_ms);
    if (rc < 0 && errno != EINTR) break;
    for (size_t i = 0; i < which.size(); ++i) {
      if (pfds[i].revents == 0) continue;
      Stream* s = which[i];
      if (!DrainInto(s->fd->get(), s->out, s->cap, s->truncated)) {
        s->fd->Reset();  // EOF or cap hit: closing makes the writer fail
      }
    }
    if (!exited) {
      pid_t w = waitpid(pid, &wstatus, WNOHANG);
      if (w == pid) {
        exited = true;
        drain_until = Clock::now() + std::chrono::milliseconds(500);
      }
    }
  }
  // Whatever is left of the process group (there should be nothing).
  kill(-pid, SIGKILL);
  return wstatus;
}

// Nothing may outlive a run under its pool uid. The pid namespace dies with
// its init; this catches anything that escaped it anyway. Processes of the
// dead namespace may take a moment to finish exiting; only what is still
// there after that counts as a straggler.
void SweepUid(int uid, SandboxResult* result) {
  for (int round = 0; round < 50 && CountProcessesOfUid(uid) > 0; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (int round = 0; round < 200; ++round) {
    int n = KillProcessesOfUid(uid);
    if (n == 0) break;
    if (round == 0) result->stragglers_killed = n;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (result->stragglers_killed > 0) {
    COHORT_LOG(WARNING) << "sandbox: killed " << result->stragglers_killed
                        << " leftover processes of uid " << uid;
  }
}

// The program's exit code from bwrap's status (bwrap's own exit status if
// it wrote none); an error if bwrap never started the program.
absl::Status SetOutcome(const std::string& status_json, int wstatus, SandboxResult* result) {
  int code = -1;
  bool started = status_json.find("child-pid") != std::string::npos;
  if (ParseExitCode(status_json, &code)) {
    result->exit_code = code;
  } else if (WIFEXITED(wstatus) && !result->timed_out) {
    result->exit_code = WEXITSTATUS(wstatus);
  }
  if (WIFSIGNALED(wstatus)) result->term_signal = WTERMSIG(wstatus);
  if (!started && !result->timed_out) {
    return absl::InternalError(absl::StrCat("sandbox: bwrap failed to set up the sandbox: ",
                                            result->stderr_data.substr(0, 500)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SandboxResult> Sandbox::Run(const SandboxRun& run) {
  const SandboxLimits& lim = options_.limits;
  const double wall = run.wall_seconds > 0 ? run.wall_seconds : lim.wall_seconds;
  ASSIGN_OR_RETURN(RunFds fds, MakeRunFds(run));

  UidLease lease;
  if (as_root_) lease = AcquireUid();
  const int uid = as_root_ ? lease.uid : static_cast<int>(getuid());
  struct UidReleaser {
    Sandbox* s;
    const UidLease& lease;
    bool active;
    ~UidReleaser() {
      if (active) s->ReleaseUid(lease);
    }
  } releaser{this, lease, as_root_};

  rlim_t nproc = static_cast<rlim_t>(lim.max_processes);
  // Without a uid of its own, a run shares the server's uid, and
  // RLIMIT_NPROC counts every task of that uid: runs go one at a time, each
  // allowed max_processes tasks above what the uid has now.
  std::unique_ptr<absl::MutexLock> serial;
  if (!as_root_) {
    serial = std::make_unique<absl::MutexLock>(&serial_mu_);
    nproc += static_cast<rlim_t>(CountTasksOfUid(uid));
  }

  SpawnOptions spawn;
  spawn.binary = options_.bwrap_path;
  spawn.argv = BwrapArgs(options_, run);
  spawn.env = std::vector<std::string>{"PATH=/usr/bin:/bin"};
  spawn.fds = fds.Sources();
  spawn.rlimits = RunRlimits(lim, nproc);
  spawn.uid = as_root_ ? uid : -1;
  const auto start = Clock::now();
  absl::StatusOr<pid_t> pid = cohort::Spawn(spawn);
  if (!pid.ok()) {
    return absl::InternalError(absl::StrCat("sandbox: ", pid.status().message()));
  }
  fds.CloseChildEnds();

  SandboxResult result;
  std::string status_json;
  const int wstatus = CollectOutput(
      *pid, fds, lim, start + std::chrono::microseconds(static_cast<int64_t>(wall * 1e6)), &result,
      &status_json);
  result.wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (as_root_) SweepUid(uid, &result);
  RETURN_IF_ERROR(SetOutcome(status_json, wstatus, &result));
  return result;
}

}  // namespace cohort::reward
