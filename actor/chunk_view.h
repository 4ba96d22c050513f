// A WeightChunk as the actor receives it, without copying its payload.
//
// A 4 MiB chunk arrives as a gRPC message spread over many slices; parsing
// it into a cohort.v1.WeightChunk copies the `data` field into a fresh
// string (and faults in its pages) before anyone reads it. Instead,
// GrpcLearnerClient reads the raw message and ParseWeightChunk splits it:
// every field but `data` is parsed into `meta` (as protobuf would: unknown
// fields are kept, a repeated scalar field may be packed or not), and the
// payload becomes a list of pieces pointing into the received slices. The
// assembler then checks the CRC and copies the bytes once, straight into
// the tensor the engine will read.
//
//   std::vector<absl::string_view> pieces = ...;   // the message's slices
//   v1::WeightChunk meta;
//   std::vector<absl::string_view> payload;
//   RETURN_IF_ERROR(ParseWeightChunk(pieces, &meta, &payload));
//   RETURN_IF_ERROR(assembler.Add(ChunkView(meta, payload)));
//
// A ChunkView borrows everything it names: the message and pieces must
// outlive it (a LearnerClient's FetchPolicy callback may use it only until
// it returns).
//
// Thread-safety: ParseWeightChunk is reentrant; a ChunkView is immutable.
#ifndef COHORT_ACTOR_CHUNK_VIEW_H_
#define COHORT_ACTOR_CHUNK_VIEW_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "cohort/v1/learner.pb.h"

namespace cohort::actor {

class ChunkView {
 public:
  // A whole parsed message: the payload is chunk.data().
  explicit ChunkView(const cohort::v1::WeightChunk& chunk);
  // The fields of `meta` (its data() is ignored) and the payload `pieces`,
  // in order.
  ChunkView(const cohort::v1::WeightChunk& meta, absl::Span<const absl::string_view> pieces);
  ChunkView(const ChunkView&) = delete;
  ChunkView& operator=(const ChunkView&) = delete;

  const cohort::v1::WeightChunk& meta() const { return meta_; }
  absl::Span<const absl::string_view> data() const { return data_; }
  // Payload bytes over all pieces.
  size_t size() const { return size_; }
  // CRC-32C of the payload.
  uint32_t Crc32c() const;
  // The payload in one piece: data()[0] when there is one piece, else the
  // pieces copied into *scratch.
  absl::string_view Flatten(std::string* scratch) const;

 private:
  const cohort::v1::WeightChunk& meta_;
  absl::string_view one_;  // the payload of a whole message
  absl::Span<const absl::string_view> data_;
  size_t size_ = 0;
};

// Splits one serialized WeightChunk, given as consecutive pieces of bytes,
// into its fields (`*meta`, data left empty) and its payload (`*payload`:
// views into `message`, empty pieces omitted). INVALID_ARGUMENT naming the
// problem if the bytes are not a valid WeightChunk.
absl::Status ParseWeightChunk(absl::Span<const absl::string_view> message,
                              cohort::v1::WeightChunk* meta,
                              std::vector<absl::string_view>* payload);

}  // namespace cohort::actor

#endif  // COHORT_ACTOR_CHUNK_VIEW_H_
