#include "weights/broadcast.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "model/aten.h"
#include <ATen/core/grad_mode.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/logging.h"
#include "core/status.h"
#include "model/torch_error.h"

namespace cohort::weights {
namespace {

constexpr int64_t kHeaderMagic = 0x636f686f72745748;   // "cohortWH"
constexpr int64_t kTrailerMagic = 0x636f686f72745754;  // "cohortWT"
constexpr int64_t kCloseVersion = -1;
constexpr int kHeaderWords = 8;   // magic, version, fingerprint, total, chunk, 3 spare
constexpr int kTrailerWords = 2;  // magic, checksum
constexpr int64_t kChecksumRowWords = int64_t{1} << 20;  // 4 MiB rows

uint64_t Fnv(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

// Arms a deadline around one blocking call; on expiry aborts the transport
// so that the call returns. One call at a time.
class Watchdog {
 public:
  explicit Watchdog(CollectiveTransport* transport)
      : transport_(transport), thread_([this] { Loop(); }) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  // Runs `call` (a blocking collective); DeadlineExceeded if it had to be
  // aborted because it outlasted `timeout`.
  absl::Status Run(absl::Duration timeout, const std::string& what,
                   const std::function<absl::Status()>& call) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      armed_ = true;
      fired_ = false;
      deadline_ = timeout == absl::InfiniteDuration()
                      ? std::chrono::steady_clock::time_point::max()
                      : std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(timeout);
    }
    cv_.notify_all();
    absl::Status status = call();
    bool fired;
    {
      std::lock_guard<std::mutex> lock(mu_);
      armed_ = false;
      fired = fired_;
    }
    cv_.notify_all();
    if (fired) {
      return absl::DeadlineExceededError(absl::StrCat(
          "weights broadcast: ", what, " did not finish within ", absl::FormatDuration(timeout),
          "; communicator aborted (a peer is dead or stuck)"));
    }
    return status;
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || armed_; });
      if (stop_) return;
      if (cv_.wait_until(lock, deadline_, [&] { return stop_ || !armed_; })) continue;
      fired_ = true;
      armed_ = false;
      lock.unlock();
      transport_->Abort();
      lock.lock();
    }
  }

  CollectiveTransport* const transport_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false, armed_ = false, fired_ = false;
  std::chrono::steady_clock::time_point deadline_;
  std::thread thread_;
};

// State and steps both sides share.
struct Channel {
  std::unique_ptr<CollectiveTransport> transport;
  BroadcastOptions options;
  std::unique_ptr<Watchdog> watchdog;
  at::Tensor flat;     // [total_bytes] uint8 on options.device
  at::Tensor header;   // [kHeaderWords] int64 on options.device
  at::Tensor trailer;  // [kTrailerWords] int64

  absl::Status Collective(const std::string& what, at::Tensor& t, absl::Duration timeout) {
    void* data = t.data_ptr();
    const size_t bytes = static_cast<size_t>(t.numel()) * t.element_size();
    return watchdog->Run(timeout, what,
                         [&] { return transport->Broadcast(data, bytes, /*root=*/0); });
  }

  absl::Status Payload(int64_t version, int64_t chunk_bytes) {
    const int64_t total = flat.numel();
    const int64_t chunks = (total + chunk_bytes - 1) / chunk_bytes;
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t begin = c * chunk_bytes;
      at::Tensor part = flat.narrow(0, begin, std::min(chunk_bytes, total - begin));
      RETURN_IF_ERROR(
          Collective(absl::StrCat("payload chunk ", c + 1, "/", chunks, " of version ", version),
                     part, options.collective_timeout));
    }
    return absl::OkStatus();
  }
};

absl::Status CheckOptions(const CollectiveTransport* transport, const BroadcastOptions& options) {
  if (transport == nullptr) return absl::InvalidArgumentError("weights broadcast: no transport");
  if (options.chunk_bytes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("weights broadcast: chunk_bytes must be positive, got ", options.chunk_bytes));
  }
  if (options.collective_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("weights broadcast: collective_timeout must be positive");
  }
  return absl::OkStatus();
}

at::Tensor Words(int64_t n, const at::Device& device) {
  return at::zeros({n}, at::TensorOptions().dtype(at::kLong).device(device));
}

std::vector<int64_t> ToHost(const at::Tensor& t) {
  at::Tensor cpu = t.to(at::kCPU).contiguous();
  const int64_t* p = cpu.data_ptr<int64_t>();
  return std::vector<int64_t>(p, p + cpu.numel());
}

}  // namespace

// --- layout ------------------------------------------------------------------

