// cnf/plugins/host-local.hpp — IPAM from fixed ranges, like the reference CNI host-local
// plugin, with its state in the cnf datastore instead of files under a lock.
//
// Configuration (the profile's [ipam] section, or a CNI `ipam` object, see below):
//
//   [ipam]
//   plugin = "host-local"
//   ranges = [
//     [ { subnet = "10.22.0.0/24", rangeStart = "10.22.0.10", rangeEnd = "10.22.0.200", gateway = "10.22.0.1" },
//       { subnet = "10.23.0.0/24" } ],            # one range set: one IPv4 address per assignment
//     [ { subnet = "fd00:22::/64" } ],             # another range set: one IPv6 address
//   ]
//   reserved = ["10.22.0.50", "10.23.0.128/28"]  # never handed out (addresses or CIDRs)
//   scope = "default"                            # name space of the allocations (see below)
//   orphan_grace_seconds = 60                    # gc: age before an unlisted allocation is released
//   parallel_writes = true                       # independent writes at once (shared fsyncs);
//                                                # default: on, off over a memory_datastore
//
// A range set holds ranges of one family; an assignment takes at most one address from
// each range set (as the reference plugin does). `[[ipam.ranges]]` tables are accepted
// too, each one a range set of a single range. Defaults per range: rangeStart = network+1,
// rangeEnd = broadcast-1 (IPv4) or the last address (IPv6), gateway = network+1; the
// gateway is never handed out. Errors name the key path, e.g. ipam.ranges[0][1].rangeStart.
//
// CNI network config: config_from_json() reads the same plan from a CNI `ipam` object
// ({"type": "cnf", "ranges": [[{"subnet": ...}]], "reserved": [...], "scope": ...}, or
// the reference plugin's single-range form with subnet/rangeStart/rangeEnd/gateway at the
// top). Precedence: when the object carries `ranges` (or `subnet`), the address plan
// (ranges and reserved) comes from it alone and the profile's ranges and reserved are not
// used; `scope` and `orphanGraceSeconds` from the object override the profile's. Without
// ranges in the object, the profile's plan is used and the object may not carry
// `reserved` (it would have nothing to apply to).
//
// State in the datastore (cluster-scoped kinds; names start with "<scope>."):
//   HostLocalAllocation  one per address in use, name <scope>.<address> (':' written as
//                        '-'); made with create(), so two processes never get one address.
//                        spec: {address, handle, node, range, attributes, created}
//   HostLocalHandle      one per handle, name <scope>.<handle>; lists the handle's
//                        addresses with the revision each allocation was created at, so
//                        releasing a handle is one get plus one remove per address, and a
//                        stale handle can never release an address someone else got since.
//   HostLocalCursor      one per node, name <scope>.<node>: the last address handed out per
//                        range set (the reference plugin's "last reserved IP"), written
//                        best-effort after each assignment; a lost compare-and-swap on it is
//                        ignored, so it never makes concurrent assignments wait on each other.
// An assignment costs: get cursor, create allocation(s), then create handle and update
// cursor; a release: get handle, remove allocation(s), remove handle. With parallel_writes
// the writes of each step go out at once, so on the local datastore a single-stack assign
// waits for two flushes and a dual-stack one too, a release for two.
// A crash between creating allocations and the handle leaves allocations no handle lists;
// gc() releases those once older than orphan_grace_seconds.
//
//   cnf::memory_datastore ds;
//   auto cfg = cnf::host_local::parse_config(toml_text, "profile.toml", "ipam").value();
//   cnf::host_local_ipam ipam(ds, cfg, "node-1");
//   cnf::assign_request req;  req.handle = "net.c1";  req.num_v4 = 1;
//   auto ips = ipam.assign(req);
#pragma once
#include <cnf/datastore.hpp>
#include <cnf/ipam.hpp>
#include <cnf/log.hpp>
#include <cnf/net.hpp>

#include <boost/json/fwd.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE
class settings;  // <cnf/settings.hpp>, kept out of this header (toml++ is heavy)

namespace host_local {

inline constexpr std::string_view allocation_kind = "HostLocalAllocation";
inline constexpr std::string_view handle_kind = "HostLocalHandle";
inline constexpr std::string_view cursor_kind = "HostLocalCursor";

/// One range, with its defaults filled in.
struct range {
  ip_prefix subnet;
  ip_address range_start;
  ip_address range_end;
  ip_address gateway;

  /// Between range_start and range_end (the gateway and reserved addresses included).
  bool contains(const ip_address& a) const noexcept {
    return a.family() == subnet.family() && range_start <= a && a <= range_end;
  }
  /// "10.22.0.0/24 (10.22.0.10-10.22.0.200)"
  std::string to_string() const {
    return subnet.to_string() + " (" + range_start.to_string() + "-" + range_end.to_string() + ")";
  }
  friend bool operator==(const range&, const range&) = default;
};

/// Ranges of one family; an assignment takes at most one address from a range set.
struct range_set {
  std::vector<range> ranges;
  ip_family family() const noexcept { return ranges.empty() ? ip_family::v4 : ranges.front().subnet.family(); }
  std::string to_string() const;
  friend bool operator==(const range_set&, const range_set&) = default;
};

struct config {
  std::vector<range_set> ranges;
  std::vector<ip_prefix> reserved;   ///< single addresses are /32 or /128
  std::string scope = "default";     ///< [a-z0-9-], at most 63 characters
  std::chrono::seconds orphan_grace{60};
  /// Issue the independent writes of one assign or release at once (threads), so a store
  /// that shares a flush between concurrent writers (local) pays one fsync, not several.
  /// Off: one after the other (cheaper for an in-memory store, where a write costs less
  /// than starting a thread). Unset: on, except over a cnf::memory_datastore.
  std::optional<bool> parallel_writes;

