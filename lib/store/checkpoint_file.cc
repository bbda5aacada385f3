#include "store/checkpoint_file.h"

#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <system_error>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace lstash::rocksdb_layout {

namespace {

constexpr std::size_t kFileHeaderFields = 4 + 2 + 4 + 8 * 3;
constexpr std::size_t kDigestBytes = 8;
// A part's chunks are read by up to kMaxReaders threads, one per this many bytes.
constexpr std::uint64_t kBytesPerReader = std::uint64_t{2} << 20;
constexpr std::uint64_t kMaxReaders = 4;
// Appends smaller than this are gathered, so a record given in many small
// parts is not written a syscall per part.
constexpr std::size_t kGatherBytes = 1 << 20;

std::string ErrnoText(int err) { return std::strerror(err); }

std::string FileHeader(WorkerId worker, const CheckpointHead& head) {
  std::string header;
  header.reserve(kCheckpointFileHeaderBytes);
  PutLittleEndian(kCheckpointFileMagic, 4, &header);
  PutLittleEndian(kCheckpointFileVersion, 2, &header);
  PutLittleEndian(worker, 4, &header);
  PutLittleEndian(head.generation, 8, &header);
  PutLittleEndian(head.total_bytes, 8, &header);
  PutLittleEndian(head.chunk_bytes, 8, &header);
  header.resize(kCheckpointFileHeaderBytes, '\0');
  return header;
}

Status WriteAll(int fd, const char* data, std::size_t size, const std::string& path) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return IOError("writing checkpoint file " + path + ": " + ErrnoText(errno));
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return Status::OK();
}

// Reads exactly `size` bytes at `offset`; a file that ends first is corrupt.
Status ReadAll(int fd, char* data, std::size_t size, std::uint64_t offset, const std::string& path) {
  while (size > 0) {
    const ssize_t n = ::pread(fd, data, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return IOError("reading checkpoint file " + path + ": " + ErrnoText(errno));
    }
    if (n == 0) return Corruption("checkpoint file " + path + " ends early");
    data += n;
    size -= static_cast<std::size_t>(n);
    offset += static_cast<std::uint64_t>(n);
  }
  return Status::OK();
}

// Reads whole chunks of `head`'s record and checks each against its digest.
struct ChunkReader {
  int fd;
  const std::string& path;
  const CheckpointHead& head;
  std::uint64_t first;         // the chunk digests[0] is of
  const std::string& digests;  // of chunks first, first + 1, ...

  // Chunks [from, to) into `into`.
  Status Read(std::uint64_t from, std::uint64_t to, char* into) const {
    const std::uint64_t begin = from * head.chunk_bytes;
    const std::uint64_t end = std::min(head.total_bytes, to * head.chunk_bytes);
    LSTASH_RETURN_IF_ERROR(ReadAll(fd, into, end - begin, kCheckpointFileHeaderBytes + begin, path));
    for (std::uint64_t chunk = from; chunk < to; ++chunk) {
      const std::uint64_t stored =
          GetLittleEndian(std::string_view(digests).substr((chunk - first) * kDigestBytes, kDigestBytes));
      if (XXH3_64bits(into + (chunk - from) * head.chunk_bytes, head.BytesOfChunk(chunk)) != stored) {
        return Corruption("chunk " + std::to_string(chunk) + " of " + std::to_string(head.chunk_count) +
                          " does not match its digest in checkpoint file " + path);
      }
    }
    return Status::OK();
  }
};

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

Status SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return IOError("opening " + dir + " to sync it: " + ErrnoText(errno));
  Status s;
  if (::fsync(fd) != 0) s = IOError("syncing " + dir + ": " + ErrnoText(errno));
  ::close(fd);
  return s;
}

std::string CheckpointFileName(WorkerId worker, std::uint64_t generation) {
  return "w" + std::to_string(worker) + "-g" + std::to_string(generation) + ".lsck";
}

bool ParseCheckpointFileName(std::string_view name, WorkerId* worker, std::uint64_t* generation) {
  if (!name.starts_with('w') || !name.ends_with(".lsck")) return false;
  name.remove_prefix(1);
  name.remove_suffix(5);
  const std::size_t dash = name.find("-g");
  if (dash == std::string_view::npos) return false;
  const std::string_view w = name.substr(0, dash), g = name.substr(dash + 2);
  const auto parse = [](std::string_view digits, auto* value) {
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), *value);
    return !digits.empty() && ec == std::errc() && end == digits.data() + digits.size();
  };
  // Only the names CheckpointFileName makes: no leading zeros or signs.
  if (!parse(w, worker) || !parse(g, generation)) return false;
  return CheckpointFileName(*worker, *generation) == std::string("w").append(w).append("-g").append(g).append(".lsck");
}

