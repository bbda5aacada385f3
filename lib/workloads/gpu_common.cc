#include "workloads/gpu_common.h"

#include <fmt/format.h>

#include <cstring>

namespace lstash::workloads {
namespace {
constexpr std::uint32_t kFormatVersion = 1;
}  // namespace

Result<std::string> ReadBackend(const nlohmann::json& config, std::string_view workload) {
  std::string backend = "auto";
  if (auto it = config.find("backend"); it != config.end()) {
    if (!it->is_string()) return InvalidArgument(fmt::format("{}: backend must be a string", workload));
    backend = it->get<std::string>();
  }
  if (backend != "auto" && !gpu::ParseBackend(backend)) {
    return InvalidArgument(fmt::format("{}: backend '{}' (known: auto, cpu, cuda)", workload, backend));
  }
  return backend;
}

Result<std::unique_ptr<gpu::Context>> OpenContext(const std::string& backend, std::string_view workload) {
  gpu::ContextOptions options;
  if (backend != "auto") options.backend = gpu::ParseBackend(backend);
  auto context = gpu::Context::Open(options);
  if (!context.ok()) return context.status().WithContext(fmt::format("{}: backend {}", workload, backend));
  return std::move(context).value();
}

std::vector<float> SeededFloats(std::uint64_t seed, std::size_t n, float scale) {
  std::vector<float> v(n);
  for (float& x : v) {
    // 24 random bits: exact in a float, so every compiler makes the same value.
    const float unit = static_cast<float>(SplitMix(seed) >> 40) / static_cast<float>(1u << 24);
    x = (unit * 2.0f - 1.0f) * scale;
  }
  return v;
}

std::string FloatBytes(const std::vector<float>& values) {
  Writer w;
  for (float x : values) w.f32(x);
  return w.take();
}

Result<gpu::BufferId> Upload(gpu::Context& context, std::string_view name, std::string_view bytes) {
  LSTASH_ASSIGN_OR_RETURN(const gpu::BufferId id, context.Allocate(name, bytes.size()));
  LSTASH_RETURN_IF_ERROR(context.Write(id, 0, bytes));
  return id;
}

void PutHeader(Writer& w, std::uint32_t magic) { w.u64(std::uint64_t{magic} << 32 | kFormatVersion); }

bool GetHeader(Reader& r, std::uint32_t magic) {
  std::uint64_t header = 0;
  return r.u64(&header) && header == (std::uint64_t{magic} << 32 | kFormatVersion);
}

void PutDeviceState(Writer& w, gpu::Context& context) {
  auto snapshot = context.Snapshot();
  auto bytes = snapshot.ok() ? snapshot.value().Bytes() : Result<std::string>(snapshot.status());
  w.str(bytes.ok() ? bytes.value() : std::string());  // refused, and so reported, by GetDeviceState
}

Status GetDeviceState(Reader& r, gpu::Context& context, std::string_view what) {
  std::string device;
  if (!r.str(&device)) return Corruption(fmt::format("{} snapshot: no device state", what));
  return context.Restore(device).WithContext(fmt::format("{} snapshot", what));
}

}  // namespace lstash::workloads
