#include "learner/weight_store.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/crc32c.h"
#include "core/varint.h"

namespace cohort::learner {
namespace {

// ReadVarint at in[*pos], advancing *pos.
bool GetVarint(std::string_view in, size_t* pos, uint64_t* v) {
  const uint8_t* begin = reinterpret_cast<const uint8_t*>(in.data());
  const uint8_t* p = begin + *pos;
  const bool ok = ReadVarint(&p, begin + in.size(), v);
  *pos = static_cast<size_t>(p - begin);
  return ok;
}

// Equal bytes of a and b from i (at most n - i), 8 at a time.
int64_t EqualRun(const uint8_t* a, const uint8_t* b, int64_t i, int64_t n) {
  int64_t j = i;
  while (j + 8 <= n) {
    uint64_t x, y;
    std::memcpy(&x, a + j, 8);
    std::memcpy(&y, b + j, 8);
    if (x != y) return j + (__builtin_ctzll(x ^ y) >> 3) - i;  // little-endian
    j += 8;
  }
  while (j < n && a[j] == b[j]) ++j;
  return j - i;
}

constexpr int64_t kMinZeroRun = 4;  // shorter equal runs stay inside a literal

}  // namespace

namespace {

// 0x80 in each byte of x that is zero, 0 elsewhere (exact, no carries).
inline uint64_t ZeroBytes(uint64_t x) {
  constexpr uint64_t k7f = 0x7F7F7F7F7F7F7F7Full;
  return ~(((x & k7f) + k7f) | x | k7f);
}

// From i (a differing byte, i < n): the end of the literal, the first j >
// i where bytes [j, j + kMinZeroRun) are all equal, or where the bytes
// from j to n are (fewer than kMinZeroRun of them). Eight bytes at a time:
// each load checks the windows starting at its first five bytes.
int64_t LiteralEnd(const uint8_t* a, const uint8_t* b, int64_t i, int64_t n) {
  static_assert(kMinZeroRun == 4);
  int64_t j = i + 1;
  while (j + 8 <= n) {
    uint64_t x, y;
    std::memcpy(&x, a + j, 8);
    std::memcpy(&y, b + j, 8);
    const uint64_t z = ZeroBytes(x ^ y);
    const uint64_t window = z & (z >> 8) & (z >> 16) & (z >> 24) & 0x8080808080ull;
    if (window != 0) return j + (__builtin_ctzll(window) >> 3);
    j += 5;
  }
  for (; j < n; ++j) {
    if (a[j] != b[j]) continue;
    const int64_t run = EqualRun(a, b, j, std::min(n, j + kMinZeroRun));
    if (run >= kMinZeroRun || j + run == n) return j;
    j += run - 1;
  }
  return n;
}

inline uint8_t* PutVarintRaw(uint64_t v, uint8_t* p) {
  while (v >= 0x80) {
    *p++ = static_cast<uint8_t>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<uint8_t>(v);
  return p;
}

}  // namespace

void XorRleEncodeDiff(const uint8_t* next, const uint8_t* base, int64_t n, std::string* out) {
  // Written into a per-thread buffer, then appended: every run header and
  // literal byte is written once, with no per-run resizing. Each run after
  // the first covers at least kMinZeroRun input bytes per header byte, so
  // n + 32 bounds the output.
  thread_local std::vector<uint8_t> buffer;
  if (buffer.size() < static_cast<size_t>(n) + 32) buffer.resize(static_cast<size_t>(n) + 32);
  uint8_t* w = buffer.data();
  int64_t i = 0;
  while (i < n) {
    const int64_t zero = EqualRun(next, base, i, n);
    i += zero;
    const int64_t start = i;
    if (i < n) i = LiteralEnd(next, base, i, n);
    w = PutVarintRaw(static_cast<uint64_t>(zero), w);
    w = PutVarintRaw(static_cast<uint64_t>(i - start), w);
    for (int64_t k = start; k < i; ++k) *w++ = next[k] ^ base[k];
  }
  out->append(reinterpret_cast<const char*>(buffer.data()), static_cast<size_t>(w - buffer.data()));
}

void XorRleEncode(const uint8_t* x, int64_t n, std::string* out) {
  std::vector<uint8_t> zeros(static_cast<size_t>(std::max<int64_t>(n, 1)), 0);
  XorRleEncodeDiff(x, zeros.data(), n, out);
}

absl::Status XorRleApply(std::string_view encoded, uint8_t* base, int64_t n) {
  size_t pos = 0;
  int64_t at = 0;
  while (at < n) {
    uint64_t zero = 0, lit = 0;
    if (!GetVarint(encoded, &pos, &zero) || !GetVarint(encoded, &pos, &lit)) {
      return absl::InvalidArgumentError(absl::StrCat("delta: truncated run header at byte ", pos));
    }
    if (zero > static_cast<uint64_t>(n - at) || lit > static_cast<uint64_t>(n - at) - zero ||
        lit > encoded.size() - pos) {
      return absl::InvalidArgumentError(
          absl::StrCat("delta: run of ", zero, " + ", lit, " bytes overruns the range"));
    }
    at += static_cast<int64_t>(zero);
    for (uint64_t k = 0; k < lit; ++k) base[at + k] ^= static_cast<uint8_t>(encoded[pos + k]);
    pos += lit;
    at += static_cast<int64_t>(lit);
    if (zero == 0 && lit == 0) return absl::InvalidArgumentError("delta: empty run");
  }
  if (pos != encoded.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("delta: ", encoded.size() - pos, " bytes after the decoded range"));
  }
  return absl::OkStatus();
}

std::vector<ChunkRef> PublishedVersion::Plan(bool want_delta, int64_t base, int64_t chunk) const {
  if (want_delta && HasDeltaFrom(base)) return delta;
  if (chunk <= 0 || chunk == chunk_bytes) return full;
  std::vector<ChunkRef> out;
  for (size_t t = 0; t < weights.tensors.size(); ++t) {
    const WeightTensor& w = weights.tensors[t];
    for (int64_t off = 0; off < w.size || (off == 0 && w.size == 0); off += chunk) {
      ChunkRef c;
      c.tensor_index = static_cast<int32_t>(t);
      c.offset = off;
      c.size = c.decoded_bytes = std::min(chunk, w.size - off);
      c.data = w.data.get() + off;
      c.crc32c = Crc32c(c.data, c.size);
      c.tensor_last = off + chunk >= w.size;
      out.push_back(c);
      if (w.size == 0) break;
    }
  }
  return out;
}

int32_t PublishedVersion::ready_tensors() const {
  absl::MutexLock lock(&mu_);
  return ready_tensors_;
}

bool PublishedVersion::complete() const {
  absl::MutexLock lock(&mu_);
  return ready_tensors_ == static_cast<int32_t>(weights.tensors.size());
}

bool PublishedVersion::WhenReady(int32_t t, absl::AnyInvocable<void() &&> ready) const {
  absl::MutexLock lock(&mu_);
  if (t < ready_tensors_) return true;
  waiters_.emplace_back(t, std::move(ready));
  return false;
}

bool PublishedVersion::WaitReady(int32_t t, absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto ready = [this, t]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return t < ready_tensors_; };
  return mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
}

