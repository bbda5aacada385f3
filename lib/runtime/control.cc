#include "runtime/control.h"

namespace lstash::runtime {

namespace {
constexpr std::size_t kPrefix = 6;
}

std::string EncodeControl(const nlohmann::json& message) {
  std::string out(kPrefix, '\0');
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((kControlMagic >> (8 * i)) & 0xff);
  out[4] = static_cast<char>(kControlVersion & 0xff);
  out[5] = static_cast<char>(kControlVersion >> 8);
  out += message.dump();
  return out;
}

Status DecodeControl(std::string_view bytes, nlohmann::json* out) {
  if (bytes.size() < kPrefix) return Corruption("control message: truncated (" + std::to_string(bytes.size()) + " bytes)");
  std::uint32_t magic = 0;
  for (int i = 0; i < 4; ++i) magic |= std::uint32_t{static_cast<unsigned char>(bytes[i])} << (8 * i);
  const std::uint16_t version =
      static_cast<std::uint16_t>(static_cast<unsigned char>(bytes[4]) | static_cast<unsigned char>(bytes[5]) << 8);
  if (magic != kControlMagic) return Corruption("control message: bad magic");
  if (version != kControlVersion) {
    return FailedPrecondition("control message: format version " + std::to_string(version) +
                              " is not supported (this build reads version " + std::to_string(kControlVersion) + ")");
  }
  *out = nlohmann::json::parse(bytes.substr(kPrefix), nullptr, /*allow_exceptions=*/false);
  if (out->is_discarded() || !out->is_object() || !out->contains("type") || !(*out)["type"].is_string()) {
    return Corruption("control message: not a JSON object with a type");
  }
  return Status::OK();
}

}  // namespace lstash::runtime