  /// How many range sets of this family: an assignment gets one address from each
  /// (num_v4 / num_v6 of an assign_request that wants the reference plugin's behaviour).
  unsigned range_sets(ip_family f) const noexcept;
  bool is_reserved(const ip_address& a) const noexcept;
  friend bool operator==(const config&, const config&) = default;
};

/// Reads and validates the section `s` (the plugin's configure step). Problems are recorded
/// in `s` with their key path; the host reports them after s.finish().
config read_config(settings& s);

/// Parses a whole profile's TOML text and reads `section` (for static composition).
result<config> parse_config(std::string_view toml_text, std::string_view file = "profile", std::string_view section = "ipam");

/// Reads a CNI `ipam` object; keys it does not carry come from `base` (precedence above).
/// `path` prefixes key paths in errors ("ipam.ranges[0][1].rangeStart: ..."). Errors are
/// errc::invalid, one line per problem.
result<config> config_from_json(const boost::json::object& ipam, const config& base = {}, std::string_view path = "ipam");

/// Checks a configuration built in code (families, bounds, scope); read_config() and
/// config_from_json() results always pass. host_local_ipam's constructor calls it.
result<void> check_config(const config& c);

/// The configuration as the body of a TOML table (keys ranges, reserved, scope,
/// orphan_grace_seconds, parallel_writes), e.g. to pass a CNI-derived plan through the plugin loader:
///   "[ipam]\nplugin = \"host-local\"\n" + to_toml(cfg)
std::string to_toml(const config& c);

/// The name an address's HostLocalAllocation has in `scope`.
std::string allocation_name(std::string_view scope, const ip_address& a);
/// The name a handle's HostLocalHandle has in `scope`.
std::string handle_name(std::string_view scope, std::string_view handle);

struct state;

}  // namespace host_local

/// The host-local IPAM. Models cnf::ipam; copies share their configuration. Thread-safe:
/// any number of threads and processes may use one datastore at once.
class host_local_ipam {
 public:
  /// Throws cnf::error_exception (errc::invalid) for an empty datastore or a configuration
  /// that check_config() refuses.
  host_local_ipam(any_datastore ds, host_local::config cfg, std::string node = {}, logger* log = nullptr);

  /// Addresses for req.handle: every req.requested address (each must lie in a range,
  /// not reserved, not a gateway, not in use: errc::invalid / errc::already_exists), then
  /// up to num_v4 / num_v6 addresses in all, one per range set of that family not used by
  /// a requested address, in configuration order, only from range sets with a range
  /// inside req.pools_v4 / pools_v6 when those are given. Round-robin after the node's
  /// last assignment. A full range set: errc::exhausted naming it. A handle that already
  /// holds addresses: errc::already_exists. Any failure releases what was taken.
  result<std::vector<assigned_address>> assign(const assign_request& req) const;
  /// Releases every address of the handle; a handle that holds nothing is not an error.
  result<void> release_handle(std::string_view handle) const;
  /// Releases single addresses (and drops them from their handles); unknown ones are skipped.
  result<void> release_addresses(std::span<const ip_address> addresses) const;
  /// Per range: assignable addresses (without gateway and reserved) and how many are in use.
  result<ipam_usage> usage() const;
  /// Every address in use in this scope, with its handle and attributes.
  result<std::vector<allocation>> allocations() const;
  /// Releases every handle starting with `prefix` that is not in `valid` (at once), and
  /// allocations of handles starting with `prefix` that no handle lists (left by a crash
  /// between the two writes of an assign) once older than orphan_grace, whether or not the
  /// handle is valid: younger ones may belong to an assign still in flight.
  result<gc_report> gc(std::string_view prefix, const std::set<std::string>& valid) const;

  /// The addresses the handle holds, sorted (empty when it holds none).
  result<std::vector<ip_address>> addresses_of(std::string_view handle) const;
  /// The node's tunnel address under handle tunnel_handle(k, node): the one it holds, else
  /// a new one from the first range set of that family. Needs the node's name.
  result<assigned_address> assign_tunnel_address(tunnel_kind k, ip_family f) const;
  result<void> release_tunnel_address(tunnel_kind k) const;

  const host_local::config& configuration() const noexcept;
  /// Whether independent writes go out at once (config.parallel_writes, resolved).
  bool writes_in_parallel() const noexcept;

 private:
  std::shared_ptr<const host_local::state> s_;
};

static_assert(ipam<host_local_ipam>);

CNF_END_NAMESPACE
