// cnf/node.hpp — what a part needs to know about the node it runs on.
#pragma once
#include <cnf/net.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

CNF_BEGIN_NAMESPACE

struct node_info {
  std::string name;
  std::vector<ip_prefix> addresses;  ///< the node's own addresses, with their subnet lengths
  std::uint32_t asn = 0;             ///< BGP AS number, 0 when not routing with BGP
  std::string router_id;
  std::map<std::string, std::string> labels;
};

CNF_END_NAMESPACE
