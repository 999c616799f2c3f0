// cnf/bgp/rib.hpp — the paths a speaker knows and the decision process (RFC 4271 §9.1).
//
// One table holds every peer's Adj-RIB-In (one path per peer and prefix, attributes
// shared between the prefixes of one UPDATE) and the Loc-RIB (the best path of each
// prefix, plus the paths equal to it for multipath). Paths of this speaker itself
// (peer 0, the prefixes it originates) always win.
//
// The decision, in order: higher LOCAL_PREF; shorter AS_PATH; lower ORIGIN; lower MED
// (between paths from the same neighbouring AS); eBGP over iBGP; then, to break ties,
// lower router id (ORIGINATOR_ID when reflected), shorter CLUSTER_LIST, lower peer
// address. Paths equal up to and including the eBGP/iBGP step are multipath (ECMP).
#pragma once
#include <cnf/bgp/message.hpp>

#include <map>
#include <memory>
#include <string>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace bgp {

using peer_id = std::uint32_t;  ///< 0: this speaker
inline constexpr peer_id local_peer = 0;

struct path {
  peer_id from = local_peer;
  ip_address peer_address;
  std::uint32_t peer_router_id = 0;
  bool ebgp = false;
  bool from_client = false;  ///< learned from a route-reflector client of this speaker
  bool stale = false;        ///< kept through the peer's graceful restart (RFC 4724)
  std::shared_ptr<const path_attributes> attrs;
  ip_address next_hop;
};

enum class decision_step { none, local, local_pref, as_path, origin, med, ebgp, router_id, cluster_list, peer_address };
std::string_view to_string(decision_step s) noexcept;

/// Negative when `a` is better, positive when `b` is; `step` names the step that decided.
int compare(const path& a, const path& b, decision_step* step = nullptr);
/// Whether `b` may share a multipath route with the best path `a`.
bool multipath_equal(const path& a, const path& b);

class rib {
 public:
  struct entry {
    std::vector<path> paths;  ///< best first
    std::size_t multipath = 0;  ///< the first `multipath` paths form the best set (0: no path)
  };

  /// Adds or replaces `p.from`'s path; true when the best set of the prefix changed.
  bool update(const ip_prefix& prefix, path p);
  /// Removes `from`'s path; true when the best set changed.
  bool withdraw(const ip_prefix& prefix, peer_id from);
  /// Removes every path of `from`; returns the prefixes whose best set changed.
  std::vector<ip_prefix> drop_peer(peer_id from);

  /// The best set of a prefix (empty when none), best first.
  std::span<const path> best(const ip_prefix& prefix) const;
  const entry* find(const ip_prefix& prefix) const;
  const std::map<ip_prefix, entry>& entries() const noexcept { return table_; }
  std::size_t paths_of(peer_id from) const;  ///< the size of one peer's Adj-RIB-In
  /// Marks every path of `from` stale (its session went down in a graceful restart).
  void mark_stale(peer_id from);
  /// Removes the paths of `from` still stale, in one family or all; returns the prefixes
  /// whose best set changed.
  std::vector<ip_prefix> drop_stale(peer_id from, std::optional<ip_family> family = std::nullopt);
  std::size_t stale_of(peer_id from) const;

  bool multipath_enabled = true;

 private:
  bool reselect(entry& e);
  std::map<ip_prefix, entry> table_;
};

}  // namespace bgp
CNF_END_NAMESPACE