std::uint64_t CheckpointFileBytes(const CheckpointHead& head) {
  return kCheckpointFileHeaderBytes + head.total_bytes + kDigestBytes * head.chunk_count;
}

struct CheckpointFileWriter::Impl {
  std::string dir, path;
  CheckpointHead head;
  int fd = -1;
  bool finished = false;
  std::uint64_t appended = 0;
  std::uint64_t in_chunk = 0;  // bytes of the current chunk digested so far
  std::unique_ptr<XXH3_state_t, XXH_errorcode (*)(XXH3_state_t*)> chunk_digest{XXH3_createState(), XXH3_freeState};
  std::string digests;
  std::string gathered;

  ~Impl() {
    if (fd >= 0) ::close(fd);
    if (!finished && !path.empty()) ::unlink(path.c_str());
  }

  Status FlushGathered() {
    Status s = WriteAll(fd, gathered.data(), gathered.size(), path);
    gathered.clear();
    return s;
  }

  void Digest(std::string_view bytes) {
    while (!bytes.empty()) {
      const std::size_t n = std::min<std::uint64_t>(bytes.size(), head.chunk_bytes - in_chunk);
      XXH3_64bits_update(chunk_digest.get(), bytes.data(), n);
      bytes.remove_prefix(n);
      in_chunk += n;
      if (in_chunk == head.chunk_bytes) EndChunk();
    }
  }

  void EndChunk() {
    PutLittleEndian(XXH3_64bits_digest(chunk_digest.get()), kDigestBytes, &digests);
    XXH3_64bits_reset(chunk_digest.get());
    in_chunk = 0;
  }
};

CheckpointFileWriter::CheckpointFileWriter() : impl_(std::make_unique<Impl>()) {}
CheckpointFileWriter::~CheckpointFileWriter() = default;

