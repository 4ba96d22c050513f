// The tokenizer.json components around the model (internal to
// core/tokenizer/): normalizers, pre-tokenizers, decoders, post-processors
// and the added-token matcher. Each Parse* function builds a component
// from its JSON object and refuses unsupported types by name.
//
// Thread-safety: components are immutable after parsing; their const
// methods may run on many threads at once.
#ifndef COHORT_CORE_TOKENIZER_COMPONENTS_H_
#define COHORT_CORE_TOKENIZER_COMPONENTS_H_

#include <algorithm>
#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/tokenizer/json_util.h"
#include "core/tokenizer/utf8.h"

namespace cohort::tok {

using Pieces = std::vector<std::string_view>;

// ---------------------------------------------------------------------------
// Normalizers

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void Apply(std::string* s) const = 0;
  // True when Apply would certainly leave `s` as it is (lets callers skip a
  // copy); false when unsure.
  virtual bool Unchanged(std::string_view s) const { return false; }
};

absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const Json& j);

// ---------------------------------------------------------------------------
// Pre-tokenizers. A Sequence is flattened into a list of stages at load time;
// each stage maps a list of pieces to a new list, dropping empty pieces.

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // `owned` keeps strings that pieces in `out` may point into.
  virtual void Apply(const Pieces& in, Pieces* out, std::deque<std::string>* owned) const = 0;
};

// Appends the stages of `j` to `stages`; sets *byte_level when a ByteLevel
// stage is present.
absl::Status ParsePreTokenizer(const Json& j, std::vector<std::unique_ptr<PreTokenizer>>* stages,
                               bool* byte_level);

// ---------------------------------------------------------------------------
// Decoders (on token strings, as Hugging Face's decode_chain).

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void Apply(std::vector<std::string>* tokens) const = 0;
  // True for the ByteLevel decoder (byte-level tokens back to raw bytes,
  // then lossy UTF-8), which the tokenizer can precompute per id.
  virtual bool IsByteLevel() const { return false; }
};

// Appends the decoders of `j` (a Sequence is flattened) to `chain`.
absl::Status ParseDecoder(const Json& j, std::vector<std::unique_ptr<Decoder>>* chain);

// ---------------------------------------------------------------------------
// Post-processors, reduced to the ids they put before and after a single
// sequence.

absl::Status ParsePostProcessor(const Json& j, std::vector<int32_t>* prefix,
                                std::vector<int32_t>* suffix);

// ---------------------------------------------------------------------------
// Added tokens

struct AddedToken {
  int32_t id = -1;
  std::string content;  // as written in the file
  std::string match;    // what is searched for (normalized content if normalized)
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

// Leftmost-longest search over a small set of tokens.
class AddedTokenMatcher {
 public:
  void Add(const AddedToken* token) {
    if (token->match.empty()) return;
    auto& list = by_first_byte_[static_cast<unsigned char>(token->match[0])];
    list.push_back(token);
    std::stable_sort(list.begin(), list.end(), [](const AddedToken* a, const AddedToken* b) {
      return a->match.size() > b->match.size();
    });
    first_byte_[static_cast<unsigned char>(token->match[0])] = true;
    empty_ = false;
  }
  bool empty() const { return empty_; }

  // Calls fn(segment, id) in order, with id -1 for text between tokens.
  // Implements lstrip / rstrip / single_word like Hugging Face's
  // AddedVocabulary::find_matches.
  template <typename Fn>
  void Split(std::string_view s, Fn&& fn) const {
    if (empty_) {
      fn(s, -1);
      return;
    }
    size_t start_offset = 0;
    size_t pos = 0;
    const size_t n = s.size();
    while (pos < n) {
      if (!first_byte_[static_cast<unsigned char>(s[pos])]) {
        ++pos;
        continue;
      }
      const AddedToken* found = nullptr;
      for (const AddedToken* t : by_first_byte_[static_cast<unsigned char>(s[pos])]) {
        if (s.compare(pos, t->match.size(), t->match) == 0) {
          found = t;
          break;
        }
      }
      if (found == nullptr) {
        ++pos;
        continue;
      }
      size_t start = pos, stop = pos + found->match.size();
      pos = stop;
      if (start < start_offset) continue;  // swallowed by a previous rstrip
      if (found->single_word) {
        bool start_space = start == 0 || !IsWordChar(LastCp(s.substr(0, start)));
        bool stop_space = true;
        if (stop < n) {
          char32_t cp;
          DecodeCp(s, stop, &cp);
          stop_space = !IsWordChar(cp);
        }
        if (!start_space || !stop_space) continue;
      }
      if (found->lstrip) {
        size_t b = start;
        while (b > start_offset) {
          char32_t cp = LastCp(s.substr(0, b));
          if (!IsWhitespace(cp)) break;
          size_t k = b - 1;
          while (k > 0 && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
          b = k;
        }
        start = b;
      }
      if (found->rstrip) {
        while (stop < n) {
          char32_t cp;
          size_t len = DecodeCp(s, stop, &cp);
          if (!IsWhitespace(cp)) break;
          stop += len;
        }
        pos = stop;
      }
      if (start_offset < start) fn(s.substr(start_offset, start - start_offset), -1);
      fn(s.substr(start, stop - start), found->id);
      start_offset = stop;
    }
    if (start_offset < n) fn(s.substr(start_offset), -1);
  }

 private:
  std::array<std::vector<const AddedToken*>, 256> by_first_byte_;
  std::array<bool, 256> first_byte_{};
  bool empty_ = true;
};

}  // namespace cohort::tok

#endif  // COHORT_CORE_TOKENIZER_COMPONENTS_H_
