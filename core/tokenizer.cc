// Hugging Face tokenizer.json reader and BPE encoder. See tokenizer.h.
//
// The pipeline follows the Hugging Face `tokenizers` crate step by step:
//   1. added tokens with normalized=false are split out of the raw text,
//   2. each remaining piece is normalized,
//   3. added tokens with normalized=true are split out of the normalized text,
//   4. pre-tokenizers cut the rest into words,
//   5. BPE turns each word into ids,
//   6. the post-processor adds special tokens when asked.
// Byte-level tokenizers work on raw bytes internally: the vocab is converted
// from its printable byte-level form to raw bytes at load time, so no
// per-byte character mapping happens while encoding.
#include "core/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8

#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <queue>
#include <sstream>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "core/status.h"
#include "nlohmann/json.hpp"

namespace cohort {
namespace {

using Json = nlohmann::json;
using Pieces = std::vector<std::string_view>;

absl::Status Invalid(std::string_view what) {
  return absl::InvalidArgumentError(std::string(what));
}

// ---------------------------------------------------------------------------
// UTF-8 helpers

// Length of the well-formed UTF-8 sequence at s[i], or 0 if it is not
// well-formed; `*valid_prefix` gets how many of its bytes are a valid prefix
// (the "maximal subpart" replaced by one U+FFFD, as Rust's from_utf8_lossy).
size_t Utf8SeqLen(const unsigned char* s, size_t n, size_t i, size_t* valid_prefix) {
  unsigned char b = s[i];
  *valid_prefix = 1;
  if (b < 0x80) return 1;
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) {
    len = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    len = 3;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    len = 4;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (size_t k = 1; k < len; ++k) {
    if (i + k >= n) return 0;
    unsigned char c = s[i + k];
    unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (c < l || c > h) return 0;
    *valid_prefix = k + 1;
  }
  return len;
}

bool IsValidUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    // Fast path over ASCII, 8 bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    size_t prefix;
    size_t len = Utf8SeqLen(p, n, i, &prefix);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

// Replaces each maximal invalid subpart with U+FFFD.
std::string LossyUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  std::string out;
  out.reserve(n);
  while (i < n) {
    size_t prefix;
    size_t len = Utf8SeqLen(p, n, i, &prefix);
    if (len == 0) {
      out += "\xEF\xBF\xBD";
      i += prefix;
    } else {
      out.append(s.data() + i, len);
      i += len;
    }
  }
  return out;
}

// Decodes the (valid) code point at s[i]; returns its length.
size_t DecodeCp(std::string_view s, size_t i, char32_t* cp) {
  auto b = static_cast<unsigned char>(s[i]);
  auto c = [&](size_t k) {
    return static_cast<char32_t>(static_cast<unsigned char>(s[i + k]) & 0x3F);
  };
  if (b < 0x80) {
    *cp = b;
    return 1;
  }
  if (b < 0xE0) {
    *cp = (static_cast<char32_t>(b & 0x1F) << 6) | c(1);
    return 2;
  }
  if (b < 0xF0) {
    *cp = (static_cast<char32_t>(b & 0x0F) << 12) | (c(1) << 6) | c(2);
    return 3;
  }
  *cp = (static_cast<char32_t>(b & 0x07) << 18) | (c(1) << 12) | (c(2) << 6) | c(3);
  return 4;
}

void AppendCp(std::string* out, char32_t cp) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Rust's char::is_whitespace (the Unicode White_Space property).
bool IsWhitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// Approximates Rust's char::is_alphanumeric (letters and numbers).
bool IsWordChar(char32_t c) {
  if (c == '_') return true;
  if (c < 0x80) return std::isalnum(static_cast<int>(c)) != 0;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
      return true;
    default:
      return false;
  }
}

// The last code point of s (s non-empty, valid).
char32_t LastCp(std::string_view s) {
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  char32_t cp;
  DecodeCp(s, i, &cp);
  return cp;
}

