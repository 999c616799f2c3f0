// cnf/node.hpp — what a part needs to know about the node it runs on, and about the
// other nodes of the cluster.
//
// The agent builds both from the datastore's Node resources (cnf/model/node.hpp) and the
// IPAM blocks affine to each node; parts never read the datastore for them.
#pragma once
#include <cnf/net.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

CNF_BEGIN_NAMESPACE

struct node_info {
  std::string name;
  std::vector<ip_prefix> addresses;  ///< the node's own addresses, with their subnet lengths
  std::uint32_t asn = 0;             ///< BGP AS number, 0 when not routing with BGP
  std::string router_id;
  std::map<std::string, std::string> labels;
  /// This node's tunnel endpoints once the host has them (assigned through IPAM, written on
  /// its Node): spec.ipv4VXLANTunnelAddr, spec.vxlanTunnelMACAddr, spec.bgp.ipv4IPIPTunnelAddr,
  /// and for IPv6 pools spec.ipv6VXLANTunnelAddr, spec.vxlanTunnelMACAddrV6.
  std::optional<ip_address> vxlan_tunnel_address;
  std::optional<mac_address> vxlan_tunnel_mac;
  std::optional<ip_address> vxlan_tunnel_address_v6;
  std::optional<mac_address> vxlan_tunnel_mac_v6;
  std::optional<ip_address> ipip_tunnel_address;
  friend bool operator==(const node_info&, const node_info&) = default;
};

/// Another node of the cluster, as routing and encapsulation see it.
struct remote_node {
  std::string name;
  std::vector<ip_prefix> addresses;             ///< underlay addresses with subnet lengths (spec.bgp.ipv4Address, ipv6Address)
  std::vector<ip_prefix> pod_cidrs;             ///< the IPAM blocks affine to it
  std::optional<ip_address> ipip_tunnel_address;   ///< spec.bgp.ipv4IPIPTunnelAddr
  std::optional<ip_address> vxlan_tunnel_address;  ///< spec.ipv4VXLANTunnelAddr
  std::optional<ip_address> vxlan_tunnel_address_v6;  ///< spec.ipv6VXLANTunnelAddr
  std::optional<mac_address> vxlan_tunnel_mac;     ///< spec.vxlanTunnelMACAddr
  std::optional<mac_address> vxlan_tunnel_mac_v6;  ///< spec.vxlanTunnelMACAddrV6
  std::uint32_t asn = 0;                        ///< spec.bgp.asNumber; 0: the cluster's default
  std::map<std::string, std::string> labels;

  /// The node's underlay address of a family, if it has one.
  std::optional<ip_address> address(ip_family f = ip_family::v4) const {
    for (auto& a : addresses)
      if (a.family() == f) return a.address();
    return std::nullopt;
  }
  friend bool operator==(const remote_node&, const remote_node&) = default;
};

CNF_END_NAMESPACE
