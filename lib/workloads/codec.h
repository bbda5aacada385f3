// Fixed-width little-endian encoding for app payloads and snapshots.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace lstash::workloads {

inline void PutU64(std::string& s, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// Pops a u64 off the front of `s`.
inline bool GetU64(std::string_view& s, std::uint64_t* v) {
  if (s.size() < 8) return false;
  *v = 0;
  for (int i = 0; i < 8; ++i) *v |= std::uint64_t{static_cast<unsigned char>(s[i])} << (8 * i);
  s.remove_prefix(8);
  return true;
}

class Writer {
 public:
  void u64(std::uint64_t v) { PutU64(buf_, v); }
  void f32(float v) {
    std::uint32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    for (int i = 0; i < 4; ++i) buf_.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
  }
  void bytes(std::size_t n, char fill) { buf_.append(n, fill); }
  void raw(std::string_view s) { buf_.append(s); }
  // Length-prefixed bytes (Reader::str reads them back).
  void str(std::string_view s) {
    u64(s.size());
    raw(s);
  }
  std::string take() { return std::move(buf_); }

 private:
  std::string buf_;
};

class Reader {
 public:
  explicit Reader(std::string_view s) : s_(s) {}
  bool u64(std::uint64_t* v) { return GetU64(s_, v); }
  bool f32(float* v) {
    if (s_.size() < 4) return false;
    std::uint32_t bits = 0;
    for (int i = 0; i < 4; ++i) bits |= std::uint32_t{static_cast<unsigned char>(s_[i])} << (8 * i);
    std::memcpy(v, &bits, sizeof bits);
    s_.remove_prefix(4);
    return true;
  }
  bool str(std::string* out) {
    std::uint64_t n = 0;
    if (!u64(&n) || n > s_.size()) return false;
    out->assign(s_.substr(0, n));
    s_.remove_prefix(n);
    return true;
  }
  std::string_view rest() const { return s_; }
  bool done() const { return s_.empty(); }

 private:
  std::string_view s_;
};

// SplitMix64: a fixed generator, the same in every incarnation.
inline std::uint64_t SplitMix(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Folds `input` into a running hash `state` (order-sensitive).
inline std::uint64_t Mix(std::uint64_t state, std::uint64_t input) {
  std::uint64_t z = state * 0x9e3779b97f4a7c15ull + input + 0x632be59bd9b4e019ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace lstash::workloads