bool AllAscii(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

// GPT-2's byte <-> printable character mapping used by ByteLevel.
struct ByteLevelAlphabet {
  std::array<char32_t, 256> byte_to_cp;
  std::array<int16_t, 0x200> cp_to_byte;  // -1 where not a byte-level char
  ByteLevelAlphabet() {
    cp_to_byte.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable =
          (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      byte_to_cp[b] = cp;
      cp_to_byte[cp] = static_cast<int16_t>(b);
    }
  }
  // Maps a byte-level token back to raw bytes; false if some character is
  // not in the alphabet.
  bool ToBytes(std::string_view token, std::string* out) const {
    out->clear();
    for (size_t i = 0; i < token.size();) {
      char32_t cp;
      i += DecodeCp(token, i, &cp);
      if (cp >= cp_to_byte.size() || cp_to_byte[cp] < 0) return false;
      out->push_back(static_cast<char>(cp_to_byte[cp]));
    }
    return true;
  }
  std::string FromBytes(std::string_view bytes) const {
    std::string out;
    for (char c : bytes) AppendCp(&out, byte_to_cp[static_cast<unsigned char>(c)]);
    return out;
  }
};

const ByteLevelAlphabet& Alphabet() {
  static const ByteLevelAlphabet* alphabet = new ByteLevelAlphabet();
  return *alphabet;
}

// ---------------------------------------------------------------------------
// Regex: PCRE2 with UTF + UCP, JIT-compiled when available. Thread-safe: the
// per-call match data and JIT stack are thread-local.

struct PcreThreadState {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  PcreThreadState() { pcre2_jit_stack_assign(context, nullptr, stack); }
  ~PcreThreadState() {
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(stack);
    pcre2_match_data_free(data);
  }
};

class Regex {
 public:
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(const std::string& pattern, bool literal) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    uint32_t options = PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK;
    if (literal) options = PCRE2_UTF | PCRE2_LITERAL;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     options, &error, &offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      return Invalid(absl::StrCat("regex \"", pattern, "\" does not compile at offset ", offset,
                                  ": ", reinterpret_cast<const char*>(message)));
    }
    auto regex = std::unique_ptr<Regex>(new Regex());
    regex->code_ = code;
    regex->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
    return regex;
  }
  ~Regex() { pcre2_code_free(code_); }

  // Calls fn(start, end) for each successive non-overlapping match in `s`
  // (which must be valid UTF-8). After an empty match the search resumes
  // one character later.
  template <typename Fn>
  void ForEachMatch(std::string_view s, Fn&& fn) const {
    thread_local PcreThreadState state;
    auto subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    size_t start = 0;
    while (start <= s.size()) {
      int rc = jit_ ? pcre2_jit_match(code_, subject, s.size(), start, 0, state.data, state.context)
                    : PCRE2_ERROR_JIT_BADOPTION;
      if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
        rc = pcre2_match(code_, subject, s.size(), start, PCRE2_NO_UTF_CHECK, state.data, nullptr);
      }
      if (rc < 0) break;  // no match (or a resource limit: the rest is a gap)
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(state.data);
      size_t b = ov[0], e = ov[1];
      fn(b, e);
      if (e > b) {
        start = e;
      } else {
        if (e >= s.size()) break;
        char32_t cp;
        start = e + DecodeCp(s, e, &cp);
      }
    }
  }

  void ReplaceAll(std::string* s, std::string_view content) const {
    std::string out;
    size_t prev = 0;
    bool any = false;
    ForEachMatch(*s, [&](size_t b, size_t e) {
      if (e == b) return;
      any = true;
      out.append(*s, prev, b - prev);
      out.append(content);
      prev = e;
    });
    if (!any) return;
    out.append(*s, prev, std::string::npos);
    *s = std::move(out);
  }

 private:
  Regex() = default;
  pcre2_code* code_ = nullptr;
  bool jit_ = false;
};

// A {"String": ...} or {"Regex": ...} pattern object.
absl::StatusOr<std::unique_ptr<Regex>> ParsePattern(const Json& j, const char* where) {
  if (!j.is_object()) return Invalid(absl::StrCat(where, ": \"pattern\" must be an object"));
  if (j.contains("Regex")) return Regex::Compile(j["Regex"].get<std::string>(), false);
  if (j.contains("String")) return Regex::Compile(j["String"].get<std::string>(), true);
  return Invalid(absl::StrCat(where, ": \"pattern\" needs a \"String\" or \"Regex\" key"));
}

std::string TypeOf(const Json& j) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) return "";
  return j["type"].get<std::string>();
}

