// Reading metrics.jsonl, the log a training run appends one line to per
// optimizer step (TrainingLoop writes it). The app reads the log of a run
// that another process is writing, possibly on a shared disk of a cluster,
// so the reader takes it as untrusted, growing input:
//   - a line may still be half-written: it waits for its newline;
//   - a run resumed from an earlier checkpoint appends steps it already
//     logged: the later lines replace the earlier ones from that step on;
//   - a new run in the same folder starts the file again (it shrinks):
//     everything read so far is dropped;
//   - a line that is not a metrics record (bad JSON, a wrong type, a line
//     longer than any record) is skipped and counted, never fatal.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/train/trainer.h"

namespace ssalab {

// One record; throws Error naming the field that is missing or of the wrong
// type. Numbers may be null (written for NaN); absent optional fields are NaN.
MetricPoint metric_point_from_json(const nlohmann::json& j);

class MetricsLog {
 public:
  // Longest line taken as a record; a record is about 300 bytes.
  static constexpr size_t kMaxLineBytes = 64 * 1024;

  MetricsLog() = default;
  explicit MetricsLog(std::string path) : path_(std::move(path)) {}

  // Reads what was appended to the file since the last call, at most
  // `max_bytes` of it (so that one call stays short on a huge log). Returns
  // true when the points changed. A missing file is an empty log.
  bool poll(size_t max_bytes = 8 << 20);
  // Takes the next bytes of the log (poll() and the fuzz target use it).
  void feed(std::string_view bytes);
  // Forgets everything read (the file was started again).
  void reset();

  // Steps in increasing order.
  const std::vector<MetricPoint>& points() const { return points_; }
  int64_t bad_lines() const { return bad_lines_; }
  const std::string& last_problem() const { return last_problem_; }
  // How often the file was found shorter than what was read (a new run).
  int restarts() const { return restarts_; }
  // Changes whenever points() does.
  uint64_t revision() const { return revision_; }
  const std::string& path() const { return path_; }

 private:
  void take_line(std::string_view line);

  std::string path_;
  uint64_t offset_ = 0;     // bytes of the file consumed
  std::string partial_;     // the start of a line whose newline has not come yet
  bool skipping_ = false;   // inside an over-long line: drop bytes until its newline
  std::vector<MetricPoint> points_;
  int64_t bad_lines_ = 0;
  std::string last_problem_;
  int restarts_ = 0;
  uint64_t revision_ = 0;
};

}  // namespace ssalab
