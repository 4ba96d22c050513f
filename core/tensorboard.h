// TensorBoard event files: scalar summaries, one record per step.
//
//   ASSIGN_OR_RETURN(auto tb, TensorBoardWriter::Create(run_dir + "/tensorboard"));
//   RETURN_IF_ERROR(tb->AddScalars(step, {{"reward/mean", 0.41}, {"eval/accuracy", 0.6}}));
//
// File: <dir>/events.out.tfevents.<unix seconds>.<hostname>.<pid>, a
// sequence of TFRecord-framed records:
//   uint64 length (little-endian) | uint32 masked_crc32c(length bytes)
//   | data | uint32 masked_crc32c(data)
// with masked_crc32c(x) = rotate_right(crc32c(x), 15) + 0xa282ead8. Each
// record is a serialized cohort.tensorboard.Event (proto/tensorboard: the
// field numbers of TensorBoard's own Event/Summary); the first carries
// file_version "brain.Event:2". TensorBoard reads the directory as is.
//
// Thread-safety: a writer is not thread-safe; use it from one thread. The
// read helpers are reentrant.
#ifndef COHORT_CORE_TENSORBOARD_H_
#define COHORT_CORE_TENSORBOARD_H_

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cohort {

// TFRecord's masked CRC-32C (core/crc32c.h) of `data`.
uint32_t MaskedCrc32c(std::string_view data);

// `data` with TFRecord framing.
std::string FrameRecord(std::string_view data);

// The records of a TFRecord file, each checked against both CRCs. A file cut
// short mid-record (a writer killed mid-append) yields the complete records
// before it; a CRC mismatch is DATA_LOSS naming the record's offset.
absl::StatusOr<std::vector<std::string>> ReadRecords(const std::string& path);

class TensorBoardWriter {
 public:
  // Creates `dir` and a new event file in it, and writes the file_version
  // record.
  static absl::StatusOr<std::unique_ptr<TensorBoardWriter>> Create(const std::string& dir);
  ~TensorBoardWriter();

  // One Event at `step` holding one simple_value per tag. `wall_time` in
  // seconds since the epoch; < 0 = now. Flushed to the OS on return.
  absl::Status AddScalars(int64_t step, const std::map<std::string, double>& scalars,
                          double wall_time = -1);

  const std::string& path() const { return path_; }

 private:
  TensorBoardWriter(std::string path, std::FILE* file) : path_(std::move(path)), file_(file) {}
  absl::Status Write(const std::string& event_bytes);

  const std::string path_;
  std::FILE* file_;
};

}  // namespace cohort

#endif  // COHORT_CORE_TENSORBOARD_H_
