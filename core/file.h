// Whole-file reads and crash-safe writes.
//
//   ASSIGN_OR_RETURN(std::string text, ReadFile(path));
//   RETURN_IF_ERROR(WriteFileAtomically(path, text));
//
// WriteFileAtomically writes a temporary file beside `path`, fsyncs it,
// renames it over `path` and fsyncs the directory, so a reader (or a process
// restarted after a crash at any point) sees either the old content or the
// new one, never a mix. SyncDirectory / RenameDurably make the same
// guarantee for directories written by hand (checkpoints).
//
// Errors: NOT_FOUND when the file does not exist, otherwise
// FAILED_PRECONDITION (permissions, disk full, ...); each message names the
// path and the system error.
//
// Thread-safety: reentrant; concurrent writers of the same path each leave
// a complete file (the last rename wins).
#ifndef COHORT_CORE_FILE_H_
#define COHORT_CORE_FILE_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cohort {

// The whole content of `path`. `max_bytes` > 0 refuses larger files with
// FAILED_PRECONDITION (before reading them).
absl::StatusOr<std::string> ReadFile(const std::string& path, int64_t max_bytes = 0);

// True if `path` exists (any file type).
bool PathExists(const std::string& path);

// Replaces `path` with `content` atomically and durably (see above). The
// temporary file is `path` + ".tmp.<pid>.<n>" and is removed on failure.
absl::Status WriteFileAtomically(const std::string& path, std::string_view content);

// Appends `content` to `path` (created if missing) and, when `sync`, fsyncs.
absl::Status AppendToFile(const std::string& path, std::string_view content, bool sync = false);

// fsyncs the directory `dir` so that renames and creations in it survive a
// crash.
absl::Status SyncDirectory(const std::string& dir);

// Creates `dir` and its missing parents (mode 0755). OK if it exists.
absl::Status MakeDirs(const std::string& dir);

// Removes `path` and, for a directory, everything below it. OK if missing.
absl::Status RemoveAll(const std::string& path);

// Renames `from` to `to` (replacing an empty directory or a file) and fsyncs
// the parent directory of `to`.
absl::Status RenameDurably(const std::string& from, const std::string& to);

}  // namespace cohort

#endif  // COHORT_CORE_FILE_H_
