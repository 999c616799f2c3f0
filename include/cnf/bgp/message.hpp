// cnf/bgp/message.hpp — BGP-4 messages and their wire codec (RFC 4271), with the
// capabilities and attributes cnf speaks: multiprotocol IPv4/IPv6 unicast (RFC 4760),
// 4-octet AS (RFC 6793), route refresh (RFC 2918), graceful restart (RFC 4724),
// communities (RFC 1997), large communities (RFC 8092), route reflection (RFC 4456).
//
// Pure functions over bytes: no sockets, no clocks. A decoding error carries the
// NOTIFICATION the speaker must send (RFC 4271 §6) and names the field. Errors RFC 7606
// lets a session survive do not fail decode(): the UPDATE comes back with its announced
// prefixes moved to the withdrawn lists and `withdraw_reason` saying why
// (treat-as-withdraw), or with the bad attribute dropped (attribute discard).
//
//   std::size_t n = 0;
//   auto len = cnf::bgp::frame(bytes);              // 0: need more; error: bad header
//   auto m = cnf::bgp::decode(bytes.first(*len), {.four_octet_as = true});
//   if (auto* e = std::get_if<cnf::bgp::decode_error>(&m)) send(encode(e->notification()));
#pragma once
#include <cnf/net.hpp>

#include <compare>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace bgp {

using bytes = std::vector<std::uint8_t>;

inline constexpr std::size_t header_size = 19;
inline constexpr std::size_t max_message_size = 4096;
inline constexpr std::uint16_t as_trans = 23456;

enum class message_type : std::uint8_t { open = 1, update = 2, notification = 3, keepalive = 4, route_refresh = 5 };

/// An address family and subsequent address family (RFC 4760).
struct afi_safi {
  std::uint16_t afi = 1;
  std::uint8_t safi = 1;
  friend bool operator==(const afi_safi&, const afi_safi&) = default;
  friend auto operator<=>(const afi_safi&, const afi_safi&) = default;
  std::string to_string() const;
};
inline constexpr afi_safi ipv4_unicast{1, 1};
inline constexpr afi_safi ipv6_unicast{2, 1};

struct graceful_restart {
  bool restart_state = false;       ///< R bit: the sender has restarted
  std::uint16_t restart_time = 0;   ///< seconds, 12 bits
  struct family { afi_safi af; bool forwarding_preserved = false; friend bool operator==(const family&, const family&) = default; };
  std::vector<family> families;
  friend bool operator==(const graceful_restart&, const graceful_restart&) = default;
};

struct capability {
  std::uint8_t code = 0;
  bytes value;
  friend bool operator==(const capability&, const capability&) = default;
};

struct open_message {
  std::uint8_t version = 4;
  std::uint32_t asn = 0;            ///< the real AS (from the 4-octet AS capability when present)
  std::uint16_t hold_time = 90;
  std::uint32_t router_id = 0;      ///< host order
  std::vector<afi_safi> multiprotocol;
  bool four_octet_as = true;        ///< the capability is sent / was received
  bool route_refresh = false;
  std::optional<graceful_restart> restart;
  std::vector<capability> other_capabilities;  ///< received ones cnf does not know
  friend bool operator==(const open_message&, const open_message&) = default;
};

enum class origin_type : std::uint8_t { igp = 0, egp = 1, incomplete = 2 };

struct as_segment {
  enum class kind : std::uint8_t { set = 1, sequence = 2, confed_sequence = 3, confed_set = 4 };
  kind type = kind::sequence;
  std::vector<std::uint32_t> asns;
  friend bool operator==(const as_segment&, const as_segment&) = default;
};

/// An attribute cnf passes along without understanding it (optional transitive).
struct raw_attribute {
  std::uint8_t flags = 0;
  std::uint8_t type = 0;
  bytes value;
  friend bool operator==(const raw_attribute&, const raw_attribute&) = default;
};