void PublishedVersion::MarkTensorReady(int32_t t, bool hold_last) {
  std::vector<absl::AnyInvocable<void() &&>> due;
  {
    absl::MutexLock lock(&mu_);
    tensor_done_[t] = 1;
    const int32_t limit = static_cast<int32_t>(tensor_done_.size()) - (hold_last ? 1 : 0);
    while (ready_tensors_ < limit && tensor_done_[ready_tensors_] != 0) ++ready_tensors_;
    for (size_t i = 0; i < waiters_.size();) {
      if (waiters_[i].first < ready_tensors_) {
        due.push_back(std::move(waiters_[i].second));
        waiters_[i] = std::move(waiters_.back());
        waiters_.pop_back();
      } else {
        ++i;
      }
    }
  }
  for (auto& f : due) std::move(f)();
}

void PublishedVersion::MarkComplete() {
  if (weights.tensors.empty()) return;
  MarkTensorReady(static_cast<int32_t>(weights.tensors.size()) - 1, /*hold_last=*/false);
}

WeightStore::WeightStore(WeightStoreOptions options) : options_(std::move(options)) {
  worker_ = std::thread([this] { Run(); });
}

WeightStore::~WeightStore() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  worker_.join();
}

absl::Status WeightStore::Publish(int64_t version, WeightSnapshot snapshot) {
  for (const WeightTensor& t : snapshot.tensors) {
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    if (numel * WeightDTypeSize(t.dtype) != t.size || (t.size > 0 && t.data == nullptr)) {
      return absl::InvalidArgumentError(absl::StrCat("weights: tensor ", t.name, " has ", t.size,
                                                     " bytes for ", numel, " elements"));
    }
  }
  absl::MutexLock lock(&mu_);
  if (version <= last_queued_) {
    return absl::InvalidArgumentError(
        absl::StrCat("weights: version ", version, " published after version ", last_queued_));
  }
  last_queued_ = version;
  // The layout is O(tensors + chunks), no pass over the bytes.
  const PublishedVersion* prev = !building_.empty() ? building_.back().get()
                                 : !kept_.empty()   ? kept_.back().get()
                                                    : nullptr;
  building_.push_back(Layout(version, std::move(snapshot), prev));
  return absl::OkStatus();
}