bool BoolOr(const Json& j, const char* key, bool dflt) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  return j[key].get<bool>();
}

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

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(int options) : options_(options) {}
  bool Unchanged(std::string_view s) const override { return AllAscii(s); }
  void Apply(std::string* s) const override {
    if (AllAscii(*s)) return;  // every normal form leaves ASCII unchanged
    utf8proc_uint8_t* out = nullptr;
    utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s->data()),
                                      static_cast<utf8proc_ssize_t>(s->size()), &out,
                                      static_cast<utf8proc_option_t>(options_));
    if (n >= 0) s->assign(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
    std::free(out);
  }

 private:
  int options_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  void Apply(std::string* s) const override {
    if (AllAscii(*s)) {
      for (char& c : *s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      return;
    }
    std::string out;
    out.reserve(s->size());
    for (size_t i = 0; i < s->size();) {
      char32_t cp;
      i += DecodeCp(*s, i, &cp);
      if (cp == 0x130) {  // the one code point whose full lowercase is two
        out += "i\xCC\x87";
        continue;
      }
      AppendCp(&out, static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))));
    }
    *s = std::move(out);
  }
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void Apply(std::string* s) const override {
    size_t b = 0, e = s->size();
    if (left_) {
      while (b < e) {
        char32_t cp;
        size_t len = DecodeCp(*s, b, &cp);
        if (!IsWhitespace(cp)) break;
        b += len;
      }
    }
    if (right_) {
      while (e > b) {
        char32_t cp = LastCp(std::string_view(*s).substr(b, e - b));
        if (!IsWhitespace(cp)) break;
        size_t k = e - 1;
        while (k > b && (static_cast<unsigned char>((*s)[k]) & 0xC0) == 0x80) --k;
        e = k;
      }
    }
    *s = s->substr(b, e - b);
  }

 private:
  bool left_, right_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::unique_ptr<Regex> re, std::string content)
      : re_(std::move(re)), content_(std::move(content)) {}
  void Apply(std::string* s) const override { re_->ReplaceAll(s, content_); }

 private:
  std::unique_ptr<Regex> re_;
  std::string content_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prepend) : prepend_(std::move(prepend)) {}
  void Apply(std::string* s) const override {
    if (!s->empty()) s->insert(0, prepend_);
  }

 private:
  std::string prepend_;
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  void Apply(std::string* s) const override {
    for (const auto& p : parts_) p->Apply(s);
  }
  bool Unchanged(std::string_view s) const override {
    for (const auto& p : parts_) {
      if (!p->Unchanged(s)) return false;
    }
    return true;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const Json& j) {
  std::string type = TypeOf(j);
  constexpr int kStable = UTF8PROC_STABLE;
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(kStable | UTF8PROC_COMPOSE);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(kStable | UTF8PROC_DECOMPOSE);
  if (type == "NFKC") {
    return std::make_unique<UnicodeNormalizer>(kStable | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
  }
  if (type == "NFKD") {
    return std::make_unique<UnicodeNormalizer>(kStable | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
  }
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Strip") {
    return std::make_unique<StripNormalizer>(BoolOr(j, "strip_left", true),
                                             BoolOr(j, "strip_right", true));
  }
  if (type == "Replace") {
    ASSIGN_OR_RETURN(auto re, ParsePattern(j.value("pattern", Json()), "normalizer Replace"));
    return std::make_unique<ReplaceNormalizer>(std::move(re), j.value("content", std::string()));
  }
  if (type == "Prepend")
    return std::make_unique<PrependNormalizer>(j.value("prepend", std::string()));
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (const Json& child : j.value("normalizers", Json::array())) {
      ASSIGN_OR_RETURN(auto part, ParseNormalizer(child));
      parts.push_back(std::move(part));
    }
    return std::make_unique<SequenceNormalizer>(std::move(parts));
  }
  return absl::UnimplementedError(absl::StrCat(
      "normalizer type \"", type.empty() ? j.dump() : type,
      "\" is not supported (supported: NFC, NFD, NFKC, NFKD, Lowercase, Strip, Replace, "
      "Prepend, Sequence)"));
}

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

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Regex> re, SplitBehavior behavior, bool invert)
      : re_(std::move(re)), behavior_(behavior), invert_(invert) {}

  void Apply(const Pieces& in, Pieces* out, std::deque<std::string>*) const override {
    for (std::string_view piece : in) SplitOne(piece, out);
  }

  void SplitOne(std::string_view s, Pieces* out) const {
    if (s.empty()) return;
    // Fast path for the common Isolated mode: every match and every gap is
    // a piece of its own, whatever `invert` says.
    if (behavior_ == SplitBehavior::kIsolated) {
      size_t prev = 0;
      re_->ForEachMatch(s, [&](size_t b, size_t e) {
        if (b > prev) out->push_back(s.substr(prev, b - prev));
        if (e > b) out->push_back(s.substr(b, e - b));
        prev = e;
      });
      if (prev < s.size()) out->push_back(s.substr(prev));
      return;
    }
    struct Span {
      size_t b, e;
      bool is_match;
    };
    thread_local std::vector<Span> spans;
    spans.clear();
    size_t prev = 0;
    re_->ForEachMatch(s, [&](size_t b, size_t e) {
      if (b > prev) spans.push_back({prev, b, false});
      spans.push_back({b, e, true});
      prev = e;
    });
    if (prev < s.size()) spans.push_back({prev, s.size(), false});
    if (invert_) {
      for (Span& sp : spans) sp.is_match = !sp.is_match;
    }
    // `keep` pairs: (span, removed).
    thread_local std::vector<std::pair<Span, bool>> result;
    result.clear();
    switch (behavior_) {
      case SplitBehavior::kIsolated:
        break;  // handled above
      case SplitBehavior::kRemoved:
        for (const Span& sp : spans) result.push_back({sp, sp.is_match});
        break;
      case SplitBehavior::kContiguous: {
        bool previous_match = false;
        for (const Span& sp : spans) {
          if (sp.is_match == previous_match && !result.empty()) {
            result.back().first.e = sp.e;
          } else {
            result.push_back({sp, false});
          }
          previous_match = sp.is_match;
        }
        break;
      }
      case SplitBehavior::kMergedWithPrevious: {
        bool previous_match = false;
        for (const Span& sp : spans) {
          if (sp.is_match && !previous_match && !result.empty()) {
            result.back().first.e = sp.e;
          } else {
            result.push_back({sp, false});
          }
          previous_match = sp.is_match;
        }
        break;
      }
      case SplitBehavior::kMergedWithNext: {
        bool previous_match = false;
        for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
          if (it->is_match && !previous_match && !result.empty()) {
            result.back().first.b = it->b;
          } else {
            result.push_back({*it, false});
          }
          previous_match = it->is_match;
        }
        std::reverse(result.begin(), result.end());
        break;
      }
    }
    for (const auto& [sp, removed] : result) {
      if (!removed && sp.e > sp.b) out->push_back(s.substr(sp.b, sp.e - sp.b));
    }
  }

 private:
  std::unique_ptr<Regex> re_;
  SplitBehavior behavior_;
  bool invert_;
};

constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// ByteLevel in raw-byte space: the byte -> character mapping is the identity
// here (the vocab was converted to bytes), so only the prefix space and the
// optional GPT-2 split remain.
class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<SplitPreTokenizer> split)
      : add_prefix_space_(add_prefix_space), split_(std::move(split)) {}

  void Apply(const Pieces& in, Pieces* out, std::deque<std::string>* owned) const override {
    for (std::string_view piece : in) {
      if (piece.empty()) continue;
      if (add_prefix_space_ && piece[0] != ' ') {
        owned->push_back(absl::StrCat(" ", absl::string_view(piece.data(), piece.size())));
        piece = owned->back();
      }
      if (split_) {
        split_->SplitOne(piece, out);
      } else {
        out->push_back(piece);
      }
    }
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<SplitPreTokenizer> split_;
};

absl::StatusOr<SplitBehavior> ParseBehavior(const Json& j) {
  std::string b = j.is_string() ? j.get<std::string>() : "";
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  return Invalid(absl::StrCat("pre_tokenizer Split: unknown behavior ", j.dump()));
}

// Appends the stages of `j` to `stages`; sets *byte_level when a ByteLevel
// stage is present.
absl::Status ParsePreTokenizer(const Json& j, std::vector<std::unique_ptr<PreTokenizer>>* stages,
                               bool* byte_level) {
  std::string type = TypeOf(j);
  if (type == "Sequence") {
    for (const Json& child : j.value("pretokenizers", Json::array())) {
      RETURN_IF_ERROR(ParsePreTokenizer(child, stages, byte_level));
    }
    return absl::OkStatus();
  }
  if (*byte_level) {
    // After ByteLevel, Hugging Face's pieces are in printable byte-level form;
    // cohort works on raw bytes, so a later stage would see other text.
    return absl::UnimplementedError(
        absl::StrCat("pre_tokenizer \"", type, "\" after ByteLevel is not supported"));
  }
  if (type == "Split") {
    ASSIGN_OR_RETURN(auto re, ParsePattern(j.value("pattern", Json()), "pre_tokenizer Split"));
    ASSIGN_OR_RETURN(SplitBehavior behavior, ParseBehavior(j.value("behavior", Json())));
    stages->push_back(
        std::make_unique<SplitPreTokenizer>(std::move(re), behavior, BoolOr(j, "invert", false)));
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    std::unique_ptr<SplitPreTokenizer> split;
    if (BoolOr(j, "use_regex", true)) {
      ASSIGN_OR_RETURN(auto re, Regex::Compile(kGpt2Pattern, false));
      split = std::make_unique<SplitPreTokenizer>(std::move(re), SplitBehavior::kIsolated, false);
    }
    stages->push_back(std::make_unique<ByteLevelPreTokenizer>(BoolOr(j, "add_prefix_space", true),
                                                              std::move(split)));
    *byte_level = true;
    return absl::OkStatus();
  }
  return absl::UnimplementedError(
      absl::StrCat("pre_tokenizer type \"", type.empty() ? j.dump() : type,
                   "\" is not supported (supported: Sequence, Split, ByteLevel)"));
}

// ---------------------------------------------------------------------------
// Decoders (on token strings, as Hugging Face's decode_chain).

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void Apply(std::vector<std::string>* tokens) const = 0;
};

