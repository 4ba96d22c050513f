// Tokenizer: Hugging Face `tokenizer.json` (BPE with byte-level
// pre-tokenization, as used by GPT-2, Qwen2/2.5/3 and Llama 3), torch-free.
//
//   ASSIGN_OR_RETURN(auto tok, Tokenizer::FromFile(dir + "/tokenizer.json"));
//   std::vector<int32_t> ids = tok->Encode("Hello world!");
//   std::string text = tok->Decode(ids);
//
// Supported components (anything else is refused by name when the file is
// loaded, never silently mis-tokenized; see docs/tokenizer.md):
//   model           BPE (vocab, merges as "a b" or ["a","b"], unk_token,
//                   fuse_unk, byte_fallback, ignore_merges,
//                   continuing_subword_prefix, end_of_word_suffix)
//   normalizer      NFC, NFD, NFKC, NFKD, Lowercase, Strip, Replace, Prepend,
//                   Sequence
//   pre_tokenizer   Split (String or Regex pattern via PCRE2 with UTF+UCP;
//                   behaviors Removed, Isolated, MergedWithPrevious,
//                   MergedWithNext, Contiguous; invert), ByteLevel
//                   (add_prefix_space, use_regex), Sequence
//   decoder         ByteLevel, ByteFallback, Fuse, Strip, Replace, Sequence
//   post_processor  TemplateProcessing (single sequence), ByteLevel,
//                   BertProcessing, RobertaProcessing, Sequence
//   added_tokens    matched before normalization (normalized=false) or on the
//                   normalized text (normalized=true), leftmost-longest,
//                   honouring lstrip / rstrip / single_word / special.
//
// Invalid UTF-8 in Encode's input is replaced by U+FFFD first (Hugging Face
// only accepts valid strings). Decode drops unknown ids and replaces invalid
// UTF-8 produced by partial byte sequences with U+FFFD.
//
// Thread-safety: after construction every method is const and safe to call
// from many threads at once (the BPE word cache is per thread).
#ifndef COHORT_CORE_TOKENIZER_H_
#define COHORT_CORE_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace cohort {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Loads `tokenizer_json_path`. If a `tokenizer_config.json` sits beside it,
  // its eos_token / bos_token / pad_token and chat_template presence are
  // read too. Errors name the file and the offending component.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(
      const std::string& tokenizer_json_path);
  // Same from JSON text; `tokenizer_config_json` may be empty.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(
      std::string_view tokenizer_json, std::string_view tokenizer_config_json = {});

  // Token ids of `text`. With `add_special_tokens` the post-processor adds
  // its tokens (Llama 3: <|begin_of_text|>); added tokens in the text (such
  // as "<|im_start|>") are always recognised.
  virtual std::vector<int32_t> Encode(std::string_view text,
                                      bool add_special_tokens = false) const = 0;
  // Appends to `*ids` instead of returning a new vector.
  virtual void EncodeTo(std::string_view text, bool add_special_tokens,
                        std::vector<int32_t>* ids) const = 0;

  virtual std::string Decode(const std::vector<int32_t>& ids,
                             bool skip_special_tokens = false) const = 0;

  // The id of a token as written in the vocab or added tokens (byte-level
  // form, e.g. "Ġthe"); -1 if absent.
  virtual int32_t TokenToId(std::string_view token) const = 0;
  // The token string of `id`; empty if out of range.
  virtual std::string IdToToken(int32_t id) const = 0;
  // Largest id + 1, added tokens included.
  virtual int64_t vocab_size() const = 0;
  virtual bool IsSpecial(int32_t id) const = 0;

  // From tokenizer_config.json when present (otherwise nullopt / false).
  virtual std::optional<int32_t> eos_id() const = 0;
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> pad_id() const = 0;
  virtual bool has_chat_template() const = 0;
};

}  // namespace cohort

#endif  // COHORT_CORE_TOKENIZER_H_
