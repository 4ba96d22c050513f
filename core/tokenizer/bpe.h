// The BPE model of a tokenizer.json (internal to core/tokenizer/), and the
// streaming parse that takes model.vocab / model.merges out of the JSON.
//
// Thread-safety: after Load, Encode is const and may run on many threads at
// once (its word cache is per thread and per Bpe).
#ifndef COHORT_CORE_TOKENIZER_BPE_H_
#define COHORT_CORE_TOKENIZER_BPE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "core/tokenizer/json_util.h"

namespace cohort::tok {

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
Json ParseTokenizerJson(std::string_view text, StreamedModel* model);

class Bpe {
 public:
  Bpe();
  ~Bpe();
  Bpe(const Bpe&) = delete;
  Bpe& operator=(const Bpe&) = delete;

  // Loads from the "model" object. `byte_level`: the vocab is converted to
  // raw bytes and words are split into bytes. Fills `*vocab_out` (token ->
  // id, byte-level form) and `*max_id`.
  absl::Status Load(const Json& model, const StreamedModel& streamed, bool byte_level,
                    absl::flat_hash_map<std::string, int32_t>* vocab_out, int32_t* max_id);
  // Appends the ids of `word` (one pre-tokenized piece) to `*ids`.
  void Encode(std::string_view word, std::vector<int32_t>* ids) const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cohort::tok

#endif  // COHORT_CORE_TOKENIZER_BPE_H_