absl::StatusOr<WeightLayout> WeightLayout::Of(const model::TensorMap& weights) {
  if (weights.empty()) return absl::InvalidArgumentError("weights broadcast: no tensors");
  WeightLayout layout;
  for (const auto& [name, t] : weights) {
    if (!t.defined()) {
      return absl::InvalidArgumentError(absl::StrCat("weights broadcast: ", name, " is undefined"));
    }
    Entry e;
    e.name = name;
    e.shape.assign(t.sizes().begin(), t.sizes().end());
    e.dtype = t.scalar_type();
    e.bytes = t.numel() * static_cast<int64_t>(t.element_size());
    layout.entries_.push_back(std::move(e));
  }
  std::sort(layout.entries_.begin(), layout.entries_.end(),
            [](const Entry& a, const Entry& b) { return a.name < b.name; });
  uint64_t h = 1469598103934665603ull;
  int64_t offset = 0;
  for (Entry& e : layout.entries_) {
    e.offset = offset;
    offset += (e.bytes + 15) / 16 * 16;
    const std::string key =
        absl::StrCat(e.name, "|", c10::toString(e.dtype), "|", absl::StrJoin(e.shape, ","), ";");
    h = Fnv(h, key.data(), key.size());
  }
  layout.total_bytes_ = std::max<int64_t>(offset, 16);
  layout.fingerprint_ = h;
  return layout;
}

