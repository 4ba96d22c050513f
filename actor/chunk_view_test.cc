#include "actor/chunk_view.h"

#include <random>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "actor/learner_client.h"
#include "actor/testing/fake_learner_server.h"
#include "actor/testing/fakes.h"
#include "actor/weight_client.h"
#include "core/crc32c.h"
#include "core/rpc.h"

namespace cohort::actor {
namespace {

namespace v1 = ::cohort::v1;
using testing::ChunkWeights;
using testing::FakeLearner;
using testing::FakeLearnerServer;
using testing::FakeWeights;
using ::testing::HasSubstr;

v1::WeightChunk SampleChunk(size_t payload) {
  v1::WeightChunk c;
  c.set_version(7);
  c.set_tensor_name("model.layers.0.self_attn.q_proj.weight");
  c.set_dtype(v1::DTYPE_BF16);
  c.add_shape(896);
  c.add_shape(896);
  c.set_offset(1 << 20);
  c.set_tensor_bytes(896 * 896 * 2);
  c.set_tensor_index(3);
  c.set_tensor_count(290);
  c.set_encoding(v1::WEIGHT_ENCODING_RAW);
  c.set_decoded_bytes(static_cast<int64_t>(payload));
  c.set_tensor_last(true);
  c.set_tensor_crc32c(0xdeadbeef);
  c.set_last(true);
  c.set_version_crc32c(0x12345678);
  c.set_stream_bytes(1 << 30);
  std::string data(payload, '\0');
  std::mt19937 rng(payload);
  for (char& b : data) b = static_cast<char>(rng());
  c.set_data(data);
  c.set_crc32c(Crc32c(data));
  return c;
}

// `bytes` cut at the sorted positions `cuts` (empty pieces included).
std::vector<absl::string_view> Cut(absl::string_view bytes, std::vector<size_t> cuts) {
  std::sort(cuts.begin(), cuts.end());
  std::vector<absl::string_view> pieces;
  size_t at = 0;
  for (size_t c : cuts) {
    pieces.push_back(bytes.substr(at, c - at));
    at = c;
  }
  pieces.push_back(bytes.substr(at));
  return pieces;
}

std::string Join(const std::vector<absl::string_view>& pieces) {
  std::string out;
  for (absl::string_view p : pieces) out.append(p.data(), p.size());
  return out;
}

std::string WithoutData(v1::WeightChunk c) {
  c.clear_data();
  return c.SerializeAsString();
}

TEST(ParseWeightChunk, AnySplitOfTheMessageGivesItsFieldsAndPayload) {
  const v1::WeightChunk chunk = SampleChunk(3000);
  const std::string bytes = chunk.SerializeAsString();
  std::mt19937 rng(1);
  for (int trial = 0; trial < 500; ++trial) {
    std::vector<size_t> cuts(trial % 9);
    for (size_t& c : cuts) c = rng() % (bytes.size() + 1);
    const std::vector<absl::string_view> pieces = Cut(bytes, cuts);
    v1::WeightChunk meta;
    std::vector<absl::string_view> payload;
    ASSERT_TRUE(ParseWeightChunk(pieces, &meta, &payload).ok()) << trial;
    EXPECT_TRUE(meta.data().empty());
    EXPECT_EQ(meta.SerializeAsString(), WithoutData(chunk)) << trial;
    EXPECT_EQ(Join(payload), chunk.data()) << trial;
    for (absl::string_view p : payload) {
      EXPECT_FALSE(p.empty());
      // A view into the message, not a copy.
      EXPECT_GE(p.data(), bytes.data());
      EXPECT_LE(p.data() + p.size(), bytes.data() + bytes.size());
    }
    ChunkView view(meta, payload);
    EXPECT_EQ(view.size(), chunk.data().size());
    EXPECT_EQ(view.Crc32c(), chunk.crc32c());
    std::string scratch;
    EXPECT_EQ(view.Flatten(&scratch), chunk.data());
  }
}

TEST(ParseWeightChunk, TheLearnersFramingHeaderThenPayloadSlice) {
  // learner/service.cc writes the other fields, then the data field's tag
  // and length, then the payload as its own slice.
  v1::WeightChunk chunk = SampleChunk(5000);
  v1::WeightChunk header = chunk;
  header.clear_data();
  std::string head = header.SerializeAsString();
  head.push_back(static_cast<char>((7 << 3) | 2));
  head.push_back(static_cast<char>(0x80 | (5000 & 0x7F)));
  head.push_back(static_cast<char>(5000 >> 7));
  const absl::string_view pieces[2] = {head, chunk.data()};
  v1::WeightChunk meta;
  std::vector<absl::string_view> payload;
  ASSERT_TRUE(ParseWeightChunk(pieces, &meta, &payload).ok());
  EXPECT_EQ(meta.SerializeAsString(), WithoutData(chunk));
  ASSERT_EQ(payload.size(), 1u);
  EXPECT_EQ(payload[0].data(), chunk.data().data());  // the slice itself
  v1::WeightChunk empty;                              // no payload field at all
  empty.set_version(3);
  const std::string e = empty.SerializeAsString();
  const absl::string_view one[1] = {e};
  ASSERT_TRUE(ParseWeightChunk(one, &meta, &payload).ok());
  EXPECT_EQ(meta.version(), 3);
  EXPECT_TRUE(payload.empty());
}

TEST(ParseWeightChunk, MalformedBytesAreRefusedWithTheProblem) {
  const std::string bytes = SampleChunk(100).SerializeAsString();
  v1::WeightChunk meta;
  std::vector<absl::string_view> payload;
  auto parse = [&](const std::string& b) {
    const absl::string_view one[1] = {b};
    return ParseWeightChunk(one, &meta, &payload);
  };
  // Cut inside the payload: its length runs past the end.
  absl::Status s = parse(bytes.substr(0, bytes.size() - 10));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("WeightChunk"));
  std::string bad_payload;
  bad_payload.push_back(static_cast<char>((7 << 3) | 2));
  bad_payload.push_back(50);
  bad_payload.append(10, 'x');
  EXPECT_THAT(parse(bad_payload).message(), HasSubstr("payload past the end"));
  EXPECT_THAT(parse(std::string(1, static_cast<char>((2 << 3) | 3))).message(),
              HasSubstr("wire type 3"));
  EXPECT_THAT(parse(std::string(1, static_cast<char>(0x80))).message(),
              HasSubstr("truncated field tag"));
  EXPECT_THAT(parse(std::string(1, static_cast<char>((1 << 3) | 1))).message(),
              HasSubstr("truncated field 1"));
  // Well-framed bytes whose field does not parse as its type (a string
  // field that is not UTF-8... tensor_name is `string`).
  std::string bad_string;
  bad_string.push_back(static_cast<char>((2 << 3) | 2));
  bad_string.push_back(2);
  bad_string.push_back(static_cast<char>(0xff));
  bad_string.push_back(static_cast<char>(0xfe));
  EXPECT_THAT(parse(bad_string).message(), HasSubstr("fields that do not parse"));
}

TEST(ChunkView, AssemblerTakesPiecesFullAndDelta) {
  const HostWeights base = FakeWeights(4, 3, 5000);
  const HostWeights next = FakeWeights(5, 3, 5000);
  auto base_ptr = std::make_shared<const HostWeights>(base);
  for (const HostWeights* delta_base : {static_cast<const HostWeights*>(nullptr), &base}) {
    WeightAssembler a(5, base_ptr);
    bool saw_pieces = false;
    for (const v1::WeightChunk& c : ChunkWeights(next, 4096, delta_base)) {
      const std::string bytes = c.SerializeAsString();
      const std::vector<absl::string_view> pieces =
          Cut(bytes, {bytes.size() / 3, bytes.size() / 2});
      v1::WeightChunk meta;
      std::vector<absl::string_view> payload;
      ASSERT_TRUE(ParseWeightChunk(pieces, &meta, &payload).ok());
      saw_pieces |= payload.size() > 1;
      ASSERT_TRUE(a.Add(ChunkView(meta, payload)).ok());
    }
    EXPECT_TRUE(saw_pieces);
    absl::StatusOr<HostWeights> got = a.Finish();
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(a.saw_delta(), delta_base != nullptr);
    ASSERT_EQ(got->tensors.size(), next.tensors.size());
    for (size_t i = 0; i < next.tensors.size(); ++i) {
      EXPECT_EQ(got->tensors[i].data, next.tensors[i].data) << i;
    }
    EXPECT_EQ(got->crc32c, next.crc32c);
  }
}

TEST(ChunkView, AFlippedByteInOnePieceFailsTheChunkCrc) {
  const HostWeights w = FakeWeights(2, 1, 5000);
  std::vector<v1::WeightChunk> chunks = ChunkWeights(w, 1 << 20);
  ASSERT_EQ(chunks.size(), 1u);
  std::string bytes = chunks[0].SerializeAsString();
  const size_t at = bytes.find(chunks[0].data());
  ASSERT_NE(at, std::string::npos);
  bytes[at + chunks[0].data().size() - 7] ^= 0x01;  // in the payload's second piece
  const std::vector<absl::string_view> pieces = Cut(bytes, {at + chunks[0].data().size() / 2});
  v1::WeightChunk meta;
  std::vector<absl::string_view> payload;
  ASSERT_TRUE(ParseWeightChunk(pieces, &meta, &payload).ok());
  WeightAssembler a(2);
  absl::Status s = a.Add(ChunkView(meta, payload));
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("checksum mismatch"));
}

