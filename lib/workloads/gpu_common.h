// What the GPU workloads (serving, pipeline) share: a gpu::Context chosen by
// the workload's "backend" setting, seeded float data, and the header that
// starts each of their payloads and snapshots.
#pragma once

#include <lstash/gpu.h>
#include <lstash/status.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "workloads/codec.h"

namespace lstash::workloads {

// The "backend" setting: "auto" (default: CUDA when a device is present,
// else the CPU path), "cpu" or "cuda". kInvalidArgument for another value.
Result<std::string> ReadBackend(const nlohmann::json& config, std::string_view workload);

// A context on `backend` (from ReadBackend). "cuda" without a device is
// kUnavailable, and the message says why there is none.
Result<std::unique_ptr<gpu::Context>> OpenContext(const std::string& backend, std::string_view workload);

// n floats uniform in [-scale, scale) from `seed` (SplitMix64: the same in
// every process, so a checker derives them again).
std::vector<float> SeededFloats(std::uint64_t seed, std::size_t n, float scale);

// Floats as a device buffer holds them (IEEE single, little-endian on every
// backend), and back.
std::string FloatBytes(const std::vector<float>& values);

// A buffer named `name` holding `bytes`.
Result<gpu::BufferId> Upload(gpu::Context& context, std::string_view name, std::string_view bytes);

// Every payload and snapshot of these workloads starts with one u64:
// magic << 32 | format version.
void PutHeader(Writer& w, std::uint32_t magic);
bool GetHeader(Reader& r, std::uint32_t magic);

// A context's buffers inside an app snapshot, length-prefixed. Snapshot()
// must return bytes even if the device fails; the restore then refuses them.
void PutDeviceState(Writer& w, gpu::Context& context);
Status GetDeviceState(Reader& r, gpu::Context& context, std::string_view what);

}  // namespace lstash::workloads
