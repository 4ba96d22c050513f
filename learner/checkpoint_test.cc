#include "learner/checkpoint.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "core/file.h"
#include "core/status.h"

namespace cohort::learner {
namespace {

using ::testing::HasSubstr;

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cohort_learner_ckpt_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = std::string(tmpl) + "/ckpts";
  }
  void TearDown() override { (void)RemoveAll(root_.substr(0, root_.rfind('/'))); }

  // The trainer part: a file whose content names the step.
  static std::function<absl::Status(const std::string&)> Trainer(int64_t step) {
    return [step](const std::string& dir) {
      RETURN_IF_ERROR(MakeDirs(dir + "/model"));
      return WriteFileAtomically(dir + "/model/weights.bin", "weights-" + std::to_string(step));
    };
  }
  static std::string Ledger(int64_t step, size_t size = 64) {
    std::string s = "ledger-" + std::to_string(step) + ":";
    while (s.size() < size) s += static_cast<char>('a' + s.size() % 26);
    return s;
  }
  // Checks that `info` is self-consistent: its blob and trainer file name its step.
  static void ExpectConsistent(const CheckpointInfo& info, size_t ledger_size = 64) {
    absl::StatusOr<std::string> ledger = ReadCheckpointBlob(info, "ledger");
    ASSERT_TRUE(ledger.ok()) << ledger.status();
    EXPECT_EQ(*ledger, Ledger(info.step, ledger_size));
    absl::StatusOr<std::string> w = ReadFile(info.trainer_dir() + "/model/weights.bin");
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_EQ(*w, "weights-" + std::to_string(info.step));
    EXPECT_EQ(info.version, info.step * 10);
  }
  absl::StatusOr<CheckpointInfo> Write(int64_t step, int keep = 3, size_t ledger_size = 64) {
    return WriteCheckpoint(root_, {step, step * 10, keep}, Trainer(step),
                           {{"ledger", Ledger(step, ledger_size)}});
  }

  std::string root_;
};

TEST_F(CheckpointTest, NoRootMeansNoCheckpoint) {
  absl::StatusOr<std::optional<CheckpointInfo>> latest = FindLatestCheckpoint(root_);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_FALSE(latest->has_value());
}

TEST_F(CheckpointTest, WritesFindsAndKeepsTheLastN) {
  for (int64_t step : {1, 2, 3, 4}) {
    absl::StatusOr<CheckpointInfo> info = Write(step, /*keep=*/2);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_THAT(info->path, HasSubstr("step-000000000" + std::to_string(step)));
    ExpectConsistent(*info);
  }
  absl::StatusOr<std::vector<CheckpointInfo>> all = ListCheckpoints(root_);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].step, 3);
  EXPECT_EQ((*all)[1].step, 4);
  absl::StatusOr<std::optional<CheckpointInfo>> latest = FindLatestCheckpoint(root_);
  ASSERT_TRUE(latest.ok() && latest->has_value());
  EXPECT_EQ((*latest)->step, 4);
  EXPECT_EQ((*latest)->blob_names, std::vector<std::string>{"ledger"});
  EXPECT_TRUE(absl::IsNotFound(ReadCheckpointBlob(**latest, "other").status()));
}

TEST_F(CheckpointTest, IncompleteAndCorruptCheckpointsAreSkipped) {
  ASSERT_TRUE(Write(1).ok());
  ASSERT_TRUE(Write(2).ok());
  // A newer directory without its marker, and a leftover temporary one.
  ASSERT_TRUE(MakeDirs(root_ + "/step-0000000009/trainer").ok());
  ASSERT_TRUE(MakeDirs(root_ + "/.tmp-step-0000000010-1").ok());
  // A corrupt blob in step 2.
  ASSERT_TRUE(WriteFileAtomically(root_ + "/step-0000000002/blobs/ledger", "garbage").ok());
  absl::StatusOr<std::optional<CheckpointInfo>> latest = FindLatestCheckpoint(root_);
  ASSERT_TRUE(latest.ok() && latest->has_value());
  EXPECT_EQ((*latest)->step, 1);
  // The next write cleans the leftovers up.
  ASSERT_TRUE(Write(3).ok());
  EXPECT_FALSE(PathExists(root_ + "/step-0000000009"));
  EXPECT_FALSE(PathExists(root_ + "/.tmp-step-0000000010-1"));
}

TEST_F(CheckpointTest, SameStepIsReplaced) {
  ASSERT_TRUE(Write(5).ok());
  absl::StatusOr<CheckpointInfo> again =
      WriteCheckpoint(root_, {5, 50, 3}, Trainer(5), {{"ledger", Ledger(5)}, {"extra", "x"}});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->blob_names.size(), 2u);
  absl::StatusOr<std::vector<CheckpointInfo>> all = ListCheckpoints(root_);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 1u);
}