/// A BGP large community (RFC 8092): global administrator (an AS), two local data parts.
struct large_community {
  std::uint32_t global = 0;
  std::uint32_t local1 = 0;
  std::uint32_t local2 = 0;
  friend bool operator==(const large_community&, const large_community&) = default;
  friend auto operator<=>(const large_community&, const large_community&) = default;
  std::string to_string() const;  ///< "64512:1:2"
};

/// Well-known communities (RFC 1997) the speaker honours when it sends a route on.
namespace community {
inline constexpr std::uint32_t no_export = 0xFFFFFF01, no_advertise = 0xFFFFFF02, no_export_subconfed = 0xFFFFFF03;
}  // namespace community

struct path_attributes {
  origin_type origin = origin_type::igp;
  std::vector<as_segment> as_path;
  std::optional<ip_address> next_hop;             ///< the NEXT_HOP attribute (IPv4)
  std::optional<std::uint32_t> med;
  std::optional<std::uint32_t> local_pref;
  bool atomic_aggregate = false;
  std::vector<std::uint32_t> communities;
  std::vector<large_community> large_communities;  ///< LARGE_COMMUNITY (RFC 8092), duplicates removed
  std::optional<std::uint32_t> originator_id;
  std::vector<std::uint32_t> cluster_list;
  std::vector<raw_attribute> unknown;
  friend bool operator==(const path_attributes&, const path_attributes&) = default;

  /// RFC 4271 §9.1.2.2: a set counts 1, confederation segments 0.
  std::size_t as_path_length() const noexcept;
  bool as_path_contains(std::uint32_t asn) const noexcept;
  /// The first AS of the path (the neighbour's), 0 when empty.
  std::uint32_t neighbour_as() const noexcept;
};

struct mp_reach {
  afi_safi af = ipv6_unicast;
  std::vector<ip_address> next_hops;  ///< global, and a link-local one for IPv6 when present
  std::vector<ip_prefix> nlri;
  friend bool operator==(const mp_reach&, const mp_reach&) = default;
};
struct mp_unreach {
  afi_safi af = ipv6_unicast;
  std::vector<ip_prefix> withdrawn;
  friend bool operator==(const mp_unreach&, const mp_unreach&) = default;
};

struct notification_message;

/// Why a message could not be accepted: the NOTIFICATION to send, and the field at fault.
struct decode_error {
  std::uint8_t code = 0;
  std::uint8_t subcode = 0;
  bytes data;
  std::string field;    ///< e.g. "header.marker", "UPDATE.AS_PATH", "OPEN.hold_time"
  std::string message;
  notification_message notification() const;
  std::string to_string() const;  ///< "UPDATE.AS_PATH: segment overruns the attribute (UPDATE Message Error / Malformed AS_PATH)"
  friend bool operator==(const decode_error&, const decode_error&) = default;
};

struct update_message {
  std::vector<ip_prefix> withdrawn;
  path_attributes attrs;
  bool has_attributes = false;      ///< path attributes were present
  std::vector<ip_prefix> nlri;
  std::optional<mp_reach> reach;
  std::optional<mp_unreach> unreach;
  /// Set when RFC 7606 treat-as-withdraw applied: the announced prefixes were moved to the
  /// withdrawn lists; the error is what RFC 4271 alone would have sent.
  std::optional<decode_error> withdraw_reason;
  /// Attributes dropped under RFC 7606 attribute discard, one line each.
  std::vector<std::string> discarded;
  friend bool operator==(const update_message&, const update_message&) = default;

  /// An End-of-RIB marker (RFC 4724 §2): an empty UPDATE for IPv4 unicast, an empty
  /// MP_UNREACH_NLRI for other families.
  std::optional<afi_safi> end_of_rib() const;
};

struct notification_message {
  std::uint8_t code = 0;
  std::uint8_t subcode = 0;
  bytes data;
  friend bool operator==(const notification_message&, const notification_message&) = default;
  std::string to_string() const;  ///< "Cease / Administrative Shutdown"
};

