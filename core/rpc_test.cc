#include "core/rpc.h"

#include <stdlib.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include <grpcpp/client_context.h>
#include <grpcpp/server_context.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cohort/v1/reward.grpc.pb.h"
#include "core/testing/require.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace cohort {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// Answers every sample with reward 1.
class EchoReward final : public cohort::v1::Reward::Service {
 public:
  grpc::Status Score(grpc::ServerContext*, const cohort::v1::ScoreRequest* request,
                     cohort::v1::ScoreResponse* response) override {
    ++calls;
    for (const auto& sample : request->samples()) {
      auto* result = response->add_results();
      result->set_id(sample.id());
      result->set_reward(1.0);
    }
    return grpc::Status::OK;
  }
  std::atomic<int> calls{0};
};

// One Score call with one sample; also returns the server certificate's CN
// when the channel is TLS.
grpc::Status CallScore(const std::shared_ptr<grpc::Channel>& channel,
                       std::string* server_cn = nullptr) {
  auto stub = cohort::v1::Reward::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  cohort::v1::ScoreRequest request;
  request.add_samples()->set_id("s1");
  cohort::v1::ScoreResponse response;
  grpc::Status status = stub->Score(&context, request, &response);
  if (status.ok()) {
    EXPECT_EQ(response.results_size(), 1);
    if (server_cn != nullptr && context.auth_context() != nullptr) {
      auto values = context.auth_context()->FindPropertyValues("x509_common_name");
      if (!values.empty()) *server_cn = std::string(values[0].data(), values[0].size());
    }
  }
  return status;
}

std::shared_ptr<grpc::Channel> Channel(const std::string& target,
                                       const ChannelOptions& options = {}) {
  auto channel = MakeChannel(target, options);
  EXPECT_TRUE(channel.ok()) << channel.status();
  return channel.ok() ? *channel : nullptr;
}

TEST(RpcServerTest, ReportsBoundPortAndServesHealthAndReflection) {
  EchoReward service;
  auto server = RpcServer::Start(ServerOptions{}, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_GT((*server)->port(), 0);
  EXPECT_EQ((*server)->address(), absl::StrCat("127.0.0.1:", (*server)->port()));
  EXPECT_THAT((*server)->service_names(), testing::Contains("cohort.v1.Reward"));
  EXPECT_THAT((*server)->service_names(), testing::Contains(testing::HasSubstr("grpc.reflection")));

  auto channel = Channel((*server)->address());
  ASSERT_TRUE(WaitForServing(channel, absl::Seconds(5)).ok());
  EXPECT_TRUE(CheckHealth(channel, "cohort.v1.Reward", absl::Seconds(2)).ok());
  EXPECT_TRUE(CallScore(channel).ok());

  (*server)->SetServing(false);
  absl::Status not_serving = CheckHealth(channel, "", absl::Seconds(2));
  EXPECT_TRUE(absl::IsUnavailable(not_serving)) << not_serving;
  EXPECT_THAT(std::string(not_serving.message()), HasSubstr("NOT_SERVING"));
  EXPECT_FALSE(CheckHealth(channel, "cohort.v1.Reward", absl::Seconds(2)).ok());
  absl::Status timed_out = WaitForServing(channel, absl::Milliseconds(300));
  EXPECT_TRUE(absl::IsDeadlineExceeded(timed_out)) << timed_out;
  (*server)->SetServing(true);
  EXPECT_TRUE(WaitForServing(channel, absl::Seconds(5)).ok());

  // Shutdown: idempotent; Wait returns; calls then fail.
  std::thread waiter([&] { (*server)->Wait(); });
  (*server)->Shutdown(absl::Seconds(1));
  (*server)->Shutdown(absl::Seconds(1));
  waiter.join();
  EXPECT_FALSE(CallScore(channel).ok());
}

TEST(RpcServerTest, PortInUseIsUnavailable) {
  EchoReward service;
  auto first = RpcServer::Start(ServerOptions{}, {&service});
  ASSERT_TRUE(first.ok()) << first.status();
  ServerOptions options;
  options.port = (*first)->port();
  EchoReward other;
  auto second = RpcServer::Start(options, {&other});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("cannot listen on"));
}

