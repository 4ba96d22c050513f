#include "actor/weight_client.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/crc32c.h"
#include "core/logging.h"
#include "core/status.h"
#include "core/varint.h"

namespace cohort::actor {

namespace v1 = ::cohort::v1;

int64_t DTypeBytes(v1::DType dtype) {
  switch (dtype) {
    case v1::DTYPE_F32:
    case v1::DTYPE_I32:
      return 4;
    case v1::DTYPE_BF16:
    case v1::DTYPE_F16:
      return 2;
    case v1::DTYPE_I64:
      return 8;
    case v1::DTYPE_U8:
      return 1;
    default:
      return 0;
  }
}

absl::Status WeightAssembler::Fail(const std::string& what) const {
  return absl::DataLossError(absl::StrCat("weights version ", weights_.version, ": ", what));
}

// Decoding works through a chunk in slices of this many bytes, so that the
// bytes written are CRC'd while they are still in cache.
constexpr size_t kSlice = 64 << 10;

absl::Status WeightAssembler::AppendDecoded(const ChunkView& view, HostTensor* t, uint32_t* crc) {
  const v1::WeightChunk& chunk = view.meta();
  // Every append below stays within the capacity reserved for the tensor
  // (Add checked the sizes), so t->data never moves.
  if (chunk.encoding() == v1::WEIGHT_ENCODING_RAW) {
    // The CRC of the copied bytes, which Add compares with the chunk's: it
    // verifies the payload and the buffer in one pass. The payload's pieces
    // (views into the received message) are copied straight into the tensor.
    uint32_t c = 0;
    for (absl::string_view piece : view.data()) {
      for (size_t off = 0; off < piece.size(); off += kSlice) {
        const size_t n = std::min(kSlice, piece.size() - off);
        t->data.append(piece.data() + off, n);
        c = Crc32cExtend(c, t->data.data() + t->data.size() - n, n);
      }
    }
    *crc = c;
    return absl::OkStatus();
  }
  if (chunk.encoding() != v1::WEIGHT_ENCODING_XOR_RLE) {
    return Fail(absl::StrCat(t->name, ": unknown encoding ", chunk.encoding()));
  }
  // A delta is decoded from one contiguous payload (a message received in
  // several slices is joined first: deltas are the small streams).
  const absl::string_view data = view.Flatten(&scratch_);
  saw_delta_ = true;
  const size_t index = weights_.tensors.size() - 1;
  if (base_ == nullptr || chunk.base_version() != base_->version) {
    return Fail(absl::StrCat(
        t->name, ": a delta against version ", chunk.base_version(), ", but the base held is ",
        base_ == nullptr ? std::string("none") : absl::StrCat("version ", base_->version)));
  }
  if (index >= base_->tensors.size() || base_->tensors[index].name != t->name ||
      static_cast<int64_t>(base_->tensors[index].data.size()) != tensor_bytes_) {
    return Fail(absl::StrCat(t->name, ": a delta for a tensor the base version ", base_->version,
                             " does not have at index ", index, " with the same size"));
  }
  const size_t begin = t->data.size();
  const char* src = base_->tensors[index].data.data() + begin;
  const size_t want = static_cast<size_t>(chunk.decoded_bytes());
  const uint8_t* p = reinterpret_cast<const uint8_t*>(data.data());
  const uint8_t* end = p + data.size();
  // One pass, a slice at a time: the base's bytes are copied just ahead of
  // the literals XORed into them, and the bytes that are final (everything
  // before the decoding position) are CRC'd right behind.
  size_t produced = 0, copied = 0, hashed = 0;
  uint32_t c = 0;
  auto copy_to = [&](size_t upto) {
    if (upto <= copied) return;
    const size_t to = std::min(want, std::max(upto, copied + kSlice));
    t->data.append(src + copied, to - copied);
    copied = to;
  };
  auto hash_to = [&](size_t upto) {
    c = Crc32cExtend(c, t->data.data() + begin + hashed, upto - hashed);
    hashed = upto;
  };
  while (produced < want) {
    uint64_t zeros = 0, literal = 0;
    bool read = true;
    // One-byte varints (runs under 128 bytes) are nearly all of them.
    if (end - p >= 2 && p[0] < 0x80 && p[1] < 0x80) {
      zeros = p[0];
      literal = p[1];
      p += 2;
    } else {
      read = ReadVarint(&p, end, &zeros) && ReadVarint(&p, end, &literal);
    }
    if (!read || zeros > want - produced || literal > want - produced - zeros ||
        literal > static_cast<uint64_t>(end - p) || zeros + literal == 0) {
      return Fail(absl::StrCat(t->name, ": malformed XOR_RLE delta at offset ",
                               chunk.offset() + static_cast<int64_t>(produced)));
    }
    produced += zeros;
    if (literal > 0) {
      copy_to(produced + literal);
      char* out = t->data.data() + begin + produced;
      for (uint64_t k = 0; k < literal; ++k) out[k] ^= static_cast<char>(p[k]);
      p += literal;
      produced += literal;
    }
    if (produced - hashed >= kSlice) {
      copy_to(produced);
      hash_to(produced);
    }
  }
  if (p != end) return Fail(absl::StrCat(t->name, ": trailing bytes after a delta"));
  copy_to(want);
  hash_to(want);
  *crc = c;
  return absl::OkStatus();
}

absl::Status WeightAssembler::Add(const ChunkView& view) {
  const v1::WeightChunk& chunk = view.meta();
  if (done_) return Fail("chunk after the last one");
  if (!started_) {
    if (want_version_ >= 0 && chunk.version() != want_version_) {
      return absl::DataLossError(absl::StrCat("asked for weights version ", want_version_,
                                              ", the stream sends version ", chunk.version()));
    }
    weights_.version = chunk.version();
    tensor_count_ = chunk.tensor_count();
    if (tensor_count_ <= 0) return Fail(absl::StrCat("tensor_count ", tensor_count_));
    started_ = true;
  }
  if (chunk.version() != weights_.version) {
    return Fail(
        absl::StrCat("a chunk of ", chunk.tensor_name(), " names version ", chunk.version()));
  }
  if (chunk.tensor_count() != tensor_count_) {
    return Fail(
        absl::StrCat("tensor_count changed from ", tensor_count_, " to ", chunk.tensor_count()));
  }
  const size_t size = view.size();
  const bool raw = chunk.encoding() == v1::WEIGHT_ENCODING_RAW;
  auto mismatch = [&] {
    return Fail(absl::StrCat("checksum mismatch in ", chunk.tensor_name(), " at offset ",
                             chunk.offset(), " (", size, " bytes)"));
  };
  // An encoded payload is checked before it is decoded; a raw one as it is
  // copied into the tensor (below), which checks the copy too.
  if (!raw && view.Crc32c() != chunk.crc32c()) return mismatch();
  const int64_t decoded = raw ? static_cast<int64_t>(size) : chunk.decoded_bytes();
  if (raw && chunk.decoded_bytes() != 0 && chunk.decoded_bytes() != decoded) {
    return Fail(absl::StrCat(chunk.tensor_name(), ": decoded_bytes ", chunk.decoded_bytes(),
                             " for ", size, " raw bytes"));
  }
  const int32_t next_index = static_cast<int32_t>(weights_.tensors.size());
  HostTensor* t = weights_.tensors.empty() ? nullptr : &weights_.tensors.back();
  const bool current_complete =
      t == nullptr || static_cast<int64_t>(t->data.size()) == tensor_bytes_;
  if (chunk.offset() == 0 && current_complete) {
    // A new tensor.
    if (chunk.tensor_index() != next_index) {
      return Fail(absl::StrCat(chunk.tensor_name(), " has tensor_index ", chunk.tensor_index(),
                               ", expected ", next_index));
    }
    if (next_index >= tensor_count_) {
      return Fail(absl::StrCat("more than tensor_count ", tensor_count_, " tensors"));
    }
    const int64_t element = DTypeBytes(chunk.dtype());
    if (element == 0) {
      return Fail(absl::StrCat(chunk.tensor_name(), ": unknown dtype ", chunk.dtype()));
    }
    int64_t elements = 1;
    for (int64_t d : chunk.shape()) {
      if (d < 0) return Fail(absl::StrCat(chunk.tensor_name(), ": negative dimension"));
      elements *= d;
    }
    if (elements * element != chunk.tensor_bytes()) {
      return Fail(absl::StrCat(chunk.tensor_name(), ": shape and dtype make ", elements * element,
                               " bytes, tensor_bytes says ", chunk.tensor_bytes()));
    }
    HostTensor& added = weights_.tensors.emplace_back();
    added.name = chunk.tensor_name();
    added.dtype = chunk.dtype();
    added.shape.assign(chunk.shape().begin(), chunk.shape().end());
    const size_t need = static_cast<size_t>(chunk.tensor_bytes());
    if (static_cast<size_t>(next_index) < spare_.tensors.size() &&
        spare_.tensors[next_index].name == added.name &&
        spare_.tensors[next_index].data.capacity() >= need) {
      added.data = std::move(spare_.tensors[next_index].data);
      added.data.clear();  // keeps the capacity: no fresh pages
      reused_bytes_ += chunk.tensor_bytes();
    } else {
      added.data.reserve(need);
    }
    tensor_bytes_ = chunk.tensor_bytes();
    tensor_crc_ = 0;
    t = &added;
  } else {
    if (t == nullptr || current_complete || chunk.tensor_name() != t->name ||
        chunk.tensor_index() != next_index - 1) {
      return Fail(absl::StrCat("chunk of ", chunk.tensor_name(), " at offset ", chunk.offset(),
                               " does not continue the stream"));
    }
    if (chunk.offset() != static_cast<int64_t>(t->data.size())) {
      return Fail(absl::StrCat(t->name, ": chunk at offset ", chunk.offset(), ", expected ",
                               t->data.size()));
    }
  }
  if (decoded < 0 || static_cast<int64_t>(t->data.size()) + decoded > tensor_bytes_) {
    return Fail(absl::StrCat(t->name, ": more than tensor_bytes ", tensor_bytes_, " bytes"));
  }
  const size_t begin = t->data.size();
  uint32_t fresh_crc = 0;  // of the bytes just written into the tensor
  RETURN_IF_ERROR(AppendDecoded(view, t, &fresh_crc));
  const size_t fresh_size = t->data.size() - begin;
  if (raw && fresh_crc != chunk.crc32c()) return mismatch();
  tensor_crc_ = Crc32cCombine(tensor_crc_, fresh_crc, static_cast<int64_t>(fresh_size));
  if (static_cast<int64_t>(t->data.size()) == tensor_bytes_) {
    running_crc_ = Crc32cCombine(running_crc_, tensor_crc_, tensor_bytes_);  // tensor complete
  }
  bytes_ += static_cast<int64_t>(size);
  if (chunk.tensor_last()) {
    if (static_cast<int64_t>(t->data.size()) != tensor_bytes_) {
      return Fail(absl::StrCat(t->name, ": tensor_last after ", t->data.size(), " of ",
                               tensor_bytes_, " bytes"));
    }
    if (tensor_crc_ != chunk.tensor_crc32c()) {
      return Fail(absl::StrCat(t->name, ": checksum of the tensor does not match"));
    }
  }
  if (chunk.last()) {
    if (static_cast<int64_t>(t->data.size()) != tensor_bytes_ ||
        static_cast<int32_t>(weights_.tensors.size()) != tensor_count_) {
      return Fail(absl::StrCat("the last chunk came after ", weights_.tensors.size(), " of ",
                               tensor_count_, " tensors"));
    }
    if (running_crc_ != chunk.version_crc32c()) {
      return Fail("checksum of the whole version does not match");
    }
    weights_.crc32c = running_crc_;
    done_ = true;
  }
  return absl::OkStatus();
}

HostWeights WeightAssembler::ReleaseBuffers() {
  HostWeights out = std::move(spare_);
  spare_ = HostWeights();
  if (out.tensors.size() < weights_.tensors.size()) out.tensors.resize(weights_.tensors.size());
  for (size_t i = 0; i < weights_.tensors.size(); ++i) {
    HostTensor& from = weights_.tensors[i];
    HostTensor& to = out.tensors[i];
    if (from.data.capacity() > to.data.capacity()) {
      to.name = from.name;
      to.data = std::move(from.data);
    }
  }
  weights_ = HostWeights();
  done_ = false;
  return out;
}

absl::StatusOr<HostWeights> WeightAssembler::Finish() {
  if (!done_) {
    return Fail(absl::StrCat("the stream ended after ", weights_.tensors.size(), " of ",
                             tensor_count_, " tensors without its last chunk"));
  }
  done_ = false;
  spare_ = HostWeights();  // buffers not reused are freed
  return std::move(weights_);
}

WeightClient::WeightClient(LearnerClient* learner, WeightClientOptions options)
    : learner_(learner), options_(options) {
  MetricsRegistry* m = options_.metrics ? options_.metrics : MetricsRegistry::Default();
  seconds_ = m->GetHistogram("cohort_actor_weight_fetch_seconds",
                             "Time to fetch and verify one policy version, seconds.",
                             Histogram::ExponentialBuckets(0.001, 2, 18));
  bytes_total_ = m->GetCounter("cohort_actor_weight_fetch_bytes_total",
                               "Weight payload bytes received from the learner.");
  const std::string help = "Policy version fetches by result.";
  ok_ = m->GetCounter("cohort_actor_weight_fetches_total", help, {{"result", "ok"}});
  checksum_ = m->GetCounter("cohort_actor_weight_fetches_total", help, {{"result", "checksum"}});
  error_ = m->GetCounter("cohort_actor_weight_fetches_total", help, {{"result", "error"}});
  delta_bytes_ = m->GetCounter("cohort_actor_weight_fetch_delta_bytes_total",
                               "Weight payload bytes received in streams that carried deltas.");
}

absl::StatusOr<HostWeights> WeightClient::FetchOnce(int64_t version, bool exact,
                                                    const std::shared_ptr<const HostWeights>& base,
                                                    HostWeights* spare, int64_t* bytes, bool* delta,
                                                    bool* recycled) {
  WeightAssembler assembler(exact || version > 0 ? version : -1, base);
  assembler.ReuseBuffers(std::move(*spare));
  *spare = HostWeights();
  v1::FetchPolicyRequest request;
  request.set_version(version);
  request.set_exact_version(exact);
  request.set_chunk_bytes(options_.chunk_bytes);
  if (base != nullptr) {
    request.set_delta(true);
    request.set_base_version(base->version);
  }
  absl::Status status =
      learner_->FetchPolicy(request, [&](const ChunkView& chunk) { return assembler.Add(chunk); });
  *bytes = assembler.bytes_received();
  *delta = assembler.saw_delta();
  *recycled = assembler.reused_bytes() > 0;
  absl::StatusOr<HostWeights> weights =
      status.ok() ? assembler.Finish() : absl::StatusOr<HostWeights>(status);
  if (!weights.ok()) *spare = assembler.ReleaseBuffers();
  return weights;
}

absl::StatusOr<std::shared_ptr<const HostWeights>> WeightClient::Fetch(int64_t version,
                                                                       bool exact) {
  absl::MutexLock fetch_lock(&fetch_mu_);
  std::shared_ptr<const HostWeights> base = last();
  if (!options_.delta || version <= 0 || (base != nullptr && base->version == version)) {
    base = nullptr;  // only an exact, different version can come as a delta
  }
  absl::Status last_error;
  for (int attempt = 1; attempt <= std::max(1, options_.max_attempts); ++attempt) {
    const absl::Time start = absl::Now();
    int64_t bytes = 0;
    bool delta = false, recycled = false;
    HostWeights spare = TakeSpare();
    absl::StatusOr<HostWeights> weights =
        FetchOnce(version, exact, base, &spare, &bytes, &delta, &recycled);
    if (!weights.ok()) KeepSpare(std::move(spare));
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    bytes_total_->Increment(static_cast<double>(bytes));
    if (delta) delta_bytes_->Increment(static_cast<double>(bytes));
    {
      absl::MutexLock lock(&mu_);
      stats_.bytes += bytes;
      stats_.seconds += seconds;
      if (weights.ok()) {
        ++stats_.fetches;
        if (delta) ++stats_.delta_fetches;
        if (recycled) ++stats_.recycled_fetches;
      }
      if (weights.status().code() == absl::StatusCode::kDataLoss) ++stats_.checksum_failures;
    }
    if (weights.ok()) {
      ok_->Increment();
      seconds_->Observe(seconds);
      auto shared = std::make_shared<HostWeights>(*std::move(weights));
      absl::MutexLock lock(&mu_);
      if (options_.delta) {
        if (options_.recycle_buffers) spare_ = std::move(last_);
        last_ = shared;
      }
      return std::shared_ptr<const HostWeights>(std::move(shared));
    }
    last_error = weights.status();
    if (last_error.code() == absl::StatusCode::kDataLoss) {
      checksum_->Increment();
      COHORT_LOG(WARNING) << "refusing weights (attempt " << attempt << " of "
                          << options_.max_attempts << (base != nullptr ? ", delta" : "")
                          << "): " << last_error.message();
    } else {
      error_->Increment();
      if (base == nullptr) return last_error;  // NOT_FOUND, UNAVAILABLE: the caller decides
    }
    if (base != nullptr) {
      // A delta that failed in any way: fall back to the full stream.
      absl::MutexLock lock(&mu_);
      ++stats_.delta_fallbacks;
    }
    base = nullptr;
  }
  return last_error;
}

HostWeights WeightClient::TakeSpare() {
  absl::MutexLock lock(&mu_);
  if (spare_ == nullptr || spare_.use_count() != 1) return HostWeights();
  // The only holder: no copy of it is left anywhere (the engine released
  // it), and none can be made. The fence orders our writes after the last
  // reader's release of its reference.
  std::atomic_thread_fence(std::memory_order_acquire);
  HostWeights spare = std::move(*spare_);
  spare_.reset();
  return spare;
}

void WeightClient::KeepSpare(HostWeights buffers) {
  if (!options_.recycle_buffers || buffers.tensors.empty()) return;
  absl::MutexLock lock(&mu_);
  if (spare_ == nullptr) spare_ = std::make_shared<HostWeights>(std::move(buffers));
}

std::shared_ptr<const HostWeights> WeightClient::last() const {
  absl::MutexLock lock(&mu_);
  return last_;
}

WeightClient::Stats WeightClient::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace cohort::actor