TEST_F(CheckpointTest, BadInputIsRefused) {
  absl::StatusOr<CheckpointInfo> info = WriteCheckpoint(root_, {1, 1, 3}, nullptr, {{"a/b", "x"}});
  ASSERT_FALSE(info.ok());
  EXPECT_THAT(std::string(info.status().message()), HasSubstr("blob name \"a/b\""));
  EXPECT_FALSE(WriteCheckpoint(root_, {-1, 1, 3}, nullptr, {}).ok());
  EXPECT_FALSE(WriteCheckpoint(root_, {1, 1, 0}, nullptr, {}).ok());
  // A failing trainer leaves no checkpoint.
  info = WriteCheckpoint(root_, {1, 1, 3},
                         [](const std::string&) { return absl::InternalError("disk full"); }, {});
  ASSERT_FALSE(info.ok());
  absl::StatusOr<std::optional<CheckpointInfo>> latest = FindLatestCheckpoint(root_);
  ASSERT_TRUE(latest.ok());
  EXPECT_FALSE(latest->has_value());
}

// A child process is SIGKILLed while it writes checkpoint 2 (after the
// trainer files, before the rename): checkpoint 1 is still the latest and
// loads, and the next write succeeds.
TEST_F(CheckpointTest, SigkillDuringWriteLeavesThePreviousCheckpoint) {
  ASSERT_TRUE(Write(1).ok());
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(fds[0]);
    (void)WriteCheckpoint(root_, {2, 20, 3},
                          [&](const std::string& dir) {
                            (void)MakeDirs(dir + "/model");
                            (void)WriteFileAtomically(dir + "/model/weights.bin", "weights-2");
                            (void)!::write(fds[1], "x", 1);
                            ::pause();  // killed here
                            return absl::OkStatus();
                          },
                          {{"ledger", Ledger(2)}});
    ::_exit(0);
  }
  ::close(fds[1]);
  char c;
  ASSERT_EQ(::read(fds[0], &c, 1), 1);
  ::close(fds[0]);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status));
  absl::StatusOr<std::optional<CheckpointInfo>> latest = FindLatestCheckpoint(root_);
  ASSERT_TRUE(latest.ok() && latest->has_value());
  EXPECT_EQ((*latest)->step, 1);
  ExpectConsistent(**latest);
  ASSERT_TRUE(Write(2).ok());
  latest = FindLatestCheckpoint(root_);
  ASSERT_TRUE(latest.ok() && latest->has_value());
  EXPECT_EQ((*latest)->step, 2);
}

// A child writes checkpoints back to back and is SIGKILLed at random
// moments: every time, the latest complete checkpoint is consistent and no
// older than the last one the child reported done.
TEST_F(CheckpointTest, SigkillAtRandomMomentsNeverLeavesATornCheckpoint) {
  std::mt19937 rng(7);
  int64_t next_step = 1;
  constexpr size_t kLedgerBytes = 256 << 10;
  for (int round = 0; round < 12; ++round) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      for (int64_t step = next_step;; ++step) {
        if (!Write(step, 3, kLedgerBytes).ok()) ::_exit(1);
        (void)!::write(fds[1], &step, sizeof(step));
      }
    }
    ::close(fds[1]);
    // Wait for 0 or 1 finished writes, then kill at a random moment of the
    // next one (a write takes tens of milliseconds: several fsyncs).
    int64_t done = next_step - 1, step = 0;
    if (round % 2 == 1) {
      ASSERT_EQ(::read(fds[0], &step, sizeof(step)), static_cast<ssize_t>(sizeof(step)));
      done = step;
    }
    ::usleep(std::uniform_int_distribution<int>(0, 150000)(rng));
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    while (::read(fds[0], &step, sizeof(step)) == sizeof(step)) done = step;
    ::close(fds[0]);
    absl::StatusOr<std::optional<CheckpointInfo>> latest = FindLatestCheckpoint(root_);
    ASSERT_TRUE(latest.ok()) << latest.status();
    if (done > 0) {
      ASSERT_TRUE(latest->has_value());
      EXPECT_GE((*latest)->step, done);
      EXPECT_LE((*latest)->step, done + 1);
    }
    if (latest->has_value()) {
      ExpectConsistent(**latest, kLedgerBytes);
      next_step = (*latest)->step + 1;
    }
  }
  EXPECT_GT(next_step, 6) << "too few checkpoints completed to exercise the kills";
}

}  // namespace
}  // namespace cohort::learner