class ByteLevelDecoder : public Decoder {
 public:
  void Apply(std::vector<std::string>* tokens) const override {
    std::string bytes, tmp;
    for (const std::string& t : *tokens) {
      if (Alphabet().ToBytes(t, &tmp)) {
        bytes += tmp;
      } else {
        bytes += t;
      }
    }
    tokens->assign(1, LossyUtf8(bytes));
  }
};

class ByteFallbackDecoder : public Decoder {
 public:
  void Apply(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    size_t pending_count = 0;
    auto flush = [&] {
      if (pending_count == 0) return;
      if (IsValidUtf8(pending)) {
        out.push_back(pending);
      } else {
        for (size_t i = 0; i < pending_count; ++i) out.push_back("\xEF\xBF\xBD");
      }
      pending.clear();
      pending_count = 0;
    };
    for (std::string& t : *tokens) {
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' &&
          std::isxdigit(static_cast<unsigned char>(t[3])) &&
          std::isxdigit(static_cast<unsigned char>(t[4]))) {
        pending.push_back(static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16)));
        ++pending_count;
        continue;
      }
      flush();
      out.push_back(std::move(t));
    }
    flush();
    *tokens = std::move(out);
  }
};

class FuseDecoder : public Decoder {
 public:
  void Apply(std::vector<std::string>* tokens) const override {
    std::string all;
    for (const std::string& t : *tokens) all += t;
    tokens->assign(1, std::move(all));
  }
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, size_t start, size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void Apply(std::vector<std::string>* tokens) const override {
    if (content_.empty()) return;
    for (std::string& t : *tokens) {
      size_t b = 0, e = t.size();
      for (size_t i = 0; i < start_ && t.compare(b, content_.size(), content_) == 0 && b < e; ++i) {
        b += content_.size();
      }
      for (size_t i = 0; i < stop_ && e >= b + content_.size() &&
                         t.compare(e - content_.size(), content_.size(), content_) == 0;
           ++i) {
        e -= content_.size();
      }
      t = t.substr(b, e - b);
    }
  }

 private:
  std::string content_;
  size_t start_, stop_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(std::unique_ptr<Regex> re, std::string content)
      : re_(std::move(re)), content_(std::move(content)) {}
  void Apply(std::vector<std::string>* tokens) const override {
    for (std::string& t : *tokens) re_->ReplaceAll(&t, content_);
  }

 private:
  std::unique_ptr<Regex> re_;
  std::string content_;
};

