// lstash-keygen: writes CURVE key pairs for lstash processes.
//
//   lstash-keygen --dir KEYDIR --name worker0 --name worker1 --name store0
//
// writes KEYDIR/NAME.pub (public) and KEYDIR/NAME.key (secret, mode 0600) for
// each name and prints "NAME PUBLIC-KEY" lines. An existing key is never
// overwritten unless --force is given; without it, nothing is written if any
// of the names already has a key.

#include <CLI/CLI.hpp>
#include <lstash/curve.h>
#include <sys/stat.h>

#include <cstdio>
#include <set>
#include <string>
#include <vector>

namespace {

bool Exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

std::string KeyPath(const std::string& dir, const std::string& name, const char* ext) {
  std::string p = dir;
  if (!p.empty() && p.back() != '/') p += '/';
  return p + name + ext;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Writes CURVE key pairs (ZeroMQ Z85) for lstash workers, store servers and tools."};
  std::string dir;
  std::vector<std::string> names;
  bool force = false;
  app.add_option("--dir", dir, "Key directory (created with mode 0700 if missing)")->required();
  app.add_option("--name", names, "Key name; writes DIR/NAME.pub and DIR/NAME.key (repeatable)")->required();
  app.add_flag("--force", force, "Overwrite existing keys");
  CLI11_PARSE(app, argc, argv);

  std::set<std::string> seen;
  for (const auto& name : names) {
    if (!seen.insert(name).second) {
      std::fprintf(stderr, "lstash-keygen: name '%s' given twice\n", name.c_str());
      return 2;
    }
  }
  if (!force) {
    bool clash = false;
    for (const auto& name : names) {
      for (const char* ext : {".key", ".pub"}) {
        const std::string path = KeyPath(dir, name, ext);
        if (Exists(path)) {
          std::fprintf(stderr, "lstash-keygen: %s exists; not overwriting it (use --force)\n", path.c_str());
          clash = true;
        }
      }
    }
    if (clash) return 1;
  }
  for (const auto& name : names) {
    auto keys = lstash::GenerateCurveKeyPair();
    if (!keys.ok()) {
      std::fprintf(stderr, "lstash-keygen: %s\n", keys.status().ToString().c_str());
      return 1;
    }
    lstash::Status s = lstash::WriteCurveKeyPair(*keys, dir, name);
    if (!s.ok()) {
      std::fprintf(stderr, "lstash-keygen: %s: %s\n", name.c_str(), s.ToString().c_str());
      return 1;
    }
    std::printf("%s %s\n", name.c_str(), keys->public_key.c_str());
  }
  return 0;
}
