#include "learner/checkpoint.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/file.h"
#include "core/logging.h"
#include "core/status.h"

namespace cohort::learner {
namespace {

constexpr char kMarker[] = "COMPLETE";
constexpr char kPrefix[] = "step-";
constexpr char kTmpPrefix[] = ".tmp-step-";

uint64_t Fnv1a(const std::string& bytes) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

bool ValidBlobName(const std::string& name) {
  if (name.empty() || name == "." || name == "..") return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) {
      return false;
    }
  }
  return true;
}

absl::Status SysError(const char* what, const std::string& path) {
  return absl::FailedPreconditionError(
      absl::StrCat("checkpoint: ", what, " ", path, ": ", std::strerror(errno)));
}

absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("checkpoint: no directory ", dir));
    return SysError("cannot list", dir);
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

bool IsDir(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// fsyncs every regular file and directory below and including `path`.
absl::Status SyncTree(const std::string& path) {
  if (IsDir(path)) {
    ASSIGN_OR_RETURN(std::vector<std::string> names, ListDir(path));
    for (const std::string& n : names) RETURN_IF_ERROR(SyncTree(path + "/" + n));
    return SyncDirectory(path);
  }
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return SysError("cannot open", path);
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return SysError("cannot fsync", path);
  return absl::OkStatus();
}

// Parses a step from "step-NNNNNNNNNN"; -1 if `name` is not one.
int64_t StepOf(const std::string& name) {
  if (name.rfind(kPrefix, 0) != 0) return -1;
  const std::string digits = name.substr(std::strlen(kPrefix));
  if (digits.empty() || digits.size() > 18) return -1;
  for (char c : digits) {
    if (c < '0' || c > '9') return -1;
  }
  return std::stoll(digits);
}

// Reads and checks one checkpoint directory; the problem when incomplete.
absl::StatusOr<CheckpointInfo> ReadInfo(const std::string& path, int64_t step) {
  if (!PathExists(path + "/" + kMarker)) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": no ", kMarker, " marker"));
  }
  ASSIGN_OR_RETURN(std::string text, ReadFile(path + "/meta.json"));
  nlohmann::json meta = nlohmann::json::parse(text, nullptr, false);
  if (meta.is_discarded() || !meta.is_object() || !meta.contains("step") ||
      !meta.contains("version") || !meta.contains("blobs") || !meta["blobs"].is_object()) {
    return absl::FailedPreconditionError(absl::StrCat(path, "/meta.json: malformed"));
  }
  CheckpointInfo info;
  info.path = path;
  info.step = meta["step"].get<int64_t>();
  info.version = meta["version"].get<int64_t>();
  if (info.step != step) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, "/meta.json: step ", info.step, " does not match the directory"));
  }
  for (auto it = meta["blobs"].begin(); it != meta["blobs"].end(); ++it) {
    ASSIGN_OR_RETURN(std::string bytes, ReadFile(path + "/blobs/" + it.key()));
    if (static_cast<int64_t>(bytes.size()) != it.value().value("size", int64_t{-1}) ||
        absl::StrFormat("%016x", Fnv1a(bytes)) != it.value().value("fnv1a", std::string())) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, "/blobs/", it.key(), ": size or hash differs from meta.json"));
    }
    info.blob_names.push_back(it.key());
  }
  return info;
}

// Test hook for kills during a checkpoint write (tests/cluster_fault_test.cc):
// off unless COHORT_TEST_CHECKPOINT_PAUSE_MS is set; then every write waits
// that long with its temporary directory half written (trainer state in it,
// no meta.json, no completion marker), so that a test can kill the learner
// inside the write instead of hoping to catch a write of a few milliseconds.
void PauseForTest() {
  static const int pause_ms = [] {
    const char* v = std::getenv("COHORT_TEST_CHECKPOINT_PAUSE_MS");
    int ms = 0;
    if (v == nullptr || !absl::SimpleAtoi(v, &ms) || ms <= 0) return 0;
    COHORT_LOG(WARNING) << "checkpoint writes pause " << ms
                        << " ms half-written for a test (COHORT_TEST_CHECKPOINT_PAUSE_MS)";
    return std::min(ms, 10000);
  }();
  if (pause_ms > 0) absl::SleepFor(absl::Milliseconds(pause_ms));
}

}  // namespace

