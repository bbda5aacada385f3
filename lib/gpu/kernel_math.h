// The arithmetic both backends share, compiled by g++ for the CPU path and by
// nvcc for the device, so the two compute the same bits: Philox random
// numbers, the buffer digest, and the per-element float steps (explicitly
// rounded: no fused multiply-add on either side).
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define LSTASH_HD __host__ __device__ __forceinline__
#else
#define LSTASH_HD inline
#endif

namespace lstash::gpu::math {

// Philox4x32-10 (Salmon et al., SC'11): counter-based, so element i of a
// stream is a pure function of (key, counter) and any thread can make it.
struct U32x4 {
  std::uint32_t v[4];
};

LSTASH_HD U32x4 Philox4x32(U32x4 counter, std::uint64_t key) {
  std::uint32_t k0 = static_cast<std::uint32_t>(key), k1 = static_cast<std::uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    const std::uint64_t p0 = std::uint64_t{0xD2511F53u} * counter.v[0];
    const std::uint64_t p1 = std::uint64_t{0xCD9E8D57u} * counter.v[2];
    const U32x4 next = {{static_cast<std::uint32_t>(p1 >> 32) ^ counter.v[1] ^ k0, static_cast<std::uint32_t>(p1),
                         static_cast<std::uint32_t>(p0 >> 32) ^ counter.v[3] ^ k1, static_cast<std::uint32_t>(p0)}};
    counter = next;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return counter;
}

// Element i of the stream that starts at block `offset`: four floats per
// Philox block, 24 random bits each, so the value is exact on every backend.
LSTASH_HD float UniformAt(std::uint64_t key, std::uint64_t offset, std::uint64_t i) {
  const std::uint64_t block = offset + i / 4;
  const U32x4 bits = Philox4x32(U32x4{{static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32), 0, 0}}, key);
  return static_cast<float>(bits.v[i % 4] >> 8) * (1.0f / 16777216.0f);
}

// Philox blocks a fill of n values consumes (the next fill starts after them).
LSTASH_HD std::uint64_t UniformBlocks(std::uint64_t n) { return (n + 3) / 4; }

// SplitMix64's finalizer: every input bit moves every output bit.
LSTASH_HD std::uint64_t Mix64(std::uint64_t x) {
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The digest is Mix64(bytes ^ sum_i Mix64(word_i ^ i * golden)) over the
// buffer's little-endian 8-byte words (the tail zero-padded). Each word's term
// is independent and the sum is exact in any order, so a device reduces it
// in parallel and still matches the CPU; the index in each term makes moved
// words count.
LSTASH_HD std::uint64_t DigestTerm(std::uint64_t word, std::uint64_t index) {
  return Mix64(word ^ (index * 0x9E3779B97F4A7C15ull));
}
LSTASH_HD std::uint64_t DigestFinish(std::uint64_t sum, std::uint64_t bytes) { return Mix64(sum ^ bytes); }

// Word i of a buffer of `bytes` bytes at `p`, the tail zero-padded.
LSTASH_HD std::uint64_t WordAt(const unsigned char* p, std::uint64_t bytes, std::uint64_t i) {
  std::uint64_t word = 0;
  const std::uint64_t begin = i * 8;
  const std::uint64_t end = begin + 8 <= bytes ? begin + 8 : bytes;
  for (std::uint64_t b = begin; b < end; ++b) word |= std::uint64_t{p[b]} << (8 * (b - begin));
  return word;
}

// Float steps, each rounded once (a compiler may not fuse them).
#if defined(__CUDA_ARCH__)
LSTASH_HD float Add(float a, float b) { return __fadd_rn(a, b); }
LSTASH_HD float Mul(float a, float b) { return __fmul_rn(a, b); }
#else
// The CPU path is compiled with -ffp-contract=off (lib/gpu/CMakeLists.txt).
LSTASH_HD float Add(float a, float b) { return a + b; }
LSTASH_HD float Mul(float a, float b) { return a * b; }
#endif

LSTASH_HD float Relu(float y) { return y > 0.0f ? y : 0.0f; }

// One output of Linear: b[o] + sum over k ascending of x[r][k] * w[k][o].
LSTASH_HD float LinearAt(const float* x, const float* w, const float* b, std::size_t r, std::size_t o, std::size_t in,
                         std::size_t out, bool relu) {
  float acc = b[o];
  for (std::size_t k = 0; k < in; ++k) acc = Add(acc, Mul(x[r * in + k], w[k * out + o]));
  return relu ? Relu(acc) : acc;
}

// The gradients of one Linear, element by element, each sum ascending.
LSTASH_HD float LinearDxAt(const float* dy, const float* w, std::size_t r, std::size_t k, std::size_t out) {
  float acc = 0.0f;
  for (std::size_t o = 0; o < out; ++o) acc = Add(acc, Mul(dy[r * out + o], w[k * out + o]));
  return acc;
}
LSTASH_HD float LinearDwAt(const float* x, const float* dy, std::size_t k, std::size_t o, std::size_t rows,
                           std::size_t in, std::size_t out) {
  float acc = 0.0f;
  for (std::size_t r = 0; r < rows; ++r) acc = Add(acc, Mul(x[r * in + k], dy[r * out + o]));
  return acc;
}
LSTASH_HD float LinearDbAt(const float* dy, std::size_t o, std::size_t rows, std::size_t out) {
  float acc = 0.0f;
  for (std::size_t r = 0; r < rows; ++r) acc = Add(acc, dy[r * out + o]);
  return acc;
}
LSTASH_HD float ReluGrad(float y, float dy) { return y > 0.0f ? dy : 0.0f; }
LSTASH_HD float AxpbyAt(float a, float x, float b, float y) { return b == 0.0f ? Mul(a, x) : Add(Mul(a, x), Mul(b, y)); }

LSTASH_HD float Affine(float value, float scale, float shift) { return Add(Mul(value, scale), shift); }

}  // namespace lstash::gpu::math
