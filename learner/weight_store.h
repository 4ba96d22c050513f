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
// Get()/Latest()/WaitPublished(). So publishing costs the training loop no
// more than the copy the trainer made, and fetchers never touch the trainer.
//
// Streaming while building: from Publish() on, GetPublished() returns the
// version while it is still being built, and a FetchPolicy stream may send
// its chunks as they become final: tensor t's chunks (their CRCs, their
// encoding) and tensor_crc32c[t] are final once ready_tensors() > t
// (WhenReady / WaitReady). The last tensor is made ready only after the
// version is visible to Get()/Latest()/latest_version(), so the last chunk
// of a stream (the one carrying version_crc32c, without which no client
// swaps) is never sent for a version the store does not yet count as
// published, and a version still being built is never complete().
//
// A PublishedVersion is immutable once complete (and its final fields never
// change after they are made ready); readers hold it by shared_ptr, so a
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
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
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

// One version as FetchPolicy streams it. Every field is fixed when the
// store lays the version out in Publish(), except where a comment says
// otherwise; those are written once by the store's workers and may be read
// only after they are made ready (see the file comment).
struct PublishedVersion {
  int64_t version = 0;
  WeightSnapshot weights;  // tensors sorted by name
  std::vector<uint32_t>
      tensor_crc32c;            // of each tensor's bytes; [t] final when ready_tensors() > t
  uint32_t version_crc32c = 0;  // of all tensors' bytes in order; final when complete()
  int64_t full_bytes = 0;       // sum of tensor sizes
  // Chunks of the full stream at chunk_bytes (crc32c of chunk i final when
  // its tensor is ready; the rest fixed).
  int64_t chunk_bytes = 0;
  std::vector<ChunkRef> full;
  // full[first_chunk[t], first_chunk[t + 1]) are tensor t's chunks.
  std::vector<size_t> first_chunk;
  // Delta against delta_base (= the previous published version, -1 = none):
  // one entry per entry of `full` (same tensor, offset, decoded_bytes), raw
  // for tensors where the delta does not pay; entry i final when its tensor
  // is ready.
  int64_t delta_base = -1;
  std::vector<ChunkRef> delta;
  int64_t delta_bytes = 0;           // payload of the delta stream; final when complete()
  std::vector<std::string> encoded;  // owns the delta chunks' bytes (one per chunk)

  // The stream to send: `delta` when base == delta_base and the caller
  // accepts deltas, else the full stream; with a chunk size other than
  // chunk_bytes, the full stream is re-cut (CRCs computed on the fly, so
  // prefer the default). The entries are copies: call it on a complete()
  // version, or use full/delta by index after WhenReady.
  std::vector<ChunkRef> Plan(bool want_delta, int64_t base, int64_t chunk_bytes) const;
  bool HasDeltaFrom(int64_t base) const { return base >= 0 && base == delta_base; }

  // Tensors [0, ready_tensors()) are final.
  int32_t ready_tensors() const;
  // All tensors final, version_crc32c and delta_bytes too; the store has
  // made the version visible to Get().
  bool complete() const;
  // True if tensors [0, t] are final. Otherwise false, and `ready` is called
  // exactly once when they are, on one of the store's worker threads, with
  // no lock held; it must not block (it may delete its owner). A version
  // whose build has started always finishes (the store's destructor
  // finishes pending work), so every registered callback runs.
  bool WhenReady(int32_t t, absl::AnyInvocable<void() &&> ready) const;
  // Blocks until tensors [0, t] are final or the timeout passes.
  bool WaitReady(int32_t t, absl::Duration timeout) const;

 private:
  friend class WeightStore;
  // Marks tensor t final and makes ready every tensor before the first
  // that is not, except the last tensor while `hold_last` (the store makes
  // it ready once the version is visible). Runs the callbacks due.
  void MarkTensorReady(int32_t t, bool hold_last);
  void MarkComplete();

  mutable absl::Mutex mu_;
  std::vector<uint8_t> tensor_done_ ABSL_GUARDED_BY(mu_);
  int32_t ready_tensors_ ABSL_GUARDED_BY(mu_) = 0;
  mutable std::vector<std::pair<int32_t, absl::AnyInvocable<void() &&>>> waiters_
      ABSL_GUARDED_BY(mu_);
};

struct WeightStoreOptions {
  int keep_versions = 3;          // >= 1
  int64_t chunk_bytes = 4 << 20;  // default chunk payload
  bool compute_deltas = true;
  // Workers for a version's CRCs and delta (the store's thread included);
  // they run between publications only. >= 1.
  int threads = 2;
  // Tests only: called by a worker before it computes chunk i (index into
  // PublishedVersion::full) of `version`; may block to hold a build part-way.
  std::function<void(int64_t version, int64_t chunk)> before_chunk;
};

class WeightStore {
 public:
  explicit WeightStore(WeightStoreOptions options);
  ~WeightStore();  // joins the background thread (pending work is finished)

  // Queues `snapshot` as `version` (> every earlier one; INVALID_ARGUMENT
  // otherwise, or for a tensor whose size does not match its shape and
  // dtype). Returns without waiting for the checksums.
  absl::Status Publish(int64_t version, WeightSnapshot snapshot);
  // Blocks until `version` is visible and complete (or a later one is), or
  // the timeout.
  bool WaitPublished(int64_t version, absl::Duration timeout);

  // The kept version, or nullptr (not published yet, or dropped). Only
  // complete versions.
  std::shared_ptr<const PublishedVersion> Get(int64_t version) const;
  std::shared_ptr<const PublishedVersion> Latest() const;  // nullptr if none
  int64_t latest_version() const;                          // -1 if none
  std::vector<int64_t> kept_versions() const;              // oldest first
  // A kept version, or one published and still being built (or queued to
  // be): what FetchPolicy may stream as it is built. nullptr if neither.
  std::shared_ptr<const PublishedVersion> GetPublished(int64_t version) const;
  // The newest version Publish() accepted, built or not; -1 if none.
  int64_t latest_published_version() const;
  // Versions that must not be dropped (deterministic leases pin them): the
  // store keeps versions >= `version` beyond keep_versions while needed.
  void SetMinNeeded(int64_t version);

 private:
  void Run();
  // The version's layout (sorted tensors, chunk ranges, whether a delta
  // against `prev` is possible); no pass over the bytes.
  std::shared_ptr<PublishedVersion> Layout(int64_t version, WeightSnapshot snapshot,
                                           const PublishedVersion* prev) const;
  // Computes the CRCs and the delta, making tensors ready as they finish
  // (all but the last).
  void Build(PublishedVersion* v, const PublishedVersion* prev) const;

  const WeightStoreOptions options_;

  mutable absl::Mutex mu_;
  // Published and not complete yet, oldest first; the front is being built
  // (its delta against kept_.back(), the version published before it).
  std::deque<std::shared_ptr<PublishedVersion>> building_ ABSL_GUARDED_BY(mu_);
  std::deque<std::shared_ptr<const PublishedVersion>> kept_ ABSL_GUARDED_BY(mu_);
  int64_t last_queued_ ABSL_GUARDED_BY(mu_) = -1;
  int64_t min_needed_ ABSL_GUARDED_BY(mu_) = -1;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread worker_;  // started last
};

}  // namespace cohort::learner

#endif  // COHORT_LEARNER_WEIGHT_STORE_H_
