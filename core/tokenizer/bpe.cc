#include "core/tokenizer/bpe.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <cstring>
#include <functional>
#include <queue>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "core/tokenizer/utf8.h"

namespace cohort::tok {
namespace {

struct MergeInfo {
  int32_t rank;
  int32_t id;
};

inline uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

uint64_t HashBytes(const char* p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xC2B2AE3D27D4EB4Full);
  auto mix = [&](uint64_t w) {
    h = (h ^ w) * 0xFF51AFD7ED558CCDull;
    h ^= h >> 29;
  };
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    mix(w);
    p += 8;
    n -= 8;
  }
  if (n > 0) {
    uint64_t w = 0;
    std::memcpy(&w, p, n);
    mix(w);
  }
  return h ^ (h >> 32);
}

// A cache from short words to their ids: per thread and per Bpe instance
// (so no locks), direct-mapped (a colliding word overwrites the slot), so
// memory is bounded: about 1.4 MiB per thread for each of the last four
// tokenizers the thread used.
class WordCache {
 public:
  static constexpr size_t kMaxWordBytes = 32;
  static constexpr size_t kMaxIds = 12;
  static constexpr size_t kSlots = 1 << 14;

  WordCache() : owner_(NextOwner()) {}

  bool Lookup(std::string_view word, uint64_t hash, std::vector<int32_t>* ids) const {
    const Slot& slot = Table()[hash & (kSlots - 1)];
    if (slot.hash != hash || slot.len != word.size() ||
        std::memcmp(slot.bytes, word.data(), word.size()) != 0) {
      return false;
    }
    ids->insert(ids->end(), slot.ids, slot.ids + slot.n);
    return true;
  }
  void Insert(std::string_view word, uint64_t hash, const int32_t* ids, size_t n) const {
    if (n > kMaxIds || word.size() > kMaxWordBytes) return;
    Slot& slot = Table()[hash & (kSlots - 1)];
    slot.hash = hash;
    slot.len = static_cast<uint8_t>(word.size());
    slot.n = static_cast<uint8_t>(n);
    std::memcpy(slot.bytes, word.data(), word.size());
    std::memcpy(slot.ids, ids, n * sizeof(int32_t));
  }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint8_t len = 0;  // 0: empty (words are never empty)
    uint8_t n = 0;
    char bytes[kMaxWordBytes];
    int32_t ids[kMaxIds];
  };
  struct ThreadTables {
    struct Entry {
      uint64_t owner = 0;
      uint64_t last_use = 0;
      std::unique_ptr<Slot[]> slots;
    };
    std::array<Entry, 4> entries;
    uint64_t clock = 0;
  };

  static uint64_t NextOwner() {
    static std::atomic<uint64_t> next{1};
    return next.fetch_add(1);
  }

  Slot* Table() const {
    thread_local ThreadTables tables;
    ThreadTables::Entry* victim = &tables.entries[0];
    for (auto& e : tables.entries) {
      if (e.owner == owner_) {
        e.last_use = ++tables.clock;
        return e.slots.get();
      }
      if (e.last_use < victim->last_use) victim = &e;
    }
    victim->owner = owner_;
    victim->last_use = ++tables.clock;
    victim->slots.reset(new Slot[kSlots]);
    return victim->slots.get();
  }

  const uint64_t owner_;
};

}  // namespace

