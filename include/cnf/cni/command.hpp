// cnf/cni/command.hpp — the CNI operations (CNI_COMMAND) and the spec version each
// one needs.
//
//   auto c = cni::parse_command("ADD");        // cni::command::add
//   cni::min_version(cni::command::gc);        // cni::version::v1_1_0
#pragma once
#include <cnf/cni/version.hpp>

#include <cstdint>
#include <optional>
#include <string_view>

CNF_BEGIN_NAMESPACE
namespace cni {

enum class command : std::uint8_t { add, del, check, status, gc, version };

/// The CNI_COMMAND spelling: "ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION".
constexpr std::string_view to_string(command c) noexcept {
  switch (c) {
    case command::add: return "ADD";
    case command::del: return "DEL";
    case command::check: return "CHECK";
    case command::status: return "STATUS";
    case command::gc: return "GC";
    case command::version: return "VERSION";
  }
  return "?";
}

/// Exact, case-sensitive match of a CNI_COMMAND value (the spec spells them in upper case).
constexpr std::optional<command> parse_command(std::string_view s) noexcept {
  for (auto c : {command::add, command::del, command::check, command::status, command::gc,
                 command::version})
    if (to_string(c) == s) return c;
  return std::nullopt;
}

/// The first spec version that defines the command: CHECK came with 0.4.0, STATUS and GC
/// with 1.1.0 (libcni's skel refuses them for older configs with code 1 too).
constexpr version min_version(command c) noexcept {
  switch (c) {
    case command::check: return version::v0_4_0;
    case command::status:
    case command::gc: return version::v1_1_0;
    default: return version::v0_3_0;
  }
}

/// Whether the command carries attachment parameters (container id, ifname, netns, args).
constexpr bool is_attachment_command(command c) noexcept {
  return c == command::add || c == command::del || c == command::check;
}

}  // namespace cni
CNF_END_NAMESPACE
