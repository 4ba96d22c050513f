// The pre-tokenizer's regular expressions (internal to core/tokenizer/):
// PCRE2 with UTF + UCP, JIT-compiled when available, as Hugging Face's
// `tokenizers` uses Oniguruma/fancy-regex patterns.
//
// Thread-safety: a compiled Regex is immutable; ForEachMatch and ReplaceAll
// may run on many threads at once (the match data and JIT stack are
// thread-local).
#ifndef COHORT_CORE_TOKENIZER_REGEX_H_
#define COHORT_CORE_TOKENIZER_REGEX_H_

#define PCRE2_CODE_UNIT_WIDTH 8

#include <pcre2.h>

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "core/tokenizer/json_util.h"
#include "core/tokenizer/utf8.h"

namespace cohort::tok {

// Per-thread match state.
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
  // Compiles `pattern` (a literal string when `literal`). The error names
  // the pattern and where it fails.
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(const std::string& pattern, bool literal);
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

  // Replaces every non-empty match in `*s` by `content`.
  void ReplaceAll(std::string* s, std::string_view content) const;

 private:
  Regex() = default;
  pcre2_code* code_ = nullptr;
  bool jit_ = false;
};

// A {"String": ...} or {"Regex": ...} pattern object; `where` names the
// component in errors.
absl::StatusOr<std::unique_ptr<Regex>> ParsePattern(const Json& j, const char* where);

}  // namespace cohort::tok

#endif  // COHORT_CORE_TOKENIZER_REGEX_H_