bool WeightStore::WaitPublished(int64_t version, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  std::shared_ptr<const PublishedVersion> newest;
  {
    absl::MutexLock lock(&mu_);
    auto visible = [this, version]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !kept_.empty() && kept_.back()->version >= version;
    };
    if (!mu_.AwaitWithDeadline(absl::Condition(&visible), deadline)) return false;
    newest = kept_.back();
  }
  // Visible; complete a moment later (Run). Versions complete in order.
  const int32_t tensors = static_cast<int32_t>(newest->weights.tensors.size());
  return tensors == 0 || newest->WaitReady(tensors - 1, deadline - absl::Now());
}

std::shared_ptr<const PublishedVersion> WeightStore::Get(int64_t version) const {
  absl::MutexLock lock(&mu_);
  for (const auto& v : kept_) {
    if (v->version == version) return v;
  }
  return nullptr;
}

std::shared_ptr<const PublishedVersion> WeightStore::GetPublished(int64_t version) const {
  absl::MutexLock lock(&mu_);
  for (const auto& v : kept_) {
    if (v->version == version) return v;
  }
  for (const auto& v : building_) {
    if (v->version == version) return v;
  }
  return nullptr;
}

int64_t WeightStore::latest_published_version() const {
  absl::MutexLock lock(&mu_);
  return last_queued_;
}

std::shared_ptr<const PublishedVersion> WeightStore::Latest() const {
  absl::MutexLock lock(&mu_);
  return kept_.empty() ? nullptr : kept_.back();
}

int64_t WeightStore::latest_version() const {
  absl::MutexLock lock(&mu_);
  return kept_.empty() ? -1 : kept_.back()->version;
}

std::vector<int64_t> WeightStore::kept_versions() const {
  absl::MutexLock lock(&mu_);
  std::vector<int64_t> out;
  for (const auto& v : kept_) out.push_back(v->version);
  return out;
}

void WeightStore::SetMinNeeded(int64_t version) {
  absl::MutexLock lock(&mu_);
  min_needed_ = version;
}