absl::StatusOr<CheckpointInfo> WriteCheckpoint(
    const std::string& root, const CheckpointWriteOptions& options,
    const std::function<absl::Status(const std::string& dir)>& write_trainer,
    const std::map<std::string, std::string>& blobs) {
  if (options.step < 0 || options.keep_last < 1) {
    return absl::InvalidArgumentError("checkpoint: need step >= 0 and keep_last >= 1");
  }
  for (const auto& [name, unused] : blobs) {
    if (!ValidBlobName(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint: blob name \"", name, "\" must match [A-Za-z0-9._-]+"));
    }
  }
  RETURN_IF_ERROR(MakeDirs(root));
  const std::string name = absl::StrFormat("%s%010d", kPrefix, options.step);
  const std::string tmp = absl::StrFormat("%s/%s%010d-%d", root, kTmpPrefix, options.step,
                                          static_cast<int>(::getpid()));
  const std::string final_path = root + "/" + name;
  RETURN_IF_ERROR(RemoveAll(tmp));
  RETURN_IF_ERROR(MakeDirs(tmp + "/trainer"));
  RETURN_IF_ERROR(MakeDirs(tmp + "/blobs"));
  if (write_trainer) RETURN_IF_ERROR(write_trainer(tmp + "/trainer"));
  PauseForTest();
  nlohmann::json meta = {
      {"step", options.step}, {"version", options.version}, {"blobs", nlohmann::json::object()}};
  for (const auto& [blob, bytes] : blobs) {
    RETURN_IF_ERROR(WriteFileAtomically(tmp + "/blobs/" + blob, bytes));
    meta["blobs"][blob] = {{"size", bytes.size()},
                           {"fnv1a", absl::StrFormat("%016x", Fnv1a(bytes))}};
  }
  RETURN_IF_ERROR(WriteFileAtomically(tmp + "/meta.json", meta.dump(2) + "\n"));
  RETURN_IF_ERROR(SyncTree(tmp));
  RETURN_IF_ERROR(WriteFileAtomically(tmp + "/" + kMarker, "complete\n"));
  RETURN_IF_ERROR(SyncDirectory(tmp));
  if (PathExists(final_path)) {
    // Same step written again (e.g. Admin/Checkpoint right after a periodic
    // one): move the old one aside first; a crash in between leaves the old
    // one as a temporary directory and the new one complete.
    const std::string old = absl::StrFormat("%s/%s%010d-old-%d", root, kTmpPrefix, options.step,
                                            static_cast<int>(::getpid()));
    RETURN_IF_ERROR(RemoveAll(old));
    RETURN_IF_ERROR(RenameDurably(final_path, old));
    RETURN_IF_ERROR(RenameDurably(tmp, final_path));
    RETURN_IF_ERROR(RemoveAll(old));
  } else {
    RETURN_IF_ERROR(RenameDurably(tmp, final_path));
  }
  RETURN_IF_ERROR(PruneCheckpoints(root, options.keep_last));
  return ReadInfo(final_path, options.step);
}

absl::StatusOr<std::vector<CheckpointInfo>> ListCheckpoints(const std::string& root) {
  absl::StatusOr<std::vector<std::string>> names = ListDir(root);
  if (absl::IsNotFound(names.status())) return std::vector<CheckpointInfo>();
  if (!names.ok()) return names.status();
  std::vector<CheckpointInfo> out;
  for (const std::string& n : *names) {
    const int64_t step = StepOf(n);
    if (step < 0 || !IsDir(root + "/" + n)) continue;
    absl::StatusOr<CheckpointInfo> info = ReadInfo(root + "/" + n, step);
    if (!info.ok()) {
      COHORT_LOG(WARNING) << "checkpoint: skipping incomplete " << info.status().message();
      continue;
    }
    out.push_back(*std::move(info));
  }
  std::sort(out.begin(), out.end(),
            [](const CheckpointInfo& a, const CheckpointInfo& b) { return a.step < b.step; });
  return out;
}

absl::StatusOr<std::optional<CheckpointInfo>> FindLatestCheckpoint(const std::string& root) {
  ASSIGN_OR_RETURN(std::vector<CheckpointInfo> all, ListCheckpoints(root));
  if (all.empty()) return std::optional<CheckpointInfo>();
  return std::optional<CheckpointInfo>(all.back());
}

absl::StatusOr<std::string> ReadCheckpointBlob(const CheckpointInfo& checkpoint,
                                               const std::string& name) {
  if (std::find(checkpoint.blob_names.begin(), checkpoint.blob_names.end(), name) ==
      checkpoint.blob_names.end()) {
    return absl::NotFoundError(
        absl::StrCat("checkpoint ", checkpoint.path, " has no blob \"", name, "\""));
  }
  return ReadFile(checkpoint.path + "/blobs/" + name);
}

absl::Status PruneCheckpoints(const std::string& root, int keep_last) {
  absl::StatusOr<std::vector<std::string>> names = ListDir(root);
  if (absl::IsNotFound(names.status())) return absl::OkStatus();
  if (!names.ok()) return names.status();
  ASSIGN_OR_RETURN(std::vector<CheckpointInfo> complete, ListCheckpoints(root));
  std::vector<std::string> keep;
  for (size_t i = complete.size() > static_cast<size_t>(keep_last) ? complete.size() - keep_last
                                                                   : 0;
       i < complete.size(); ++i) {
    keep.push_back(complete[i].path);
  }
  for (const std::string& n : *names) {
    const std::string path = root + "/" + n;
    const bool ours = StepOf(n) >= 0 || n.rfind(kTmpPrefix, 0) == 0;
    if (!ours || std::find(keep.begin(), keep.end(), path) != keep.end()) continue;
    RETURN_IF_ERROR(RemoveAll(path));
  }
  return SyncDirectory(root);
}

}  // namespace cohort::learner