// Parses `text`, moving model.vocab / model.merges entries into `*model`.
// Throws Json::parse_error like Json::parse.
Json ParseTokenizerJson(std::string_view text, StreamedModel* model) {
  std::array<std::string, 3> path;  // object key at depth 1 and 2
  bool in_vocab = false, in_merges = false, in_pair = false;
  std::string key;
  Json::parser_callback_t cb = [&](int depth, Json::parse_event_t event, Json& parsed) -> bool {
    using E = Json::parse_event_t;
    switch (event) {
      case E::key:
        if (in_vocab && depth == 3) {
          key = parsed.get<std::string>();
          return false;  // the value still reaches the callback, but is not stored
        }
        if (depth == 1 || depth == 2) {
          path[depth] = parsed.get<std::string>();
          if (depth == 1) path[2].clear();
        }
        return true;
      case E::object_start:
        if (depth == 2 && path[1] == "model" && path[2] == "vocab") {
          in_vocab = true;
          model->vocab_streamed = true;
        }
        return true;
      case E::object_end:
        if (in_vocab && depth == 2) in_vocab = false;
        return true;
      case E::array_start:
        if (depth == 2 && path[1] == "model" && path[2] == "merges") {
          in_merges = true;
          model->merges_streamed = true;
        } else if (in_merges && depth == 3) {
          in_pair = true;
          model->merges.emplace_back();
        }
        return true;
      case E::array_end:
        if (in_pair && depth == 3) {
          in_pair = false;
          const StreamedModel::Merge& m = model->merges.back();
          if (m.a.empty() || m.b.empty()) {
            model->Fail(absl::StrCat("model BPE: merge ", model->merges.size() - 1,
                                     " is not a pair of two non-empty strings"));
          }
          return false;
        }
        if (in_merges && depth == 2) in_merges = false;
        return true;
      case E::value:
        if (in_vocab && depth == 3) {
          if (!parsed.is_number_integer()) {
            model->Fail(absl::StrCat("model BPE: vocab entry \"", key, "\" has id ", parsed.dump(),
                                     ", not an integer"));
          } else {
            model->vocab.emplace_back(std::move(key), parsed.get<int64_t>());
          }
          return true;  // dropped anyway: its key was not kept
        }
        if (in_pair && depth == 4) {
          StreamedModel::Merge& m = model->merges.back();
          if (!parsed.is_string() || !m.b.empty()) {
            model->Fail(absl::StrCat("model BPE: merge ", model->merges.size() - 1,
                                     " is not a pair of two strings"));
          } else {
            (m.a.empty() ? m.a : m.b) = parsed.get<std::string>();
          }
          return false;
        }
        if (in_merges && depth == 3) {
          if (!parsed.is_string()) {
            model->Fail(absl::StrCat("model BPE: merge ", model->merges.size(),
                                     " is neither \"a b\" nor [\"a\", \"b\"]: ", parsed.dump()));
          }
          model->merges.push_back({parsed.is_string() ? parsed.get<std::string>() : "", "", true});
          return false;
        }
        return true;
    }
    return true;
  };
  return Json::parse(text.begin(), text.end(), cb);
}

