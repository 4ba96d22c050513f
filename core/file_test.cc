#include "core/file.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace cohort {
namespace {

std::string TempDir() {
  std::string templ = ::testing::TempDir() + "/file_test.XXXXXX";
  char* dir = ::mkdtemp(templ.data());
  EXPECT_NE(dir, nullptr);
  return templ;
}

TEST(FileTest, WriteThenReadRoundTrips) {
  const std::string dir = TempDir();
  const std::string path = dir + "/a.txt";
  std::string content(100000, 'x');
  content[5] = '\0';  // binary-safe
  ASSERT_TRUE(WriteFileAtomically(path, content).ok());
  auto read = ReadFile(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, content);
  ASSERT_TRUE(WriteFileAtomically(path, "short").ok());
  EXPECT_EQ(*ReadFile(path), "short");
  EXPECT_TRUE(PathExists(path));
  EXPECT_TRUE(RemoveAll(dir).ok());
  EXPECT_FALSE(PathExists(path));
}

TEST(FileTest, MissingFileIsNotFoundAndNamesThePath) {
  auto read = ReadFile("/nonexistent/dir/x.json");
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(read.status().message().find("/nonexistent/dir/x.json"), std::string::npos);
}

TEST(FileTest, SizeLimitAndDirectoryAreRefused) {
  const std::string dir = TempDir();
  ASSERT_TRUE(WriteFileAtomically(dir + "/big", std::string(2000, 'a')).ok());
  auto read = ReadFile(dir + "/big", 1000);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(read.status().message().find("limit"), std::string::npos);
  auto as_dir = ReadFile(dir);
  ASSERT_FALSE(as_dir.ok());
  EXPECT_NE(as_dir.status().message().find("directory"), std::string::npos);
}

TEST(FileTest, WriteIntoMissingDirectoryFailsAndLeavesNoTemporary) {
  const std::string dir = TempDir();
  absl::Status status = WriteFileAtomically(dir + "/no/such/dir/f", "x");
  EXPECT_FALSE(status.ok());
  ASSERT_TRUE(MakeDirs(dir + "/no/such/dir").ok());
  EXPECT_TRUE(WriteFileAtomically(dir + "/no/such/dir/f", "x").ok());
}

TEST(FileTest, AppendAccumulates) {
  const std::string dir = TempDir();
  ASSERT_TRUE(AppendToFile(dir + "/log", "a\n").ok());
  ASSERT_TRUE(AppendToFile(dir + "/log", "b\n", /*sync=*/true).ok());
  EXPECT_EQ(*ReadFile(dir + "/log"), "a\nb\n");
}

// A writer killed at any point leaves the old content or the new one.
TEST(FileTest, KilledWriterNeverLeavesAPartialFile) {
  const std::string dir = TempDir();
  const std::string path = dir + "/state";
  const std::string old_content(1 << 20, 'o');
  const std::string new_content(1 << 20, 'n');
  ASSERT_TRUE(WriteFileAtomically(path, old_content).ok());
  for (int i = 0; i < 5; ++i) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      while (true) (void)WriteFileAtomically(path, i % 2 ? old_content : new_content);
    }
    ::usleep(2000 + 3000 * i);
    ::kill(pid, SIGKILL);
    int status;
    ::waitpid(pid, &status, 0);
    auto read = ReadFile(path);
    ASSERT_TRUE(read.ok());
    EXPECT_TRUE(*read == old_content || *read == new_content) << "size " << read->size();
  }
}

TEST(FileTest, RenameDurablyMovesDirectories) {
  const std::string dir = TempDir();
  ASSERT_TRUE(MakeDirs(dir + "/a.tmp").ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/a.tmp/x", "1").ok());
  ASSERT_TRUE(RenameDurably(dir + "/a.tmp", dir + "/a").ok());
  EXPECT_EQ(*ReadFile(dir + "/a/x"), "1");
  EXPECT_FALSE(RenameDurably(dir + "/missing", dir + "/b").ok());
}

}  // namespace
}  // namespace cohort
