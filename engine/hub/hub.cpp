#include "engine/hub/hub.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "engine/util/error.h"
#include "engine/util/files.h"

namespace ssalab {

namespace fs = std::filesystem;

std::string hf_hub_cache_dir() {
  if (const char* c = std::getenv("HF_HUB_CACHE"); c && *c) return c;
  if (const char* h = std::getenv("HF_HOME"); h && *h) return std::string(h) + "/hub";
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "") + "/.cache/huggingface/hub";
}

bool looks_like_hub_id(const std::string& s) {
  if (s.empty() || s[0] == '.' || s[0] == '/' || s[0] == '~') return false;
  std::string id = s.substr(0, s.find('@'));
  auto slash = id.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == id.size() || id.find('/', slash + 1) != std::string::npos)
    return false;
  for (char ch : id)
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.' || ch == '/')) return false;
  return true;
}

static std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  return s;
}

static bool is_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

static std::vector<std::string> snapshots(const fs::path& repo) {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(repo / "snapshots", ec), end; !ec && it != end; it.increment(ec))
    if (is_dir(it->path())) out.push_back(it->path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// The snapshot a ref (or commit hash) names, or "" with `why` set.
static std::string find_snapshot(const fs::path& repo, const std::string& ref, std::string& why) {
  const fs::path ref_file = repo / "refs" / ref;
  if (file_exists(ref_file.string())) {
    std::string hash = trim(read_file(ref_file.string()));
    if (is_dir(repo / "snapshots" / hash)) return hash;
    why = "refs/" + ref + " names snapshot " + hash + ", which is not in the cache";
    return "";
  }
  if (is_dir(repo / "snapshots" / ref)) return ref;  // a commit hash
  std::vector<std::string> all = snapshots(repo);
  if (ref == "main" && all.size() == 1) return all[0];  // no refs (copied caches): the only snapshot
  why = all.empty() ? "it has no snapshots" : "no refs/" + ref + " and " + std::to_string(all.size()) + " snapshots";
  return "";
}

ResolvedModel resolve_model(const std::string& dir_or_id) {
  if (is_dir(dir_or_id)) {
    if (!file_exists(dir_or_id + "/config.json"))
      throw Error("model folder " + dir_or_id + " has no config.json");
    return {dir_or_id, "", ""};
  }
  if (!looks_like_hub_id(dir_or_id)) throw Error("model not found: " + dir_or_id + " is not a folder");
  const std::string cache = hf_hub_cache_dir();
  const auto at = dir_or_id.find('@');
  const std::string id = dir_or_id.substr(0, at), ref = at == std::string::npos ? "main" : dir_or_id.substr(at + 1);
  const std::string folder = "models--" + id.substr(0, id.find('/')) + "--" + id.substr(id.find('/') + 1);
  const fs::path repo = fs::path(cache) / folder;
  const std::string nothing = " (ssalab never downloads; fetch it with huggingface-cli download " + id +
                              ", or give a local folder)";
  if (!is_dir(repo))
    throw Error("model not found: " + dir_or_id + " is not a local folder and not in the Hugging Face cache (looked for " +
                repo.string() + "; cache from $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub)" + nothing);
  std::string why;
  std::string hash = find_snapshot(repo, ref, why);
  if (hash.empty()) throw Error("model " + dir_or_id + " in the Hugging Face cache (" + repo.string() + "): " + why + nothing);
  const fs::path dir = repo / "snapshots" / hash;
  if (!file_exists((dir / "config.json").string()))
    throw Error("model " + dir_or_id + ": snapshot " + dir.string() + " has no config.json (partly downloaded?)" + nothing);
  return {dir.string(), id, hash};
}

std::vector<CachedModel> list_cached_models() {
  std::vector<CachedModel> out;
  std::error_code ec;
  const fs::path cache = hf_hub_cache_dir();
  for (fs::directory_iterator it(cache, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind("models--", 0) != 0 || !is_dir(it->path())) continue;
    std::string rest = name.substr(8);
    auto sep = rest.find("--");
    if (sep == std::string::npos) continue;
    CachedModel m;
    m.hub_id = rest.substr(0, sep) + "/" + rest.substr(sep + 2);
    std::string why, hash = find_snapshot(it->path(), "main", why);
    if (hash.empty()) continue;
    m.dir = (it->path() / "snapshots" / hash).string();
    const std::string cfg = m.dir + "/config.json";
    if (!file_exists(cfg)) continue;
    try {
      auto j = nlohmann::json::parse(read_file(cfg));
      if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
          j["architectures"][0].is_string())
        m.architecture = j["architectures"][0].get<std::string>();
    } catch (const std::exception&) {
      // listed without an architecture; loading it reports the problem
    }
    std::error_code fec;
    for (fs::directory_iterator f(m.dir, fec), fend; !fec && f != fend; f.increment(fec)) {
      const std::string fname = f->path().filename().string();
      if (fname.size() > 12 && fname.compare(fname.size() - 12, 12, ".safetensors") == 0) {
        std::error_code sec;
        uint64_t n = fs::file_size(f->path(), sec);  // follows the link into blobs/
        if (!sec) m.bytes_on_disk += n;
      }
    }
    out.push_back(std::move(m));
  }
  std::sort(out.begin(), out.end(), [](const CachedModel& a, const CachedModel& b) { return a.hub_id < b.hub_id; });
  return out;
}

}  // namespace ssalab
