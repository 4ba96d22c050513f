#include "actor/chunk_view.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/crc32c.h"
#include "core/varint.h"

namespace cohort::actor {

namespace v1 = ::cohort::v1;

ChunkView::ChunkView(const v1::WeightChunk& chunk)
    : meta_(chunk), one_(chunk.data()), data_(&one_, 1), size_(chunk.data().size()) {}

ChunkView::ChunkView(const v1::WeightChunk& meta, absl::Span<const absl::string_view> pieces)
    : meta_(meta), data_(pieces) {
  for (absl::string_view p : pieces) size_ += p.size();
}

uint32_t ChunkView::Crc32c() const {
  uint32_t crc = 0;
  for (absl::string_view p : data_) crc = Crc32cExtend(crc, p.data(), p.size());
  return crc;
}

absl::string_view ChunkView::Flatten(std::string* scratch) const {
  if (data_.size() == 1) return data_[0];
  scratch->clear();
  scratch->reserve(size_);
  for (absl::string_view p : data_) scratch->append(p.data(), p.size());
  return *scratch;
}

namespace {

// Reads bytes in order across the pieces of one message.
class Cursor {
 public:
  explicit Cursor(absl::Span<const absl::string_view> pieces) : pieces_(pieces) { Skip(); }

  bool done() const { return piece_ == pieces_.size(); }
  size_t position() const { return position_; }

  bool ReadByte(uint8_t* b) {
    if (done()) return false;
    *b = static_cast<uint8_t>(pieces_[piece_][offset_]);
    Advance(1);
    return true;
  }
  bool ReadVarint(uint64_t* value) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b;
      if (!ReadByte(&b)) return false;
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if ((b & 0x80) == 0) {
        *value = v;
        return true;
      }
    }
    return false;
  }
  // The next n bytes: appended to *out (copy) or as views into the pieces.
  bool Copy(uint64_t n, std::string* out) {
    return Take(n, [out](absl::string_view s) { out->append(s.data(), s.size()); });
  }
  bool View(uint64_t n, std::vector<absl::string_view>* out) {
    return Take(n, [out](absl::string_view s) { out->push_back(s); });
  }

 private:
  template <typename F>
  bool Take(uint64_t n, F f) {
    while (n > 0) {
      if (done()) return false;
      const absl::string_view p = pieces_[piece_];
      const size_t k = static_cast<size_t>(std::min<uint64_t>(n, p.size() - offset_));
      f(p.substr(offset_, k));
      Advance(k);
      n -= k;
    }
    return true;
  }
  void Advance(size_t k) {
    offset_ += k;
    position_ += k;
    Skip();
  }
  // Moves past exhausted (and empty) pieces.
  void Skip() {
    while (piece_ < pieces_.size() && offset_ == pieces_[piece_].size()) {
      ++piece_;
      offset_ = 0;
    }
  }

  const absl::Span<const absl::string_view> pieces_;
  size_t piece_ = 0;
  size_t offset_ = 0;
  size_t position_ = 0;
};

}  // namespace

absl::Status ParseWeightChunk(absl::Span<const absl::string_view> message, v1::WeightChunk* meta,
                              std::vector<absl::string_view>* payload) {
  payload->clear();
  // Every field but the payload, re-serialized as it came (protobuf parses
  // fields in any order; a later occurrence of a singular field wins).
  std::string rest;
  Cursor in(message);
  auto malformed = [&](const char* what) {
    return absl::InvalidArgumentError(
        absl::StrCat("WeightChunk: ", what, " at byte ", in.position()));
  };
  while (!in.done()) {
    uint64_t tag;
    if (!in.ReadVarint(&tag)) return malformed("truncated field tag");
    const uint64_t field = tag >> 3;
    const int wire = static_cast<int>(tag & 7);
    if (field == 0) return malformed("field number 0");
    if (field == v1::WeightChunk::kDataFieldNumber && wire == 2) {
      uint64_t n;
      if (!in.ReadVarint(&n)) return malformed("truncated payload length");
      payload->clear();  // a repeated singular field: the last one wins
      if (!in.View(n, payload)) return malformed("payload past the end of the message");
      continue;
    }
    AppendVarint(tag, &rest);
    bool ok = true;
    switch (wire) {
      case 0: {
        uint64_t v;
        ok = in.ReadVarint(&v);
        if (ok) AppendVarint(v, &rest);
        break;
      }
      case 1:
        ok = in.Copy(8, &rest);
        break;
      case 5:
        ok = in.Copy(4, &rest);
        break;
      case 2: {
        uint64_t n;
        ok = in.ReadVarint(&n);
        if (ok) {
          AppendVarint(n, &rest);
          ok = in.Copy(n, &rest);
        }
        break;
      }
      default:
        return malformed(absl::StrCat("wire type ", wire).c_str());
    }
    if (!ok) return malformed(absl::StrCat("truncated field ", field).c_str());
  }
  if (!meta->ParseFromString(rest)) return malformed("fields that do not parse");
  return absl::OkStatus();
}

}  // namespace cohort::actor
