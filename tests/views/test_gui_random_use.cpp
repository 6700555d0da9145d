// Drives the real app under Xvfb with random input and panel actions while
// training runs (`ssalab gui --random-use`, app/gui/random_use.h) and checks
// what it reports: the process ended cleanly, no frame took over a second,
// memory at rest came back to where it was, and the random phase really did
// click, type and load models.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "tests/test_support.h"

namespace fs = std::filesystem;

TEST_CASE("random use: no crash, no hang, steady memory", "[gui]") {
  if (!ssalab::test::xvfb_run_available()) {
    WARN("xvfb-run not installed: skipped");
    return;
  }
  fs::path dir = fs::temp_directory_path() / ("ssalab_random_use_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  // 45 s of random use here (CI); `ssalab gui --random-use DIR --random-seconds 300` for longer
  const int rc = ssalab::test::run_gui_under_xvfb(
      "--random-use '" + dir.string() + "' --random-seconds 45 --random-seed 7", dir.string() + ".log");
  INFO("log:\n" << ssalab::test::file_tail(dir.string() + ".log"));
  std::ifstream sf(dir / "summary.json");
  REQUIRE(sf.good());
  const nlohmann::json summary = nlohmann::json::parse(sf);
  INFO("summary: " << summary.dump(1).substr(0, 4000));
  CHECK(rc == 0);
  REQUIRE(summary["ok"].get<bool>());
  CHECK(summary["frames_over_1s"].get<int>() == 0);
  // it did what a user does, many times
  CHECK(summary["input_actions"].get<int>() > 300);
  CHECK(summary["panel_actions"].get<int>() > 15);
  CHECK(summary["actions_by_kind"].value("click", 0) > 50);
  CHECK(summary["actions_by_kind"].value("type", 0) > 10);
  CHECK(summary["training_steps"].get<int>() > 0);
  CHECK(summary["analyses_shown"].get<int>() > 2);
  // memory at rest measured before and after, within the stated bound
  const auto& mem = summary["resident_mib"];
  CHECK(mem["at_rest_before"].get<double>() > 50);
  CHECK(mem["at_rest_after"].get<double>() <= mem["allowed_after"].get<double>());
  fs::remove_all(dir);
  fs::remove(dir.string() + ".log");
}
