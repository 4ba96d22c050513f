#include "core/malloc_tuning.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace cohort {
namespace {

// In a child process (mallopt is process-wide): on a thread of its own (a
// malloc arena other than the main one, as gRPC's threads use), `rounds`
// times allocate eight 4 MiB buffers, write them and free them all, the way
// a stream's read buffers come and go. Returns the child's minor page
// faults over the loop, or -1.
long FaultsOfBufferChurn(bool tuned, int rounds) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    long faults = -1;
    if (!tuned || KeepLargeAllocations()) {
      std::thread worker([&] {
        rusage before{}, after{};
        getrusage(RUSAGE_SELF, &before);
        for (int r = 0; r < rounds; ++r) {
          std::vector<char*> buffers;
          for (int i = 0; i < 8; ++i) {
            char* b = static_cast<char*>(std::malloc(4 << 20));
            std::memset(b, r + i, 4 << 20);
            buffers.push_back(b);
          }
          for (char* b : buffers) std::free(b);
        }
        getrusage(RUSAGE_SELF, &after);
        faults = after.ru_minflt - before.ru_minflt;
      });
      worker.join();
    }
    (void)!write(fds[1], &faults, sizeof(faults));
    _exit(0);
  }
  close(fds[1]);
  long faults = -1;
  if (read(fds[0], &faults, sizeof(faults)) != sizeof(faults)) faults = -1;
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return faults;
}

TEST(KeepLargeAllocations, FreedStreamBuffersAreReusedNotFaultedInAgain) {
#if !defined(__GLIBC__)
  GTEST_SKIP() << "malloc tuning applies to glibc only";
#endif
  constexpr int kRounds = 30;
  const long defaults = FaultsOfBufferChurn(false, kRounds);
  const long tuned = FaultsOfBufferChurn(true, kRounds);
  ASSERT_GT(defaults, 0);
  ASSERT_GT(tuned, 0);
  // Tuned: the first round faults its 32 MiB in, later rounds reuse it.
  // Defaults: the arena is trimmed after each round and faulted in again.
  std::printf("minor faults: defaults %ld, tuned %ld\n", defaults, tuned);
  EXPECT_GT(defaults, 4 * tuned) << "defaults " << defaults << " faults, tuned " << tuned;
}

}  // namespace
}  // namespace cohort
