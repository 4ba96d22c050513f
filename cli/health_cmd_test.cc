// Tests `cohort health` through the real binary against real gRPC servers in
// this process: SERVING / NOT_SERVING, per-service checks, the bearer token,
// TLS and mutual TLS from the config, a server that is not there, --wait,
// and bad input.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/rpc.h"
#include "core/testing/require.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cohort {
namespace {

using ::testing::HasSubstr;

const std::string kCohort = COHORT_BINARY_DIR "/cli/cohort";

struct Result {
  int exit_code;
  std::string out, err;
};

class HealthCmdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "health_cmd_test_" + std::to_string(::getpid());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static std::string Slurp(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  std::string Write(const std::string& name, const std::string& text) {
    std::ofstream(Path(name)) << text;
    return Path(name);
  }
  Result Run(const std::string& args) {
    std::string cmd = kCohort + " health " + args + " > " + Path("out") + " 2> " + Path("err");
    int status = std::system(cmd.c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, Slurp(Path("out")), Slurp(Path("err"))};
  }
  bool Shell(const std::string& command) {
    int rc = std::system((command + " >>" + Path("openssl.log") + " 2>&1").c_str());
    EXPECT_EQ(rc, 0) << command << "\n" << Slurp(Path("openssl.log"));
    return rc == 0;
  }
  // A CA and one certificate for `sans` (serverAuth + clientAuth).
  bool MakePki(const std::string& sans) {
    std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    Write("ext.cnf", "subjectAltName=" + sans + "\nextendedKeyUsage=serverAuth,clientAuth\n");
    return Shell(absl::StrCat("openssl req -x509 ", ec, " -days 2 -subj /CN=ca -keyout ",
                              Path("ca.key"), " -out ", Path("ca.pem"))) &&
           Shell(absl::StrCat("openssl req ", ec, " -subj /CN=pod -keyout ", Path("tls.key"),
                              " -out ", Path("tls.csr"))) &&
           Shell(absl::StrCat("openssl x509 -req -days 2 -in ", Path("tls.csr"), " -CA ",
                              Path("ca.pem"), " -CAkey ", Path("ca.key"),
                              " -CAcreateserial -extfile ", Path("ext.cnf"), " -out ",
                              Path("tls.pem")));
  }
  TlsConfig Tls(bool require_client_cert) const {
    TlsConfig tls;
    tls.cert_file = Path("tls.pem");
    tls.key_file = Path("tls.key");
    tls.ca_file = Path("ca.pem");
    tls.require_client_cert = require_client_cert;
    return tls;
  }
  std::unique_ptr<RpcServer> Serve(const ServerOptions& options) {
    auto server = RpcServer::Start(options, {});
    EXPECT_TRUE(server.ok()) << server.status();
    return server.ok() ? *std::move(server) : nullptr;
  }
  static std::string Addr(const RpcServer& server) {
    return absl::StrCat("127.0.0.1:", server.port());
  }

  std::string dir_;
};

bool HaveOpenssl() { return std::system("openssl version >/dev/null 2>&1") == 0; }

TEST_F(HealthCmdTest, ServingIsExit0AndNotServingExit1) {
  auto server = Serve(ServerOptions());
  ASSERT_NE(server, nullptr);
  Result r = Run(Addr(*server));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, Addr(*server) + ": SERVING\n");
  EXPECT_EQ(Run(Addr(*server) + " --quiet").out, "");

  server->SetServing(false);
  r = Run(Addr(*server));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("not serving"));
  EXPECT_THAT(r.err, HasSubstr("NOT_SERVING"));
}

TEST_F(HealthCmdTest, ChecksOneService) {
  auto server = Serve(ServerOptions());
  ASSERT_NE(server, nullptr);
  Result r = Run(Addr(*server) + " --service grpc.health.v1.Health");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = Run(Addr(*server) + " --service cohort.v1.Nope");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("cohort.v1.Nope"));
}