TEST(RpcServerTest, BearerTokenCheckedOnEveryCall) {
  EchoReward service;
  ServerOptions options;
  options.bearer_token = "s3cret-token";
  auto server = RpcServer::Start(options, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string target = (*server)->address();

  grpc::Status missing = CallScore(Channel(target));
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::UNAUTHENTICATED) << missing.error_message();
  EXPECT_THAT(missing.error_message(), HasSubstr("bearer token"));

  ChannelOptions wrong;
  wrong.bearer_token = "s3cret-tokem";
  EXPECT_EQ(CallScore(Channel(target, wrong)).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  wrong.bearer_token = "s3cret-token-and-more";
  EXPECT_EQ(CallScore(Channel(target, wrong)).error_code(), grpc::StatusCode::UNAUTHENTICATED);

  // Health checks need the token too: WaitForServing fails fast without it.
  absl::Status health = WaitForServing(Channel(target), absl::Seconds(5));
  EXPECT_TRUE(absl::IsUnauthenticated(health)) << health;
  EXPECT_EQ(service.calls.load(), 0);

  ChannelOptions right;
  right.bearer_token = "s3cret-token";
  auto channel = Channel(target, right);
  EXPECT_TRUE(WaitForServing(channel, absl::Seconds(5)).ok());
  grpc::Status ok = CallScore(channel);
  EXPECT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_EQ(service.calls.load(), 1);
}

// Makes a CA, server and client certificates with the openssl CLI.
class Pki {
 public:
  Pki() {
    char tmpl[] = "/tmp/cohort_rpc_test_XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  ~Pki() { fs::remove_all(dir_); }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  // Writes <name>.pem / <name>.key: a self-signed CA.
  bool MakeCa(const std::string& name) {
    return Run(
        absl::StrCat("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
                     "-nodes -days 2 -subj /CN=",
                     name, " -keyout ", Path(name + ".key"), " -out ", Path(name + ".pem")));
  }

  // Writes <name>.pem / <name>.key signed by `ca`, for 127.0.0.1/localhost.
  bool MakeCert(const std::string& name, const std::string& ca) {
    std::ofstream(Path(name + ".ext")) << "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                          "extendedKeyUsage=serverAuth,clientAuth\n";
    return Run(absl::StrCat("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                            "-subj /CN=",
                            name, " -keyout ", Path(name + ".key"), " -out ",
                            Path(name + ".csr"))) &&
           Run(absl::StrCat("openssl x509 -req -days 2 -in ", Path(name + ".csr"), " -CA ",
                            Path(ca + ".pem"), " -CAkey ", Path(ca + ".key"),
                            " -CAcreateserial -extfile ", Path(name + ".ext"), " -out ",
                            Path(name + ".pem")));
  }

  TlsConfig Tls(const std::string& cert, const std::string& ca) const {
    TlsConfig tls;
    if (!cert.empty()) {
      tls.cert_file = Path(cert + ".pem");
      tls.key_file = Path(cert + ".key");
    }
    if (!ca.empty()) tls.ca_file = Path(ca + ".pem");
    tls.refresh_seconds = 1;
    return tls;
  }

 private:
  bool Run(const std::string& command) {
    int rc = std::system((command + " >" + dir_ + "/openssl.log 2>&1").c_str());
    EXPECT_EQ(rc, 0) << command;
    return rc == 0;
  }
  std::string dir_;
};

bool HaveOpenssl() { return std::system("openssl version >/dev/null 2>&1") == 0; }

class TlsTest : public testing::Test {
 protected:
  void SetUp() override {
    if (!HaveOpenssl()) COHORT_SKIP_OR_FAIL("the openssl command is not installed");
    ASSERT_TRUE(pki_.MakeCa("ca") && pki_.MakeCa("other_ca"));
    ASSERT_TRUE(pki_.MakeCert("server", "ca") && pki_.MakeCert("client", "ca") &&
                pki_.MakeCert("intruder", "other_ca"));
  }
  Pki pki_;
};

TEST_F(TlsTest, MutualTlsRefusesClientsWithoutACertFromTheCa) {
  EchoReward service;
  ServerOptions options;
  options.tls = pki_.Tls("server", "ca");
  options.tls.require_client_cert = true;
  auto server = RpcServer::Start(options, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string target = absl::StrCat("localhost:", (*server)->port());

  ChannelOptions good;
  good.tls = pki_.Tls("client", "ca");
  std::string cn;
  grpc::Status ok = CallScore(Channel(target, good), &cn);
  EXPECT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_EQ(cn, "server");
  EXPECT_TRUE(WaitForServing(Channel(target, good), absl::Seconds(5)).ok());

  ChannelOptions no_cert;
  no_cert.tls = pki_.Tls("", "ca");
  EXPECT_EQ(CallScore(Channel(target, no_cert)).error_code(), grpc::StatusCode::UNAVAILABLE);

  ChannelOptions intruder;
  intruder.tls = pki_.Tls("intruder", "ca");
  EXPECT_EQ(CallScore(Channel(target, intruder)).error_code(), grpc::StatusCode::UNAVAILABLE);

  // A plaintext client gets nowhere either.
  EXPECT_FALSE(CallScore(Channel(target)).ok());
  // And a client that does not trust the server's CA refuses the server.
  ChannelOptions distrust;
  distrust.tls = pki_.Tls("client", "other_ca");
  EXPECT_EQ(CallScore(Channel(target, distrust)).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(service.calls.load(), 1);
}

TEST_F(TlsTest, TlsWithTokenAndServerNameOverride) {
  EchoReward service;
  ServerOptions options;
  options.tls = pki_.Tls("server", "");
  options.bearer_token = "tok";
  auto server = RpcServer::Start(options, {&service});
  ASSERT_TRUE(server.ok()) << server.status();

  ChannelOptions client;
  client.tls = pki_.Tls("", "ca");
  // By IP: the certificate names 127.0.0.1 too.
  EXPECT_EQ(CallScore(Channel((*server)->address(), client)).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  client.bearer_token = "tok";
  grpc::Status ok = CallScore(Channel((*server)->address(), client));
  EXPECT_TRUE(ok.ok()) << ok.error_message();
  // The name checked against the certificate can be overridden, and is
  // checked: a name the certificate does not carry is refused.
  client.tls_server_name_override = "localhost";
  ok = CallScore(Channel(absl::StrCat("127.0.0.1:", (*server)->port()), client));
  EXPECT_TRUE(ok.ok()) << ok.error_message();
  client.tls_server_name_override = "learner.example";
  EXPECT_EQ(CallScore(Channel(absl::StrCat("127.0.0.1:", (*server)->port()), client)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, ReloadsChangedCertificateFiles) {
  ASSERT_TRUE(pki_.MakeCert("server_v2", "ca"));
  EchoReward service;
  ServerOptions options;
  options.tls = pki_.Tls("server", "ca");
  auto server = RpcServer::Start(options, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string target = absl::StrCat("localhost:", (*server)->port());
  ChannelOptions client;
  client.tls = pki_.Tls("", "ca");
  std::string cn;
  ASSERT_TRUE(CallScore(Channel(target, client), &cn).ok());
  EXPECT_EQ(cn, "server");

  // Replace the files the way a secret update does: write new files, then
  // rename over the old ones.
  fs::copy_file(pki_.Path("server_v2.pem"), pki_.Path("new.pem"));
  fs::copy_file(pki_.Path("server_v2.key"), pki_.Path("new.key"));
  fs::rename(pki_.Path("new.key"), pki_.Path("server.key"));
  fs::rename(pki_.Path("new.pem"), pki_.Path("server.pem"));

  // New connections see the new certificate within a few refresh periods.
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline && cn != "server_v2") {
    absl::SleepFor(absl::Milliseconds(200));
    cn.clear();
    ASSERT_TRUE(CallScore(Channel(target, client), &cn).ok());
  }
  EXPECT_EQ(cn, "server_v2");
}

TEST_F(TlsTest, BadFilesAreClearErrors) {
  EchoReward service;
  ServerOptions options;
  options.tls = pki_.Tls("server", "ca");
  options.tls.cert_file = pki_.Path("missing.pem");
  auto server = RpcServer::Start(options, {&service});
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("missing.pem"));

  options.tls = pki_.Tls("server", "ca");
  options.tls.key_file = pki_.Path("server.ext");  // not PEM
  server = RpcServer::Start(options, {&service});
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("not a PEM file"));

  options.tls = pki_.Tls("", "ca");
  options.tls.require_client_cert = true;
  server = RpcServer::Start(options, {&service});
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("needs cert_file"));
}

// Picks a free port by binding port 0 and closing it.
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

TEST(RetryTest, BackoffDelays) {
  RetryPolicy policy;
  policy.initial_backoff = absl::Milliseconds(100);
  policy.max_backoff = absl::Milliseconds(500);
  EXPECT_EQ(BackoffDelay(policy, 1), absl::Milliseconds(100));
  EXPECT_EQ(BackoffDelay(policy, 2), absl::Milliseconds(200));
  EXPECT_EQ(BackoffDelay(policy, 3), absl::Milliseconds(400));
  EXPECT_EQ(BackoffDelay(policy, 4), absl::Milliseconds(500));
  EXPECT_EQ(BackoffDelay(policy, 10), absl::Milliseconds(500));
}

TEST(RetryTest, RetriesOnlyUnavailable) {
  RetryPolicy policy;
  policy.max_attempts = 4;
  policy.initial_backoff = absl::Milliseconds(10);
  int calls = 0;
  absl::Time start = absl::Now();
  absl::Status status = CallWithRetry(policy, [&] {
    ++calls;
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "down");
  });
  absl::Duration took = absl::Now() - start;
  EXPECT_EQ(calls, 4);
  EXPECT_TRUE(absl::IsUnavailable(status));
  EXPECT_THAT(std::string(status.message()), HasSubstr("gave up after 4 attempts"));
  // Delays 10 + 20 + 40 ms, each within +-20%.
  EXPECT_GE(took, absl::Milliseconds(56));
  EXPECT_LT(took, absl::Milliseconds(500));

  calls = 0;
  status = CallWithRetry(policy, [&] {
    ++calls;
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "full");
  });
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(absl::IsResourceExhausted(status));
  calls = 0;
  status = CallWithRetry(policy, [&] {
    return ++calls < 3 ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "down") : grpc::Status::OK;
  });
  EXPECT_EQ(calls, 3);
  EXPECT_TRUE(status.ok());
}

TEST(RetryTest, ReachesAServerThatComesUpLate) {
  const int port = FreePort();
  const std::string target = absl::StrCat("127.0.0.1:", port);
  EchoReward service;
  std::unique_ptr<RpcServer> server;
  std::thread starter([&] {
    absl::SleepFor(absl::Milliseconds(600));
    ServerOptions options;
    options.port = port;
    auto started = RpcServer::Start(options, {&service});
    ASSERT_TRUE(started.ok()) << started.status();
    server = std::move(*started);
  });
  auto channel = Channel(target);
  RetryPolicy policy;
  policy.max_attempts = 12;
  policy.initial_backoff = absl::Milliseconds(100);
  policy.max_backoff = absl::Milliseconds(400);
  int attempts = 0;
  absl::Time start = absl::Now();
  absl::Status status = CallWithRetry(policy, [&] {
    ++attempts;
    return CallScore(channel);
  });
  absl::Duration took = absl::Now() - start;
  starter.join();
  EXPECT_TRUE(status.ok()) << status;
  // Up at 0.6 s; backoff 0.1 + 0.2 + 0.4 (+-20%) means at least 3 attempts.
  // How many more depends on when the channel's own reconnect backoff (about
  // 1 s in gRPC) next tries the address, so the upper bound is only that it
  // stopped retrying once a call succeeded.
  EXPECT_GE(attempts, 3);
  EXPECT_LT(attempts, policy.max_attempts);
  EXPECT_GE(took, absl::Milliseconds(600));
  EXPECT_EQ(service.calls.load(), 1);
}

TEST(RpcConfigTest, OptionsFromSecuritySection) {
  char tmpl[] = "/tmp/cohort_token_XXXXXX";
  int fd = mkstemp(tmpl);
  ASSERT_GE(fd, 0);
  close(fd);
  std::ofstream(tmpl) << "  abc123\n\n";
  SecuritySection security;
  security.token_file = tmpl;
  security.tls.require_client_cert = true;
  security.tls.ca_file = "/ca.pem";
  auto server = ServerOptionsFromConfig(security, "0.0.0.0", 5000);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ(server->bearer_token, "abc123");
  EXPECT_EQ(server->host, "0.0.0.0");
  EXPECT_EQ(server->port, 5000);
  EXPECT_TRUE(server->tls.require_client_cert);
  auto channel = ChannelOptionsFromConfig(security);
  ASSERT_TRUE(channel.ok()) << channel.status();
  EXPECT_EQ(channel->bearer_token, "abc123");
  EXPECT_EQ(channel->tls.ca_file, "/ca.pem");

  std::ofstream(tmpl) << "  \n";
  EXPECT_THAT(std::string(ReadTokenFile(tmpl).status().message()), HasSubstr("empty"));
  std::ofstream(tmpl) << "two words";
  EXPECT_THAT(std::string(ReadTokenFile(tmpl).status().message()), HasSubstr("printable ASCII"));
  std::remove(tmpl);
  EXPECT_THAT(std::string(ReadTokenFile(tmpl).status().message()), HasSubstr("cannot read"));
}

}  // namespace
}  // namespace cohort
