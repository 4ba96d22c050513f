// TensorBoard event files. See tensorboard.h.
#include "core/tensorboard.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/crc32c.h"
#include "core/file.h"
#include "core/status.h"
#include "tensorboard/event.pb.h"

namespace cohort {
namespace {

void PutLittleEndian(std::string* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t GetLittleEndian(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

}  // namespace

uint32_t MaskedCrc32c(std::string_view data) {
  uint32_t crc = Crc32c(data);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string FrameRecord(std::string_view data) {
  std::string out;
  std::string len;
  PutLittleEndian(&len, data.size(), 8);
  out += len;
  PutLittleEndian(&out, MaskedCrc32c(len), 4);
  out.append(data.data(), data.size());
  PutLittleEndian(&out, MaskedCrc32c(data), 4);
  return out;
}

absl::StatusOr<std::vector<std::string>> ReadRecords(const std::string& path) {
  ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  std::vector<std::string> records;
  size_t at = 0;
  while (bytes.size() - at >= 12) {
    std::string_view len_bytes(bytes.data() + at, 8);
    uint64_t len = GetLittleEndian(bytes.data() + at, 8);
    if (GetLittleEndian(bytes.data() + at + 8, 4) != MaskedCrc32c(len_bytes)) {
      return absl::DataLossError(
          absl::StrCat(path, ": record at offset ", at, ": length CRC mismatch"));
    }
    if (bytes.size() - at - 12 < len + 4) break;  // cut short: ignore the tail
    std::string_view data(bytes.data() + at + 12, len);
    if (GetLittleEndian(bytes.data() + at + 12 + len, 4) != MaskedCrc32c(data)) {
      return absl::DataLossError(
          absl::StrCat(path, ": record at offset ", at, ": data CRC mismatch"));
    }
    records.emplace_back(data);
    at += 12 + len + 4;
  }
  return records;
}

absl::StatusOr<std::unique_ptr<TensorBoardWriter>> TensorBoardWriter::Create(
    const std::string& dir) {
  RETURN_IF_ERROR(MakeDirs(dir));
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  std::string path = absl::StrCat(dir, "/events.out.tfevents.", absl::ToUnixSeconds(absl::Now()),
                                  ".", host, ".", getpid());
  std::FILE* f = std::fopen(path.c_str(), "ab");
  if (f == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
  }
  std::unique_ptr<TensorBoardWriter> w(new TensorBoardWriter(path, f));
  tensorboard::Event first;
  first.set_wall_time(absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()));
  first.set_file_version("brain.Event:2");
  RETURN_IF_ERROR(w->Write(first.SerializeAsString()));
  return w;
}

TensorBoardWriter::~TensorBoardWriter() { std::fclose(file_); }

absl::Status TensorBoardWriter::AddScalars(int64_t step,
                                           const std::map<std::string, double>& scalars,
                                           double wall_time) {
  tensorboard::Event event;
  event.set_wall_time(wall_time >= 0 ? wall_time
                                     : absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()));
  event.set_step(step);
  tensorboard::Summary* summary = event.mutable_summary();
  for (const auto& [tag, value] : scalars) {
    tensorboard::Summary::Value* v = summary->add_value();
    v->set_tag(tag);
    v->set_simple_value(static_cast<float>(value));
  }
  return Write(event.SerializeAsString());
}

absl::Status TensorBoardWriter::Write(const std::string& event_bytes) {
  std::string record = FrameRecord(event_bytes);
  if (std::fwrite(record.data(), 1, record.size(), file_) != record.size() ||
      std::fflush(file_) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot write ", path_, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace cohort
