// A small cluster of network namespaces for tests that run cohort's roles
// on separate network hosts (root only; needs iproute2).
//
//   ASSIGN_OR_RETURN(auto lab, NetnsLab::Create({"learner", "reward", "actor0"}));
//   lab->Address("learner");                          // "10.231.7.1"
//   ChildProcess::Spawn("/usr/sbin/ip", lab->ExecArgs("learner", {binary, ...}), log);
//   lab->CutLink("actor0");  ...  lab->RestoreLink("actor0");
//   lab->CutPath("actor0", "learner");  ...  lab->RestorePath("actor0", "learner");
//
// Topology: a "switch" namespace holds a bridge (br0, no address) and one
// veth per host; each host namespace has `lo` and `eth0` with one address on
// a /24 that exists only on that bridge. No namespace has a default route
// and nothing is connected to the namespace the test runs in, so traffic
// cannot leave the lab. Cutting a link sets the host's switch port down
// (the host sees NO-CARRIER); restoring sets it up. Each link's bandwidth is
// capped by a token bucket (kRateMbit).
//
// Names: every namespace is "<prefix><pid>-<host>" with the fixed prefix
// kPrefix and the test's pid, so Create() first deletes namespaces left by
// test processes that no longer exist (a SIGKILLed test), and the destructor
// deletes this lab's namespaces, killing whatever still runs in them, on
// every exit path that runs destructors. Kill -9 of the test leaves them
// until the next run's Create().
//
// Thread-safety: one thread drives a lab; InNamespace may run concurrently.
#ifndef COHORT_TESTS_NETNS_H_
#define COHORT_TESTS_NETNS_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cohort::testing {

class NetnsLab {
 public:
  static constexpr char kPrefix[] = "cohort-nt-";

  // OK when this process can build a lab (root, `ip netns` works); else why not.
  static absl::Status Available();

  // Deletes namespaces named kPrefix<pid>-* whose pid is not alive. Returns
  // how many it deleted.
  static int CleanupStale();

  // Builds the lab; host names are [a-z0-9]{1,8}. Hosts get .1, .2, ... in
  // the order given.
  static absl::StatusOr<std::unique_ptr<NetnsLab>> Create(const std::vector<std::string>& hosts);
  ~NetnsLab();  // Destroy()
  NetnsLab(const NetnsLab&) = delete;
  NetnsLab& operator=(const NetnsLab&) = delete;

  // Kills every process in the lab's namespaces and deletes them.
  // Idempotent.
  void Destroy();

  const std::string& Address(const std::string& host) const;  // "10.231.7.N"
  std::string Namespace(const std::string& host) const;       // full netns name
  // argv for running `command` in `host`: {"netns", "exec", NS, command...},
  // to be run by IpBinary() (so a ChildProcess's pid is the command's pid:
  // `ip netns exec` execs it without forking).
  std::vector<std::string> ExecArgs(const std::string& host,
                                    const std::vector<std::string>& command) const;
  static std::string IpBinary();

  // Sets the host's switch port down / up.
  absl::Status CutLink(const std::string& host);
  absl::Status RestoreLink(const std::string& host);
  // Cuts only the path between two hosts, both ways: each one's neighbour
  // entry for the other becomes a MAC address nobody has, so their packets
  // are silently lost (as on a cut link: connections stall, nothing is
  // refused) while both keep reaching every other host. Restoring deletes
  // the entries (ARP finds the real addresses again).
  absl::Status CutPath(const std::string& a, const std::string& b);
  absl::Status RestorePath(const std::string& a, const std::string& b);

  // Each host's link is shaped to kRateMbit (tc tbf) when the kernel
  // allows; false when it did not.
  static constexpr int kRateMbit = 200;
  bool rate_limited() const { return rate_limited_; }

  // Bytes received + sent on the host's eth0 so far.
  absl::StatusOr<long long> TrafficBytes(const std::string& host) const;

  // Runs `fn` on a new thread that has joined `host`'s network namespace
  // (sockets it creates live there), and waits for it.
  absl::Status InNamespace(const std::string& host, const std::function<void()>& fn) const;

 private:
  NetnsLab() = default;
  std::string tag_;  // kPrefix<pid>-
  std::vector<std::string> hosts_;
  std::map<std::string, std::string> address_;
  bool destroyed_ = false;
  bool rate_limited_ = true;
};

// Runs an `ip` command line (argv after "ip"); returns its stdout, or an
// error with its output.
absl::StatusOr<std::string> RunIp(const std::vector<std::string>& args);

}  // namespace cohort::testing

#endif  // COHORT_TESTS_NETNS_H_
