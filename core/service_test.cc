#include "core/service.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "absl/time/clock.h"

namespace cohort {
namespace {

namespace fs = std::filesystem;

class PortFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "service_test.XXXXXX");
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(PortFileTest, RoundTripsAndLeavesNoTemporaryFile) {
  std::string path = dir_ / "learner.port";
  ASSERT_TRUE(WritePortFile(path, {1234, 5678, 42}).ok());
  absl::StatusOr<PortFile> ports = ReadPortFile(path);
  ASSERT_TRUE(ports.ok()) << ports.status();
  EXPECT_EQ(ports->grpc_port, 1234);
  EXPECT_EQ(ports->metrics_port, 5678);
  EXPECT_EQ(ports->pid, 42);
  int files = 0;
  for (const auto& entry : fs::directory_iterator(dir_)) {
    (void)entry;
    ++files;
  }
  EXPECT_EQ(files, 1) << "the temporary file was left behind";
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(text, "{\"grpc_port\":1234,\"metrics_port\":5678,\"pid\":42}\n");
}

TEST_F(PortFileTest, OverwritesAnOldFile) {
  std::string path = dir_ / "actor-0.port";
  ASSERT_TRUE(WritePortFile(path, {1, 2, 3}).ok());
  ASSERT_TRUE(WritePortFile(path, {4, 5, 6}).ok());
  absl::StatusOr<PortFile> ports = ReadPortFile(path);
  ASSERT_TRUE(ports.ok()) << ports.status();
  EXPECT_EQ(ports->grpc_port, 4);
  EXPECT_EQ(ports->pid, 6);
}

TEST_F(PortFileTest, MissingFileIsNotFound) {
  absl::StatusOr<PortFile> ports = ReadPortFile(dir_ / "nope.port");
  EXPECT_EQ(ports.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(PortFileTest, MalformedFileNamesThePathAndTheExpectedShape) {
  for (const char* text : {"", "not json", "{\"grpc_port\":1}", "[1,2,3]",
                           "{\"grpc_port\":70000,\"metrics_port\":1,\"pid\":1}",
                           "{\"grpc_port\":\"80\",\"metrics_port\":1,\"pid\":1}"}) {
    std::string path = dir_ / "bad.port";
    std::ofstream(path) << text;
    absl::StatusOr<PortFile> ports = ReadPortFile(path);
    EXPECT_EQ(ports.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_NE(std::string(ports.status().message()).find(path), std::string::npos);
    EXPECT_NE(std::string(ports.status().message()).find("grpc_port"), std::string::npos);
  }
}

TEST_F(PortFileTest, UnwritableDirectoryIsAnError) {
  absl::Status s = WritePortFile(dir_ / "missing" / "x.port", {1, 2, 3});
  EXPECT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("x.port"), std::string::npos);
}

TEST(StopSignalsTest, SignalfdReportsSigtermAndSigintInOrder) {
  absl::StatusOr<int> fd = BlockStopSignals();
  ASSERT_TRUE(fd.ok()) << fd.status();
  EXPECT_EQ(ReadStopSignal(*fd), 0) << "nothing pending yet";
  // Blocked, so they stay pending for the signalfd instead of killing us.
  ASSERT_EQ(::kill(::getpid(), SIGTERM), 0);
  EXPECT_EQ(ReadStopSignal(*fd), SIGTERM);
  ASSERT_EQ(::kill(::getpid(), SIGINT), 0);
  EXPECT_EQ(ReadStopSignal(*fd), SIGINT);
  EXPECT_EQ(ReadStopSignal(*fd), 0);
  ::close(*fd);
}

// Serve() with the binary's own listen address, ended by RequestStop: the
// exit code follows the status, on_stopping runs while health is
// NOT_SERVING.
int ServeUntilRequested(absl::Status status, bool* stopping_ran, bool request_first) {
  ServiceMain service("learner", "test-service", "test");
  std::string a0 = "test-service", a1 = "--log_level=error";
  char* argv[] = {a0.data(), a1.data()};
  if (!service.Init(2, argv)) return -1;
  ServiceMain::Hooks hooks;
  hooks.on_stopping = [stopping_ran] { *stopping_ran = true; };
  hooks.stopping_budget = absl::Seconds(30);
  if (request_first) service.RequestStop(status);
  std::thread stopper;
  if (!request_first) {
    stopper = std::thread([&service, status] {
      absl::SleepFor(absl::Milliseconds(200));
      service.RequestStop(status);
      service.RequestStop(absl::InternalError("ignored: the first request wins"));
    });
  }
  int rc = service.Serve({}, hooks, ServiceMain::Listen{"127.0.0.1", 0, 0});
  if (stopper.joinable()) stopper.join();
  return rc;
}

TEST(ServiceMainTest, RequestStopEndsServeWithItsExitCode) {
  bool ran = false;
  EXPECT_EQ(ServeUntilRequested(absl::OkStatus(), &ran, false), 0);
  EXPECT_TRUE(ran);
  ran = false;
  EXPECT_EQ(ServeUntilRequested(absl::InternalError("the run cannot go on"), &ran, false), 1);
  EXPECT_TRUE(ran);
  ran = false;
  EXPECT_EQ(ServeUntilRequested(absl::OkStatus(), &ran, true), 0);
  EXPECT_TRUE(ran);
}

}  // namespace
}  // namespace cohort