class Bpe::Impl {
 public:
  // Loads from the "model" object. `byte_level`: the vocab is converted to
  // raw bytes and words are split into bytes.
  absl::Status Load(const Json& model, const StreamedModel& streamed, bool byte_level,
                    absl::flat_hash_map<std::string, int32_t>* vocab_out, int32_t* max_id) {
    std::string type = TypeOf(model);
    if (type != "BPE" && !(type.empty() && model.contains("merges"))) {
      return absl::UnimplementedError(
          absl::StrCat("model type \"", type, "\" is not supported (supported: BPE)"));
    }
    if (model.contains("dropout") && !model["dropout"].is_null() &&
        model["dropout"].get<double>() != 0.0) {
      return absl::UnimplementedError("model BPE: dropout is not supported (it is random)");
    }
    byte_level_ = byte_level;
    ignore_merges_ = BoolOr(model, "ignore_merges", false);
    fuse_unk_ = BoolOr(model, "fuse_unk", false);
    byte_fallback_ = BoolOr(model, "byte_fallback", false);
    if (model.contains("continuing_subword_prefix") &&
        model["continuing_subword_prefix"].is_string()) {
      prefix_ = model["continuing_subword_prefix"].get<std::string>();
    }
    if (model.contains("end_of_word_suffix") && model["end_of_word_suffix"].is_string()) {
      suffix_ = model["end_of_word_suffix"].get<std::string>();
    }
    if (!streamed.error.empty()) return Invalid(streamed.error);
    if (!streamed.vocab_streamed) return Invalid("model BPE: \"vocab\" must be an object");
    vocab_.reserve(streamed.vocab.size());
    vocab_out->reserve(streamed.vocab.size());
    std::string bytes;
    for (const auto& [token, id64] : streamed.vocab) {
      if (id64 < 0 || id64 > INT32_MAX - 1) {
        return Invalid(absl::StrCat("model BPE: id ", id64, " of \"", token, "\" is out of range"));
      }
      auto id = static_cast<int32_t>(id64);
      (*vocab_out)[token] = id;
      *max_id = std::max(*max_id, id);
      if (byte_level_) {
        if (Alphabet().ToBytes(token, &bytes)) vocab_[bytes] = id;
      } else {
        vocab_[token] = id;
      }
    }
    byte_ids_.fill(-1);
    for (int b = 0; b < 256; ++b) {
      std::string one(1, static_cast<char>(b));
      if (!byte_level_ && b >= 0x80) continue;
      auto it = vocab_.find(one);
      if (it != vocab_.end()) byte_ids_[b] = it->second;
    }
    if (model.contains("unk_token") && model["unk_token"].is_string()) {
      std::string unk = model["unk_token"].get<std::string>();
      auto it = vocab_out->find(unk);
      if (it == vocab_out->end()) {
        return Invalid(absl::StrCat("model BPE: unk_token \"", unk, "\" is not in the vocab"));
      }
      unk_id_ = it->second;
    }
    if (!streamed.merges_streamed) return Invalid("model BPE: \"merges\" must be an array");
    merges_.reserve(streamed.merges.size());
    std::string a, b;
    for (size_t rank = 0; rank < streamed.merges.size(); ++rank) {
      const StreamedModel::Merge& m = streamed.merges[rank];
      if (m.is_line) {
        const std::string& line = m.a;
        size_t space = line.find(' ');
        if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
          return Invalid(absl::StrCat("model BPE: merge ", rank, " \"", line,
                                      "\" is not two tokens separated by one space"));
        }
        a = line.substr(0, space);
        b = line.substr(space + 1);
      } else {
        a = m.a;
        b = m.b;
      }
      auto find = [&](const std::string& t) -> int32_t {
        auto it = vocab_out->find(t);
        return it == vocab_out->end() ? -1 : it->second;
      };
      int32_t ia = find(a), ib = find(b);
      std::string merged =
          a + (b.compare(0, prefix_.size(), prefix_) == 0 ? b.substr(prefix_.size()) : b);
      int32_t im = find(merged);
      if (ia < 0 || ib < 0 || im < 0) {
        return Invalid(absl::StrCat("model BPE: merge ", rank, " (\"", a, "\", \"", b,
                                    "\") uses a token missing from the vocab: \"",
                                    ia < 0   ? a
                                    : ib < 0 ? b
                                             : merged,
                                    "\""));
      }
      merges_[PairKey(ia, ib)] = MergeInfo{static_cast<int32_t>(rank), im};
    }
    if (byte_fallback_) {
      for (int v = 0; v < 256; ++v) {
        char name[8];
        std::snprintf(name, sizeof(name), "<0x%02X>", v);
        auto it = vocab_out->find(name);
        byte_fallback_ids_[v] = it == vocab_out->end() ? -1 : it->second;
      }
    }
    return absl::OkStatus();
  }

  // Appends the ids of one pre-tokenized word.
  void Encode(std::string_view word, std::vector<int32_t>* ids) const {
    if (word.empty()) return;
    bool simple = prefix_.empty() && suffix_.empty();
    if (word.size() == 1 && simple && byte_ids_[static_cast<unsigned char>(word[0])] >= 0) {
      ids->push_back(byte_ids_[static_cast<unsigned char>(word[0])]);
      return;
    }
    if (ignore_merges_) {
      auto it = vocab_.find(absl::string_view(word.data(), word.size()));
      if (it != vocab_.end()) {
        ids->push_back(it->second);
        return;
      }
    }
    const bool cacheable = word.size() <= WordCache::kMaxWordBytes;
    uint64_t hash = 0;
    if (cacheable) {
      hash = HashBytes(word.data(), word.size());
      if (cache_.Lookup(word, hash, ids)) return;
    }
    thread_local std::vector<int32_t> symbols;
    symbols.clear();
    InitialSymbols(word, &symbols);
    MergeAll(&symbols);
    if (cacheable) cache_.Insert(word, hash, symbols.data(), symbols.size());
    ids->insert(ids->end(), symbols.begin(), symbols.end());
  }

  int32_t LookupModel(std::string_view s) const {
    auto it = vocab_.find(absl::string_view(s.data(), s.size()));
    return it == vocab_.end() ? -1 : it->second;
  }

 private:
  // Splits `word` into its characters (bytes when byte-level) and looks
  // each up, with byte fallback / unk handling as Hugging Face does.
  void InitialSymbols(std::string_view word, std::vector<int32_t>* out) const {
    bool simple = prefix_.empty() && suffix_.empty();
    int32_t pending_unk = -1;
    std::string key;
    for (size_t i = 0; i < word.size();) {
      size_t len = 1;
      if (!byte_level_) {
        char32_t cp;
        len = DecodeCp(word, i, &cp);
      }
      int32_t id = -1;
      if (simple && len == 1) {
        id = byte_ids_[static_cast<unsigned char>(word[i])];
      } else {
        key.clear();
        if (i > 0) key += prefix_;
        key.append(word.data() + i, len);
        if (i + len == word.size()) key += suffix_;
        id = LookupModel(key);
      }
      if (id >= 0) {
        if (pending_unk >= 0) out->push_back(pending_unk);
        pending_unk = -1;
        out->push_back(id);
      } else {
        bool handled = false;
        if (byte_fallback_) {
          std::string_view unit = word.substr(i, len);
          std::string bytes_form;
          if (byte_level_) bytes_form = Alphabet().FromBytes(unit);
          std::string_view src = byte_level_ ? std::string_view(bytes_form) : unit;
          bool all = true;
          for (char c : src) all = all && byte_fallback_ids_[static_cast<unsigned char>(c)] >= 0;
          if (all) {
            if (pending_unk >= 0) out->push_back(pending_unk);
            pending_unk = -1;
            for (char c : src) out->push_back(byte_fallback_ids_[static_cast<unsigned char>(c)]);
            handled = true;
          }
        }
        if (!handled && unk_id_ >= 0) {
          if (pending_unk >= 0 && !fuse_unk_) out->push_back(pending_unk);
          pending_unk = unk_id_;
        }
        // Without unk_token the character is dropped, as Hugging Face does.
      }
      i += len;
    }
    if (pending_unk >= 0) out->push_back(pending_unk);
  }

  const MergeInfo* FindMerge(int32_t a, int32_t b) const {
    auto it = merges_.find(PairKey(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  }

  // Repeatedly applies the lowest-ranked merge (leftmost on ties).
  void MergeAll(std::vector<int32_t>* symbols) const {
    if (symbols->size() < 2) return;
    if (symbols->size() > 64) {
      MergeAllHeap(symbols);
      return;
    }
    std::vector<int32_t>& s = *symbols;
    thread_local std::vector<MergeInfo> pair;  // pair[i]: merge of s[i], s[i+1]
    pair.resize(s.size() - 1);
    constexpr MergeInfo kNone{INT32_MAX, -1};
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      const MergeInfo* m = FindMerge(s[i], s[i + 1]);
      pair[i] = m ? *m : kNone;
    }
    while (!pair.empty()) {
      size_t best = 0;
      for (size_t i = 1; i < pair.size(); ++i) {
        if (pair[i].rank < pair[best].rank) best = i;
      }
      if (pair[best].id < 0) break;
      s[best] = pair[best].id;
      s.erase(s.begin() + static_cast<ptrdiff_t>(best) + 1);
      pair.erase(pair.begin() + static_cast<ptrdiff_t>(best));
      if (best > 0) {
        const MergeInfo* m = FindMerge(s[best - 1], s[best]);
        pair[best - 1] = m ? *m : kNone;
      }
      if (best < pair.size()) {
        const MergeInfo* m = FindMerge(s[best], s[best + 1]);
        pair[best] = m ? *m : kNone;
      }
    }
  }

  // O(n log n) variant for long words: symbols in a linked list, candidate
  // pairs in a heap ordered by (rank, position); stale entries are skipped.
  void MergeAllHeap(std::vector<int32_t>* symbols) const {
    std::vector<int32_t>& s = *symbols;
    const int n = static_cast<int>(s.size());
    std::vector<int> prev(n), next(n);
    std::vector<bool> alive(n, true);
    for (int i = 0; i < n; ++i) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    struct Cand {
      int32_t rank;
      int left;
      int right;
      bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
    auto push = [&](int l, int r) {
      if (l < 0 || r < 0) return;
      const MergeInfo* m = FindMerge(s[l], s[r]);
      if (m) heap.push({m->rank, l, r});
    };
    for (int i = 0; i + 1 < n; ++i) push(i, i + 1);
    while (!heap.empty()) {
      Cand c = heap.top();
      heap.pop();
      if (!alive[c.left] || !alive[c.right] || next[c.left] != c.right) continue;
      const MergeInfo* m = FindMerge(s[c.left], s[c.right]);
      if (!m || m->rank != c.rank) continue;
      s[c.left] = m->id;
      alive[c.right] = false;
      next[c.left] = next[c.right];
      if (next[c.right] >= 0) prev[next[c.right]] = c.left;
      push(prev[c.left], c.left);
      push(c.left, next[c.left]);
    }
    size_t w = 0;
    for (int i = 0; i < n; ++i) {
      if (alive[i]) s[w++] = s[i];
    }
    s.resize(w);
  }

  bool byte_level_ = false;
  bool ignore_merges_ = false;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  std::string prefix_, suffix_;
  int32_t unk_id_ = -1;
  absl::flat_hash_map<std::string, int32_t> vocab_;  // model space (raw bytes if byte-level)
  std::array<int32_t, 256> byte_ids_{};
  std::array<int32_t, 256> byte_fallback_ids_{};
  absl::flat_hash_map<uint64_t, MergeInfo> merges_;
  WordCache cache_;
};

Bpe::Bpe() : impl_(std::make_unique<Impl>()) {}
Bpe::~Bpe() = default;

absl::Status Bpe::Load(const Json& model, const StreamedModel& streamed, bool byte_level,
                       absl::flat_hash_map<std::string, int32_t>* vocab_out, int32_t* max_id) {
  return impl_->Load(model, streamed, byte_level, vocab_out, max_id);
}

void Bpe::Encode(std::string_view word, std::vector<int32_t>* ids) const {
  impl_->Encode(word, ids);
}

}  // namespace cohort::tok
