// Reading metrics.jsonl while another process writes it
// (engine/train/metrics_log.h): half-written lines, a resumed run that logs
// steps again, a new run that starts the file over, and lines that are not
// records. The end-to-end case follows a real training run's log.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <string>

#include "engine/train/loop.h"
#include "engine/train/metrics_log.h"
#include "engine/train/run.h"
#include "engine/util/error.h"
#include "engine/util/files.h"
#include "test_helpers.h"
#include "tests/test_support.h"

using namespace ssalab;

namespace {

std::string record(int64_t step, double loss) {
  MetricPoint m;
  m.step = step;
  m.loss = loss;
  m.lr = 1e-3;
  return to_json(m).dump() + "\n";
}

void append(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::app) << text; }

}  // namespace

TEST_CASE("metrics record: fields, nulls and wrong types", "[metricslog]") {
  MetricPoint m;
  m.step = 7;
  m.loss = 2.5;
  m.ce_sparse = 2.4;
  m.lr = 3e-4;
  m.val_ppl_full = 11.0;
  MetricPoint back = metric_point_from_json(to_json(m));
  CHECK(back.step == 7);
  CHECK(back.loss == 2.5);
  CHECK(back.ce_sparse == 2.4);
  CHECK(std::isnan(back.ce_full));  // written as null
  CHECK(back.val_ppl_full == 11.0);
  CHECK(std::isnan(metric_point_from_json({{"step", 1}}).loss));  // absent

  using nlohmann::json;
  CHECK_THAT(test::error_of([] { metric_point_from_json(json::array()); }), Catch::Contains("not a JSON object"));
  CHECK_THAT(test::error_of([] { metric_point_from_json({{"loss", 1.0}}); }), Catch::Contains("no \"step\""));
  CHECK_THAT(test::error_of([] { metric_point_from_json({{"step", -3}}); }), Catch::Contains("\"step\""));
  CHECK_THAT(test::error_of([] { metric_point_from_json({{"step", 1.5}}); }), Catch::Contains("\"step\""));
  CHECK_THAT(test::error_of([] { metric_point_from_json({{"step", 1}, {"loss", "low"}}); }),
             Catch::Contains("\"loss\" is not a number"));
}

TEST_CASE("metrics log: appended lines, half lines, bad lines", "[metricslog]") {
  MetricsLog log;
  const std::string two = record(1, 3.0) + record(2, 2.9);
  SECTION("a line waits for its newline, in pieces of any size") {
    for (size_t piece : {1, 2, 5, 13, 1000}) {
      MetricsLog l;
      for (size_t at = 0; at < two.size(); at += piece) l.feed(std::string_view(two).substr(at, piece));
      REQUIRE(l.points().size() == 2);
      CHECK(l.points()[1].loss == 2.9);
    }
    log.feed(two.substr(0, two.size() - 1));  // the last newline not yet written
    CHECK(log.points().size() == 1);
    log.feed("\n");
    CHECK(log.points().size() == 2);
  }
  SECTION("bad lines are skipped and counted") {
    log.feed(record(1, 3.0) + "{not json\n" + "[1,2]\n" + "\n" + "{\"step\": \"x\"}\r\n" + record(2, 2.9));
    CHECK(log.points().size() == 2);
    CHECK(log.bad_lines() == 3);
    CHECK_THAT(log.last_problem(), Catch::Contains("step"));
  }
  SECTION("a line longer than any record is dropped, whatever the pieces") {
    std::string long_line = "{\"step\": 5, \"pad\": \"" + std::string(MetricsLog::kMaxLineBytes, 'a') + "\"}\n";
    for (size_t at = 0; at < long_line.size(); at += 4096) log.feed(std::string_view(long_line).substr(at, 4096));
    log.feed(record(6, 1.0));
    REQUIRE(log.points().size() == 1);
    CHECK(log.points()[0].step == 6);
    CHECK(log.bad_lines() == 1);
  }
  SECTION("a resumed run's lines replace the steps it logs again") {
    log.feed(record(1, 3.0) + record(2, 2.9) + record(3, 2.8) + record(4, 2.7));
    log.feed(record(3, 2.75) + record(4, 2.65) + record(5, 2.6));  // resumed from the step-2 checkpoint
    REQUIRE(log.points().size() == 5);
    CHECK(log.points()[2].loss == 2.75);
    CHECK(log.points()[4].step == 5);
  }
}

TEST_CASE("metrics log: following a file that grows and starts over", "[metricslog]") {
  test::TempDir dir;
  const std::string path = dir / "metrics.jsonl";
  MetricsLog log(path);
  CHECK_FALSE(log.poll());  // not there yet
  append(path, record(1, 3.0) + "{\"step\": 2, \"lo");
  CHECK(log.poll());
  CHECK(log.points().size() == 1);
  CHECK_FALSE(log.poll());  // nothing new
  append(path, "ss\": 2.9}\n");
  CHECK(log.poll());
  REQUIRE(log.points().size() == 2);
  CHECK(log.points()[1].loss == 2.9);
  SECTION("read in bounded pieces") {
    std::string many;
    for (int s = 3; s < 200; ++s) many += record(s, 1.0);
    append(path, many);
    int calls = 0;
    for (; calls < 1000 && log.points().size() < 199; ++calls) log.poll(1000);
    CHECK(log.points().size() == 199);
    CHECK(calls >= int(many.size() / 1000));
  }
  SECTION("a new run starts the file again") {
    write_file_atomic(path, record(1, 5.0));
    CHECK(log.poll());
    REQUIRE(log.points().size() == 1);
    CHECK(log.points()[0].loss == 5.0);
    CHECK(log.restarts() == 1);
  }
}

TEST_CASE("metrics log: following a real run's log while it trains", "[metricslog][train][sentencepiece]") {
  test::TempDir dir;
  RunOptions o = test::micro_run(dir.str(), 6);
  o.train.eval_every = 3;
  MetricsLog log(dir / "metrics.jsonl");
  std::vector<size_t> seen;
  o.on_step = [&](const MetricPoint&) {
    log.poll();
    seen.push_back(log.points().size());
  };
  RunResult r = run_training(o);
  log.poll();
  REQUIRE(log.points().size() == 6);
  CHECK(seen == std::vector<size_t>{1, 2, 3, 4, 5, 6});  // each line readable as soon as its step ends
  for (size_t i = 0; i < 6; ++i) {
    CHECK(log.points()[i].step == int64_t(i + 1));
    CHECK(log.points()[i].loss == Approx(r.history[i].loss).epsilon(1e-12));
  }
  CHECK(std::isfinite(log.points()[2].val_ppl_full));
  CHECK(std::isnan(log.points()[1].val_ppl_full));
  CHECK(log.bad_lines() == 0);
}
