#include "weights/broadcast.h"

#include <chrono>
#include <future>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "model/tiny_model.h"
#include "weights/fake_transport.h"
#include "weights/nccl_transport.h"

namespace cohort::weights {
namespace {

using testing::FakeFabric;
using ::testing::HasSubstr;

model::TensorMap Weights(uint64_t seed, at::ScalarType dtype = at::kFloat) {
  model::TensorMap w = model::testing::RandomWeights(
      model::testing::TinyConfig(model::testing::Variant::kQwen3), seed);
  for (auto& [name, t] : w) t = t.to(dtype);
  return w;
}

void ExpectSame(const model::TensorMap& a, const model::TensorMap& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    EXPECT_TRUE(at::equal(t, b.at(name))) << name;
  }
}

BroadcastOptions Options() {
  BroadcastOptions o;
  o.chunk_bytes = 40000;  // several chunks for the tiny model
  o.collective_timeout = absl::Seconds(20);
  return o;
}

TEST(WeightLayoutTest, PackUnpackRoundTripsAndFingerprintsShapes) {
  const model::TensorMap w = Weights(1, at::kBFloat16);
  auto layout = WeightLayout::Of(w);
  ASSERT_TRUE(layout.ok()) << layout.status();
  at::Tensor flat = at::zeros({layout->total_bytes()}, at::kByte);
  ASSERT_TRUE(layout->Pack(w, flat).ok());
  auto back = layout->Unpack(flat);
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSame(w, *back);
  for (const auto& e : layout->entries()) EXPECT_EQ(e.offset % 16, 0) << e.name;
  // Same names and shapes, other values: same fingerprint; other dtype: not.
  EXPECT_EQ(WeightLayout::Of(Weights(2, at::kBFloat16))->fingerprint(), layout->fingerprint());
  EXPECT_NE(WeightLayout::Of(Weights(1, at::kFloat))->fingerprint(), layout->fingerprint());
  EXPECT_FALSE(WeightLayout::Of({}).ok());
}

TEST(FlatChecksumTest, DetectsOneChangedByteAndIsDeterministic) {
  at::Tensor flat = at::randint(0, 256, {(int64_t{5} << 20) + 13}, at::kByte);  // > one row
  const uint64_t a = FlatChecksum(flat).value();
  EXPECT_EQ(FlatChecksum(flat.clone()).value(), a);
  for (int64_t pos : {int64_t{0}, int64_t{4 << 20}, flat.numel() - 1}) {
    at::Tensor changed = flat.clone();
    changed[pos] = (changed[pos].item<int64_t>() + 1) % 256;
    EXPECT_NE(FlatChecksum(changed).value(), a) << pos;
  }
  // Two words swapped.
  at::Tensor swapped = flat.clone();
  swapped.narrow(0, 0, 4).copy_(flat.narrow(0, 4, 4));
  swapped.narrow(0, 4, 4).copy_(flat.narrow(0, 0, 4));
  if (!at::equal(swapped, flat)) {
    EXPECT_NE(FlatChecksum(swapped).value(), a);
  }
}

// One learner and two actors on threads, two versions in a row, then close.
TEST(WeightBroadcastTest, EveryActorReceivesEachVersionIntact) {
  auto fabric = std::make_shared<FakeFabric>(3);
  const model::TensorMap v1 = Weights(11), v2 = Weights(12);
  auto sender = WeightBroadcaster::Create(fabric->Rank(0), Options());
  ASSERT_TRUE(sender.ok()) << sender.status();
  std::vector<std::future<std::vector<ReceivedWeights>>> actors;
  for (int r = 1; r <= 2; ++r) {
    auto receiver = WeightReceiver::Create(fabric->Rank(r), v1, Options());
    ASSERT_TRUE(receiver.ok()) << receiver.status();
    actors.push_back(std::async(std::launch::async, [rx = std::move(*receiver)] {
      std::vector<ReceivedWeights> got;
      for (;;) {
        absl::StatusOr<ReceivedWeights> w = rx->Receive();
        if (!w.ok()) {
          EXPECT_TRUE(absl::IsCancelled(w.status())) << w.status();
          return got;
        }
        got.push_back(std::move(*w));
      }
    }));
  }
  ASSERT_TRUE((*sender)->Publish(v1, 1).ok());
  ASSERT_TRUE((*sender)->Publish(v2, 2).ok());
  ASSERT_TRUE((*sender)->Close().ok());
  for (auto& f : actors) {
    std::vector<ReceivedWeights> got = f.get();
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(got[0].version, 1);
    EXPECT_EQ(got[1].version, 2);
    EXPECT_TRUE(got[1].via_broadcast);
    ExpectSame(v1, got[0].weights);
    ExpectSame(v2, got[1].weights);
  }
  // The version changed every tensor's values, not its layout.
  EXPECT_FALSE(at::equal(v1.begin()->second, v2.at(v1.begin()->first)));
}

TEST(WeightBroadcastTest, ChecksumMismatchFailsThatVersionAndFallsBackToFetch) {
  auto fabric = std::make_shared<FakeFabric>(2);
  const model::TensorMap v1 = Weights(21), v2 = Weights(22);
  auto sender = WeightBroadcaster::Create(fabric->Rank(0), Options());
  auto receiver = WeightReceiver::Create(fabric->Rank(1), v1, Options());
  ASSERT_TRUE(sender.ok() && receiver.ok());
  fabric->CorruptNextReceive(1);
  std::vector<int64_t> fetched;
  FetchFn fetch = [&](int64_t version) -> absl::StatusOr<ReceivedWeights> {
    fetched.push_back(version);
    return ReceivedWeights{v1, version, true};
  };
  auto rx = std::async(std::launch::async, [&] { return ReceiveOrFetch(receiver->get(), fetch); });
  ASSERT_TRUE((*sender)->Publish(v1, 7).ok());
  absl::StatusOr<ReceivedWeights> got = rx.get();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_FALSE(got->via_broadcast);
  EXPECT_EQ(got->version, 7);
  EXPECT_THAT(fetched, ::testing::ElementsAre(7));  // the version whose checksum failed
  // The communicator is still good: the next version arrives by broadcast.
  EXPECT_TRUE((*receiver)->healthy());
  rx = std::async(std::launch::async, [&] { return ReceiveOrFetch(receiver->get(), fetch); });
  ASSERT_TRUE((*sender)->Publish(v2, 8).ok());
  got = rx.get();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(got->via_broadcast);
  ExpectSame(v2, got->weights);
  EXPECT_EQ(fetched.size(), 1u);
}

// A dead actor leaves the learner's collective hanging: the watchdog turns
// it into an error within the timeout, and the broadcaster stays down.
TEST(WeightBroadcastTest, WatchdogTurnsHungCollectiveIntoError) {
  auto fabric = std::make_shared<FakeFabric>(2);  // rank 1 never shows up
  BroadcastOptions options = Options();
  options.collective_timeout = absl::Milliseconds(300);
  auto sender = WeightBroadcaster::Create(fabric->Rank(0), options);
  ASSERT_TRUE(sender.ok());
  const auto start = std::chrono::steady_clock::now();
  absl::Status s = (*sender)->Publish(Weights(31), 1);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("header of version 1"));
  EXPECT_GE(seconds, 0.25);
  EXPECT_LT(seconds, 10.0);
  EXPECT_FALSE((*sender)->healthy());
  EXPECT_EQ((*sender)->Publish(Weights(31), 2).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(WeightBroadcastTest, LostCommunicatorAndNonMembersFetchOverGrpc) {
  auto fabric = std::make_shared<FakeFabric>(2);
  const model::TensorMap v = Weights(41);
  auto receiver = WeightReceiver::Create(fabric->Rank(1), v, Options());
  ASSERT_TRUE(receiver.ok());
  std::vector<int64_t> fetched;
  FetchFn fetch = [&](int64_t version) -> absl::StatusOr<ReceivedWeights> {
    fetched.push_back(version);
    return ReceivedWeights{v, 5, true};
  };
  // The communicator dies while the actor waits for a header.
  auto rx = std::async(std::launch::async, [&] { return ReceiveOrFetch(receiver->get(), fetch); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  fabric->Kill();
  absl::StatusOr<ReceivedWeights> got = rx.get();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_FALSE(got->via_broadcast);
  EXPECT_FALSE((*receiver)->healthy());
  // From then on, and for an actor outside the communicator: FetchPolicy
  // for the latest version (0).
  ASSERT_TRUE(ReceiveOrFetch(receiver->get(), fetch).ok());
  ASSERT_TRUE(ReceiveOrFetch(nullptr, fetch).ok());
  EXPECT_THAT(fetched, ::testing::ElementsAre(0, 0, 0));
}

TEST(WeightBroadcastTest, ActorWithAnotherModelLeavesTheBroadcast) {
  auto fabric = std::make_shared<FakeFabric>(2);
  BroadcastOptions options = Options();
  options.collective_timeout = absl::Milliseconds(500);
  auto sender = WeightBroadcaster::Create(fabric->Rank(0), options);
  auto receiver = WeightReceiver::Create(fabric->Rank(1), Weights(1, at::kBFloat16), options);
  ASSERT_TRUE(sender.ok() && receiver.ok());
  auto rx = std::async(std::launch::async, [&] { return (*receiver)->Receive(); });
  absl::Status sent = (*sender)->Publish(Weights(1, at::kFloat), 3);
  absl::StatusOr<ReceivedWeights> got = rx.get();
  EXPECT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("another layout"));
  EXPECT_FALSE((*receiver)->healthy());
  EXPECT_FALSE(sent.ok());  // the learner sees the loss (timeout or abort), not a hang
  EXPECT_FALSE((*sender)->healthy());
}

TEST(WeightBroadcastTest, RejectsBadSetup) {
  auto fabric = std::make_shared<FakeFabric>(2);
  EXPECT_FALSE(WeightBroadcaster::Create(fabric->Rank(1), Options()).ok());
  EXPECT_FALSE(WeightReceiver::Create(fabric->Rank(0), Weights(1), Options()).ok());
  BroadcastOptions bad = Options();
  bad.chunk_bytes = 0;
  EXPECT_FALSE(WeightBroadcaster::Create(fabric->Rank(0), bad).ok());
  auto sender = WeightBroadcaster::Create(fabric->Rank(0), Options());
  ASSERT_TRUE(sender.ok());
  EXPECT_EQ((*sender)->Publish(Weights(1), -2).code(), absl::StatusCode::kInvalidArgument);
}

// The NCCL transport's argument checks run everywhere; a real one-rank
// communicator needs a GPU (NCCL refuses two ranks on one GPU, so a
// multi-rank broadcast needs a machine with several).
TEST(NcclTransportTest, ChecksArgumentsAndRunsOneRankOnAGpu) {
  NcclOptions o;
  o.unique_id = "short";
  if (!NcclAvailable()) {
    EXPECT_EQ(CreateNcclTransport(o).status().code(), absl::StatusCode::kUnimplemented);
    GTEST_SKIP() << "built without COHORT_WITH_CUDA: no NCCL";
  }
  EXPECT_EQ(CreateNcclTransport(o).status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::string> id = NewNcclUniqueId();
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->size(), 128u);
  o.unique_id = *id;
  o.rank = 2;
  o.world_size = 2;
  EXPECT_EQ(CreateNcclTransport(o).status().code(), absl::StatusCode::kInvalidArgument);
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device: one-rank NCCL smoke skipped";
  o.rank = 0;
  o.world_size = 1;
  o.init_timeout = absl::Seconds(60);
  absl::StatusOr<std::unique_ptr<CollectiveTransport>> t = CreateNcclTransport(o);
  ASSERT_TRUE(t.ok()) << t.status();
  if (!at::hasCUDA()) GTEST_SKIP() << "LibTorch without CUDA: broadcast of tensors skipped";
  BroadcastOptions options = Options();
  options.device = at::Device(at::kCUDA, 0);
  auto sender = WeightBroadcaster::Create(std::move(*t), options);
  ASSERT_TRUE(sender.ok()) << sender.status();
  model::TensorMap w = Weights(51);
  for (auto& [name, tensor] : w) tensor = tensor.to(options.device);
  EXPECT_TRUE((*sender)->Publish(w, 1).ok());
  EXPECT_TRUE((*sender)->Publish(w, 2).ok());
}

}  // namespace
}  // namespace cohort::weights
