// Tests for core/chat_template: exact text of each supported template.
#include "core/chat_template.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cohort {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::vector<ChatMessage> kConversation = {{"system", "You are terse."},
                                                {"user", "What is 2+2?"},
                                                {"assistant", "4"},
                                                {"user", "And 3+3?"}};

TEST(ChatTemplateTest, ChatMl) {
  auto text = FormatChat("chatml", kConversation, /*add_generation_prompt=*/true);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text,
            "<|im_start|>system\nYou are terse.<|im_end|>\n"
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
            "<|im_start|>assistant\n4<|im_end|>\n"
            "<|im_start|>user\nAnd 3+3?<|im_end|>\n"
            "<|im_start|>assistant\n");
  auto no_prompt = FormatChat("chatml", {{"user", "hi"}}, false);
  ASSERT_TRUE(no_prompt.ok());
  EXPECT_EQ(*no_prompt, "<|im_start|>user\nhi<|im_end|>\n");
}

TEST(ChatTemplateTest, Llama3) {
  auto text = FormatChat("llama3", {{"system", "Be brief. "}, {"user", " Hi\n"}}, true);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplateTest, R1Zero) {
  auto text = FormatChat("r1-zero", {{"user", "What is 2+2?"}}, true);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text,
            "A conversation between User and Assistant. The user asks a question, and the "
            "Assistant solves it. The assistant first thinks about the reasoning process in the "
            "mind and then provides the user with the answer. The reasoning process and answer "
            "are enclosed within <think> </think> and <answer> </answer> tags, respectively, "
            "i.e., <think> reasoning process here </think> <answer> answer here </answer>. "
            "User: What is 2+2?. Assistant:");
  auto with_reply =
      FormatChat("r1-zero", {{"user", "q"}, {"assistant", "<think>a</think>"}}, false);
  ASSERT_TRUE(with_reply.ok());
  EXPECT_THAT(*with_reply, ::testing::EndsWith("User: q. Assistant: <think>a</think>"));
  auto bad = FormatChat("r1-zero", kConversation, true);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("one user message"));
}

TEST(ChatTemplateTest, Plain) {
  auto text = FormatChat("plain", {{"user", "a"}, {"assistant", "b"}}, true);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "a\nb");
}

TEST(ChatTemplateTest, StopStringsAndEosTokens) {
  auto chatml = GetChatTemplateInfo("chatml");
  ASSERT_TRUE(chatml.ok());
  EXPECT_THAT(chatml->stop_strings, ElementsAre("<|im_end|>"));
  EXPECT_THAT(chatml->eos_tokens, ElementsAre("<|im_end|>", "<|endoftext|>"));
  auto llama = GetChatTemplateInfo("llama3");
  ASSERT_TRUE(llama.ok());
  EXPECT_THAT(llama->eos_tokens, ElementsAre("<|eot_id|>", "<|end_of_text|>"));
  auto r1 = GetChatTemplateInfo("r1-zero");
  ASSERT_TRUE(r1.ok());
  EXPECT_THAT(r1->stop_strings, ElementsAre("</answer>"));
  EXPECT_THAT(ChatTemplateNames(), ElementsAre("chatml", "llama3", "r1-zero", "plain"));
}

TEST(ChatTemplateTest, ErrorsNameTheProblem) {
  auto unknown = FormatChat("jinja", {{"user", "x"}}, true);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(unknown.status().message()),
              HasSubstr("unknown chat template \"jinja\""));
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("chatml, llama3, r1-zero, plain"));
  auto role = FormatChat("chatml", {{"user", "x"}, {"tool", "y"}}, true);
  EXPECT_THAT(std::string(role.status().message()), HasSubstr("message 1 has role \"tool\""));
}

}  // namespace
}  // namespace cohort
