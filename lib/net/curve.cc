// CURVE key pairs and their files (see include/lstash/curve.h).
//
// DIR/NAME.pub   the public key: 40 Z85 characters and a newline.
// DIR/NAME.key   mode 0600:
//                  # lstash CURVE key pair (ZeroMQ Z85). Keep this file secret.
//                  public-key = <40 Z85 characters>
//                  secret-key = <40 Z85 characters>
//                Blank lines and lines starting with '#' are ignored.

#include <fcntl.h>
#include <lstash/curve.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>

#include "net/zmq_util.h"

namespace lstash {
namespace {

constexpr std::size_t kMaxKeyFileBytes = 4096;

std::string ErrnoText(int err) { return std::strerror(err); }

Status CheckName(const std::string& name) {
  if (name.empty()) return InvalidArgument("key name is empty");
  if (name == "." || name == "..") return InvalidArgument("key name '" + name + "' is not allowed");
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-';
    if (!ok) {
      return InvalidArgument("key name '" + name + "' may contain only letters, digits, '.', '_' and '-'");
    }
  }
  return Status::OK();
}

std::string PathOf(const std::string& dir, const std::string& name, const char* ext) {
  std::string p = dir.empty() ? std::string(".") : dir;
  if (p.back() != '/') p += '/';
  return p + name + ext;
}

// Creates `dir` (mode 0700) if missing; its missing parents get the usual
// mode.
Status EnsureDir(const std::string& dir) {
  if (dir.empty()) return InvalidArgument("key directory is empty");
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) return InvalidArgument("key directory " + dir + " exists and is not a directory");
    return Status::OK();
  }
  std::error_code ec;
  const std::filesystem::path parent = std::filesystem::path(dir).lexically_normal().parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  if (ec) return IOError("creating " + parent.string() + ": " + ec.message());
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return IOError("creating key directory " + dir + ": " + ErrnoText(errno));
  }
  return Status::OK();
}

// Writes `text` to `path` with `mode`, replacing any old content; the mode
// is applied to an existing file as well.
Status WriteFile(const std::string& path, std::string_view text, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) return IOError("writing " + path + ": " + ErrnoText(errno));
  Status s;
  if (::fchmod(fd, mode) != 0) s = IOError("setting the mode of " + path + ": " + ErrnoText(errno));
  std::size_t done = 0;
  while (s.ok() && done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      s = IOError("writing " + path + ": " + ErrnoText(errno));
    } else {
      done += static_cast<std::size_t>(n);
    }
  }
  if (s.ok() && ::fsync(fd) != 0) s = IOError("syncing " + path + ": " + ErrnoText(errno));
  if (::close(fd) != 0 && s.ok()) s = IOError("closing " + path + ": " + ErrnoText(errno));
  return s;
}

Result<std::string> ReadSmallFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return NotFound(path + ": no such file");
    return IOError("reading " + path + ": " + ErrnoText(err));
  }
  std::string text;
  Status s;
  char buf[1024];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      s = IOError("reading " + path + ": " + ErrnoText(errno));
      break;
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > kMaxKeyFileBytes) {
      s = InvalidArgument(path + " is not a key file: larger than " + std::to_string(kMaxKeyFileBytes) + " bytes");
      break;
    }
  }
  ::close(fd);
  if (!s.ok()) return s;
  return text;
}

std::string_view Trim(std::string_view s) {
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

Status CheckKeyIn(std::string_view key, const std::string& path, const char* what) {
  Status s = net::CheckZ85Key(key, what);
  if (!s.ok()) return InvalidArgument(path + ": " + std::string(s.message()));
  return Status::OK();
}

}  // namespace

Result<CurveKeyPair> GenerateCurveKeyPair() {
  LSTASH_RETURN_IF_ERROR(net::CheckCurveAvailable());
  char public_key[41] = {};
  char secret_key[41] = {};
  if (zmq_curve_keypair(public_key, secret_key) != 0) {
    const int err = zmq_errno();
    if (err == ENOTSUP) return FailedPrecondition("this libzmq was built without CURVE security");
    return Internal(std::string("zmq_curve_keypair: ") + zmq_strerror(err));
  }
  return CurveKeyPair{std::string(public_key, 40), std::string(secret_key, 40)};
}

