// cnf/plugins/direct.hpp — the `direct` routing part (host-gw, as flannel calls it).
//
// Each remote node's blocks are routed via that node's underlay address, when the address
// lies on a subnet this node is connected to (one of this node's own addresses with its
// prefix length). Other nodes cannot be reached that way: they are reported, never routed
// (an encapsulation part, or BGP through a router, is what reaches them). Nothing is
// advertised: the other nodes read this node's blocks from the datastore themselves.
//
//   [routing]
//   plugin = "direct"
//
// The decision is a pure function (decide), so it is tested without a kernel; the part
// keeps the remote nodes, calls decide on each change and reports to the host's sink.
#pragma once
#include <cnf/routing.hpp>

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace direct {

/// How one remote node is reached: `via` its address on a connected subnet, or not.
struct decision {
  std::optional<ip_address> via_v4, via_v6;
  std::string reason;  ///< why not, when neither family is reachable
  bool reachable() const noexcept { return via_v4 || via_v6; }
};

/// The pure decision: for each family of the remote node's addresses, reachable when one of
/// `self`'s addresses of that family has a subnet containing it (and it is not self's own).
decision decide(const node_info& self, const remote_node& r);

/// The routes a decision gives: each block of the node, via the address of its family.
std::vector<learned_route> routes_for(const remote_node& r, const decision& d);

class routing {
 public:
  void start(const node_info& self, routing_sink& sink);
  void set_node(const node_info& self);
  void upsert_node(const remote_node& r);
  void remove_node(std::string_view name);
  void upsert_peer(const peer_config&) {}   // direct has no peers beyond the nodes
  void remove_peer(std::string_view) {}
  void advertise(const ip_prefix&) {}       // the datastore carries this node's blocks
  void withdraw(const ip_prefix&) {}
  routing_status status() const;
  void stop();

 private:
  struct entry {
    remote_node node;
    decision d;
    std::vector<learned_route> routes;
  };
  void refresh(entry& e);
  void drop(entry& e);
  node_info self_;
  routing_sink* sink_ = nullptr;
  std::map<std::string, entry, std::less<>> nodes_;
};

}  // namespace direct
CNF_END_NAMESPACE
