// The ipip encapsulation part as a cnf plugin: [encapsulation] plugin = "ipip".
#include <cnf/encap_decision.hpp>
#include <cnf/netlink/link.hpp>
#include <cnf/plugin.hpp>
#include <cnf/plugins/ipip.hpp>

namespace {

cnf::ipip::config configure(cnf::settings& s) {
  cnf::ipip::config c;
  c.device = s.get<std::string>("device", c.device);
  if (auto v = cnf::netlink::validate_ifname(c.device); !v) s.fail("device", v.error().message);
  const auto path = s.get<std::string>("datapath", "auto");
  if (auto p = cnf::ipip::parse_datapath(path, "datapath")) c.path = *p;
  else s.fail("datapath", "'" + path + "' is not a datapath; expected auto, kernel or ebpf");
  const auto mtu = s.get<std::int64_t>("mtu", 0);
  if (mtu != 0 && (mtu < 576 || mtu > 65515)) s.fail("mtu", "must be 0 (the uplink's MTU - 20) or between 576 and 65515");
  else c.mtu = static_cast<unsigned>(mtu);
  if (auto m = s.get_optional<std::string>("mode")) {
    if (auto p = cnf::parse_encap_mode(*m, "mode")) c.mode = *p;
    else s.fail("mode", "'" + *m + "' is not a mode; expected Always, CrossSubnet or Never");
  }
  return c;
}

cnf::ipip::encapsulation create(const cnf::plugin_context& ctx, cnf::ipip::config c) { return cnf::ipip::encapsulation(std::move(c), ctx.log); }

}  // namespace

CNF_PLUGIN(encapsulation, "ipip", "0.1.0", configure, create);
