#include "tests/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

extern char** environ;

namespace cohort::testing {
namespace {

constexpr char kSubnet[] = "10.231.7.";
constexpr char kSwitch[] = "sw";

// Runs argv, capturing stdout and stderr together.
absl::StatusOr<std::string> Run(const std::vector<std::string>& argv, int* exit_code) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError("pipe failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid;
  int rc = posix_spawn(&pid, argv[0].c_str(), &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    return absl::FailedPreconditionError(
        absl::StrCat("cannot run ", argv[0], ": ", std::strerror(rc)));
  }
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) out.append(buf, n);
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return out;
}

bool ValidHost(const std::string& h) {
  if (h.empty() || h.size() > 8) return false;
  for (char c : h) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return false;
  }
  return true;
}

// Kills every process in namespace `ns`, then deletes it.
void KillAndDelete(const std::string& ns) {
  for (int round = 0; round < 3; ++round) {
    absl::StatusOr<std::string> pids = RunIp({"netns", "pids", ns});
    if (!pids.ok()) break;
    bool any = false;
    for (absl::string_view line : absl::StrSplit(*pids, '\n', absl::SkipWhitespace())) {
      int pid;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &pid) && pid > 1) {
        ::kill(pid, SIGKILL);
        any = true;
      }
    }
    if (!any) break;
    ::usleep(50 * 1000);
  }
  (void)RunIp({"netns", "del", ns});
}

std::vector<std::string> ListNamespaces() {
  std::vector<std::string> names;
  absl::StatusOr<std::string> list = RunIp({"netns", "list"});
  if (!list.ok()) return names;
  for (absl::string_view line : absl::StrSplit(*list, '\n', absl::SkipWhitespace())) {
    std::vector<std::string> words = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (!words.empty()) names.push_back(words[0]);
  }
  return names;
}

// `tc ARGS` inside namespace `ns`.
absl::Status RunTc(const std::string& ns, const std::vector<std::string>& args) {
  std::vector<std::string> full = {"netns", "exec", ns, "tc"};
  full.insert(full.end(), args.begin(), args.end());
  return RunIp(full).status();
}

}  // namespace

std::string NetnsLab::IpBinary() {
  for (const char* path : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (::access(path, X_OK) == 0) return path;
  }
  return "/usr/sbin/ip";
}

absl::StatusOr<std::string> RunIp(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {NetnsLab::IpBinary()};
  argv.insert(argv.end(), args.begin(), args.end());
  int code = -1;
  absl::StatusOr<std::string> out = Run(argv, &code);
  if (!out.ok()) return out.status();
  if (code != 0) {
    return absl::InternalError(
        absl::StrCat("ip ", absl::StrJoin(args, " "), ": exit ", code, ": ", *out));
  }
  return out;
}