absl::Status ParseDecoder(const Json& j, std::vector<std::unique_ptr<Decoder>>* chain) {
  std::string type = TypeOf(j);
  if (type == "Sequence") {
    for (const Json& child : j.value("decoders", Json::array())) {
      RETURN_IF_ERROR(ParseDecoder(child, chain));
    }
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    chain->push_back(std::make_unique<ByteLevelDecoder>());
  } else if (type == "ByteFallback") {
    chain->push_back(std::make_unique<ByteFallbackDecoder>());
  } else if (type == "Fuse") {
    chain->push_back(std::make_unique<FuseDecoder>());
  } else if (type == "Strip") {
    chain->push_back(std::make_unique<StripDecoder>(j.value("content", std::string()),
                                                    j.value("start", size_t{0}),
                                                    j.value("stop", size_t{0})));
  } else if (type == "Replace") {
    ASSIGN_OR_RETURN(auto re, ParsePattern(j.value("pattern", Json()), "decoder Replace"));
    chain->push_back(
        std::make_unique<ReplaceDecoder>(std::move(re), j.value("content", std::string())));
  } else {
    return absl::UnimplementedError(absl::StrCat(
        "decoder type \"", type.empty() ? j.dump() : type,
        "\" is not supported (supported: ByteLevel, ByteFallback, Fuse, Strip, Replace, "
        "Sequence)"));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Post-processors, reduced to the ids they put before and after a single
// sequence.

absl::Status ParsePostProcessor(const Json& j, std::vector<int32_t>* prefix,
                                std::vector<int32_t>* suffix) {
  std::string type = TypeOf(j);
  if (type == "ByteLevel") return absl::OkStatus();  // offsets only
  if (type == "Sequence") {
    for (const Json& child : j.value("processors", Json::array())) {
      std::vector<int32_t> p, s;
      RETURN_IF_ERROR(ParsePostProcessor(child, &p, &s));
      prefix->insert(prefix->begin(), p.begin(), p.end());
      suffix->insert(suffix->end(), s.begin(), s.end());
    }
    return absl::OkStatus();
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    // "cls": ["[CLS]", 101], "sep": ["[SEP]", 102]
    prefix->push_back(j.at("cls").at(1).get<int32_t>());
    suffix->push_back(j.at("sep").at(1).get<int32_t>());
    return absl::OkStatus();
  }
  if (type == "TemplateProcessing") {
    const Json& specials = j.value("special_tokens", Json::object());
    bool seen_sequence = false;
    for (const Json& item : j.at("single")) {
      if (item.contains("Sequence")) {
        std::string id = item["Sequence"].value("id", std::string("A"));
        if (id != "A") {
          return Invalid(
              absl::StrCat("post_processor TemplateProcessing: single template uses "
                           "sequence \"",
                           id, "\"; only A exists for one sequence"));
        }
        seen_sequence = true;
      } else if (item.contains("SpecialToken")) {
        std::string name = item["SpecialToken"].at("id").get<std::string>();
        if (!specials.contains(name)) {
          return Invalid(absl::StrCat("post_processor TemplateProcessing: special token \"", name,
                                      "\" is missing from special_tokens"));
        }
        for (const Json& id : specials[name].at("ids")) {
          (seen_sequence ? suffix : prefix)->push_back(id.get<int32_t>());
        }
      } else {
        return Invalid(absl::StrCat("post_processor TemplateProcessing: bad item ", item.dump()));
      }
    }
    return absl::OkStatus();
  }
  return absl::UnimplementedError(
      absl::StrCat("post_processor type \"", type.empty() ? j.dump() : type,
                   "\" is not supported (supported: TemplateProcessing, ByteLevel, BertProcessing, "
                   "RobertaProcessing, Sequence)"));
}

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

// ---------------------------------------------------------------------------
// BPE

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

// model.vocab and model.merges hold most of a tokenizer.json (150k entries
// each for Qwen). They are taken out while parsing, straight into vectors,
// instead of being built as JSON objects (a std::map per object) first.
struct StreamedModel {
  bool vocab_streamed = false;
  std::vector<std::pair<std::string, int64_t>> vocab;
  bool merges_streamed = false;
  struct Merge {
    std::string a, b;
    bool is_line = false;  // "a b" form: the whole line is in `a`
  };
  std::vector<Merge> merges;
  std::string error;  // first structural error found while streaming

  void Fail(std::string message) {
    if (error.empty()) error = std::move(message);
  }
};

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

class Bpe {
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

// ---------------------------------------------------------------------------
// The tokenizer

class HfTokenizer : public Tokenizer {
 public:
  absl::Status Load(std::string_view text, std::string_view config_text) {
    Json j;
    StreamedModel streamed;
    try {
      j = ParseTokenizerJson(text, &streamed);
    } catch (const Json::parse_error& e) {
      return Invalid(absl::StrCat("tokenizer.json is not valid JSON: ", e.what()));
    }
    if (!j.is_object()) return Invalid("tokenizer.json: top level must be an object");
    try {
      RETURN_IF_ERROR(LoadParsed(j, streamed));
    } catch (const Json::exception& e) {
      return Invalid(absl::StrCat("tokenizer.json: unexpected structure: ", e.what()));
    }
    if (!config_text.empty()) {
      try {
        RETURN_IF_ERROR(LoadConfig(Json::parse(config_text.begin(), config_text.end())));
      } catch (const Json::exception& e) {
        return Invalid(absl::StrCat("tokenizer_config.json: ", e.what()));
      }
    }
    return absl::OkStatus();
  }

  std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const override {
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 4);
    EncodeTo(text, add_special_tokens, &ids);
    return ids;
  }

  void EncodeTo(std::string_view text, bool add_special_tokens,
                std::vector<int32_t>* ids) const override {
    std::string fixed;
    if (!IsValidUtf8(text)) {
      fixed = LossyUtf8(text);
      text = fixed;
    }
    if (add_special_tokens) ids->insert(ids->end(), prefix_ids_.begin(), prefix_ids_.end());
    raw_matcher_.Split(text, [&](std::string_view segment, int32_t id) {
      if (id >= 0) {
        ids->push_back(id);
      } else {
        EncodeSegment(segment, ids);
      }
    });
    if (add_special_tokens) ids->insert(ids->end(), suffix_ids_.begin(), suffix_ids_.end());
  }

  std::string Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const override {
    if (byte_level_decoder_only_) {
      std::string bytes;
      for (int32_t id : ids) {
        if (id < 0 || static_cast<size_t>(id) >= decoded_bytes_.size()) continue;
        if (!has_token_[id]) continue;
        if (skip_special_tokens && special_[id]) continue;
        bytes += decoded_bytes_[id];
      }
      return IsValidUtf8(bytes) ? bytes : LossyUtf8(bytes);
    }
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int32_t id : ids) {
      if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size() || !has_token_[id]) continue;
      if (skip_special_tokens && special_[id]) continue;
      tokens.push_back(id_to_token_[id]);
    }
    if (decoders_.empty()) {
      std::string out;
      for (size_t i = 0; i < tokens.size(); ++i) {
        if (i > 0) out += ' ';
        out += tokens[i];
      }
      return out;
    }
    for (const auto& d : decoders_) d->Apply(&tokens);
    std::string out;
    for (const std::string& t : tokens) out += t;
    return out;
  }

  int32_t TokenToId(std::string_view token) const override {
    auto it = token_to_id_.find(absl::string_view(token.data(), token.size()));
    return it == token_to_id_.end() ? -1 : it->second;
  }
  std::string IdToToken(int32_t id) const override {
    if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size()) return "";
    return id_to_token_[id];
  }
  int64_t vocab_size() const override { return static_cast<int64_t>(id_to_token_.size()); }
  bool IsSpecial(int32_t id) const override {
    return id >= 0 && static_cast<size_t>(id) < special_.size() && special_[id];
  }
  std::optional<int32_t> eos_id() const override { return eos_id_; }
  std::optional<int32_t> bos_id() const override { return bos_id_; }
  std::optional<int32_t> pad_id() const override { return pad_id_; }
  bool has_chat_template() const override { return has_chat_template_; }

 private:
  absl::Status LoadParsed(const Json& j, const StreamedModel& streamed) {
    for (const char* key : {"truncation", "padding"}) {
      if (j.contains(key) && !j[key].is_null()) {
        return absl::UnimplementedError(
            absl::StrCat("tokenizer.json: \"", key,
                         "\" is set; cohort does not truncate or pad in the "
                         "tokenizer (set it to null)"));
      }
    }
    if (!j.contains("model")) return Invalid("tokenizer.json: no \"model\"");
    bool byte_level = false;
    if (j.contains("pre_tokenizer") && !j["pre_tokenizer"].is_null()) {
      RETURN_IF_ERROR(ParsePreTokenizer(j["pre_tokenizer"], &pre_tokenizers_, &byte_level));
    }
    if (j.contains("normalizer") && !j["normalizer"].is_null()) {
      ASSIGN_OR_RETURN(normalizer_, ParseNormalizer(j["normalizer"]));
    }
    if (j.contains("decoder") && !j["decoder"].is_null()) {
      RETURN_IF_ERROR(ParseDecoder(j["decoder"], &decoders_));
    }
    if (j.contains("post_processor") && !j["post_processor"].is_null()) {
      RETURN_IF_ERROR(ParsePostProcessor(j["post_processor"], &prefix_ids_, &suffix_ids_));
    }
    absl::flat_hash_map<std::string, int32_t> vocab;
    int32_t max_id = -1;
    RETURN_IF_ERROR(bpe_.Load(j["model"], streamed, byte_level, &vocab, &max_id));

    if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
      for (const Json& a : j["added_tokens"]) {
        auto token = std::make_unique<AddedToken>();
        token->id = a.at("id").get<int32_t>();
        token->content = a.at("content").get<std::string>();
        token->single_word = BoolOr(a, "single_word", false);
        token->lstrip = BoolOr(a, "lstrip", false);
        token->rstrip = BoolOr(a, "rstrip", false);
        token->special = BoolOr(a, "special", false);
        token->normalized = BoolOr(a, "normalized", !token->special);
        if (token->id < 0)
          return Invalid(absl::StrCat("added token \"", token->content, "\": negative id"));
        token->match = token->content;
        if (token->normalized && normalizer_) normalizer_->Apply(&token->match);
        max_id = std::max(max_id, token->id);
        added_.push_back(std::move(token));
      }
    }
    id_to_token_.assign(static_cast<size_t>(max_id + 1), std::string());
    has_token_.assign(id_to_token_.size(), false);
    special_.assign(id_to_token_.size(), false);
    for (const auto& [token, id] : vocab) {
      id_to_token_[id] = token;
      has_token_[id] = true;
    }
    token_to_id_ = std::move(vocab);
    for (const auto& t : added_) {
      id_to_token_[t->id] = t->content;
      has_token_[t->id] = true;
      special_[t->id] = t->special;
      token_to_id_[t->content] = t->id;
      (t->normalized && normalizer_ ? normalized_matcher_ : raw_matcher_).Add(t.get());
    }
    for (int32_t id : prefix_ids_) {
      if (id < 0 || id > max_id)
        return Invalid(absl::StrCat("post_processor: id ", id, " is not in the vocab"));
    }
    for (int32_t id : suffix_ids_) {
      if (id < 0 || id > max_id)
        return Invalid(absl::StrCat("post_processor: id ", id, " is not in the vocab"));
    }
    byte_level_decoder_only_ =
        decoders_.size() == 1 && dynamic_cast<ByteLevelDecoder*>(decoders_[0].get()) != nullptr;
    if (byte_level_decoder_only_) {
      decoded_bytes_.resize(id_to_token_.size());
      for (size_t id = 0; id < id_to_token_.size(); ++id) {
        if (!Alphabet().ToBytes(id_to_token_[id], &decoded_bytes_[id])) {
          decoded_bytes_[id] = id_to_token_[id];
        }
      }
    }
    return absl::OkStatus();
  }

  absl::Status LoadConfig(const Json& c) {
    if (!c.is_object()) return Invalid("tokenizer_config.json: top level must be an object");
    auto token_id = [&](const char* key, std::optional<int32_t>* out) -> absl::Status {
      if (!c.contains(key) || c[key].is_null()) return absl::OkStatus();
      std::string content;
      if (c[key].is_string()) {
        content = c[key].get<std::string>();
      } else if (c[key].is_object() && c[key].contains("content")) {
        content = c[key]["content"].get<std::string>();
      } else {
        return Invalid(absl::StrCat("tokenizer_config.json: \"", key, "\" must be a string"));
      }
      int32_t id = TokenToId(content);
      if (id < 0) {
        return Invalid(absl::StrCat("tokenizer_config.json: ", key, " \"", content,
                                    "\" is not a token of tokenizer.json"));
      }
      *out = id;
      return absl::OkStatus();
    };
    RETURN_IF_ERROR(token_id("eos_token", &eos_id_));
    RETURN_IF_ERROR(token_id("bos_token", &bos_id_));
    RETURN_IF_ERROR(token_id("pad_token", &pad_id_));
    has_chat_template_ = c.contains("chat_template") && !c["chat_template"].is_null();
    return absl::OkStatus();
  }

  void EncodeSegment(std::string_view segment, std::vector<int32_t>* ids) const {
    if (segment.empty()) return;
    std::string normalized;
    std::string_view s = segment;
    if (normalizer_ && !normalizer_->Unchanged(segment)) {
      normalized.assign(segment.data(), segment.size());
      normalizer_->Apply(&normalized);
      s = normalized;
    }
    if (normalized_matcher_.empty()) {
      EncodePlain(s, ids);
      return;
    }
    normalized_matcher_.Split(s, [&](std::string_view part, int32_t id) {
      if (id >= 0) {
        ids->push_back(id);
      } else {
        EncodePlain(part, ids);
      }
    });
  }

  // Pre-tokenizes and runs BPE on text with no added tokens in it.
  void EncodePlain(std::string_view s, std::vector<int32_t>* ids) const {
    if (s.empty()) return;
    thread_local Pieces a, b;
    thread_local std::deque<std::string> owned;
    a.clear();
    a.push_back(s);
    for (const auto& stage : pre_tokenizers_) {
      b.clear();
      stage->Apply(a, &b, &owned);
      std::swap(a, b);
    }
    for (std::string_view piece : a) bpe_.Encode(piece, ids);
    owned.clear();
  }

  // Constant after Load.
  std::unique_ptr<Normalizer> normalizer_;
  std::vector<std::unique_ptr<PreTokenizer>> pre_tokenizers_;
  std::vector<std::unique_ptr<Decoder>> decoders_;
  std::vector<int32_t> prefix_ids_, suffix_ids_;
  Bpe bpe_;
  std::vector<std::unique_ptr<AddedToken>> added_;
  AddedTokenMatcher raw_matcher_, normalized_matcher_;
  absl::flat_hash_map<std::string, int32_t> token_to_id_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_token_, special_;
  bool byte_level_decoder_only_ = false;
  std::vector<std::string> decoded_bytes_;
  std::optional<int32_t> eos_id_, bos_id_, pad_id_;
  bool has_chat_template_ = false;
};

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  return ss.str();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(
    std::string_view tokenizer_json, std::string_view tokenizer_config_json) {
  auto tok = std::make_unique<HfTokenizer>();
  RETURN_IF_ERROR(tok->Load(tokenizer_json, tokenizer_config_json));
  return std::unique_ptr<Tokenizer>(std::move(tok));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(
    const std::string& tokenizer_json_path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(tokenizer_json_path));
  std::string config;
  size_t slash = tokenizer_json_path.find_last_of('/');
  std::string dir = slash == std::string::npos ? "." : tokenizer_json_path.substr(0, slash);
  std::string config_path = dir + "/tokenizer_config.json";
  if (std::ifstream(config_path).good()) {
    ASSIGN_OR_RETURN(config, ReadFile(config_path));
  }
  auto tok = Tokenizer::FromJson(text, config);
  if (!tok.ok()) return Annotate(tok.status(), tokenizer_json_path);
  return tok;
}

}  // namespace cohort