void WeightStore::Run() {
  while (true) {
    std::shared_ptr<PublishedVersion> v;
    std::shared_ptr<const PublishedVersion> prev;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]()
                       ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || !building_.empty(); };
      mu_.Await(absl::Condition(&ready));
      if (building_.empty()) return;  // stop_ and nothing left
      v = building_.front();
      // Versions are built in order, so the one published before v is
      // complete and the newest kept (keep_versions >= 1).
      if (v->delta_base >= 0) prev = kept_.back();
      if (prev != nullptr && prev->version != v->delta_base) std::abort();  // a bug: see above
    }
    Build(v.get(), prev.get());
    prev.reset();
    {
      absl::MutexLock lock(&mu_);
      building_.pop_front();
      kept_.push_back(v);
      while (static_cast<int>(kept_.size()) > std::max(1, options_.keep_versions) &&
             (min_needed_ < 0 || kept_.front()->version < min_needed_)) {
        kept_.pop_front();
      }
    }
    // Visible to Get(): now the last tensor (and with it a stream's last
    // chunk) may go out.
    v->MarkComplete();
  }
}

namespace {

// Runs work(i) for i in [0, n) on `threads` threads (the caller's included).
template <typename F>
void ParallelFor(int64_t n, int threads, const F& work) {
  std::atomic<int64_t> next{0};
  auto run = [&] {
    for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) work(i);
  };
  std::vector<std::thread> helpers;
  const int64_t extra = std::min<int64_t>(std::max(threads, 1) - 1, n - 1);
  for (int64_t k = 0; k < extra; ++k) helpers.emplace_back(run);
  run();
  for (std::thread& t : helpers) t.join();
}

}  // namespace

std::shared_ptr<PublishedVersion> WeightStore::Layout(int64_t version, WeightSnapshot snapshot,
                                                      const PublishedVersion* prev) const {
  auto v = std::make_shared<PublishedVersion>();
  v->version = version;
  std::sort(snapshot.tensors.begin(), snapshot.tensors.end(),
            [](const WeightTensor& a, const WeightTensor& b) { return a.name < b.name; });
  v->weights = std::move(snapshot);
  v->chunk_bytes = std::max<int64_t>(1, options_.chunk_bytes);
  const int64_t chunk = v->chunk_bytes;
  const auto& tensors = v->weights.tensors;
  for (size_t t = 0; t < tensors.size(); ++t) {
    const WeightTensor& w = tensors[t];
    v->first_chunk.push_back(v->full.size());
    int64_t off = 0;
    do {
      ChunkRef c;
      c.tensor_index = static_cast<int32_t>(t);
      c.offset = off;
      c.size = c.decoded_bytes = std::min(chunk, w.size - off);
      c.data = w.data.get() + off;
      off += c.size;
      c.tensor_last = off >= w.size;
      v->full.push_back(c);
    } while (off < w.size);
    v->full_bytes += w.size;
  }
  v->first_chunk.push_back(v->full.size());
  v->tensor_crc32c.assign(tensors.size(), 0);
  {
    absl::MutexLock lock(&v->mu_);
    v->tensor_done_.assign(tensors.size(), 0);
  }
  // A delta against the previous version when the tensors line up.
  bool aligned =
      options_.compute_deltas && prev != nullptr && prev->weights.tensors.size() == tensors.size();
  for (size_t t = 0; aligned && t < tensors.size(); ++t) {
    const WeightTensor& a = tensors[t];
    const WeightTensor& b = prev->weights.tensors[t];
    aligned = a.name == b.name && a.dtype == b.dtype && a.shape == b.shape && a.size == b.size;
  }
  if (aligned) {
    v->delta_base = prev->version;
    v->delta = v->full;                 // raw until Build decides
    v->encoded.resize(v->full.size());  // never resized again: delta entries point into it
  }
  return v;
}

