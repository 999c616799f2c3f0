#include <cnf/bgp/message.hpp>

#include <algorithm>
#include <cstring>
#include <set>

CNF_BEGIN_NAMESPACE
namespace bgp {

namespace {

constexpr std::uint8_t cap_multiprotocol = 1, cap_route_refresh = 2, cap_graceful_restart = 64, cap_four_octet_as = 65;

// A bounds-checked reader; every read past the end sets `bad` and returns zeros.
struct reader {
  std::span<const std::uint8_t> d;
  std::size_t pos = 0;
  bool bad = false;
  std::size_t left() const { return d.size() - pos; }
  bool has(std::size_t n) const { return left() >= n; }
  std::uint8_t u8() {
    if (!has(1)) { bad = true; return 0; }
    return d[pos++];
  }
  std::uint16_t u16() {
    if (!has(2)) { bad = true; pos = d.size(); return 0; }
    std::uint16_t v = static_cast<std::uint16_t>(d[pos] << 8 | d[pos + 1]);
    pos += 2;
    return v;
  }
  std::uint32_t u32() {
    if (!has(4)) { bad = true; pos = d.size(); return 0; }
    std::uint32_t v = std::uint32_t(d[pos]) << 24 | std::uint32_t(d[pos + 1]) << 16 | std::uint32_t(d[pos + 2]) << 8 | d[pos + 3];
    pos += 4;
    return v;
  }
  std::span<const std::uint8_t> take(std::size_t n) {
    if (!has(n)) { bad = true; pos = d.size(); return {}; }
    auto s = d.subspan(pos, n);
    pos += n;
    return s;
  }
};

struct writer {
  bytes& b;
  void u8(std::uint8_t v) { b.push_back(v); }
  void u16(std::uint16_t v) { b.push_back(std::uint8_t(v >> 8)); b.push_back(std::uint8_t(v)); }
  void u32(std::uint32_t v) { for (int s = 24; s >= 0; s -= 8) b.push_back(std::uint8_t(v >> s)); }
  void put(std::span<const std::uint8_t> s) { b.insert(b.end(), s.begin(), s.end()); }
  void put16_at(std::size_t at, std::uint16_t v) { b[at] = std::uint8_t(v >> 8); b[at + 1] = std::uint8_t(v); }
};

decode_error fail(std::uint8_t code, std::uint8_t sub, std::string field, std::string msg, bytes data = {}) {
  return decode_error{code, sub, std::move(data), std::move(field), std::move(msg)};
}

bytes u16_bytes(std::uint16_t v) { return {std::uint8_t(v >> 8), std::uint8_t(v)}; }

ip_family family_of(afi_safi af) { return af.afi == 2 ? ip_family::v6 : ip_family::v4; }

// One prefix in NLRI encoding: length, then the significant octets.
std::optional<ip_prefix> read_prefix(reader& r, ip_family f, std::string& why) {
  std::uint8_t len = r.u8();
  const unsigned max = f == ip_family::v4 ? 32 : 128;
  if (len > max) { why = "prefix length " + std::to_string(len) + " above " + std::to_string(max); return std::nullopt; }
  std::size_t n = (len + 7u) / 8u;
  if (!r.has(n)) { why = "prefix of length " + std::to_string(len) + " needs " + std::to_string(n) + " octets, " + std::to_string(r.left()) + " left"; return std::nullopt; }
  std::uint8_t buf[16] = {};
  auto s = r.take(n);
  std::memcpy(buf, s.data(), n);
  return ip_prefix(ip_address::from_bytes(f, buf), len).canonical();
}

std::optional<std::vector<ip_prefix>> read_prefixes(std::span<const std::uint8_t> d, ip_family f, std::string& why) {
  reader r{d};
  std::vector<ip_prefix> out;
  while (r.left() > 0) {
    auto p = read_prefix(r, f, why);
    if (!p) return std::nullopt;
    out.push_back(*p);
  }
  return out;
}

void write_prefix(writer& w, const ip_prefix& p) {
  w.u8(static_cast<std::uint8_t>(p.length()));
  auto a = p.network();
  w.put(std::span(a.data(), (p.length() + 7u) / 8u));
}

bool is_well_known(std::uint8_t t) {
  return t == attr::origin || t == attr::as_path || t == attr::next_hop || t == attr::local_pref || t == attr::atomic_aggregate;
}
bool is_optional_transitive(std::uint8_t t) {
  return t == attr::communities || t == attr::aggregator || t == attr::as4_path || t == attr::as4_aggregator || t == attr::large_community;
}
bool is_known(std::uint8_t t) {
  return is_well_known(t) || is_optional_transitive(t) || t == attr::med || t == attr::originator_id || t == attr::cluster_list ||
         t == attr::mp_reach_nlri || t == attr::mp_unreach_nlri;
}

std::string attr_name(std::uint8_t t) {
  switch (t) {
    case attr::origin: return "ORIGIN";
    case attr::as_path: return "AS_PATH";
    case attr::next_hop: return "NEXT_HOP";
    case attr::med: return "MULTI_EXIT_DISC";
    case attr::local_pref: return "LOCAL_PREF";
    case attr::atomic_aggregate: return "ATOMIC_AGGREGATE";
    case attr::aggregator: return "AGGREGATOR";
    case attr::communities: return "COMMUNITIES";
    case attr::originator_id: return "ORIGINATOR_ID";
    case attr::cluster_list: return "CLUSTER_LIST";
    case attr::mp_reach_nlri: return "MP_REACH_NLRI";
    case attr::mp_unreach_nlri: return "MP_UNREACH_NLRI";
    case attr::as4_path: return "AS4_PATH";
    case attr::as4_aggregator: return "AS4_AGGREGATOR";
    case attr::large_community: return "LARGE_COMMUNITY";
    default: return "attribute " + std::to_string(t);
  }
}

// ---- OPEN --------------------------------------------------------------------------

decode_result decode_open(reader& r) {
  open_message m;
  m.four_octet_as = false;
  m.version = r.u8();
  std::uint16_t my_as = r.u16();
  m.hold_time = r.u16();
  m.router_id = r.u32();
  std::uint8_t opt_len = r.u8();
  if (m.version != 4)
    return fail(err::open, err::unsupported_version, "OPEN.version", "version " + std::to_string(m.version) + ", only 4 is spoken", u16_bytes(4));
  if (opt_len != r.left())
    return fail(err::header, err::bad_length, "OPEN.optional_parameters_length",
                "says " + std::to_string(opt_len) + " octets, the message has " + std::to_string(r.left()), {});
  m.asn = my_as;
  reader p{r.take(opt_len)};
  while (p.left() > 0) {
    std::uint8_t type = p.u8();
    std::uint8_t len = p.u8();
    if (p.bad || !p.has(len)) return fail(err::open, 0, "OPEN.optional_parameters", "parameter overruns the parameters field");
    auto val = p.take(len);
    if (type != 2)
      return fail(err::open, err::unsupported_optional_parameter, "OPEN.optional_parameters",
                  "parameter type " + std::to_string(type) + " is not Capabilities (2)");
    reader c{val};
    while (c.left() > 0) {
      std::uint8_t code = c.u8();
      std::uint8_t clen = c.u8();
      if (c.bad || !c.has(clen)) return fail(err::open, 0, "OPEN.capabilities", "capability overruns its parameter");
      reader v{c.take(clen)};
      switch (code) {
        case cap_multiprotocol: {
          if (clen != 4) return fail(err::open, 0, "OPEN.capabilities.multiprotocol", "length " + std::to_string(clen) + ", expected 4");
          afi_safi af;
          af.afi = v.u16();
          v.u8();
          af.safi = v.u8();
          m.multiprotocol.push_back(af);
          break;
        }
        case cap_route_refresh:
          if (clen != 0) return fail(err::open, 0, "OPEN.capabilities.route_refresh", "length " + std::to_string(clen) + ", expected 0");
          m.route_refresh = true;
          break;
        case cap_four_octet_as:
          if (clen != 4) return fail(err::open, 0, "OPEN.capabilities.four_octet_as", "length " + std::to_string(clen) + ", expected 4");
          m.four_octet_as = true;
          m.asn = v.u32();
          break;
        case cap_graceful_restart: {
          if (clen < 2 || (clen - 2) % 4 != 0)
            return fail(err::open, 0, "OPEN.capabilities.graceful_restart", "length " + std::to_string(clen) + ", expected 2 + 4n");
          graceful_restart g;
          std::uint16_t w = v.u16();
          g.restart_state = (w & 0x8000) != 0;
          g.restart_time = w & 0x0fff;
          while (v.left() >= 4) {
            graceful_restart::family f;
            f.af.afi = v.u16();
            f.af.safi = v.u8();
            f.forwarding_preserved = (v.u8() & 0x80) != 0;
            g.families.push_back(f);
          }
          m.restart = std::move(g);
          break;
        }
        default: {
          auto s = val.subspan(0, 0);
          (void)s;
          capability cap{code, {}};
          auto raw = v.take(clen);
          cap.value.assign(raw.begin(), raw.end());
          m.other_capabilities.push_back(std::move(cap));
        }
      }
    }
  }
  if (m.hold_time == 1 || m.hold_time == 2)
    return fail(err::open, err::unacceptable_hold_time, "OPEN.hold_time", "hold time " + std::to_string(m.hold_time) + " s (must be 0 or at least 3)");
  if (m.router_id == 0) return fail(err::open, err::bad_bgp_identifier, "OPEN.bgp_identifier", "BGP identifier 0.0.0.0");
  return message(std::move(m));
}

void encode_open(writer& w, const open_message& m) {
  w.u8(m.version);
  w.u16(m.asn > 0xffff ? as_trans : static_cast<std::uint16_t>(m.asn));
  w.u16(m.hold_time);
  w.u32(m.router_id);
  bytes caps;
  writer c{caps};
  for (auto& af : m.multiprotocol) {
    c.u8(cap_multiprotocol); c.u8(4); c.u16(af.afi); c.u8(0); c.u8(af.safi);
  }
  if (m.route_refresh) { c.u8(cap_route_refresh); c.u8(0); }
  if (m.restart) {
    c.u8(cap_graceful_restart);
    c.u8(static_cast<std::uint8_t>(2 + 4 * m.restart->families.size()));
    c.u16(static_cast<std::uint16_t>((m.restart->restart_state ? 0x8000 : 0) | (m.restart->restart_time & 0x0fff)));
    for (auto& f : m.restart->families) { c.u16(f.af.afi); c.u8(f.af.safi); c.u8(f.forwarding_preserved ? 0x80 : 0); }
  }
  if (m.four_octet_as) { c.u8(cap_four_octet_as); c.u8(4); c.u32(m.asn); }
  for (auto& o : m.other_capabilities) { c.u8(o.code); c.u8(static_cast<std::uint8_t>(o.value.size())); c.put(o.value); }
  if (caps.empty()) {
    w.u8(0);
  } else {
    w.u8(static_cast<std::uint8_t>(caps.size() + 2));
    w.u8(2);
    w.u8(static_cast<std::uint8_t>(caps.size()));
    w.put(caps);
  }
}

// AS_PATH (or AS4_PATH) segments with `as_size`-octet AS numbers.
std::variant<std::vector<as_segment>, decode_error> read_as_path(std::span<const std::uint8_t> v, std::size_t as_size, const std::string& field) {
  reader r{v};
  std::vector<as_segment> path;
  while (r.left() > 0) {
    if (!r.has(2)) return fail(err::update, err::malformed_as_path, field, "segment header truncated", {});
    std::uint8_t t = r.u8();
    std::uint8_t n = r.u8();
    if (t < 1 || t > 4) return fail(err::update, err::malformed_as_path, field, "segment type " + std::to_string(t) + " unknown", {});
    if (n == 0) return fail(err::update, err::malformed_as_path, field, "segment of 0 AS numbers", {});
    if (!r.has(n * as_size))
      return fail(err::update, err::malformed_as_path, field,
                  "segment of " + std::to_string(n) + " AS numbers overruns the attribute (" + std::to_string(as_size) + "-octet AS numbers)", {});
    as_segment s;
    s.type = static_cast<as_segment::kind>(t);
    for (unsigned i = 0; i < n; ++i) s.asns.push_back(as_size == 4 ? r.u32() : r.u16());
    path.push_back(std::move(s));
  }
  return path;
}

// The AS of an AGGREGATOR in its 8-octet form.
std::uint32_t aggregator_as(const raw_attribute& r) {
  return std::uint32_t(r.value[0]) << 24 | std::uint32_t(r.value[1]) << 16 | std::uint32_t(r.value[2]) << 8 | r.value[3];
}

bool is_confed(const as_segment& s) { return s.type == as_segment::kind::confed_sequence || s.type == as_segment::kind::confed_set; }

// RFC 6793 §4.2.3: the real path of a route from a 2-octet speaker. The AS_PATH counts
// n AS numbers, the AS4_PATH m (RFC 4271 §9.1.2.2: a set counts 1, confederation segments 0);
// when m <= n, the leading n - m of AS_PATH are kept (with its confederation segments
// before them) and the AS4_PATH follows. A longer AS4_PATH is ignored.
void merge_as4_path(std::vector<as_segment>& as_path, std::vector<as_segment> as4_path) {
  path_attributes count_n, count_m;
  count_n.as_path = as_path;
  count_m.as_path = as4_path;
  const std::size_t n = count_n.as_path_length(), m = count_m.as_path_length();
  if (m > n) return;
  std::size_t need = n - m;
  std::vector<as_segment> merged;
  for (auto& s : as_path) {
    if (is_confed(s)) { merged.push_back(s); continue; }  // they count 0 and lead the path
    if (need == 0) break;
    if (s.type == as_segment::kind::set) { merged.push_back(s); --need; continue; }
    const std::size_t k = std::min(need, s.asns.size());
    merged.push_back({s.type, std::vector<std::uint32_t>(s.asns.begin(), s.asns.begin() + static_cast<std::ptrdiff_t>(k))});
    need -= k;
  }
  for (auto& s : as4_path) {
    const bool joins = !merged.empty() && merged.back().type == as_segment::kind::sequence && s.type == as_segment::kind::sequence &&
                       merged.back().asns.size() + s.asns.size() <= 255;
    if (joins) merged.back().asns.insert(merged.back().asns.end(), s.asns.begin(), s.asns.end());
    else merged.push_back(std::move(s));
  }
  as_path = std::move(merged);
}

// ---- UPDATE ------------------------------------------------------------------------

struct attr_check {
  std::uint8_t required_flags;  // optional + transitive bits
};

bytes whole_attribute(std::uint8_t flags, std::uint8_t type, std::span<const std::uint8_t> v) {
  bytes b;
  writer w{b};
  w.u8(flags);
  w.u8(type);
  if (flags & attr::extended_length) w.u16(static_cast<std::uint16_t>(v.size()));
  else w.u8(static_cast<std::uint8_t>(v.size()));
  w.put(v);
  return b;
}

// Parses one known attribute's value into `a`. Returns an error when malformed; the caller
// decides between session reset, treat-as-withdraw and attribute discard.
std::optional<decode_error> parse_attribute(std::uint8_t flags, std::uint8_t type, std::span<const std::uint8_t> v, const codec_options& o,
                                            update_message& u) {
  auto& a = u.attrs;
  const std::string field = "UPDATE." + attr_name(type);
  auto whole = [&] { return whole_attribute(flags, type, v); };
  auto length_error = [&](std::string expected) {
    return fail(err::update, err::attribute_length, field, "length " + std::to_string(v.size()) + ", expected " + expected, whole());
  };
  reader r{v};
  switch (type) {
    case attr::origin: {
      if (v.size() != 1) return length_error("1");
      std::uint8_t x = r.u8();
      if (x > 2) return fail(err::update, err::invalid_origin, field, "value " + std::to_string(x) + " is not IGP, EGP or INCOMPLETE", whole());
      a.origin = static_cast<origin_type>(x);
      return std::nullopt;
    }
    case attr::as_path: {
      auto path = read_as_path(v, o.four_octet_as ? 4 : 2, field);
      if (auto* e = std::get_if<decode_error>(&path)) return std::move(*e);
      a.as_path = std::get<std::vector<as_segment>>(std::move(path));
      return std::nullopt;
    }
    case attr::next_hop: {
      if (v.size() != 4) return length_error("4");
      auto nh = ip_address::from_bytes(ip_family::v4, v.data());
      const std::uint8_t first = v[0];
      if (first == 0 || first >= 224)  // 0.0.0.0/8, multicast, class E
        return fail(err::update, err::invalid_next_hop, field, nh.to_string() + " is not a unicast address", whole());
      a.next_hop = nh;
      return std::nullopt;
    }
    case attr::med:
      if (v.size() != 4) return length_error("4");
      a.med = r.u32();
      return std::nullopt;
    case attr::local_pref:
      if (v.size() != 4) return length_error("4");
      a.local_pref = r.u32();
      return std::nullopt;
    case attr::atomic_aggregate:
      if (!v.empty()) return length_error("0");
      a.atomic_aggregate = true;
      return std::nullopt;
    case attr::aggregator: {
      // Kept in the 4-octet form whatever the session speaks (AS, then the aggregator's address).
      if (v.size() != (o.four_octet_as ? 8u : 6u)) return length_error(o.four_octet_as ? "8" : "6");
      bytes wide;
      writer x{wide};
      x.u32(o.four_octet_as ? r.u32() : r.u16());
      x.put(r.take(4));
      a.unknown.push_back({static_cast<std::uint8_t>(flags & ~attr::extended_length), type, std::move(wide)});
      return std::nullopt;
    }
    case attr::communities:
      if (v.empty() || v.size() % 4) return length_error("a non-zero multiple of 4");
      a.communities.clear();
      while (r.left()) a.communities.push_back(r.u32());
      return std::nullopt;
    case attr::large_community:
      // RFC 8092 §5: malformed unless a non-zero multiple of 12 (treat-as-withdraw); duplicates
      // are not an error, and are dropped silently.
      if (v.empty() || v.size() % 12) return length_error("a non-zero multiple of 12");
      a.large_communities.clear();
      while (r.left()) {
        large_community c{r.u32(), r.u32(), r.u32()};
        if (std::find(a.large_communities.begin(), a.large_communities.end(), c) == a.large_communities.end()) a.large_communities.push_back(c);
      }
      return std::nullopt;
    case attr::originator_id:
      if (v.size() != 4) return length_error("4");
      a.originator_id = r.u32();
      return std::nullopt;
    case attr::cluster_list:
      if (v.empty() || v.size() % 4) return length_error("a non-zero multiple of 4");
      a.cluster_list.clear();
      while (r.left()) a.cluster_list.push_back(r.u32());
      return std::nullopt;
    case attr::mp_reach_nlri: {
      mp_reach m;
      m.af.afi = r.u16();
      m.af.safi = r.u8();
      std::uint8_t nhl = r.u8();
      if (r.bad || !r.has(nhl + 1u)) return fail(err::update, err::optional_attribute, field, "next hop overruns the attribute", whole());
      auto nh = r.take(nhl);
      r.u8();  // reserved
      if (m.af != ipv4_unicast && m.af != ipv6_unicast) return std::nullopt;  // a family cnf does not speak: ignored
      const ip_family f = family_of(m.af);
      if (f == ip_family::v4) {
        if (nhl != 4) return fail(err::update, err::optional_attribute, field, "IPv4 next hop of length " + std::to_string(nhl) + ", expected 4", whole());
        m.next_hops.push_back(ip_address::from_bytes(f, nh.data()));
      } else {
        if (nhl != 16 && nhl != 32)
          return fail(err::update, err::optional_attribute, field, "IPv6 next hop of length " + std::to_string(nhl) + ", expected 16 or 32", whole());
        m.next_hops.push_back(ip_address::from_bytes(f, nh.data()));
        if (nhl == 32) m.next_hops.push_back(ip_address::from_bytes(f, nh.data() + 16));
      }
      std::string why;
      auto p = read_prefixes(v.subspan(r.pos), f, why);
      if (!p) return fail(err::update, err::optional_attribute, field + ".nlri", why, whole());
      m.nlri = std::move(*p);
      u.reach = std::move(m);
      return std::nullopt;
    }
    case attr::mp_unreach_nlri: {
      mp_unreach m;
      m.af.afi = r.u16();
      m.af.safi = r.u8();
      if (r.bad) return fail(err::update, err::optional_attribute, field, "shorter than AFI and SAFI", whole());
      if (m.af != ipv4_unicast && m.af != ipv6_unicast) return std::nullopt;
      std::string why;
      auto p = read_prefixes(v.subspan(r.pos), family_of(m.af), why);
      if (!p) return fail(err::update, err::optional_attribute, field + ".withdrawn", why, whole());
      m.withdrawn = std::move(*p);
      u.unreach = std::move(m);
      return std::nullopt;
    }
  }
  return std::nullopt;
}

decode_result decode_update(reader& r, const codec_options& o) {
  update_message u;
  std::uint16_t wlen = r.u16();
  if (!r.has(wlen))
    return fail(err::update, err::malformed_attribute_list, "UPDATE.withdrawn_routes_length",
                "says " + std::to_string(wlen) + " octets, " + std::to_string(r.left()) + " left");
  std::string why;
  auto w = read_prefixes(r.take(wlen), ip_family::v4, why);
  if (!w) return fail(err::update, err::invalid_network, "UPDATE.withdrawn_routes", why);
  u.withdrawn = std::move(*w);
  std::uint16_t alen = r.u16();
  if (r.bad || !r.has(alen))
    return fail(err::update, err::malformed_attribute_list, "UPDATE.total_path_attribute_length",
                "says " + std::to_string(alen) + " octets, " + std::to_string(r.left()) + " left");
  auto attrs = r.take(alen);
  auto n = read_prefixes(r.take(r.left()), ip_family::v4, why);
  if (!n) return fail(err::update, err::invalid_network, "UPDATE.nlri", why);
  u.nlri = std::move(*n);
  u.has_attributes = alen > 0;

  std::optional<decode_error> withdraw;  // the first error that calls for treat-as-withdraw
  std::optional<std::vector<as_segment>> as4_path;  // from a 2-octet speaker (RFC 6793)
  std::optional<bytes> as4_aggregator;
  std::set<std::uint8_t> seen;
  reader a{attrs};
  while (a.left() > 0) {
    const std::size_t start = a.pos;
    std::uint8_t flags = a.u8();
    std::uint8_t type = a.u8();
    std::size_t len = (flags & attr::extended_length) ? a.u16() : a.u8();
    if (a.bad || !a.has(len)) {
      auto e = fail(err::update, err::malformed_attribute_list, "UPDATE." + attr_name(type),
                    "attribute length " + std::to_string(len) + " overruns the path attributes (" + std::to_string(attrs.size() - start) + " octets left)");
      // RFC 7606 §4: the NLRI are still found; only MP_* attributes make it a reset.
      if (u.reach || u.unreach || type == attr::mp_reach_nlri || type == attr::mp_unreach_nlri) return e;
      if (!withdraw) withdraw = e;
      break;
    }
    auto v = a.take(len);
    if (seen.count(type)) {
      if (type == attr::mp_reach_nlri || type == attr::mp_unreach_nlri)
        return fail(err::update, err::malformed_attribute_list, "UPDATE." + attr_name(type), "appears twice");
      u.discarded.push_back(attr_name(type) + ": repeated, the first kept");
      continue;
    }
    seen.insert(type);
    if (!is_known(type)) {
      if (!(flags & attr::optional))
        return fail(err::update, err::unrecognized_well_known, "UPDATE.attribute_type",
                    "well-known attribute type " + std::to_string(type) + " is not recognized", whole_attribute(flags, type, v));
      if (flags & attr::transitive) u.attrs.unknown.push_back({static_cast<std::uint8_t>((flags | attr::partial) & ~attr::extended_length), type, bytes(v.begin(), v.end())});
      continue;
    }
    if (type == attr::as4_path || type == attr::as4_aggregator) {
      // RFC 6793 §6: only a 2-octet speaker's UPDATEs carry them; from a 4-octet one they are
      // discarded. A malformed one is discarded too (attribute discard), never a reset.
      if (o.four_octet_as) continue;
      const std::string field = "UPDATE." + attr_name(type);
      if ((flags & (attr::optional | attr::transitive)) != (attr::optional | attr::transitive)) {
        u.discarded.push_back(field + ".flags: not optional transitive");
        continue;
      }
      if (type == attr::as4_aggregator) {
        if (v.size() != 8) u.discarded.push_back(field + ": length " + std::to_string(v.size()) + ", expected 8");
        else as4_aggregator = bytes(v.begin(), v.end());
        continue;
      }
      auto path = read_as_path(v, 4, field);
      if (auto* e = std::get_if<decode_error>(&path)) {
        u.discarded.push_back(e->field + ": " + e->message);
        continue;
      }
      as4_path = std::get<std::vector<as_segment>>(std::move(path));
      // RFC 6793 §3: confederation segments are invalid in AS4_PATH: dropped, the rest used.
      if (std::erase_if(*as4_path, is_confed) > 0) u.discarded.push_back(field + ": confederation segment(s) dropped");
      continue;
    }
    const std::uint8_t want = is_well_known(type) ? attr::transitive : is_optional_transitive(type) ? (attr::optional | attr::transitive) : attr::optional;
    std::optional<decode_error> e;
    if ((flags & (attr::optional | attr::transitive)) != want) {
      e = fail(err::update, err::attribute_flags, "UPDATE." + attr_name(type) + ".flags",
               "flags 0x" + [&] { char b[3]; std::snprintf(b, sizeof b, "%02x", flags); return std::string(b); }() + " conflict with the attribute's type",
               whole_attribute(flags, type, v));
    } else {
      e = parse_attribute(flags, type, v, o, u);
    }
    if (!e) continue;
    // RFC 7606 §7: how each attribute's errors are handled.
    if (type == attr::mp_reach_nlri || type == attr::mp_unreach_nlri) return *e;
    if (type == attr::atomic_aggregate || type == attr::aggregator) {
      u.discarded.push_back(e->field + ": " + e->message);
      continue;
    }
    if (!withdraw) withdraw = e;
  }
  if (!o.four_octet_as && (as4_path || as4_aggregator)) {
    // RFC 6793 §4.2.3: an AGGREGATOR naming a 2-octet AS other than AS_TRANS means a 2-octet
    // speaker aggregated after the path left 4-octet land: both AS4 attributes are stale.
    auto agg = std::find_if(u.attrs.unknown.begin(), u.attrs.unknown.end(), [](const raw_attribute& r) { return r.type == attr::aggregator; });
    bool stale = false;
    if (agg != u.attrs.unknown.end() && agg->value.size() == 8) {
      if (aggregator_as(*agg) != as_trans) stale = true;
      else if (as4_aggregator) agg->value = *as4_aggregator;
    }
    if (!stale && as4_path && seen.count(attr::as_path)) merge_as4_path(u.attrs.as_path, std::move(*as4_path));
  }
  const bool announces = !u.nlri.empty() || (u.reach && !u.reach->nlri.empty());
  if (announces && !withdraw) {
    auto missing = [&](std::uint8_t t) {
      return fail(err::update, err::missing_well_known, "UPDATE." + attr_name(t), "missing (well-known mandatory)", {t});
    };
    if (!seen.count(attr::origin)) withdraw = missing(attr::origin);
    else if (!seen.count(attr::as_path)) withdraw = missing(attr::as_path);
    else if (!u.nlri.empty() && !seen.count(attr::next_hop)) withdraw = missing(attr::next_hop);
  }
  if (withdraw) {
    u.withdrawn.insert(u.withdrawn.end(), u.nlri.begin(), u.nlri.end());
    u.nlri.clear();
    if (u.reach) {
      if (!u.unreach) u.unreach = mp_unreach{u.reach->af, {}};
      if (u.unreach->af == u.reach->af) u.unreach->withdrawn.insert(u.unreach->withdrawn.end(), u.reach->nlri.begin(), u.reach->nlri.end());
      u.reach.reset();
    }
    u.attrs = {};
    u.has_attributes = false;
    u.withdraw_reason = std::move(withdraw);
  }
  return message(std::move(u));
}

void put_attribute(writer& w, std::uint8_t flags, std::uint8_t type, const bytes& v) {
  if (v.size() > 255) flags |= attr::extended_length;
  else flags &= static_cast<std::uint8_t>(~attr::extended_length);
  w.u8(flags);
  w.u8(type);
  if (flags & attr::extended_length) w.u16(static_cast<std::uint16_t>(v.size()));
  else w.u8(static_cast<std::uint8_t>(v.size()));
  w.put(v);
}

// RFC 6793 §4.2.2: to a 2-octet speaker, AGGREGATOR has a 2-octet AS (AS_TRANS for a big one,
// the real one then goes in AS4_AGGREGATOR). A copy of the attributes when that changes them.
std::optional<path_attributes> with_two_octet_aggregator(const path_attributes& a) {
  auto agg = std::find_if(a.unknown.begin(), a.unknown.end(), [](const raw_attribute& r) { return r.type == attr::aggregator && r.value.size() == 8; });
  if (agg == a.unknown.end()) return std::nullopt;
  path_attributes two = a;
  auto& r = two.unknown[static_cast<std::size_t>(agg - a.unknown.begin())];
  const std::uint32_t asn = aggregator_as(r);
  bytes v;
  writer x{v};
  x.u16(asn > 0xffff ? as_trans : static_cast<std::uint16_t>(asn));
  x.put(std::span(r.value).subspan(4));
  r.value = std::move(v);
  return two;
}

// RFC 6793 §4.2.2: beside the 2-octet AS_PATH, the real path in AS4_PATH when any AS needs 4
// octets (without confederation segments, which never leave the confederation in AS4_PATH),
// and AS4_AGGREGATOR when AGGREGATOR's AS does.
void put_as4_attributes(writer& w, const path_attributes& a) {
  bool big = false;
  for (auto& s : a.as_path)
    if (!is_confed(s))
      for (auto asn : s.asns) big = big || asn > 0xffff;
  if (big) {
    bytes v;
    writer x{v};
    for (auto& s : a.as_path) {
      if (is_confed(s)) continue;
      x.u8(static_cast<std::uint8_t>(s.type));
      x.u8(static_cast<std::uint8_t>(s.asns.size()));
      for (auto asn : s.asns) x.u32(asn);
    }
    put_attribute(w, attr::optional | attr::transitive, attr::as4_path, v);
  }
  for (auto& r : a.unknown)
    if (r.type == attr::aggregator && r.value.size() == 8 && aggregator_as(r) > 0xffff)
      put_attribute(w, attr::optional | attr::transitive, attr::as4_aggregator, r.value);
}

void encode_update(writer& w, const update_message& u, const codec_options& o) {
  const std::size_t wl = w.b.size();
  w.u16(0);
  for (auto& p : u.withdrawn) write_prefix(w, p);
  w.put16_at(wl, static_cast<std::uint16_t>(w.b.size() - wl - 2));
  const std::size_t al = w.b.size();
  w.u16(0);
  const auto two_octet = o.four_octet_as ? std::nullopt : with_two_octet_aggregator(u.attrs);
  const auto& a = two_octet ? *two_octet : u.attrs;
  bytes v;
  writer x{v};
  auto flush = [&](std::uint8_t flags, std::uint8_t type) { put_attribute(w, flags, type, v); v.clear(); };
  if (u.reach) {
    x.u16(u.reach->af.afi); x.u8(u.reach->af.safi);
    x.u8(static_cast<std::uint8_t>(u.reach->next_hops.empty() ? 0 : u.reach->next_hops.size() * u.reach->next_hops.front().size()));
    for (auto& nh : u.reach->next_hops) x.put(std::span(nh.data(), nh.size()));
    x.u8(0);
    for (auto& p : u.reach->nlri) write_prefix(x, p);
    flush(attr::optional, attr::mp_reach_nlri);
  }
  if (u.unreach) {
    x.u16(u.unreach->af.afi); x.u8(u.unreach->af.safi);
    for (auto& p : u.unreach->withdrawn) write_prefix(x, p);
    flush(attr::optional, attr::mp_unreach_nlri);
  }
  if (u.has_attributes) {
    x.u8(static_cast<std::uint8_t>(a.origin));
    flush(attr::transitive, attr::origin);
    for (auto& s : a.as_path) {
      x.u8(static_cast<std::uint8_t>(s.type));
      x.u8(static_cast<std::uint8_t>(s.asns.size()));
      for (auto asn : s.asns) {
        if (o.four_octet_as) x.u32(asn);
        else x.u16(asn > 0xffff ? as_trans : static_cast<std::uint16_t>(asn));
      }
    }
    flush(attr::transitive, attr::as_path);
    if (a.next_hop) { x.put(std::span(a.next_hop->data(), 4)); flush(attr::transitive, attr::next_hop); }
    if (a.med) { x.u32(*a.med); flush(attr::optional, attr::med); }
    if (a.local_pref) { x.u32(*a.local_pref); flush(attr::transitive, attr::local_pref); }
    if (a.atomic_aggregate) flush(attr::transitive, attr::atomic_aggregate);
    if (!a.communities.empty()) { for (auto c : a.communities) x.u32(c); flush(attr::optional | attr::transitive, attr::communities); }
    if (a.originator_id) { x.u32(*a.originator_id); flush(attr::optional, attr::originator_id); }
    if (!a.cluster_list.empty()) { for (auto c : a.cluster_list) x.u32(c); flush(attr::optional, attr::cluster_list); }
    if (!a.large_communities.empty()) {
      std::vector<large_community> sent;  // RFC 8092 §2: a value is never sent twice
      for (auto& c : a.large_communities)
        if (std::find(sent.begin(), sent.end(), c) == sent.end()) {
          sent.push_back(c);
          x.u32(c.global); x.u32(c.local1); x.u32(c.local2);
        }
      flush(attr::optional | attr::transitive, attr::large_community);
    }
    for (auto& r : a.unknown) put_attribute(w, r.flags, r.type, r.value);
    if (!o.four_octet_as) put_as4_attributes(w, u.attrs);
  }
  w.put16_at(al, static_cast<std::uint16_t>(w.b.size() - al - 2));
  for (auto& p : u.nlri) write_prefix(w, p);
}

}  // namespace

std::string large_community::to_string() const {
  return std::to_string(global) + ":" + std::to_string(local1) + ":" + std::to_string(local2);
}

std::string afi_safi::to_string() const {
  if (*this == ipv4_unicast) return "ipv4-unicast";
  if (*this == ipv6_unicast) return "ipv6-unicast";
  return "afi " + std::to_string(afi) + " safi " + std::to_string(safi);
}

std::size_t path_attributes::as_path_length() const noexcept {
  std::size_t n = 0;
  for (auto& s : as_path) {
    if (s.type == as_segment::kind::sequence) n += s.asns.size();
    else if (s.type == as_segment::kind::set) n += 1;
  }
  return n;
}

bool path_attributes::as_path_contains(std::uint32_t asn) const noexcept {
  for (auto& s : as_path)
    if (std::find(s.asns.begin(), s.asns.end(), asn) != s.asns.end()) return true;
  return false;
}

std::uint32_t path_attributes::neighbour_as() const noexcept {
  for (auto& s : as_path)
    if (s.type == as_segment::kind::sequence && !s.asns.empty()) return s.asns.front();
  return 0;
}

std::optional<afi_safi> update_message::end_of_rib() const {
  if (withdrawn.empty() && nlri.empty() && !has_attributes && !reach && !unreach) return ipv4_unicast;
  if (withdrawn.empty() && nlri.empty() && !reach && unreach && unreach->withdrawn.empty()) return unreach->af;
  return std::nullopt;
}

notification_message decode_error::notification() const { return {code, subcode, data}; }

std::string decode_error::to_string() const { return field + ": " + message + " (" + error_name(code, subcode) + ")"; }

std::string notification_message::to_string() const {
  std::string s = error_name(code, subcode);
  if (code == err::cease && (subcode == err::administrative_shutdown || subcode == err::administrative_reset) && !data.empty()) {
    // RFC 9003: a shutdown communication (length, UTF-8 text)
    std::size_t n = std::min<std::size_t>(data[0], data.size() - 1);
    s += ": \"" + std::string(data.begin() + 1, data.begin() + 1 + static_cast<std::ptrdiff_t>(n)) + "\"";
  }
  return s;
}

std::string_view to_string(message_type t) noexcept {
  switch (t) {
    case message_type::open: return "OPEN";
    case message_type::update: return "UPDATE";
    case message_type::notification: return "NOTIFICATION";
    case message_type::keepalive: return "KEEPALIVE";
    case message_type::route_refresh: return "ROUTE-REFRESH";
  }
  return "unknown";
}

std::string error_name(std::uint8_t code, std::uint8_t sub) {
  static const char* const codes[] = {"Error 0", "Message Header Error", "OPEN Message Error", "UPDATE Message Error",
                                      "Hold Timer Expired", "Finite State Machine Error", "Cease"};
  std::string s = code <= 6 ? codes[code] : "Error " + std::to_string(code);
  const char* name = nullptr;
  switch (code) {
    case err::header: {
      static const char* const n[] = {nullptr, "Connection Not Synchronized", "Bad Message Length", "Bad Message Type"};
      if (sub < 4) name = n[sub];
      break;
    }
    case err::open: {
      static const char* const n[] = {nullptr, "Unsupported Version Number", "Bad Peer AS", "Bad BGP Identifier",
                                      "Unsupported Optional Parameter", "Authentication Failure", "Unacceptable Hold Time", "Unsupported Capability"};
      if (sub < 8) name = n[sub];
      break;
    }
    case err::update: {
      static const char* const n[] = {nullptr, "Malformed Attribute List", "Unrecognized Well-known Attribute", "Missing Well-known Attribute",
                                      "Attribute Flags Error", "Attribute Length Error", "Invalid ORIGIN Attribute", "AS Routing Loop",
                                      "Invalid NEXT_HOP Attribute", "Optional Attribute Error", "Invalid Network Field", "Malformed AS_PATH"};
      if (sub < 12) name = n[sub];
      break;
    }
    case err::cease: {
      static const char* const n[] = {nullptr, "Maximum Number of Prefixes Reached", "Administrative Shutdown", "Peer De-configured",
                                      "Administrative Reset", "Connection Rejected", "Other Configuration Change",
                                      "Connection Collision Resolution", "Out of Resources"};
      if (sub < 9) name = n[sub];
      break;
    }
    default: break;
  }
  if (name) s += std::string(" / ") + name;
  else if (sub) s += " / subcode " + std::to_string(sub);
  return s;
}

frame_result frame(std::span<const std::uint8_t> in) {
  if (in.size() < header_size) return std::size_t{0};
  for (std::size_t i = 0; i < 16; ++i)
    if (in[i] != 0xff) return fail(err::header, err::not_synchronized, "header.marker", "octet " + std::to_string(i) + " of the marker is not 0xff");
  const std::uint16_t len = static_cast<std::uint16_t>(in[16] << 8 | in[17]);
  const std::uint8_t type = in[18];
  auto bad_len = [&](std::string why) {
    return fail(err::header, err::bad_length, "header.length", "length " + std::to_string(len) + " " + why, u16_bytes(len));
  };
  if (len < header_size || len > max_message_size) return bad_len("outside 19..4096");
  std::size_t min = 0, max = max_message_size;
  switch (type) {
    case 1: min = 29; break;
    case 2: min = 23; break;
    case 3: min = 21; break;
    case 4: min = max = 19; break;
    case 5: min = max = 23; break;
    default:
      return fail(err::header, err::bad_type, "header.type", "type " + std::to_string(type) + " is not a BGP message type", bytes{type});
  }
  if (len < min || len > max)
    return bad_len(std::string("is wrong for ") + std::string(to_string(static_cast<message_type>(type))) +
                   (min == max ? " (exactly " + std::to_string(min) + ")" : " (at least " + std::to_string(min) + ")"));
  return in.size() >= len ? std::size_t{len} : std::size_t{0};
}

decode_result decode(std::span<const std::uint8_t> msg, const codec_options& o) {
  auto f = frame(msg);
  if (auto* e = std::get_if<decode_error>(&f)) return *e;
  const std::size_t len = std::get<std::size_t>(f);
  if (len == 0 || len != msg.size())
    return fail(err::header, err::bad_length, "header.length",
                "says " + std::to_string(msg.size() >= 18 ? (msg[16] << 8 | msg[17]) : 0) + " octets, the message has " + std::to_string(msg.size()),
                msg.size() >= 18 ? bytes{msg[16], msg[17]} : bytes{});
  reader r{msg.subspan(header_size)};
  switch (static_cast<message_type>(msg[18])) {
    case message_type::open: return decode_open(r);
    case message_type::update: return decode_update(r, o);
    case message_type::notification: {
      notification_message n;
      n.code = r.u8();
      n.subcode = r.u8();
      auto d = r.take(r.left());
      n.data.assign(d.begin(), d.end());
      return message(std::move(n));
    }
    case message_type::keepalive: return message(keepalive_message{});
    case message_type::route_refresh: {
      route_refresh_message m;
      m.af.afi = r.u16();
      r.u8();
      m.af.safi = r.u8();
      return message(m);
    }
  }
  return fail(err::header, err::bad_type, "header.type", "unknown type", bytes{msg[18]});
}

bytes encode(const message& m, const codec_options& o) {
  bytes b(header_size, 0xff);
  writer w{b};
  const auto type = static_cast<message_type>(m.index() + 1);
  b[18] = static_cast<std::uint8_t>(type);
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, open_message>) encode_open(w, x);
        else if constexpr (std::is_same_v<T, update_message>) encode_update(w, x, o);
        else if constexpr (std::is_same_v<T, notification_message>) { w.u8(x.code); w.u8(x.subcode); w.put(x.data); }
        else if constexpr (std::is_same_v<T, route_refresh_message>) { w.u16(x.af.afi); w.u8(0); w.u8(x.af.safi); }
      },
      m);
  w.put16_at(16, static_cast<std::uint16_t>(b.size()));
  return b;
}

}  // namespace bgp
CNF_END_NAMESPACE