Status CheckpointFileWriter::Open(const std::string& dir, WorkerId worker, const CheckpointHead& head) {
  Impl& f = *impl_;
  f.dir = dir;
  f.path = dir + "/" + CheckpointFileName(worker, head.generation);
  f.head = head;
  if (f.chunk_digest == nullptr) return ResourceExhausted("no memory for a digest state");
  XXH3_64bits_reset(f.chunk_digest.get());
  f.digests.reserve(kDigestBytes * head.chunk_count);
  f.fd = ::open(f.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (f.fd < 0) {
    const int err = errno;
    f.path.clear();  // not ours to remove
    return IOError("creating checkpoint file " + dir + "/" + CheckpointFileName(worker, head.generation) + ": " +
                   ErrnoText(err));
  }
  const std::string header = FileHeader(worker, head);
  return WriteAll(f.fd, header.data(), header.size(), f.path);
}

Status CheckpointFileWriter::Append(std::string_view bytes) {
  Impl& f = *impl_;
  f.appended += bytes.size();
  f.Digest(bytes);
  if (bytes.size() < kGatherBytes) {
    if (f.gathered.size() + bytes.size() > kGatherBytes) LSTASH_RETURN_IF_ERROR(f.FlushGathered());
    if (f.gathered.capacity() < kGatherBytes) f.gathered.reserve(kGatherBytes);
    f.gathered.append(bytes);
    return Status::OK();
  }
  LSTASH_RETURN_IF_ERROR(f.FlushGathered());
  return WriteAll(f.fd, bytes.data(), bytes.size(), f.path);
}

Status CheckpointFileWriter::Finish() {
  Impl& f = *impl_;
  if (f.appended != f.head.total_bytes) {
    return Internal("checkpoint file " + f.path + ": " + std::to_string(f.appended) + " bytes appended, not " +
                    std::to_string(f.head.total_bytes));
  }
  if (f.in_chunk > 0) f.EndChunk();
  LSTASH_RETURN_IF_ERROR(f.FlushGathered());
  LSTASH_RETURN_IF_ERROR(WriteAll(f.fd, f.digests.data(), f.digests.size(), f.path));
  if (::fdatasync(f.fd) != 0) return IOError("syncing checkpoint file " + f.path + ": " + ErrnoText(errno));
  const int fd = f.fd;
  f.fd = -1;
  if (::close(fd) != 0) return IOError("closing checkpoint file " + f.path + ": " + ErrnoText(errno));
  // The file's name must be as durable as its bytes before a head names it.
  LSTASH_RETURN_IF_ERROR(SyncDirectory(f.dir));
  f.finished = true;
  return Status::OK();
}

Status ReadCheckpointFilePart(const std::string& dir, WorkerId worker, const CheckpointHead& head,
                              std::uint64_t offset, std::uint64_t length, std::string* out, bool* missing) {
  *missing = false;
  const std::string path = dir + "/" + CheckpointFileName(worker, head.generation);
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) {
      *missing = true;
      return Status::OK();
    }
    return IOError("opening checkpoint file " + path + ": " + ErrnoText(errno));
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return IOError("checkpoint file " + path + ": " + ErrnoText(errno));
  if (static_cast<std::uint64_t>(st.st_size) != CheckpointFileBytes(head)) {
    return Corruption("checkpoint file " + path + " holds " + std::to_string(st.st_size) + " bytes, not " +
                      std::to_string(CheckpointFileBytes(head)));
  }
  std::string header(kFileHeaderFields, '\0');
  LSTASH_RETURN_IF_ERROR(ReadAll(fd.get(), header.data(), header.size(), 0, path));
  LSTASH_RETURN_IF_ERROR(
      CheckValuePrefix(header, kCheckpointFileMagic, kCheckpointFileVersion, "checkpoint file " + path));
  if (header != FileHeader(worker, head).substr(0, kFileHeaderFields)) {
    return Corruption("checkpoint file " + path + " is not the one its head names (worker " +
                      std::to_string(GetLittleEndian(std::string_view(header).substr(6, 4))) + ", generation " +
                      std::to_string(GetLittleEndian(std::string_view(header).substr(10, 8))) + ", " +
                      std::to_string(GetLittleEndian(std::string_view(header).substr(18, 8))) + " bytes)");
  }

  // Every chunk the part touches is checked against its digest: the chunks
  // it covers are read straight into *out, by a few threads when they are
  // many (a GiB restored was bound by one thread's copy out of the page
  // cache and digest); one it cuts (only the first and the last can be) is
  // read whole aside.
  const std::uint64_t first = offset / head.chunk_bytes;
  const std::uint64_t last = (offset + length - 1) / head.chunk_bytes;
  std::string digests((last - first + 1) * kDigestBytes, '\0');
  LSTASH_RETURN_IF_ERROR(ReadAll(fd.get(), digests.data(), digests.size(),
                                 kCheckpointFileHeaderBytes + head.total_bytes + first * kDigestBytes, path));
  out->resize(length);  // a reused buffer of this size is not written twice
  const ChunkReader reader{fd.get(), path, head, first, digests};
  const auto covered = [&](std::uint64_t chunk) {
    return chunk * head.chunk_bytes >= offset &&
           chunk * head.chunk_bytes + head.BytesOfChunk(chunk) <= offset + length;
  };
  const auto read_cut = [&](std::uint64_t chunk) -> Status {
    std::string aside(head.BytesOfChunk(chunk), '\0');
    LSTASH_RETURN_IF_ERROR(reader.Read(chunk, chunk + 1, aside.data()));
    const std::uint64_t begin = chunk * head.chunk_bytes;
    const std::uint64_t from = std::max(begin, offset), to = std::min(begin + aside.size(), offset + length);
    std::memcpy(out->data() + (from - offset), aside.data() + (from - begin), to - from);
    return Status::OK();
  };
  if (!covered(first)) LSTASH_RETURN_IF_ERROR(read_cut(first));
  if (last != first && !covered(last)) LSTASH_RETURN_IF_ERROR(read_cut(last));
  const std::uint64_t begin = covered(first) ? first : first + 1;
  const std::uint64_t end = covered(last) ? last + 1 : last;
  if (begin >= end) return Status::OK();
  char* const into = out->data() + (begin * head.chunk_bytes - offset);
  const std::uint64_t bytes = (end - begin) * head.chunk_bytes;
  const std::uint64_t threads = std::clamp<std::uint64_t>(
      bytes / kBytesPerReader, 1, std::min<std::uint64_t>(kMaxReaders, std::max(1u, std::thread::hardware_concurrency())));
  if (threads == 1) return reader.Read(begin, end, into);
  // Thread t reads chunks [begin + n*t/threads, begin + n*(t+1)/threads).
  const std::uint64_t n = end - begin;
  std::vector<Status> read(threads);
  std::vector<std::thread> helpers;
  const auto read_share = [&](std::uint64_t t) {
    const std::uint64_t from = begin + n * t / threads, to = begin + n * (t + 1) / threads;
    read[t] = reader.Read(from, to, into + (from - begin) * head.chunk_bytes);
  };
  for (std::uint64_t t = 1; t < threads; ++t) {
    try {
      helpers.emplace_back(read_share, t);
    } catch (const std::system_error&) {
      read_share(t);  // no thread to be had: read it here
    }
  }
  read_share(0);
  for (std::thread& h : helpers) h.join();
  for (Status& s : read) LSTASH_RETURN_IF_ERROR(std::move(s));  // the first chunk's error first
  return Status::OK();
}

}  // namespace lstash::rocksdb_layout