// GrpcLearnerClient over a real server: multi-MiB chunks arrive in many
// slices, are parsed raw and assembled into the same bytes, full then delta.
TEST(GrpcLearnerClient, FetchesLargeChunksRawFullThenDelta) {
  FakeLearner::Options options;
  options.chunk_bytes = 3 << 20;  // messages of several slices
  options.weights = [](int64_t v) { return FakeWeights(v, 2, 2 << 20); };  // 8 MiB each
  FakeLearner ledger(options);
  absl::StatusOr<std::unique_ptr<FakeLearnerServer>> server = FakeLearnerServer::Start(&ledger);
  ASSERT_TRUE(server.ok()) << server.status();
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      MakeChannel((*server)->address(), ChannelOptions());
  ASSERT_TRUE(channel.ok()) << channel.status();
  std::unique_ptr<LearnerClient> client = MakeGrpcLearnerClient(*channel);
  MetricsRegistry metrics;
  WeightClient weights(client.get(), {.metrics = &metrics});
  for (int64_t version : {1, 2}) {
    ledger.Publish(version);
    absl::StatusOr<std::shared_ptr<const HostWeights>> got = weights.Fetch(version);
    ASSERT_TRUE(got.ok()) << got.status();
    const HostWeights want = options.weights(version);
    ASSERT_EQ((*got)->tensors.size(), want.tensors.size());
    for (size_t i = 0; i < want.tensors.size(); ++i) {
      EXPECT_TRUE((*got)->tensors[i].data == want.tensors[i].data) << version << " " << i;
    }
    EXPECT_EQ((*got)->crc32c, want.crc32c);
  }
  EXPECT_EQ(ledger.full_fetches(), 1);
  EXPECT_EQ(ledger.delta_fetches(), 1);
  EXPECT_EQ(weights.stats().delta_fetches, 1);
  // The callback's error cancels the stream and is returned as it is.
  v1::FetchPolicyRequest request;
  request.set_version(2);
  int chunks = 0;
  absl::Status s = client->FetchPolicy(request, [&](const ChunkView& c) {
    EXPECT_GT(c.size(), 0u);
    return ++chunks == 2 ? absl::AbortedError("enough") : absl::OkStatus();
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(chunks, 2);
  (*server)->Shutdown();
}

}  // namespace
}  // namespace cohort::actor
