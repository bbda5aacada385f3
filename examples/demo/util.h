// Small helpers shared by the demo's parts: clocks, bytes, words, percentiles.
#pragma once

#include <lstash/types.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace demo {

constexpr std::int64_t kMs = 1'000'000;
constexpr std::int64_t kSec = 1'000'000'000;

inline std::int64_t WallNanos() { return lstash::SystemClock()->WallNanos(); }
inline std::int64_t MonoNanos() { return lstash::SystemClock()->MonotonicNanos(); }

inline void PutU64(std::string& s, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

inline bool GetU64(std::string_view& s, std::uint64_t* v) {
  if (s.size() < 8) return false;
  *v = 0;
  for (int i = 0; i < 8; ++i) *v |= std::uint64_t{static_cast<unsigned char>(s[i])} << (8 * i);
  s.remove_prefix(8);
  return true;
}

// Pops the next '\n'-terminated line off `s`.
inline bool NextLine(std::string_view& s, std::string_view* line) {
  if (s.empty()) return false;
  const std::size_t nl = s.find('\n');
  *line = s.substr(0, nl);
  s.remove_prefix(nl == std::string_view::npos ? s.size() : nl + 1);
  return true;
}

// A fixed hash (FNV-1a), so routing is the same in every incarnation.
inline std::uint64_t HashWord(std::string_view s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  return h;
}

inline std::uint64_t SplitMix(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Calls f(word) for each maximal run of ASCII letters and digits, lowercased.
template <typename F>
void ForEachWord(std::string_view line, F&& f) {
  std::string word;
  for (char c : line) {
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
      word.push_back(c);
    } else if (c >= 'A' && c <= 'Z') {
      word.push_back(static_cast<char>(c - 'A' + 'a'));
    } else if (!word.empty()) {
      f(word);
      word.clear();
    }
  }
  if (!word.empty()) f(word);
}

// The p-quantile (0..1) of nanosecond samples, in milliseconds. Sorts v.
inline double PercentileMs(std::vector<std::int64_t>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t i = std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())));
  return static_cast<double>(v[i]) / kMs;
}

}  // namespace demo
