#include "core/report.h"

#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/file.h"
#include "core/testing/require.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cohort {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using Json = nlohmann::json;

// A run directory as the learner leaves it: 40 steps, evals every 10.
std::string MakeRunDir(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/" + name;
  fs::remove_all(dir);
  EXPECT_TRUE(MakeDirs(dir).ok());
  std::string metrics, evals;
  for (int step = 1; step <= 40; ++step) {
    Json m = {{"step", step},
              {"time_s", 2.5 * step},
              {"stage", "rl"},
              {"reward_mean", 0.3 + 0.01 * step},
              {"accuracy", 0.25 + 0.01 * step},
              {"kl", 0.001 * step},
              {"response_length_mean", 30 - 0.1 * step},
              {"staleness_mean", step % 2},
              {"actor/actor-0/tokens_per_s", 900 + step},
              {"actor/actor-1/tokens_per_s", 850 + step},
              {"learner_idle_fraction", 0.3},
              {"actor_idle_fraction", 0.05}};
    metrics += m.dump() + "\n";
  }
  metrics += "{not json\n";
  for (int step : {0, 10, 20, 30, 40}) {
    Json e = {{"stage", "rl"},
              {"step", step},
              {"time_s", 2.5 * step},
              {"accuracy", 0.3 + 0.005 * step},
              {"sampled_accuracy", 0.2 + 0.005 * step},
              {"format_rate", 0.98},
              {"mean_length", 30},
              {"completions", Json::array({{{"prompt", "47+85="},
                                            {"completion",
                                             "<think>7+5+0=12 4+8+1=13</think>"
                                             "<answer>132</answer>"},
                                            {"correct", true}}})}};
    evals += e.dump() + "\n";
  }
  Json summary = {
      {"name", "quickstart"},
      {"git_revision", "abc123"},
      {"stages", Json::array({{{"name", "rl"},
                               {"kind", "grpo"},
                               {"steps", 40},
                               {"duration_s", 100.0},
                               {"eval_before", {{"accuracy", 0.3}, {"sampled_accuracy", 0.2}}},
                               {"eval_after", {{"accuracy", 0.5}, {"format_rate", 0.98}}}}})},
      {"ledger", {{"prompts_total", 640}, {"duplicates", 0}, {"lost", 0}}}};
  EXPECT_TRUE(WriteFileAtomically(dir + "/metrics.jsonl", metrics).ok());
  EXPECT_TRUE(WriteFileAtomically(dir + "/evals.jsonl", evals).ok());
  EXPECT_TRUE(WriteFileAtomically(dir + "/summary.json", summary.dump()).ok());
  return dir;
}

TEST(ReportTest, SelfContainedPageWithEveryChart) {
  std::string dir = MakeRunDir("report_page");
  ASSERT_TRUE(WriteReport(dir).ok());
  auto html = ReadFile(dir + "/report.html");
  ASSERT_TRUE(html.ok());
  // Seven charts, each over steps and over time, all with lines.
  size_t charts = 0, pos = 0;
  while ((pos = html->find("<svg class=\"chart\"", pos)) != std::string::npos) ++charts, ++pos;
  EXPECT_EQ(charts, 14u);
  EXPECT_THAT(*html, Not(HasSubstr("no data")));
  for (const char* title : {"reward mean", "accuracy", "KL to reference", "response length",
                            "staleness", "throughput per actor", "idle fraction"}) {
    EXPECT_THAT(*html, HasSubstr(title));
  }
  EXPECT_THAT(*html, HasSubstr("actor-1"));
  EXPECT_THAT(*html, HasSubstr("learner_idle_fraction"));
  EXPECT_THAT(*html, HasSubstr("&lt;think&gt;7+5+0=12"));  // completions, escaped
  EXPECT_THAT(*html, HasSubstr("1 malformed JSONL lines were skipped"));
  EXPECT_THAT(*html, HasSubstr("30.0% → 50.0%"));
  // No network: nothing is loaded from elsewhere.
  EXPECT_THAT(*html, Not(HasSubstr("src=")));
  EXPECT_THAT(*html, Not(HasSubstr("href=")));
  EXPECT_THAT(*html, Not(HasSubstr("https://")));
  fs::remove_all(dir);
}

TEST(ReportTest, MissingMetricsSayNoData) {
  ReportData data;
  data.metrics.push_back({{"step", 1}, {"reward_mean", 0.5}});
  std::string html = RenderReport(data);
  EXPECT_THAT(html, HasSubstr("no data"));
  EXPECT_EQ(CountDrawnCharts(data), 1);  // reward over steps; no times given
}

std::string Chromium() {
  for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser"}) {
    if (access(p, X_OK) == 0) return p;
  }
  return "";
}

// Renders report.html in headless Chromium and reads back, from the laid-out
// DOM, how many charts have lines with a non-empty bounding box.
TEST(ReportTest, ChromiumDrawsTheCharts) {
  std::string chromium = Chromium();
  if (chromium.empty()) COHORT_SKIP_OR_FAIL("chromium not installed (Debian package chromium)");
  std::string dir = MakeRunDir("report_chromium");
  ASSERT_TRUE(WriteReport(dir).ok());
  std::string profile = dir + "/profile";
  std::string cmd = absl::StrCat(
      "timeout 120 ", chromium,
      " --headless --no-sandbox --disable-gpu --disable-background-networking"
      " --disable-component-update --disable-sync --no-first-run --disable-dev-shm-usage"
      " --user-data-dir=",
      profile, " --virtual-time-budget=5000 --dump-dom file://", dir, "/report.html 2>", dir,
      "/chromium.log");
  std::string dom;
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) dom.append(buf.data(), n);
  int rc = pclose(p);
  auto log = ReadFile(dir + "/chromium.log");
  ASSERT_EQ(rc, 0) << "chromium failed: " << (log.ok() ? *log : "");
  EXPECT_THAT(dom, HasSubstr("data-charts-drawn=\"14\"")) << dom.substr(0, 2000);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace cohort
