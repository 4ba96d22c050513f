// Chat formatting without a Jinja engine: a fixed set of named templates,
// chosen in the run config (model.chat_template). See docs/tokenizer.md.
//
//   "chatml"   Qwen:     <|im_start|>{role}\n{content}<|im_end|>\n ...
//                        generation prompt <|im_start|>assistant\n
//   "llama3"   Llama 3:  <|begin_of_text|><|start_header_id|>{role}
//                        <|end_header_id|>\n\n{content}<|eot_id|> ...
//                        generation prompt <|start_header_id|>assistant
//                        <|end_header_id|>\n\n
//   "r1-zero"  DeepSeek-R1-Zero: "A conversation between User and Assistant.
//                        ... User: {prompt}. Assistant:"
//   "plain"    the message contents joined by "\n", nothing added.
//
// Formatted text contains its special tokens as text; encode it with
// add_special_tokens=false (the llama3 text already has <|begin_of_text|>).
// Thread-safe: pure functions.
#ifndef COHORT_CORE_CHAT_TEMPLATE_H_
#define COHORT_CORE_CHAT_TEMPLATE_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace cohort {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// What a template implies for generation.
struct ChatTemplateInfo {
  std::string name;
  // Text that ends the assistant's turn; generation stops on it.
  std::vector<std::string> stop_strings;
  // Tokens that end generation (looked up in the tokenizer by the caller),
  // in addition to the tokenizer's own eos token.
  std::vector<std::string> eos_tokens;
};

// The supported template names, in the order documented above.
std::vector<std::string> ChatTemplateNames();

absl::StatusOr<ChatTemplateInfo> GetChatTemplateInfo(std::string_view template_name);

// Formats `messages` with the named template. With `add_generation_prompt`
// the text ends where the assistant's reply begins. Errors name the template
// or the message that does not fit it (e.g. an unknown role).
absl::StatusOr<std::string> FormatChat(std::string_view template_name,
                                       const std::vector<ChatMessage>& messages,
                                       bool add_generation_prompt);

}  // namespace cohort

#endif  // COHORT_CORE_CHAT_TEMPLATE_H_