TEST_F(HealthCmdTest, SendsTheRunsBearerToken) {
  ServerOptions options;
  options.bearer_token = "s3cret-token";
  auto server = Serve(options);
  ASSERT_NE(server, nullptr);
  Write("token", "s3cret-token\n");
  Write("wrong", "other-token\n");
  std::string config = Write("run.yaml", "security:\n  token_file: " + Path("token") + "\n");

  Result r = Run(Addr(*server) + " --config " + config);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = Run(Addr(*server) + " --config " + config + " --set security.token_file=" + Path("wrong"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAUTHENTICATED"));
  r = Run(Addr(*server));  // no token at all
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAUTHENTICATED"));
  // --wait gives up at once on a wrong token: waiting does not fix it.
  absl::Time start = absl::Now();
  r = Run(Addr(*server) + " --wait --timeout_seconds 20");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

TEST_F(HealthCmdTest, MutualTlsFromTheConfig) {
  if (!HaveOpenssl()) COHORT_SKIP_OR_FAIL("the openssl command is not installed");
  ASSERT_TRUE(MakePki("DNS:learner,DNS:localhost"));
  ServerOptions options;
  options.tls = Tls(/*require_client_cert=*/true);
  options.bearer_token = "tok";
  Write("token", "tok");
  auto server = Serve(options);
  ASSERT_NE(server, nullptr);
  std::string config = Write("run.yaml", absl::StrCat("security:\n  token_file: ", Path("token"),
                                                      "\n  tls:\n    cert_file: ", Path("tls.pem"),
                                                      "\n    key_file: ", Path("tls.key"),
                                                      "\n    ca_file: ", Path("ca.pem"), "\n"));
  std::string localhost = absl::StrCat("localhost:", server->port());
  Result r = Run(localhost + " --config " + config);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // The certificate does not name 127.0.0.1: refused, unless the expected
  // name is given.
  r = Run(Addr(*server) + " --config " + config + " --timeout_seconds 2");
  EXPECT_EQ(r.exit_code, 1);
  r = Run(Addr(*server) + " --config " + config + " --tls_server_name learner");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // Without a client certificate the handshake is refused.
  std::string no_client_cert =
      Write("ca_only.yaml", absl::StrCat("security:\n  token_file: ", Path("token"),
                                         "\n  tls:\n    ca_file: ", Path("ca.pem"), "\n"));
  r = Run(localhost + " --config " + no_client_cert + " --timeout_seconds 2");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("not serving"));
}

TEST_F(HealthCmdTest, NothingListeningFailsWithinTheTimeout) {
  // Bind and release a port so that nothing listens on it.
  int port;
  {
    auto server = Serve(ServerOptions());
    ASSERT_NE(server, nullptr);
    port = server->port();
    server->Shutdown(absl::Seconds(1));
  }
  absl::Time start = absl::Now();
  Result r = Run(absl::StrCat("127.0.0.1:", port, " --timeout_seconds 1"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("not serving"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST_F(HealthCmdTest, WaitPollsUntilServing) {
  ServerOptions options;
  options.serving_at_start = false;
  auto server = Serve(options);
  ASSERT_NE(server, nullptr);
  std::thread later([&] {
    absl::SleepFor(absl::Milliseconds(700));
    server->SetServing(true);
  });
  Result r = Run(Addr(*server) + " --wait --timeout_seconds 20");
  later.join();
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = Run(Addr(*server) + " --wait --service grpc.health.v1.Health --timeout_seconds 5");
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(HealthCmdTest, BadInputIsExit2WithAReason) {
  Result r = Run("");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("ADDRESS"));
  r = Run("learner");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("host:port"));
  r = Run("127.0.0.1:1 --timeout_seconds 0");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--timeout_seconds"));
  r = Run("127.0.0.1:1 --config " + Path("missing.yaml"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("missing.yaml"));
  r = Run("127.0.0.1:1 --set security.token_file=" + Path("no_token"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("no_token"));
  r = Run("--help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("--tls_server_name"));
}

}  // namespace
}  // namespace cohort
