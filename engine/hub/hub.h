// Model folders and the local Hugging Face cache. Nothing here touches the
// network: a hub id ("org/name") is looked up in the cache that HF tools
// fill (huggingface_hub's layout), or it is an error that says where ssalab
// looked.
//
// Cache root: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub.
// A model lives in <root>/models--org--name/: refs/<ref> holds a commit hash,
// snapshots/<hash>/ the files (links into blobs/).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ssalab {

// The HF hub cache root this process would use (it may not exist).
std::string hf_hub_cache_dir();

struct ResolvedModel {
  std::string dir;       // the folder holding config.json
  std::string hub_id;    // "org/name" when it came from the cache, else ""
  std::string revision;  // the snapshot's commit hash (cache only)
};

// A local folder with a config.json, or a hub id ("org/name", optionally
// "org/name@ref-or-commit", default ref "main") found in the local cache.
// Throws Error: a folder without config.json, or an id not in the cache
// (naming the cache folder it looked in and saying nothing is downloaded).
ResolvedModel resolve_model(const std::string& dir_or_id);

// True when `s` reads as a hub id rather than a path: "org/name" with one
// slash, no leading '.', '/' or '~'.
bool looks_like_hub_id(const std::string& s);

// Models in the local cache that have a config.json in their current
// snapshot (refs/main, else the only snapshot), sorted by id; for the app's
// "Open model" list. Reads only directory entries and config.json.
struct CachedModel {
  std::string hub_id;
  std::string dir;           // the snapshot folder
  std::string architecture;  // config.json "architectures"[0], or "" if none
  uint64_t bytes_on_disk = 0;  // the snapshot's *.safetensors files
};
std::vector<CachedModel> list_cached_models();

}  // namespace ssalab
