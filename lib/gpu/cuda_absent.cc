// Built without CUDA: every Context runs on the CPU path.
#include "gpu/device.h"

namespace lstash::gpu {

DeviceInfo ProbeCudaDevice() {
  DeviceInfo info;
  info.why_absent = "lstash was built without CUDA (-DLSTASH_WITH_CUDA=OFF or no nvcc)";
  return info;
}

Result<std::unique_ptr<Device>> MakeCudaDevice(int, int) {
  return Status(Code::kUnavailable, "no CUDA device: " + ProbeCudaDevice().why_absent);
}

}  // namespace lstash::gpu
