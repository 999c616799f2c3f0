// The vxlan encapsulation part as a cnf plugin: [encapsulation] plugin = "vxlan".
#include <cnf/netlink/link.hpp>
#include <cnf/plugin.hpp>
#include <cnf/plugins/vxlan.hpp>

namespace {

cnf::vxlan::config configure(cnf::settings& s) {
  cnf::vxlan::config c;
  c.device = s.get<std::string>("device", c.device);
  if (auto v = cnf::netlink::validate_ifname(c.device); !v) s.fail("device", v.error().message);
  c.device_v6 = s.get<std::string>("device_v6", c.device_v6);
  if (auto v = cnf::netlink::validate_ifname(c.device_v6); !v) s.fail("device_v6", v.error().message);
  else if (c.device_v6 == c.device) s.fail("device_v6", "must differ from device ('" + c.device + "'): IPv4 and IPv6 have a device each");
  const auto vni = s.get<std::int64_t>("vni", c.vni);
  if (vni < 1 || vni > 16777215) s.fail("vni", "must be between 1 and 16777215 (24 bits)");
  else c.vni = static_cast<std::uint32_t>(vni);
  const auto port = s.get<std::int64_t>("port", c.port);
  if (port < 1 || port > 65535) s.fail("port", "must be a UDP port, 1 to 65535");
  else c.port = static_cast<std::uint16_t>(port);
  const auto mtu = s.get<std::int64_t>("mtu", 0);
  if (mtu != 0 && (mtu < 576 || mtu > 65485)) s.fail("mtu", "must be 0 (the uplink's MTU - 50) or between 576 and 65485");
  else c.mtu = static_cast<unsigned>(mtu);
  const auto mtu6 = s.get<std::int64_t>("mtu_v6", 0);
  if (mtu6 != 0 && (mtu6 < 1280 || mtu6 > 65465)) s.fail("mtu_v6", "must be 0 (the IPv6 uplink's MTU - 70) or between 1280 and 65465");
  else c.mtu_v6 = static_cast<unsigned>(mtu6);
  if (auto m = s.get_optional<std::string>("mode")) {
    if (auto p = cnf::vxlan::parse_mode(*m, "mode")) c.mode = *p;
    else s.fail("mode", "'" + *m + "' is not a mode; expected Always, CrossSubnet or Never");
  }
  return c;
}

cnf::vxlan::encapsulation create(const cnf::plugin_context& ctx, cnf::vxlan::config c) { return cnf::vxlan::encapsulation(std::move(c), ctx.log); }

}  // namespace

CNF_PLUGIN(encapsulation, "vxlan", "0.1.0", configure, create);
