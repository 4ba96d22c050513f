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

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/file.h"
#include "core/status.h"
#include "core/tokenizer/bpe.h"
#include "core/tokenizer/components.h"
#include "core/tokenizer/json_util.h"
#include "core/tokenizer/utf8.h"

namespace cohort {
namespace {

using tok::AddedToken;
using tok::AddedTokenMatcher;
using tok::Alphabet;
using tok::BoolOr;
using tok::Bpe;
using tok::Decoder;
using tok::Invalid;
using tok::IsValidUtf8;
using tok::Json;
using tok::LossyUtf8;
using tok::Normalizer;
using tok::ParseDecoder;
using tok::ParseNormalizer;
using tok::ParsePostProcessor;
using tok::ParsePreTokenizer;
using tok::ParseTokenizerJson;
using tok::Pieces;
using tok::PreTokenizer;
using tok::StreamedModel;

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
    byte_level_decoder_only_ = decoders_.size() == 1 && decoders_[0]->IsByteLevel();
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
  if (PathExists(config_path)) {
    ASSIGN_OR_RETURN(config, ReadFile(config_path));
  }
  auto tok = Tokenizer::FromJson(text, config);
  if (!tok.ok()) return Annotate(tok.status(), tokenizer_json_path);
  return tok;
}

}  // namespace cohort