void WeightStore::Build(PublishedVersion* v, const PublishedVersion* prev) const {
  const auto& tensors = v->weights.tensors;
  const bool aligned = v->delta_base >= 0;
  const size_t chunks = v->full.size();
  // Per chunk: the CRC of its raw bytes and, with a base, its XOR_RLE
  // encoding (given up once it is not smaller than the raw bytes) and the
  // CRC of that. Each chunk is independent; the worker that finishes a
  // tensor's last chunk decides its encoding, combines its CRC and makes it
  // ready, so a stream can send it while later tensors are computed.
  std::vector<uint32_t> encoded_crc(aligned ? chunks : 0, 0);
  std::vector<uint8_t> paying(encoded_crc.size(), 0);  // the chunk's encoding is < 7/8 raw
  std::unique_ptr<std::atomic<int64_t>[]> remaining(new std::atomic<int64_t>[tensors.size()]);
  for (size_t t = 0; t < tensors.size(); ++t) {
    remaining[t].store(static_cast<int64_t>(v->first_chunk[t + 1] - v->first_chunk[t]));
  }
  auto finish_tensor = [&](size_t t) {
    const size_t first = v->first_chunk[t], end = v->first_chunk[t + 1];
    uint32_t tensor_crc = 0;
    for (size_t i = first; i < end; ++i) {
      tensor_crc = Crc32cCombine(tensor_crc, v->full[i].crc32c, v->full[i].size);
    }
    v->tensor_crc32c[t] = tensor_crc;
    if (aligned) {
      const int64_t size = tensors[t].size;
      int64_t enc_bytes = 0;
      bool all_paying = true;
      for (size_t i = first; i < end; ++i) {
        enc_bytes += static_cast<int64_t>(v->encoded[i].size());
        all_paying = all_paying && paying[i] != 0;
      }
      const bool use_delta = size > 0 && all_paying && enc_bytes * 8 < size * 7;
      for (size_t i = first; i < end; ++i) {
        ChunkRef& ref = v->delta[i];  // only its payload fields change
        if (use_delta) {
          const std::string& e = v->encoded[i];
          ref.delta = true;
          ref.data = reinterpret_cast<const uint8_t*>(e.data());
          ref.size = static_cast<int64_t>(e.size());
          ref.crc32c = encoded_crc[i];
        } else {
          std::string().swap(v->encoded[i]);
          ref.crc32c = v->full[i].crc32c;
        }
      }
    }
    v->MarkTensorReady(static_cast<int32_t>(t), /*hold_last=*/true);
  };
  ParallelFor(static_cast<int64_t>(chunks), options_.threads, [&](int64_t i) {
    if (options_.before_chunk) options_.before_chunk(v->version, i);
    ChunkRef& c = v->full[i];
    if (!aligned) {
      c.crc32c = Crc32c(c.data, c.size);
    } else {
      const uint8_t* base = prev->weights.tensors[c.tensor_index].data.get() + c.offset;
      std::string& e = v->encoded[i];
      // Slice by slice: the CRC of the new bytes and their delta while the
      // slice is in cache (one read of the bytes from memory); a dense
      // change stops the encoding early (its chunk goes raw) instead of
      // holding an encoding as large as the tensor, and the CRC goes on
      // alone.
      constexpr int64_t kSlice = 256 << 10;
      uint32_t crc = 0;
      bool encoding = true;
      for (int64_t off = 0; off < c.size; off += kSlice) {
        const int64_t n = std::min(kSlice, c.size - off);
        crc = Crc32cExtend(crc, c.data + off, static_cast<size_t>(n));
        if (!encoding) continue;
        XorRleEncodeDiff(c.data + off, base + off, n, &e);
        if (static_cast<int64_t>(e.size()) * 8 >= c.size * 7) {
          std::string().swap(e);
          encoding = false;
        }
      }
      c.crc32c = crc;
      paying[i] = encoding ? 1 : 0;
      if (encoding) encoded_crc[i] = Crc32c(e.data(), e.size());
    }
    // The last of the tensor's chunks to finish finishes the tensor (the
    // acq_rel orders every chunk's results before it).
    if (remaining[c.tensor_index].fetch_sub(1, std::memory_order_acq_rel) == 1) {
      finish_tensor(static_cast<size_t>(c.tensor_index));
    }
  });
  uint32_t version_crc = 0;
  for (size_t t = 0; t < tensors.size(); ++t) {
    version_crc = Crc32cCombine(version_crc, v->tensor_crc32c[t], tensors[t].size);
  }
  v->version_crc32c = version_crc;
  if (aligned) {
    for (const ChunkRef& ref : v->delta) v->delta_bytes += ref.size;
  }
}

}  // namespace cohort::learner
