// Published policy versions, kept in memory for FetchPolicy.
//
//   WeightStore store({.keep_versions = 3});
//   store.Publish(7, trainer.ExportWeights());      // returns at once
//   store.WaitPublished(7, absl::Seconds(10));
//   std::shared_ptr<const PublishedVersion> v = store.Get(7);
//   for (const ChunkRef& c : v->Plan(/*delta_base=*/6, 4 << 20)) send(c);
//
// Publish takes the snapshot by value (the trainer's one copy) and hands it
// to a background thread that computes the per-chunk CRC-32C and the delta
// against the previous version, chunk by chunk on `threads` workers (the
// per-tensor and per-version CRCs are combined from the chunks', with no
// second pass over the bytes); only then does the version become visible to
// Get()/Latest(). So publishing costs the training loop no more than the
// copy the trainer made, and fetchers never touch the trainer.
//
// A PublishedVersion is immutable; readers hold it by shared_ptr, so a
// version dropped from the store (beyond keep_versions) stays alive until
// its last stream ends, and no lock is held while streaming.
//
// Delta encoding (WEIGHT_ENCODING_XOR_RLE of learner.proto): for each
// chunk-sized range of a tensor, X = new XOR base, run-length coded as
// (varint zero_run, varint literal_len, literal bytes) pairs. A tensor whose
// delta would not be smaller than 7/8 of its raw bytes (in all, or in any
// one chunk) is sent raw.
//
// Thread-safety: thread-safe.
#ifndef COHORT_LEARNER_WEIGHT_STORE_H_
#define COHORT_LEARNER_WEIGHT_STORE_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "learner/trainer_interface.h"

namespace cohort::learner {

// Run-length coding of XOR deltas (exposed for the actor's decoder tests and
// the benchmark).
// Appends the encoding of `x` (n bytes) to `out`.
void XorRleEncode(const uint8_t* x, int64_t n, std::string* out);
// Applies an encoded delta in place: base[0, n) ^= decoded. INVALID_ARGUMENT
// if `encoded` does not decode to exactly n bytes.
absl::Status XorRleApply(std::string_view encoded, uint8_t* base, int64_t n);
// Encodes new XOR base over n bytes (no temporary buffer).
void XorRleEncodeDiff(const uint8_t* next, const uint8_t* base, int64_t n, std::string* out);

// One message of a stream: the WeightChunk fields besides the version.
struct ChunkRef {
  int32_t tensor_index = 0;
  int64_t offset = 0;
  int64_t decoded_bytes = 0;
  bool delta = false;  // XOR_RLE against base_version
  // The payload: raw bytes inside the version's tensor, or encoded bytes
  // owned by the version. Valid while the PublishedVersion lives.
  const uint8_t* data = nullptr;
  int64_t size = 0;
  uint32_t crc32c = 0;  // of data[0, size)
  bool tensor_last = false;
};

struct PublishedVersion {
  int64_t version = 0;
  WeightSnapshot weights;
  std::vector<uint32_t> tensor_crc32c;  // of each tensor's bytes
  uint32_t version_crc32c = 0;          // of all tensors' bytes in order
  int64_t full_bytes = 0;               // sum of tensor sizes
  // Chunks of the full stream at chunk_bytes (precomputed CRCs).
  int64_t chunk_bytes = 0;
  std::vector<ChunkRef> full;
  // Delta against delta_base (= the previous published version, -1 = none):
  // chunks in stream order, raw for tensors where the delta does not pay.
  int64_t delta_base = -1;
  std::vector<ChunkRef> delta;
  int64_t delta_bytes = 0;           // payload of the delta stream
  std::vector<std::string> encoded;  // owns the delta chunks' bytes

  // The stream to send: `delta` when base == delta_base and the caller
  // accepts deltas, else the full stream; with a chunk size other than
  // chunk_bytes, the full stream is re-cut (CRCs computed on the fly, so
  // prefer the default).
  std::vector<ChunkRef> Plan(bool want_delta, int64_t base, int64_t chunk_bytes) const;
  bool HasDeltaFrom(int64_t base) const { return base >= 0 && base == delta_base; }
};

struct WeightStoreOptions {
  int keep_versions = 3;          // >= 1
  int64_t chunk_bytes = 4 << 20;  // default chunk payload
  bool compute_deltas = true;
  // Workers for a version's CRCs and delta (the store's thread included);
  // they run between publications only. >= 1.
  int threads = 2;
};

class WeightStore {
 public:
  explicit WeightStore(WeightStoreOptions options);
  ~WeightStore();  // joins the background thread (pending work is finished)

  // Queues `snapshot` as `version` (> every earlier one; INVALID_ARGUMENT
  // otherwise, or for a tensor whose size does not match its shape and
  // dtype). Returns without waiting for the checksums.
  absl::Status Publish(int64_t version, WeightSnapshot snapshot);
  // Blocks until `version` is visible (or a later one is), or the timeout.
  bool WaitPublished(int64_t version, absl::Duration timeout);

  // The kept version, or nullptr (not published yet, or dropped).
  std::shared_ptr<const PublishedVersion> Get(int64_t version) const;
  std::shared_ptr<const PublishedVersion> Latest() const;  // nullptr if none
  int64_t latest_version() const;                          // -1 if none
  std::vector<int64_t> kept_versions() const;              // oldest first
  // Versions that must not be dropped (deterministic leases pin them): the
  // store keeps versions >= `version` beyond keep_versions while needed.
  void SetMinNeeded(int64_t version);

 private:
  void Run();
  std::shared_ptr<PublishedVersion> Build(int64_t version, WeightSnapshot snapshot,
                                          std::shared_ptr<const PublishedVersion> prev) const;

  const WeightStoreOptions options_;

  mutable absl::Mutex mu_;
  std::deque<std::pair<int64_t, WeightSnapshot>> pending_ ABSL_GUARDED_BY(mu_);
  std::deque<std::shared_ptr<const PublishedVersion>> kept_ ABSL_GUARDED_BY(mu_);
  int64_t last_queued_ ABSL_GUARDED_BY(mu_) = -1;
  int64_t min_needed_ ABSL_GUARDED_BY(mu_) = -1;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread worker_;  // started last
};

}  // namespace cohort::learner

#endif  // COHORT_LEARNER_WEIGHT_STORE_H_
