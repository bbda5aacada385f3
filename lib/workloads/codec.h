// Fixed-width little-endian encoding for app payloads and snapshots.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
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
  // Many floats at once, encoded as f32 would one by one (a plain copy on a
  // little-endian machine: vectors of 100 MB go through here).
  void f32s(std::span<const float> v) {
    if constexpr (std::endian::native == std::endian::little) {
      buf_.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
    } else {
      for (float x : v) f32(x);
    }
  }
  void reserve(std::size_t n) { buf_.reserve(n); }
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
  // Fills `out` (f32s' counterpart).
  bool f32s(std::span<float> out) {
    if (s_.size() < out.size() * sizeof(float)) return false;
    if constexpr (std::endian::native == std::endian::little) {
      std::memcpy(out.data(), s_.data(), out.size() * sizeof(float));
      s_.remove_prefix(out.size() * sizeof(float));
    } else {
      for (float& x : out) f32(&x);
    }
    return true;
  }
  std::string_view rest() const { return s_; }
  bool done() const { return s_.empty(); }

 private:
  std::string_view s_;
};

// SplitMix64: a fixed generator, the same in every incarnation. Its state
// advances by kSplitMixGamma per draw, so draw i (from 0) of seed s is
// SplitMix(state = s + i * kSplitMixGamma): any draw can be had directly.
inline constexpr std::uint64_t kSplitMixGamma = 0x9e3779b97f4a7c15ull;
inline std::uint64_t SplitMix(std::uint64_t& state) {
  std::uint64_t z = (state += kSplitMixGamma);
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
