// Chat templates. See chat_template.h.
#include "core/chat_template.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"

namespace cohort {
namespace {

constexpr std::string_view kR1ZeroPreamble =
    "A conversation between User and Assistant. The user asks a question, and the "
    "Assistant solves it. The assistant first thinks about the reasoning process in the "
    "mind and then provides the user with the answer. The reasoning process and answer "
    "are enclosed within <think> </think> and <answer> </answer> tags, respectively, "
    "i.e., <think> reasoning process here </think> <answer> answer here </answer>. "
    "User: ";

absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::Status CheckRoles(std::string_view name, const std::vector<ChatMessage>& messages) {
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role != "system" && role != "user" && role != "assistant") {
      return absl::InvalidArgumentError(absl::StrCat("chat template ", Av(name), ": message ", i,
                                                     " has role \"", role,
                                                     "\"; expected system, user or assistant"));
    }
  }
  return absl::OkStatus();
}

// Llama 3's template trims each message's content.
std::string_view Trim(std::string_view s) {
  const char* ws = " \t\n\r\f\v";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  size_t e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

}  // namespace

std::vector<std::string> ChatTemplateNames() { return {"chatml", "llama3", "r1-zero", "plain"}; }

absl::StatusOr<ChatTemplateInfo> GetChatTemplateInfo(std::string_view name) {
  if (name == "chatml")
    return ChatTemplateInfo{"chatml", {"<|im_end|>"}, {"<|im_end|>", "<|endoftext|>"}};
  if (name == "llama3") {
    return ChatTemplateInfo{"llama3", {"<|eot_id|>"}, {"<|eot_id|>", "<|end_of_text|>"}};
  }
  if (name == "r1-zero") return ChatTemplateInfo{"r1-zero", {"</answer>"}, {}};
  if (name == "plain") return ChatTemplateInfo{"plain", {}, {}};
  return absl::InvalidArgumentError(
      absl::StrCat("unknown chat template \"", Av(name),
                   "\" (supported: ", absl::StrJoin(ChatTemplateNames(), ", "), ")"));
}

absl::StatusOr<std::string> FormatChat(std::string_view name,
                                       const std::vector<ChatMessage>& messages,
                                       bool add_generation_prompt) {
  auto info = GetChatTemplateInfo(name);
  if (!info.ok()) return info.status();
  if (absl::Status s = CheckRoles(name, messages); !s.ok()) return s;
  std::string out;
  if (name == "chatml") {
    for (const ChatMessage& m : messages) {
      absl::StrAppend(&out, "<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n");
    }
    if (add_generation_prompt) out += "<|im_start|>assistant\n";
    return out;
  }
  if (name == "llama3") {
    out = "<|begin_of_text|>";
    for (const ChatMessage& m : messages) {
      absl::StrAppend(&out, "<|start_header_id|>", m.role, "<|end_header_id|>\n\n",
                      Av(Trim(m.content)), "<|eot_id|>");
    }
    if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
    return out;
  }
  if (name == "r1-zero") {
    // One user turn, optionally followed by the assistant's reply (for SFT).
    bool ok = (messages.size() == 1 || messages.size() == 2) && messages[0].role == "user" &&
              (messages.size() == 1 || messages[1].role == "assistant");
    if (!ok) {
      return absl::InvalidArgumentError(
          "chat template r1-zero: expects one user message, optionally followed by one "
          "assistant message (no system message: the template has its own preamble)");
    }
    absl::StrAppend(&out, Av(kR1ZeroPreamble), messages[0].content, ". Assistant:");
    if (messages.size() == 2) absl::StrAppend(&out, " ", messages[1].content);
    return out;
  }
  // plain
  for (size_t i = 0; i < messages.size(); ++i) {
    if (i > 0) out += "\n";
    out += messages[i].content;
  }
  return out;
}

}  // namespace cohort
