// Control messages between lstash-run's coordinator and the worker hosts:
// hello, heartbeats with statistics, recovery reports, results, peer-down
// notices, shutdown. Low rate, so the body is JSON; like every record lstash
// sends, it starts with a magic number and a format version.
#pragma once

#include <lstash/status.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace lstash::runtime {

inline constexpr std::uint32_t kControlMagic = 0x4c534354;  // "LSCT"
inline constexpr std::uint16_t kControlVersion = 1;

// Every control message is a JSON object with a "type" member.
std::string EncodeControl(const nlohmann::json& message);
Status DecodeControl(std::string_view bytes, nlohmann::json* out);

}  // namespace lstash::runtime