Status WriteCurveKeyPair(const CurveKeyPair& keys, const std::string& dir, const std::string& name) {
  LSTASH_RETURN_IF_ERROR(CheckName(name));
  LSTASH_RETURN_IF_ERROR(net::CheckZ85Key(keys.public_key, "the public key"));
  LSTASH_RETURN_IF_ERROR(net::CheckZ85Key(keys.secret_key, "the secret key"));
  LSTASH_RETURN_IF_ERROR(EnsureDir(dir));
  const std::string secret_text = "# lstash CURVE key pair (ZeroMQ Z85). Keep this file secret.\npublic-key = " +
                                  keys.public_key + "\nsecret-key = " + keys.secret_key + "\n";
  LSTASH_RETURN_IF_ERROR(WriteFile(PathOf(dir, name, ".key"), secret_text, 0600));
  return WriteFile(PathOf(dir, name, ".pub"), keys.public_key + "\n", 0644);
}

Result<CurveKeyPair> ReadCurveKeyPair(const std::string& dir, const std::string& name) {
  LSTASH_RETURN_IF_ERROR(CheckName(name));
  const std::string path = PathOf(dir, name, ".key");
  LSTASH_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path));
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    spdlog::warn("lstash: secret key file {} is readable by others (mode {:o}); chmod 600 it", path,
                 st.st_mode & 0777);
  }
  CurveKeyPair keys;
  bool have_public = false, have_secret = false;
  std::istringstream lines(text);
  std::string line;
  int number = 0;
  while (std::getline(lines, line)) {
    ++number;
    const std::string_view l = Trim(line);
    if (l.empty() || l.front() == '#') continue;
    const auto eq = l.find('=');
    const std::string where = path + " line " + std::to_string(number);
    if (eq == std::string_view::npos) return InvalidArgument(where + ": expected 'public-key = ...' or 'secret-key = ...'");
    const std::string_view field = Trim(l.substr(0, eq));
    const std::string_view value = Trim(l.substr(eq + 1));
    if (field == "public-key" && !have_public) {
      LSTASH_RETURN_IF_ERROR(CheckKeyIn(value, where, "public-key"));
      keys.public_key = std::string(value);
      have_public = true;
    } else if (field == "secret-key" && !have_secret) {
      LSTASH_RETURN_IF_ERROR(CheckKeyIn(value, where, "secret-key"));
      keys.secret_key = std::string(value);
      have_secret = true;
    } else {
      return InvalidArgument(where + ": unexpected or repeated field '" + std::string(field) + "'");
    }
  }
  if (!have_public || !have_secret) {
    return InvalidArgument(path + " is not a key file: it lacks " +
                           (have_public ? "secret-key" : (have_secret ? "public-key" : "public-key and secret-key")));
  }
  char derived[41] = {};
  if (zmq_curve_public(derived, keys.secret_key.c_str()) != 0) {
    return InvalidArgument(path + ": cannot derive the public key from secret-key: " + zmq_strerror(zmq_errno()));
  }
  if (net::CanonicalZ85Key(derived) != net::CanonicalZ85Key(keys.public_key)) {
    return InvalidArgument(path + ": public-key does not belong to secret-key");
  }
  // The .pub file, if present, must name the same key.
  auto pub = ReadCurvePublicKey(dir, name);
  if (pub.ok()) {
    if (net::CanonicalZ85Key(*pub) != net::CanonicalZ85Key(keys.public_key)) {
      return InvalidArgument(PathOf(dir, name, ".pub") + " holds a different public key than " + path);
    }
  } else if (pub.status().code() != Code::kNotFound) {
    return pub.status();
  }
  return keys;
}

Result<std::string> ReadCurvePublicKey(const std::string& dir, const std::string& name) {
  LSTASH_RETURN_IF_ERROR(CheckName(name));
  const std::string path = PathOf(dir, name, ".pub");
  LSTASH_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path));
  const std::string_view key = Trim(text);
  LSTASH_RETURN_IF_ERROR(CheckKeyIn(key, path, "its content"));
  return std::string(key);
}

}  // namespace lstash
