// report.html: a self-contained page (inline SVG and CSS, no network) that
// shows a run's curves and its held-out evals. Torch-free.
//
// Inputs, all in the run directory and all optional:
//   summary.json   the run summary (stages with eval_before / eval_after,
//                  ledger, actors)
//   metrics.jsonl  one object per training step: "step", a time ("time_s",
//                  "elapsed_s" or "wall_time"), and any of the charted
//                  metrics below
//   evals.jsonl    one object per held-out eval: "stage", "step", a time,
//                  "accuracy", "sampled_accuracy", "format_rate",
//                  "mean_length", "completions" ([{prompt, completion,
//                  correct}])
// Charts, each over steps and over time: reward mean, accuracy (training
// samples and held-out greedy), KL, response length, staleness, throughput
// per actor (keys "actor/<name>/tokens_per_s" or an "actors" object of
// name -> tokens/s), and idle fractions (every key ending in
// "idle_fraction"). A chart whose metric never appears says so instead of
// drawing a line.
//
// The page carries a small script that, once laid out, counts the chart
// lines the browser actually drew (non-empty bounding boxes) into
// <body data-charts-drawn="N">, so a headless browser's --dump-dom shows it.
//
// Thread-safety: pure functions.
#ifndef COHORT_CORE_REPORT_H_
#define COHORT_CORE_REPORT_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace cohort {

struct ReportData {
  std::string title = "cohort run";
  nlohmann::json summary = nlohmann::json::object();
  std::vector<nlohmann::json> metrics;  // metrics.jsonl lines
  std::vector<nlohmann::json> evals;    // evals.jsonl lines
};

// The page's HTML.
std::string RenderReport(const ReportData& data);

// Number of charts RenderReport draws lines in for `data` (for tests).
int CountDrawnCharts(const ReportData& data);

// Reads `run_dir`'s inputs (malformed JSONL lines are skipped and counted
// in the page) and writes `run_dir`/report.html atomically.
absl::Status WriteReport(const std::string& run_dir);

}  // namespace cohort

#endif  // COHORT_CORE_REPORT_H_
