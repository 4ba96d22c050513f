#include "core/tokenizer/components.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/status.h"
#include "core/tokenizer/regex.h"
#include "core/tokenizer/utf8.h"

namespace cohort::tok {
namespace {

// ---------------------------------------------------------------------------
// Normalizers

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

}  // namespace

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

namespace {

// ---------------------------------------------------------------------------
// Pre-tokenizers. A Sequence is flattened into a list of stages at load time;
// each stage maps a list of pieces to a new list, dropping empty pieces.

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

}  // namespace

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

namespace {

// ---------------------------------------------------------------------------
// Decoders (on token strings, as Hugging Face's decode_chain).

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
  bool IsByteLevel() const override { return true; }
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

}  // namespace

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
// Post-processors

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

}  // namespace cohort::tok
