// Learner checkpoints: one directory per checkpoint under a root, written
// atomically, the newest complete one found on start, the last N kept.
//
//   ASSIGN_OR_RETURN(CheckpointInfo info,
//       WriteCheckpoint(root, {.step = 10, .version = 10, .keep_last = 3},
//                       [&](const std::string& dir) { return trainer.SaveCheckpoint(dir); },
//                       {{"ledger", ledger_bytes}}));
//   ASSIGN_OR_RETURN(std::optional<CheckpointInfo> latest, FindLatestCheckpoint(root));
//   if (latest) { trainer.LoadCheckpoint(latest->trainer_dir());
//                 ledger.Restore(*ReadCheckpointBlob(*latest, "ledger")); }
//
// Layout: <root>/step-<step, 10 digits>/ holding trainer/ (whatever the
// trainer writes: model/ in HF layout, optimizer, RNG states), blobs/<name>
// (opaque bytes the caller passes, e.g. the ledger), meta.json (step,
// version, each blob's size and FNV-1a hash) and last the COMPLETE marker.
// Writing goes into <root>/.tmp-step-<step>-<pid>/; every file and
// directory below it is fsynced, the marker written and fsynced, and the
// directory renamed into place (the root fsynced after). A crash at any
// point leaves either no new checkpoint or a complete one; leftovers of an
// interrupted write are temporary directories that FindLatestCheckpoint
// ignores and the next WriteCheckpoint removes. A checkpoint is complete
// when its COMPLETE marker and meta.json exist and every blob matches its
// recorded size and hash.
//
// Torch-free. Thread-safety: functions are reentrant; one writer per root
// at a time.
#ifndef COHORT_LEARNER_CHECKPOINT_H_
#define COHORT_LEARNER_CHECKPOINT_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cohort::learner {

struct CheckpointInfo {
  std::string path;  // <root>/step-NNNNNNNNNN
  int64_t step = 0;
  int64_t version = 0;
  std::vector<std::string> blob_names;
  std::string trainer_dir() const { return path + "/trainer"; }
};

struct CheckpointWriteOptions {
  int64_t step = 0;     // >= 0; names the directory
  int64_t version = 0;  // policy version, recorded in meta.json
  int keep_last = 3;    // complete checkpoints kept after this one; >= 1
};

// Writes a checkpoint (see the file comment). `write_trainer` fills the
// given empty directory. Blob names are [A-Za-z0-9._-]+. An existing
// checkpoint of the same step is replaced. Returns the new checkpoint.
absl::StatusOr<CheckpointInfo> WriteCheckpoint(
    const std::string& root, const CheckpointWriteOptions& options,
    const std::function<absl::Status(const std::string& dir)>& write_trainer,
    const std::map<std::string, std::string>& blobs);

// The complete checkpoint with the highest step under `root`, or nullopt
// (also when `root` does not exist). Incomplete ones are skipped with a log
// line.
absl::StatusOr<std::optional<CheckpointInfo>> FindLatestCheckpoint(const std::string& root);

// Every complete checkpoint under `root`, by ascending step.
absl::StatusOr<std::vector<CheckpointInfo>> ListCheckpoints(const std::string& root);

// The bytes of blob `name` (NOT_FOUND if the checkpoint has none).
absl::StatusOr<std::string> ReadCheckpointBlob(const CheckpointInfo& checkpoint,
                                               const std::string& name);

// Removes all but the `keep_last` newest complete checkpoints, incomplete
// ones and temporary directories.
absl::Status PruneCheckpoints(const std::string& root, int keep_last);

}  // namespace cohort::learner

#endif  // COHORT_LEARNER_CHECKPOINT_H_