absl::Status NetnsLab::Available() {
  if (::geteuid() != 0) return absl::FailedPreconditionError("needs root (network namespaces)");
  if (::access(IpBinary().c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError("needs iproute2 (the ip command)");
  }
  absl::StatusOr<std::string> list = RunIp({"netns", "list"});
  if (!list.ok()) return absl::FailedPreconditionError(list.status().message());
  return absl::OkStatus();
}

int NetnsLab::CleanupStale() {
  int deleted = 0;
  for (const std::string& name : ListNamespaces()) {
    absl::string_view rest = name;
    if (!absl::ConsumePrefix(&rest, kPrefix)) continue;
    size_t dash = rest.find('-');
    int pid = 0;
    if (dash == absl::string_view::npos || !absl::SimpleAtoi(rest.substr(0, dash), &pid)) continue;
    if (pid > 0 && (::kill(pid, 0) == 0 || errno != ESRCH)) continue;  // its test still runs
    KillAndDelete(name);
    ++deleted;
  }
  return deleted;
}

absl::StatusOr<std::unique_ptr<NetnsLab>> NetnsLab::Create(const std::vector<std::string>& hosts) {
  if (absl::Status s = Available(); !s.ok()) return s;
  if (hosts.empty() || hosts.size() > 200) return absl::InvalidArgumentError("1..200 hosts");
  CleanupStale();
  std::unique_ptr<NetnsLab> lab(new NetnsLab());
  lab->tag_ = absl::StrCat(kPrefix, ::getpid(), "-");
  // Anything of ours from an earlier lab in this process.
  for (const std::string& name : ListNamespaces()) {
    if (absl::StartsWith(name, lab->tag_)) KillAndDelete(name);
  }
  const std::string sw = lab->tag_ + kSwitch;
  auto ip = [](const std::vector<std::string>& args) { return RunIp(args).status(); };
  absl::Status s;
  // The lab is destroyed (namespaces deleted) on any error below.
  if (!(s = ip({"netns", "add", sw})).ok()) return s;
  lab->hosts_.push_back(kSwitch);
  if (!(s = ip({"-n", sw, "link", "add", "br0", "type", "bridge"})).ok()) return s;
  if (!(s = ip({"-n", sw, "link", "set", "br0", "up"})).ok()) return s;
  int index = 0;
  for (const std::string& host : hosts) {
    if (!ValidHost(host) || host == kSwitch || lab->address_.count(host)) {
      return absl::InvalidArgumentError(absl::StrCat("bad or repeated host name '", host, "'"));
    }
    ++index;
    const std::string ns = lab->tag_ + host;
    const std::string port = absl::StrCat("p", index);
    const std::string addr = absl::StrCat(kSubnet, index);
    if (!(s = ip({"netns", "add", ns})).ok()) return s;
    lab->hosts_.push_back(host);
    lab->address_[host] = addr;
    // Created in the switch namespace, the peer moved straight into the
    // host: nothing appears in the test's own namespace.
    if (!(s = ip(
              {"-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns}))
             .ok() ||
        !(s = ip({"-n", sw, "link", "set", port, "master", "br0"})).ok() ||
        !(s = ip({"-n", sw, "link", "set", port, "up"})).ok() ||
        !(s = ip({"-n", ns, "link", "set", "lo", "up"})).ok() ||
        !(s = ip({"-n", ns, "addr", "add", addr + "/24", "dev", "eth0"})).ok() ||
        !(s = ip({"-n", ns, "link", "set", "eth0", "up"})).ok()) {
      return s;
    }
    // Bounded bandwidth: a token bucket on each host's link, best effort
    // (a kernel without sch_tbf runs unshaped; rate_limited() says).
    lab->rate_limited_ =
        lab->rate_limited_ && ip({"-n", ns, "link", "set", "eth0", "txqueuelen", "1000"}).ok() &&
        RunTc(ns, {"qdisc", "add", "dev", "eth0", "root", "tbf", "rate",
                   absl::StrCat(kRateMbit, "mbit"), "burst", "256kb", "latency", "100ms"})
            .ok();
  }
  return lab;
}

NetnsLab::~NetnsLab() { Destroy(); }

void NetnsLab::Destroy() {
  if (destroyed_) return;
  destroyed_ = true;
  // Hosts first (their processes), the switch last.
  for (auto it = hosts_.rbegin(); it != hosts_.rend(); ++it) KillAndDelete(tag_ + *it);
}

const std::string& NetnsLab::Address(const std::string& host) const {
  static const std::string kNone;
  auto it = address_.find(host);
  return it == address_.end() ? kNone : it->second;
}

std::string NetnsLab::Namespace(const std::string& host) const { return tag_ + host; }

std::vector<std::string> NetnsLab::ExecArgs(const std::string& host,
                                            const std::vector<std::string>& command) const {
  std::vector<std::string> args = {"netns", "exec", Namespace(host)};
  args.insert(args.end(), command.begin(), command.end());
  return args;
}

absl::Status NetnsLab::CutLink(const std::string& host) {
  auto it = std::find(hosts_.begin(), hosts_.end(), host);
  if (!address_.count(host) || it == hosts_.end()) return absl::NotFoundError(host);
  int index = static_cast<int>(it - hosts_.begin());  // hosts_[0] is the switch
  return RunIp({"-n", tag_ + kSwitch, "link", "set", absl::StrCat("p", index), "down"}).status();
}

absl::Status NetnsLab::RestoreLink(const std::string& host) {
  auto it = std::find(hosts_.begin(), hosts_.end(), host);
  if (!address_.count(host) || it == hosts_.end()) return absl::NotFoundError(host);
  int index = static_cast<int>(it - hosts_.begin());
  return RunIp({"-n", tag_ + kSwitch, "link", "set", absl::StrCat("p", index), "up"}).status();
}

absl::Status NetnsLab::CutPath(const std::string& a, const std::string& b) {
  if (!address_.count(a) || !address_.count(b) || a == b) {
    return absl::NotFoundError(absl::StrCat("CutPath: hosts ", a, ", ", b));
  }
  for (const auto& [from, to] : {std::pair{a, b}, std::pair{b, a}}) {
    absl::StatusOr<std::string> r =
        RunIp({"-n", Namespace(from), "neigh", "replace", address_.at(to), "lladdr",
               "02:00:00:00:00:01", "nud", "permanent", "dev", "eth0"});
    if (!r.ok()) return r.status();
  }
  return absl::OkStatus();
}

absl::Status NetnsLab::RestorePath(const std::string& a, const std::string& b) {
  if (!address_.count(a) || !address_.count(b) || a == b) {
    return absl::NotFoundError(absl::StrCat("RestorePath: hosts ", a, ", ", b));
  }
  for (const auto& [from, to] : {std::pair{a, b}, std::pair{b, a}}) {
    absl::StatusOr<std::string> r =
        RunIp({"-n", Namespace(from), "neigh", "del", address_.at(to), "dev", "eth0"});
    if (!r.ok()) return r.status();
  }
  return absl::OkStatus();
}

absl::StatusOr<long long> NetnsLab::TrafficBytes(const std::string& host) const {
  absl::StatusOr<std::string> out =
      RunIp({"-n", Namespace(host), "-s", "-j", "link", "show", "eth0"});
  if (!out.ok()) return out.status();
  nlohmann::json j = nlohmann::json::parse(*out, nullptr, /*allow_exceptions=*/false);
  if (!j.is_array() || j.empty() || !j[0].contains("stats64")) {
    return absl::InternalError(absl::StrCat("unexpected `ip -s -j link` output: ", *out));
  }
  const nlohmann::json& stats = j[0]["stats64"];
  return stats["rx"]["bytes"].get<long long>() + stats["tx"]["bytes"].get<long long>();
}

absl::Status NetnsLab::InNamespace(const std::string& host, const std::function<void()>& fn) const {
  std::string path = absl::StrCat("/run/netns/", Namespace(host));
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": ", std::strerror(errno)));
  absl::Status status;
  std::thread thread([&] {
    if (::setns(fd, CLONE_NEWNET) != 0) {
      status = absl::InternalError(absl::StrCat("setns ", path, ": ", std::strerror(errno)));
      return;
    }
    fn();
  });
  thread.join();
  ::close(fd);
  return status;
}

}  // namespace cohort::testing
