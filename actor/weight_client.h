// Fetches policy versions from the learner (FetchPolicy) and verifies them
// before anyone may swap them in.
//
// WeightAssembler checks one stream as it arrives: every chunk's CRC-32C
// (of its payload), that chunks of a tensor are contiguous and cover it,
// that dtype and shape agree with tensor_bytes, that tensors come in index
// order and number tensor_count, that every chunk names the same version;
// it decodes XOR_RLE delta chunks against the base version's bytes, checks
// each tensor's decoded bytes against tensor_crc32c, and finally the CRC-32C
// over all tensors' decoded bytes against the last chunk's version_crc32c.
// Any failure is DATA_LOSS naming the tensor and what was wrong.
//
// Every CRC is computed from the bytes it vouches for: the per-tensor and
// whole-version checksums from the decoded bytes in the buffer the engine
// will read, never derived from the delta and the base's old checksum by
// CRC linearity (that would verify the delta, not the buffer: a base
// changed since it was verified, or a decode that wrote the wrong bytes,
// would pass). Only the concatenation of already-checked ranges is combined
// (Crc32cCombine), which is exact.
//
// WeightClient::Fetch asks for a delta against the last version it returned
// (it keeps that version's bytes) when it has one; a delta stream that fails
// falls back to a full stream. It also keeps the version before that one
// and, once nobody else holds it (the engine swapped it out), assembles the
// next version into its buffers: a swap then writes into memory that is
// already mapped instead of faulting in a fresh ~1 GB per version. A client
// thus holds two versions between fetches (the peak while fetching was two
// already); WeightClientOptions::recycle_buffers = false holds one. The
// old contents of a reused buffer are never read, only overwritten.
//
// A stream that fails verification is retried (a fresh full stream each
// time) up to max_attempts, then the error is returned: weights that did
// not verify are never returned, so never swapped.
//
// Metrics: cohort_actor_weight_fetch_seconds (histogram),
// cohort_actor_weight_fetch_bytes_total, cohort_actor_weight_fetches_total
// {result=ok|checksum|error}.
//
// Thread-safety: WeightAssembler is single-threaded; WeightClient is
// thread-safe (fetches are serialized).
#ifndef COHORT_ACTOR_WEIGHT_CLIENT_H_
#define COHORT_ACTOR_WEIGHT_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "actor/chunk_view.h"
#include "actor/learner_client.h"
#include "actor/weights.h"
#include "cohort/v1/learner.pb.h"
#include "core/metrics.h"

namespace cohort::actor {

class WeightAssembler {
 public:
  // `version`: the version asked for; < 0 accepts whatever the stream
  // names. `base`: the version delta chunks refer to (may be null when no
  // delta was asked for; a delta chunk then fails).
  explicit WeightAssembler(int64_t version, std::shared_ptr<const HostWeights> base = nullptr)
      : want_version_(version), base_(std::move(base)) {}
  absl::Status Add(const ChunkView& chunk);
  absl::Status Add(const cohort::v1::WeightChunk& chunk) { return Add(ChunkView(chunk)); }
  // After the last chunk: the verified weights. DATA_LOSS if the stream
  // ended early.
  absl::StatusOr<HostWeights> Finish();
  int64_t bytes_received() const { return bytes_; }
  // Buffers to assemble into: tensor i of `spare` lends its byte buffer to
  // tensor i of this version when the names match and its capacity suffices
  // (its old contents are overwritten, never read). `spare` must be held by
  // no one else. Call before the first Add().
  void ReuseBuffers(HostWeights spare) { spare_ = std::move(spare); }
  // After a failed stream: every buffer it holds (reused or fresh), for the
  // next attempt's ReuseBuffers. The assembler is spent afterwards.
  HostWeights ReleaseBuffers();
  // Bytes assembled into reused buffers.
  int64_t reused_bytes() const { return reused_bytes_; }
  // Whether any chunk was a delta.
  bool saw_delta() const { return saw_delta_; }

 private:
  absl::Status Fail(const std::string& what) const;

  // Appends the chunk's decoded bytes to t; *crc = their CRC-32C, computed
  // from the bytes in t.
  absl::Status AppendDecoded(const ChunkView& chunk, HostTensor* t, uint32_t* crc);

  const int64_t want_version_;
  const std::shared_ptr<const HostWeights> base_;
  HostWeights weights_;
  HostWeights spare_;  // buffers to reuse
  int64_t reused_bytes_ = 0;
  bool started_ = false;
  bool done_ = false;
  int32_t tensor_count_ = 0;
  int64_t tensor_bytes_ = 0;  // of the tensor being received
  uint32_t tensor_crc_ = 0;   // over its decoded bytes so far
  uint32_t running_crc_ = 0;  // over all complete tensors' decoded bytes
  int64_t bytes_ = 0;         // payload received
  bool saw_delta_ = false;
  std::string scratch_;  // a delta payload received in several pieces, joined
};

struct WeightClientOptions {
  int max_attempts = 3;                // streams tried per Fetch; >= 1
  int64_t chunk_bytes = 0;             // FetchPolicyRequest.chunk_bytes; 0 = server default
  bool delta = true;                   // ask for deltas against the last version fetched
  MetricsRegistry* metrics = nullptr;  // default MetricsRegistry::Default()
  bool recycle_buffers = true;         // assemble into the version before last (see above)
};

class WeightClient {
 public:
  // `learner` is not owned and must outlive the client.
  WeightClient(LearnerClient* learner, WeightClientOptions options = {});

  // `version` <= 0 fetches the latest (always a full stream), unless
  // `exact`: then exactly `version` (0 included) or an error.
  absl::StatusOr<std::shared_ptr<const HostWeights>> Fetch(int64_t version, bool exact = false);

  // The last version Fetch returned (null before the first).
  std::shared_ptr<const HostWeights> last() const;

  struct Stats {
    int64_t fetches = 0;            // verified versions returned
    int64_t delta_fetches = 0;      // of which came (partly) as deltas
    int64_t delta_fallbacks = 0;    // delta streams that failed; fetched in full
    int64_t checksum_failures = 0;  // streams refused by verification
    int64_t recycled_fetches = 0;   // assembled into a previous version's buffers
    int64_t bytes = 0;              // payload bytes received
    double seconds = 0;             // spent in fetches
  };
  Stats stats() const;

 private:
  LearnerClient* const learner_;
  const WeightClientOptions options_;
  Histogram* seconds_;
  Counter* bytes_total_;
  Counter* ok_;
  Counter* checksum_;
  Counter* error_;
  Counter* delta_bytes_;

  // One stream; `base` non-null asks for a delta against it.
  // `spare`: buffers to assemble into (may be empty); after a failure, the
  // buffers the attempt held.
  absl::StatusOr<HostWeights> FetchOnce(int64_t version, bool exact,
                                        const std::shared_ptr<const HostWeights>& base,
                                        HostWeights* spare, int64_t* bytes, bool* delta,
                                        bool* recycled);
  // Keeps `buffers` as the spare when there is none.
  void KeepSpare(HostWeights buffers);

  // The version before last when no one else holds it (else empty).
  HostWeights TakeSpare();

  absl::Mutex fetch_mu_;  // one fetch at a time
  mutable absl::Mutex mu_;
  Stats stats_ ABSL_GUARDED_BY(mu_);
  // Held non-const: once no one else holds the version before last, its
  // buffers are moved into the next assembly.
  std::shared_ptr<HostWeights> last_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<HostWeights> spare_ ABSL_GUARDED_BY(mu_);  // the version before last
};

}  // namespace cohort::actor

#endif  // COHORT_ACTOR_WEIGHT_CLIENT_H_