absl::Status WeightLayout::Pack(const model::TensorMap& weights, at::Tensor& flat) const {
  if (weights.size() != entries_.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "weights broadcast: ", weights.size(), " tensors, the layout has ", entries_.size()));
  }
  return model::GuardTorch("weights broadcast: pack", [&]() -> absl::Status {
    at::NoGradGuard no_grad;
    for (const Entry& e : entries_) {
      auto it = weights.find(e.name);
      if (it == weights.end() || it->second.scalar_type() != e.dtype ||
          it->second.sizes() != at::IntArrayRef(e.shape)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "weights broadcast: ", e.name, " is missing or changed shape/dtype since the layout"));
      }
      at::Tensor src = it->second.detach().contiguous().view({-1}).view(at::kByte);
      flat.narrow(0, e.offset, e.bytes).copy_(src);
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<model::TensorMap> WeightLayout::Unpack(const at::Tensor& flat) const {
  return model::GuardTorch("weights broadcast: unpack", [&]() -> absl::StatusOr<model::TensorMap> {
    model::TensorMap out;
    for (const Entry& e : entries_) {
      out[e.name] = flat.narrow(0, e.offset, e.bytes).view(e.dtype).view(e.shape).clone();
    }
    return out;
  });
}

absl::StatusOr<uint64_t> FlatChecksum(const at::Tensor& flat) {
  return model::GuardTorch("weights broadcast: checksum", [&]() -> absl::StatusOr<uint64_t> {
    at::NoGradGuard no_grad;
    const int64_t n = flat.numel();
    const int64_t words = (n + 3) / 4;
    const int64_t rows = (words + kChecksumRowWords - 1) / kChecksumRowWords;
    auto long_opts = at::TensorOptions().dtype(at::kLong).device(flat.device());
    at::Tensor factor = at::arange(kChecksumRowWords, long_opts).remainder(127) + 1;
    std::vector<int64_t> sums;
    // A batch of rows at a time bounds the int64 temporaries (256 MiB).
    const int64_t batch = 32;
    for (int64_t r0 = 0; r0 < rows; r0 += batch) {
      const int64_t nr = std::min(batch, rows - r0);
      const int64_t begin = r0 * kChecksumRowWords * 4;
      const int64_t len = std::min(nr * kChecksumRowWords * 4, n - begin);
      at::Tensor bytes = flat.narrow(0, begin, len);
      const int64_t padded = nr * kChecksumRowWords * 4;
      if (len != padded) {
        bytes = at::cat({bytes, at::zeros({padded - len}, bytes.options())});
      }
      at::Tensor w = bytes.view(at::kInt).view({nr, kChecksumRowWords}).to(at::kLong);
      std::vector<int64_t> part = ToHost((w * factor).sum(1));
      sums.insert(sums.end(), part.begin(), part.end());
    }
    uint64_t h = Fnv(1469598103934665603ull, &n, sizeof(n));
    return Fnv(h, sums.data(), sums.size() * sizeof(int64_t));
  });
}

// --- broadcaster -------------------------------------------------------------

class WeightBroadcaster::Impl {
 public:
  Channel ch;
  std::optional<WeightLayout> layout;
};

WeightBroadcaster::WeightBroadcaster(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WeightBroadcaster::~WeightBroadcaster() = default;

absl::StatusOr<std::unique_ptr<WeightBroadcaster>> WeightBroadcaster::Create(
    std::unique_ptr<CollectiveTransport> transport, BroadcastOptions options) {
  RETURN_IF_ERROR(CheckOptions(transport.get(), options));
  if (transport->rank() != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("weights broadcast: the broadcaster must be rank 0, got ", transport->rank()));
  }
  auto impl = std::make_unique<Impl>();
  impl->ch.watchdog = std::make_unique<Watchdog>(transport.get());
  impl->ch.transport = std::move(transport);
  impl->ch.options = options;
  RETURN_IF_ERROR(model::GuardTorch("weights broadcast", [&]() -> absl::Status {
    impl->ch.header = Words(kHeaderWords, options.device);
    impl->ch.trailer = Words(kTrailerWords, options.device);
    return absl::OkStatus();
  }));
  return std::unique_ptr<WeightBroadcaster>(new WeightBroadcaster(std::move(impl)));
}

absl::Status WeightBroadcaster::Publish(const model::TensorMap& weights, int64_t version) {
  if (version < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("weights broadcast: version must be >= 0, got ", version));
  }
  if (!healthy()) {
    return absl::FailedPreconditionError(
        "weights broadcast: the communicator was lost; actors fetch weights over gRPC");
  }
  Channel& ch = impl_->ch;
  ASSIGN_OR_RETURN(WeightLayout layout, WeightLayout::Of(weights));
  if (impl_->layout.has_value() && impl_->layout->fingerprint() != layout.fingerprint()) {
    return absl::FailedPreconditionError(
        "weights broadcast: the weights' names, shapes or dtypes changed between versions");
  }
  if (!impl_->layout.has_value()) {
    impl_->layout = layout;
    RETURN_IF_ERROR(model::GuardTorch("weights broadcast: buffer", [&]() -> absl::Status {
      ch.flat = at::empty({layout.total_bytes()},
                          at::TensorOptions().dtype(at::kByte).device(ch.options.device));
      ch.flat.zero_();
      return absl::OkStatus();
    }));
  }
  RETURN_IF_ERROR(layout.Pack(weights, ch.flat));
  ASSIGN_OR_RETURN(uint64_t checksum, FlatChecksum(ch.flat));
  absl::Status status = model::GuardTorch("weights broadcast", [&]() -> absl::Status {
    std::vector<int64_t> h = {kHeaderMagic,
                              version,
                              static_cast<int64_t>(layout.fingerprint()),
                              layout.total_bytes(),
                              ch.options.chunk_bytes,
                              0,
                              0,
                              0};
    ch.header.copy_(at::tensor(h, at::kLong));
    RETURN_IF_ERROR(ch.Collective(absl::StrCat("header of version ", version), ch.header,
                                  ch.options.collective_timeout));
    RETURN_IF_ERROR(ch.Payload(version, ch.options.chunk_bytes));
    std::vector<int64_t> t = {kTrailerMagic, static_cast<int64_t>(checksum)};
    ch.trailer.copy_(at::tensor(t, at::kLong));
    return ch.Collective(absl::StrCat("checksum of version ", version), ch.trailer,
                         ch.options.collective_timeout);
  });
  if (!status.ok()) {
    healthy_ = false;
    ch.transport->Abort();
  }
  return status;
}

absl::Status WeightBroadcaster::Close() {
  if (!healthy()) return absl::OkStatus();
  Channel& ch = impl_->ch;
  absl::Status status = model::GuardTorch("weights broadcast", [&]() -> absl::Status {
    std::vector<int64_t> h = {kHeaderMagic, kCloseVersion, 0, 0, 0, 0, 0, 0};
    ch.header.copy_(at::tensor(h, at::kLong));
    return ch.Collective("closing header", ch.header, ch.options.collective_timeout);
  });
  healthy_ = false;
  return status;
}

void WeightBroadcaster::Abort() {
  healthy_ = false;
  impl_->ch.transport->Abort();
}

// --- receiver ----------------------------------------------------------------

class WeightReceiver::Impl {
 public:
  Channel ch;
  WeightLayout layout;
};

