// safetensors: the tensor file format of Hugging Face checkpoints. Torch-free.
//
// A file is an 8-byte little-endian header length N, N bytes of JSON
// header, then the data section. The header maps each tensor name to
// {"dtype", "shape", "data_offsets": [begin, end)} (offsets relative to the
// data section) and may hold "__metadata__" (string -> string).
//
// Reading memory-maps the file: TensorInfo::data points into the mapping and
// stays valid while the owning File (or Checkpoint) lives. Every header is
// validated before any pointer is handed out; a malformed file is refused
// with an error naming the file and the problem.
//
// A model directory is either one `model.safetensors` or shards
// `model-0000N-of-0000M.safetensors` listed by `model.safetensors.index.json`
// ({"metadata": {"total_size": ...}, "weight_map": {name: shard file}}).
//
// Thread-safety: File and Checkpoint are immutable after Open and safe to
// read from many threads.
#ifndef COHORT_CORE_SAFETENSORS_H_
#define COHORT_CORE_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cohort::safetensors {

// Hugging Face's default shard size limit (save_pretrained max_shard_size).
inline constexpr uint64_t kDefaultMaxShardBytes = 5'000'000'000ULL;
// Headers larger than this are refused (the Rust reference uses the same).
inline constexpr uint64_t kMaxHeaderBytes = 100'000'000ULL;

// Bytes per element of a dtype string ("F32" -> 4, "BF16" -> 2, ...);
// nullopt for an unknown dtype.
std::optional<size_t> DTypeSize(std::string_view dtype);

// One tensor as described by a header (offsets relative to the data section).
struct HeaderEntry {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

struct Header {
  std::vector<HeaderEntry> tensors;  // in header order
  std::map<std::string, std::string> metadata;
};

// Parses and validates the JSON header against a data section of
// `data_size` bytes: JSON object, known dtypes, shapes of non-negative
// integers, shape x dtype size == end - begin, offsets inside the data
// section, no overlapping ranges, no duplicate names.
absl::StatusOr<Header> ParseHeader(std::string_view json, uint64_t data_size);

// Parses a whole file image (length prefix, header, data). On success
// `*data_offset` (if given) is the byte offset of the data section.
absl::StatusOr<Header> ParseBuffer(const uint8_t* bytes, size_t size,
                                   size_t* data_offset = nullptr);

// A tensor inside an opened file.
struct TensorInfo {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // into the mapping; not aligned beyond 1
  size_t size_bytes = 0;
};

// One memory-mapped .safetensors file.
class File {
 public:
  static absl::StatusOr<std::unique_ptr<File>> Open(const std::string& path);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // nullptr if absent.
  const TensorInfo* Find(std::string_view name) const;

 private:
  File() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a model: a single file or a sharded directory.
class Checkpoint {
 public:
  // `path` is a .safetensors file, or a directory holding
  // model.safetensors.index.json (sharded) or model.safetensors.
  // For a sharded directory, the index and the shards must agree: every
  // weight_map entry is in its shard, every shard tensor is in the index,
  // no name appears twice.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& path);

  // Sorted by name.
  std::vector<const TensorInfo*> tensors() const;
  const TensorInfo* Find(std::string_view name) const;
  const std::vector<std::unique_ptr<File>>& files() const { return files_; }

 private:
  Checkpoint() = default;
  std::vector<std::unique_ptr<File>> files_;
  std::map<std::string, const TensorInfo*, std::less<>> by_name_;
};

// A tensor to write: `data` must hold exactly size_bytes ==
// product(shape) x DTypeSize(dtype) bytes, little-endian.
struct TensorView {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t size_bytes = 0;
};

// The header JSON for `tensors` laid out in the given order, padded with
// spaces so that the data section starts at an 8-byte boundary.
absl::StatusOr<std::string> SerializeHeader(const std::vector<TensorView>& tensors,
                                            const std::map<std::string, std::string>& metadata);

// Writes one file. Tensors are laid out sorted by dtype size (largest
// first, keeping every tensor aligned), then by name, as the reference
// implementation does.
absl::Status WriteFile(const std::string& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Writes `tensors` into `dir` as `<prefix>.safetensors` when they fit in
// `max_shard_bytes`, otherwise as `<prefix>-0000N-of-0000M.safetensors`
// shards (greedy in name order; a tensor larger than the limit gets a shard
// of its own) plus `<prefix>.safetensors.index.json`. Returns the file
// names written (without the directory).
absl::StatusOr<std::vector<std::string>> WriteSharded(
    const std::string& dir, const std::vector<TensorView>& tensors,
    uint64_t max_shard_bytes = kDefaultMaxShardBytes,
    const std::map<std::string, std::string>& metadata = {{"format", "pt"}},
    const std::string& prefix = "model");

}  // namespace cohort::safetensors

#endif  // COHORT_CORE_SAFETENSORS_H_