struct keepalive_message {
  friend bool operator==(const keepalive_message&, const keepalive_message&) = default;
};

struct route_refresh_message {
  afi_safi af;
  friend bool operator==(const route_refresh_message&, const route_refresh_message&) = default;
};

using message = std::variant<open_message, update_message, notification_message, keepalive_message, route_refresh_message>;

/// Error codes and subcodes (RFC 4271 §4.5, RFC 4486 for Cease, RFC 5492).
namespace err {
inline constexpr std::uint8_t header = 1, open = 2, update = 3, hold_timer_expired = 4, fsm = 5, cease = 6;
// header
inline constexpr std::uint8_t not_synchronized = 1, bad_length = 2, bad_type = 3;
// open
inline constexpr std::uint8_t unsupported_version = 1, bad_peer_as = 2, bad_bgp_identifier = 3, unsupported_optional_parameter = 4,
                              unacceptable_hold_time = 6, unsupported_capability = 7;
// update
inline constexpr std::uint8_t malformed_attribute_list = 1, unrecognized_well_known = 2, missing_well_known = 3, attribute_flags = 4,
                              attribute_length = 5, invalid_origin = 6, invalid_next_hop = 8, optional_attribute = 9,
                              invalid_network = 10, malformed_as_path = 11;
// cease
inline constexpr std::uint8_t max_prefixes = 1, administrative_shutdown = 2, peer_deconfigured = 3, administrative_reset = 4,
                              connection_rejected = 5, other_configuration_change = 6, connection_collision = 7, out_of_resources = 8;
}  // namespace err

/// Attribute type codes.
namespace attr {
inline constexpr std::uint8_t origin = 1, as_path = 2, next_hop = 3, med = 4, local_pref = 5, atomic_aggregate = 6, aggregator = 7,
                              communities = 8, originator_id = 9, cluster_list = 10, mp_reach_nlri = 14, mp_unreach_nlri = 15,
                              as4_path = 17, as4_aggregator = 18;
inline constexpr std::uint8_t large_community = 32;  // RFC 8092
inline constexpr std::uint8_t optional = 0x80, transitive = 0x40, partial = 0x20, extended_length = 0x10;
}  // namespace attr

/// What decoding needs from the session: whether 4-octet AS numbers were negotiated
/// (both sides sent the capability), which changes the AS_PATH encoding.
///
/// Decoded attributes always hold real (4-octet) AS numbers. With a 2-octet peer
/// (four_octet_as = false, RFC 6793): encode() writes AS_PATH and AGGREGATOR with AS_TRANS
/// for each AS above 65535 and adds AS4_PATH / AS4_AGGREGATOR with the real ones; decode()
/// merges a received AS4_PATH into AS_PATH (§4.2.3) and AS4_AGGREGATOR into AGGREGATOR,
/// discarding a malformed one (RFC 7606 attribute discard). From a 4-octet peer both are
/// ignored. AGGREGATOR is kept in path_attributes::unknown in its 8-octet form.
struct codec_options {
  bool four_octet_as = true;
};

/// The outcome of frame(): the length of the first message, 0 when more bytes are needed.
using frame_result = std::variant<std::size_t, decode_error>;
/// Checks the header at the start of `in` (marker, length bounds, type) without decoding.
frame_result frame(std::span<const std::uint8_t> in);

using decode_result = std::variant<message, decode_error>;
/// Decodes exactly one message (header included).
decode_result decode(std::span<const std::uint8_t> msg, const codec_options& o = {});

bytes encode(const message& m, const codec_options& o = {});

std::string_view to_string(message_type t) noexcept;
/// "UPDATE Message Error / Malformed AS_PATH"
std::string error_name(std::uint8_t code, std::uint8_t subcode);

}  // namespace bgp
CNF_END_NAMESPACE