WeightReceiver::WeightReceiver(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WeightReceiver::~WeightReceiver() = default;

absl::StatusOr<std::unique_ptr<WeightReceiver>> WeightReceiver::Create(
    std::unique_ptr<CollectiveTransport> transport, const model::TensorMap& like,
    BroadcastOptions options) {
  RETURN_IF_ERROR(CheckOptions(transport.get(), options));
  if (transport->rank() == 0) {
    return absl::InvalidArgumentError("weights broadcast: rank 0 is the broadcaster");
  }
  ASSIGN_OR_RETURN(WeightLayout layout, WeightLayout::Of(like));
  auto impl = std::make_unique<Impl>();
  impl->layout = std::move(layout);
  impl->ch.watchdog = std::make_unique<Watchdog>(transport.get());
  impl->ch.transport = std::move(transport);
  impl->ch.options = options;
  RETURN_IF_ERROR(model::GuardTorch("weights broadcast", [&]() -> absl::Status {
    impl->ch.header = Words(kHeaderWords, options.device);
    impl->ch.trailer = Words(kTrailerWords, options.device);
    impl->ch.flat = at::zeros({impl->layout.total_bytes()},
                              at::TensorOptions().dtype(at::kByte).device(options.device));
    return absl::OkStatus();
  }));
  return std::unique_ptr<WeightReceiver>(new WeightReceiver(std::move(impl)));
}

absl::StatusOr<ReceivedWeights> WeightReceiver::Receive() {
  if (!healthy()) {
    return absl::FailedPreconditionError("weights broadcast: the communicator was lost");
  }
  Channel& ch = impl_->ch;
  const WeightLayout& layout = impl_->layout;
  bool lost = true;  // set false on the paths that keep the communicator
  absl::StatusOr<ReceivedWeights> result =
      model::GuardTorch("weights broadcast", [&]() -> absl::StatusOr<ReceivedWeights> {
        RETURN_IF_ERROR(
            ch.Collective("wait for the next header", ch.header, ch.options.idle_timeout));
        const std::vector<int64_t> h = ToHost(ch.header);
        if (h[0] != kHeaderMagic) {
          return absl::DataLossError("weights broadcast: header without the protocol's magic");
        }
        const int64_t version = h[1];
        last_version_ = version;
        if (version == kCloseVersion) {
          return absl::CancelledError("weights broadcast: the sender closed the stream");
        }
        if (static_cast<uint64_t>(h[2]) != layout.fingerprint() || h[3] != layout.total_bytes()) {
          return absl::FailedPreconditionError(absl::StrCat(
              "weights broadcast: version ", version, " has another layout (fingerprint ",
              static_cast<uint64_t>(h[2]), ", ", h[3], " bytes) than this actor's model (",
              layout.fingerprint(), ", ", layout.total_bytes(), " bytes); leaving the broadcast"));
        }
        if (h[4] <= 0) return absl::DataLossError("weights broadcast: bad chunk size in header");
        RETURN_IF_ERROR(ch.Payload(version, h[4]));
        RETURN_IF_ERROR(ch.Collective(absl::StrCat("checksum of version ", version), ch.trailer,
                                      ch.options.collective_timeout));
        lost = false;
        const std::vector<int64_t> t = ToHost(ch.trailer);
        ASSIGN_OR_RETURN(uint64_t mine, FlatChecksum(ch.flat));
        if (t[0] != kTrailerMagic || static_cast<uint64_t>(t[1]) != mine) {
          return absl::DataLossError(
              absl::StrCat("weights broadcast: checksum of version ", version, " differs (sent ",
                           static_cast<uint64_t>(t[1]), ", received ", mine, ")"));
        }
        ReceivedWeights out;
        ASSIGN_OR_RETURN(out.weights, layout.Unpack(ch.flat));
        out.version = version;
        return out;
      });
  if (!result.ok() && lost && !absl::IsCancelled(result.status())) {
    healthy_ = false;
    ch.transport->Abort();
  }
  if (absl::IsCancelled(result.status())) healthy_ = false;
  return result;
}

void WeightReceiver::Abort() {
  healthy_ = false;
  impl_->ch.transport->Abort();
}

absl::StatusOr<ReceivedWeights> ReceiveOrFetch(WeightReceiver* receiver, const FetchFn& fetch) {
  int64_t version = 0;  // latest
  if (receiver != nullptr && receiver->healthy()) {
    absl::StatusOr<ReceivedWeights> got = receiver->Receive();
    if (got.ok() || absl::IsCancelled(got.status())) return got;
    COHORT_LOG(WARNING) << got.status().message() << "; fetching over gRPC instead";
    if (absl::IsDataLoss(got.status()) && receiver->last_version() >= 0) {
      version = receiver->last_version();
    }
  }
  ASSIGN_OR_RETURN(ReceivedWeights fetched, fetch(version));
  fetched.via_broadcast = false;
  return fetched;
}

}  // namespace cohort::weights
