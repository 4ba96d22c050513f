#include "core/subprocess.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace cohort {
namespace {

// What the child reports through the error pipe when a step fails.
enum class Step : int { kFds = 1, kRlimit, kUid, kExec };
struct ChildError {
  Step step;
  int err;
};

const char* StepName(Step step) {
  switch (step) {
    case Step::kFds:
      return "setting up its descriptors";
    case Step::kRlimit:
      return "setrlimit";
    case Step::kUid:
      return "switching uid";
    case Step::kExec:
      return "exec";
  }
  return "?";
}

// Child side: async-signal-safe.
[[noreturn]] void Fail(int err_fd, Step step) {
  ChildError e{step, errno};
  (void)!::write(err_fd, &e, sizeof(e));
  ::_exit(127);
}

// Everything the child touches, prepared in the parent.
struct Prepared {
  const char* binary = nullptr;
  std::vector<std::string> argv_storage;
  std::vector<char*> argv;
  std::vector<std::string> env_storage;
  std::vector<char*> envp;  // empty: inherit
  std::vector<int> fds;
  std::vector<int> high;  // scratch: fds[i] moved above every target
  int max_fd = 0;
};

[[noreturn]] void RunChild(const SpawnOptions& o, Prepared& p, pid_t parent, int err_pipe) {
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) ::signal(sig, SIG_DFL);
  }
  if (o.new_process_group) ::setpgid(0, 0);

  // Move the error pipe and every source above all targets first, so that
  // placing fd i never overwrites a source still needed.
  const int n = static_cast<int>(p.fds.size());
  int err_fd = ::fcntl(err_pipe, F_DUPFD_CLOEXEC, p.max_fd + 1);
  if (err_fd < 0) Fail(err_pipe, Step::kFds);
  for (int i = 0; i < n; ++i) {
    p.high[i] = ::fcntl(p.fds[i], F_DUPFD, err_fd + 1);
    if (p.high[i] < 0) Fail(err_fd, Step::kFds);
  }
  for (int i = 0; i < n; ++i) {
    if (::dup2(p.high[i], i) < 0) Fail(err_fd, Step::kFds);
  }
  // Close everything else but the error pipe (close-on-exec).
  if (::syscall(SYS_close_range, n, err_fd - 1, 0) != 0 ||
      ::syscall(SYS_close_range, err_fd + 1, ~0U, 0) != 0) {
    for (int fd = n; fd < 65536; ++fd) {
      if (fd != err_fd) ::close(fd);
    }
  }

  for (const auto& [resource, value] : o.rlimits) {
    struct rlimit rl = {value, value};
    if (::setrlimit(resource, &rl) != 0) Fail(err_fd, Step::kRlimit);
  }
  if (o.uid >= 0) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(static_cast<gid_t>(o.uid)) != 0 ||
        ::setuid(static_cast<uid_t>(o.uid)) != 0) {
      Fail(err_fd, Step::kUid);
    }
  }
  if (o.die_with_parent) {
    // After the uid switch, which clears it.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the parent is already gone
  }
  char** envp = p.envp.empty() ? environ : p.envp.data();
  ::execve(p.binary, p.argv.data(), envp);
  Fail(err_fd, Step::kExec);
}

}  // namespace

absl::StatusOr<pid_t> Spawn(const SpawnOptions& options) {
  if (options.binary.empty()) return absl::InvalidArgumentError("Spawn: no binary");
  Prepared p;
  p.binary = options.binary.c_str();
  p.argv_storage = options.argv.empty() ? std::vector<std::string>{options.binary} : options.argv;
  for (std::string& a : p.argv_storage) p.argv.push_back(a.data());
  p.argv.push_back(nullptr);
  const std::string& binary = options.binary;
  if (options.env.has_value()) {
    p.env_storage = *options.env;
    for (std::string& e : p.env_storage) p.envp.push_back(e.data());
    p.envp.push_back(nullptr);
  }
  p.fds = options.fds;
  p.high.resize(p.fds.size());
  p.max_fd = static_cast<int>(p.fds.size());
  for (int fd : p.fds) {
    if (fd < 0) return absl::InvalidArgumentError("Spawn: negative descriptor in fds");
    p.max_fd = std::max(p.max_fd, fd);
  }

  // Reports a failed step to the parent; closed by a successful exec
  // (O_CLOEXEC), so EOF means the exec worked.
  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe2: ", std::strerror(errno)));
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    ::close(err_pipe[0]);
    ::close(err_pipe[1]);
    return absl::ResourceExhaustedError(
        absl::StrCat("fork (starting ", binary, "): ", std::strerror(err)));
  }
  if (pid == 0) RunChild(options, p, parent, err_pipe[1]);

  // Parent. Also set the group here, so that it is in place before the
  // caller ever signals it (whichever of parent and child runs first).
  if (options.new_process_group) ::setpgid(pid, pid);
  ::close(err_pipe[1]);
  ChildError e{};
  ssize_t got;
  do {
    got = ::read(err_pipe[0], &e, sizeof(e));
  } while (got < 0 && errno == EINTR);
  ::close(err_pipe[0]);
  if (got == static_cast<ssize_t>(sizeof(e))) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (e.step == Step::kExec) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot execute ", binary, ": ", std::strerror(e.err)));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("cannot start ", binary, ": ", StepName(e.step), ": ", std::strerror(e.err)));
  }
  return pid;
}

}  // namespace cohort
