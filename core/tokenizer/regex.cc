#include "core/tokenizer/regex.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace cohort::tok {

absl::StatusOr<std::unique_ptr<Regex>> Regex::Compile(const std::string& pattern, bool literal) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  uint32_t options = PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK;
  if (literal) options = PCRE2_UTF | PCRE2_LITERAL;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   options, &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return Invalid(absl::StrCat("regex \"", pattern, "\" does not compile at offset ", offset, ": ",
                                reinterpret_cast<const char*>(message)));
  }
  auto regex = std::unique_ptr<Regex>(new Regex());
  regex->code_ = code;
  regex->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return regex;
}

void Regex::ReplaceAll(std::string* s, std::string_view content) const {
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

// A {"String": ...} or {"Regex": ...} pattern object.
absl::StatusOr<std::unique_ptr<Regex>> ParsePattern(const Json& j, const char* where) {
  if (!j.is_object()) return Invalid(absl::StrCat(where, ": \"pattern\" must be an object"));
  if (j.contains("Regex")) return Regex::Compile(j["Regex"].get<std::string>(), false);
  if (j.contains("String")) return Regex::Compile(j["String"].get<std::string>(), true);
  return Invalid(absl::StrCat(where, ": \"pattern\" needs a \"String\" or \"Regex\" key"));
}

}  // namespace cohort::tok
