// host-local configuration: reading ranges from TOML (profile) or JSON (CNI ipam object)
// into one raw form, and one validation for both, so both report the same problems under
// the same key paths.
#include <cnf/plugins/host-local.hpp>
#include <cnf/settings.hpp>

#include "detail.hpp"

#include <boost/json.hpp>

#include <functional>

CNF_BEGIN_NAMESPACE
namespace host_local {

std::string range_set::to_string() const {
  std::string s;
  for (auto& r : ranges) s += (s.empty() ? "" : ", ") + r.to_string();
  return s;
}

unsigned config::range_sets(ip_family f) const noexcept {
  unsigned n = 0;
  for (auto& rs : ranges)
    if (!rs.ranges.empty() && rs.family() == f) ++n;
  return n;
}

bool config::is_reserved(const ip_address& a) const noexcept {
  for (auto& p : reserved)
    if (p.contains(a)) return true;
  return false;
}

namespace {

const std::set<std::string> range_keys = {"subnet", "rangeStart", "rangeEnd", "gateway"};

// A value from either source; `where` is the toml::node (for file:line:column) or null.
struct raw_field {
  std::optional<std::string> value;
  const void* where = nullptr;
  bool wrong_type = false;  // present but not a string: reported already
};
struct raw_range {
  std::string path;  // "ranges[0][1]"
  const void* where = nullptr;
  raw_field subnet, start, end, gateway;
};
struct raw_set {
  std::string path;  // "ranges[0]"
  const void* where = nullptr;
  std::vector<raw_range> ranges;
};
struct raw_reserved {
  std::string path;  // "reserved[2]"
  const void* where = nullptr;
  std::string value;
};

using sink = std::function<void(const void* where, const std::string& path, const std::string& message)>;

std::string family_name(ip_family f) { return f == ip_family::v4 ? "IPv4" : "IPv6"; }

// Parses one optional address of a range; checks family and subnet membership.
std::optional<ip_address> read_address(const raw_field& f, const std::string& path, const ip_prefix& subnet, const sink& bad) {
  auto a = ip_address::parse(*f.value);
  if (!a) {
    bad(f.where, path, "'" + *f.value + "' is not an IP address");
    return std::nullopt;
  }
  if (a->family() != subnet.family()) {
    bad(f.where, path, a->to_string() + " is an " + family_name(a->family()) + " address, but subnet " + subnet.to_string() +
                           " is " + family_name(subnet.family()));
    return std::nullopt;
  }
  if (!subnet.contains(*a)) {
    bad(f.where, path, a->to_string() + " is outside subnet " + subnet.to_string());
    return std::nullopt;
  }
  return *a;
}

struct placed {
  range r;
  std::string path;
  const void* where;
};

// Validates raw ranges and reserved entries into `out`; returns false on any problem.
// `shown` prefixes key paths quoted inside messages ("ipam.").
bool build(const std::vector<raw_set>& sets, const std::vector<raw_reserved>& reserved, config& out, const sink& bad,
           const std::string& shown) {
  using detail::from_u128;
  using detail::to_u128;
  bool ok = true;
  auto fail = [&](const void* w, const std::string& p, const std::string& m) {
    ok = false;
    bad(w, p, m);
  };
  std::vector<placed> all;
  std::vector<range_set> result_sets;
  for (auto& s : sets) {
    if (s.ranges.empty()) {
      fail(s.where, s.path, "a range set needs at least one range, e.g. [{ subnet = \"10.22.0.0/24\" }]");
      continue;
    }
    range_set rs;
    std::optional<ip_family> fam;
    std::string fam_from;
    for (auto& rr : s.ranges) {
      if (rr.subnet.wrong_type || rr.start.wrong_type || rr.end.wrong_type || rr.gateway.wrong_type) {
        ok = false;
        continue;
      }
      if (!rr.subnet.value) {
        fail(rr.where, rr.path + ".subnet", "is required");
        continue;
      }
      auto sub = ip_prefix::parse(*rr.subnet.value);
      if (!sub) {
        fail(rr.subnet.where, rr.path + ".subnet", sub.error().message);
        continue;
      }
      const ip_prefix subnet = *sub;
      const ip_family f = subnet.family();
      if (subnet.length() + 2 > subnet.address().bits()) {
        fail(rr.subnet.where, rr.path + ".subnet",
             "network " + subnet.to_string() + " is too small to allocate from (at most /" +
                 std::to_string(subnet.address().bits() - 2) + ")");
        continue;
      }
      const detail::u128 net = detail::first_of(subnet), last = detail::last_of(subnet);
      range r;
      r.subnet = subnet;
      bool range_ok = true;
      r.range_start = from_u128(f, net + 1);
      if (rr.start.value) {
        std::string p = rr.path + ".rangeStart";
        if (auto a = read_address(rr.start, p, subnet, fail)) {
          if (to_u128(*a) == net) {
            fail(rr.start.where, p, a->to_string() + " is the network address of " + subnet.to_string());
            range_ok = false;
          } else if (f == ip_family::v4 && to_u128(*a) == last) {
            fail(rr.start.where, p, a->to_string() + " is the broadcast address of " + subnet.to_string());
            range_ok = false;
          } else {
            r.range_start = *a;
          }
        } else {
          range_ok = false;
        }
      }
      r.range_end = from_u128(f, f == ip_family::v4 ? last - 1 : last);
      if (rr.end.value) {
        std::string p = rr.path + ".rangeEnd";
        if (auto a = read_address(rr.end, p, subnet, fail)) {
          if (to_u128(*a) == net) {
            fail(rr.end.where, p, a->to_string() + " is the network address of " + subnet.to_string());
            range_ok = false;
          } else if (f == ip_family::v4 && to_u128(*a) == last) {
            fail(rr.end.where, p, a->to_string() + " is the broadcast address of " + subnet.to_string());
            range_ok = false;
          } else {
            r.range_end = *a;
          }
        } else {
          range_ok = false;
        }
      }
      if (range_ok && r.range_end < r.range_start) {
        fail(rr.start.value ? rr.start.where : rr.end.where, rr.path + ".rangeStart",
             r.range_start.to_string() + " is after rangeEnd " + r.range_end.to_string());
        range_ok = false;
      }
      r.gateway = from_u128(f, net + 1);
      if (rr.gateway.value) {
        if (auto a = read_address(rr.gateway, rr.path + ".gateway", subnet, fail)) r.gateway = *a;
        else range_ok = false;
      }
      if (fam && *fam != f) {
        fail(rr.subnet.where, rr.path + ".subnet",
             subnet.to_string() + " is " + family_name(f) + ", but " + shown + fam_from + " is " + family_name(*fam) +
                 " (a range set holds one family; put it in a range set of its own)");
        range_ok = false;
      }
      if (!fam) {
        fam = f;
        fam_from = rr.path;
      }
      if (!range_ok) {
        ok = false;
        continue;
      }
      // Overlap with any range seen so far, in this set or another one.
      for (auto& o : all) {
        if (o.r.subnet.family() != f) continue;
        if (o.r.range_start <= r.range_end && r.range_start <= o.r.range_end)
          fail(rr.where, rr.path,
               r.to_string() + " overlaps " + shown + o.path + " " + o.r.to_string() + " (ranges must not share addresses)");
      }
      all.push_back({r, rr.path, rr.where});
      rs.ranges.push_back(r);
    }
    result_sets.push_back(std::move(rs));
  }
  std::vector<ip_prefix> res;
  for (auto& rv : reserved) {
    std::optional<ip_prefix> p;
    if (rv.value.find('/') != std::string::npos) {
      auto pp = ip_prefix::parse(rv.value);
      if (!pp) {
        fail(rv.where, rv.path, pp.error().message);
        continue;
      }
      p = *pp;
    } else {
      auto a = ip_address::parse(rv.value);
      if (!a) {
        fail(rv.where, rv.path, "'" + rv.value + "' is not an IP address or CIDR");
        continue;
      }
      p = ip_prefix(*a, a->bits());
    }
    bool inside = false;
    for (auto& o : all) inside |= o.r.subnet.overlaps(*p);
    if (!inside && !all.empty()) {
      fail(rv.where, rv.path, rv.value + " is in none of the ranges' subnets");
      continue;
    }
    res.push_back(*p);
  }
  if (ok) {
    out.ranges = std::move(result_sets);
    out.reserved = std::move(res);
  }
  return ok;
}

std::optional<std::string> scope_problem(std::string_view s) {
  if (s.empty()) return "must not be empty";
  if (s.size() > 63) return "must be at most 63 characters";
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
      return "may hold only lowercase letters, digits and '-' (it prefixes datastore names)";
  return std::nullopt;
}

// ---- TOML ---------------------------------------------------------------------------

raw_range toml_range(settings& s, const toml::table& t, std::string path) {
  raw_range r;
  r.path = std::move(path);
  r.where = &t;
  for (auto& [k, v] : t) {
    std::string key(k.str());
    raw_field* f = key == "subnet" ? &r.subnet : key == "rangeStart" ? &r.start : key == "rangeEnd" ? &r.end
                 : key == "gateway" ? &r.gateway : nullptr;
    if (!f) {
      std::string msg = "unknown key";
      if (auto m = did_you_mean(key, range_keys)) msg += "; did you mean '" + *m + "'?";
      else msg += " (a range has subnet, rangeStart, rangeEnd, gateway)";
      s.fail_at(v, r.path + "." + key, msg);
      continue;
    }
    f->where = &v;
    if (auto* str = v.as_string()) f->value = str->get();
    else {
      s.fail_at(v, r.path + "." + key, "expected a string");
      f->wrong_type = true;
    }
  }
  return r;
}

}  // namespace

config read_config(settings& s) {
  config c;
  std::vector<raw_set> sets;
  std::vector<raw_reserved> reserved;
  bool usable = true;
  if (const toml::node* n = s.node("ranges"); !n) {
    s.fail("ranges", "is required: one or more range sets, e.g. ranges = [[{ subnet = \"10.22.0.0/24\" }]]");
    usable = false;
  } else if (auto* arr = n->as_array()) {
    if (arr->empty()) {
      s.fail("ranges", "needs at least one range set, e.g. ranges = [[{ subnet = \"10.22.0.0/24\" }]]");
      usable = false;
    }
    for (std::size_t i = 0; i < arr->size(); ++i) {
      const toml::node& e = *arr->get(i);
      std::string sp = "ranges[" + std::to_string(i) + "]";
      raw_set rs;
      rs.path = sp;
      rs.where = &e;
      if (auto* set = e.as_array()) {
        for (std::size_t j = 0; j < set->size(); ++j) {
          const toml::node& re = *set->get(j);
          std::string rp = sp + "[" + std::to_string(j) + "]";
          if (auto* t = re.as_table()) rs.ranges.push_back(toml_range(s, *t, rp));
          else {
            s.fail_at(re, rp, "expected a table such as { subnet = \"10.22.0.0/24\" }");
            usable = false;
          }
        }
      } else if (auto* t = e.as_table()) {
        rs.ranges.push_back(toml_range(s, *t, sp));  // [[ipam.ranges]]: a set of one range
      } else {
        s.fail_at(e, sp, "expected a range set (an array of tables) or a table");
        usable = false;
        continue;
      }
      sets.push_back(std::move(rs));
    }
  } else {
    s.fail("ranges", "expected an array of range sets, e.g. ranges = [[{ subnet = \"10.22.0.0/24\" }]]");
    usable = false;
  }
  if (const toml::node* n = s.node("reserved")) {
    if (auto* str = n->as_string()) {
      reserved.push_back({"reserved", n, str->get()});
    } else if (auto* arr = n->as_array()) {
      for (std::size_t i = 0; i < arr->size(); ++i) {
        const toml::node& e = *arr->get(i);
        std::string p = "reserved[" + std::to_string(i) + "]";
        if (auto* v = e.as_string()) reserved.push_back({p, &e, v->get()});
        else s.fail_at(e, p, "expected a string (an address or a CIDR)");
      }
    } else {
      s.fail("reserved", "expected an array of addresses or CIDRs");
    }
  }
  c.scope = s.get<std::string>("scope", c.scope);
  if (auto p = scope_problem(c.scope)) s.fail("scope", "'" + c.scope + "' " + *p);
  // Read by hand: settings::get<std::int64_t> reports any negative number as "out of range".
  if (const toml::node* g = s.node("orphan_grace_seconds")) {
    if (auto* i = g->as_integer(); !i) s.fail("orphan_grace_seconds", "expected an integer (seconds)");
    else if (i->get() < 0) s.fail("orphan_grace_seconds", "must not be negative");
    else c.orphan_grace = std::chrono::seconds(i->get());
  }

  c.parallel_writes = s.get_optional<bool>("parallel_writes");

  sink bad = [&](const void* where, const std::string& path, const std::string& msg) {
    if (where) s.fail_at(*static_cast<const toml::node*>(where), path, msg);
    else s.fail(path, msg);
  };
  if (usable) build(sets, reserved, c, bad, s.section().empty() ? std::string() : s.section() + ".");
  return c;
}

result<config> parse_config(std::string_view toml_text, std::string_view file, std::string_view section) {
  auto s = settings::parse(toml_text, std::string(file), std::string(section));
  if (!s) return s.error();
  config c = read_config(*s);
  if (auto f = s->finish(); !f) return f.error();
  return c;
}

// ---- JSON ---------------------------------------------------------------------------

namespace {

std::string_view json_kind(const boost::json::value& v) {
  switch (v.kind()) {
    case boost::json::kind::object: return "object";
    case boost::json::kind::array: return "array";
    case boost::json::kind::string: return "string";
    case boost::json::kind::bool_: return "boolean";
    case boost::json::kind::null: return "null";
    default: return "number";
  }
}

const boost::json::value* present(const boost::json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  return v && !v->is_null() ? v : nullptr;
}

}  // namespace

result<config> config_from_json(const boost::json::object& ipam, const config& base, std::string_view path) {
  config c = base;
  std::vector<std::string> problems;
  const std::string root = path.empty() ? std::string() : std::string(path) + ".";
  auto bad = [&](const std::string& p, const std::string& m) { problems.push_back(root + p + ": " + m); };
  auto str = [&](const boost::json::value& v, const std::string& p) -> std::optional<std::string> {
    if (auto* s = v.if_string()) return std::string(*s);
    bad(p, "expected a string, got " + std::string(json_kind(v)));
    return std::nullopt;
  };
  auto range_from = [&](const boost::json::object& o, std::string p) {
    raw_range r;
    r.path = std::move(p);
    for (auto& [k, v] : o) {
      std::string key(k);
      raw_field* f = key == "subnet" ? &r.subnet : key == "rangeStart" ? &r.start : key == "rangeEnd" ? &r.end
                   : key == "gateway" ? &r.gateway : nullptr;
      if (!f) {
        std::string msg = "unknown key";
        if (auto m = did_you_mean(key, range_keys)) msg += "; did you mean '" + *m + "'?";
        else msg += " (a range has subnet, rangeStart, rangeEnd, gateway)";
        bad(r.path + "." + key, msg);
        continue;
      }
      if (v.is_null()) continue;
      f->value = str(v, r.path + "." + key);
      f->wrong_type = !f->value;
    }
    return r;
  };

  std::vector<raw_set> sets;
  std::vector<raw_reserved> reserved;
  const auto* ranges = present(ipam, "ranges");
  const bool legacy = present(ipam, "subnet") || present(ipam, "rangeStart") || present(ipam, "rangeEnd") || present(ipam, "gateway");
  const bool plan = ranges || legacy;
  bool usable = true;
  if (ranges && legacy) {
    bad("subnet", "give either ranges or subnet (with rangeStart, rangeEnd, gateway), not both");
    usable = false;
  } else if (ranges) {
    if (auto* arr = ranges->if_array()) {
      if (arr->empty()) {
        bad("ranges", "needs at least one range set, e.g. [[{\"subnet\": \"10.22.0.0/24\"}]]");
        usable = false;
      }
      for (std::size_t i = 0; i < arr->size(); ++i) {
        std::string sp = "ranges[" + std::to_string(i) + "]";
        raw_set rs;
        rs.path = sp;
        auto* set = (*arr)[i].if_array();
        if (!set) {
          bad(sp, "expected a range set (an array of range objects), got " + std::string(json_kind((*arr)[i])));
          usable = false;
          continue;
        }
        for (std::size_t j = 0; j < set->size(); ++j) {
          std::string rp = sp + "[" + std::to_string(j) + "]";
          if (auto* o = (*set)[j].if_object()) rs.ranges.push_back(range_from(*o, rp));
          else {
            bad(rp, "expected a range object such as {\"subnet\": \"10.22.0.0/24\"}, got " + std::string(json_kind((*set)[j])));
            usable = false;
          }
        }
        sets.push_back(std::move(rs));
      }
    } else {
      bad("ranges", "expected an array of range sets, got " + std::string(json_kind(*ranges)));
      usable = false;
    }
  } else if (legacy) {
    // The reference plugin's single-range form: the keys sit in the ipam object itself.
    raw_set rs;
    rs.path = "ranges[0]";
    raw_range r;
    r.path = "";
    auto field = [&](const char* key, raw_field& f) {
      if (auto* v = present(ipam, key)) {
        f.value = str(*v, key);
        f.wrong_type = !f.value;
      }
    };
    field("subnet", r.subnet);
    field("rangeStart", r.start);
    field("rangeEnd", r.end);
    field("gateway", r.gateway);
    rs.ranges.push_back(std::move(r));
    sets.push_back(std::move(rs));
  }
  if (auto* v = present(ipam, "reserved")) {
    if (!plan) {
      bad("reserved", "applies to ranges given in the same object; add ranges here, or put reserved in the profile's [ipam]");
    } else if (auto* arr = v->if_array()) {
      for (std::size_t i = 0; i < arr->size(); ++i) {
        std::string p = "reserved[" + std::to_string(i) + "]";
        if (auto s = str((*arr)[i], p)) reserved.push_back({p, nullptr, *s});
      }
    } else {
      bad("reserved", "expected an array of addresses or CIDRs, got " + std::string(json_kind(*v)));
    }
  }
  if (auto* v = present(ipam, "scope")) {
    if (auto s = str(*v, "scope")) {
      if (auto p = scope_problem(*s)) bad("scope", "'" + *s + "' " + *p);
      else c.scope = *s;
    }
  }
  if (auto* v = present(ipam, "orphanGraceSeconds")) {
    if (auto* i = v->if_int64(); i && *i >= 0) c.orphan_grace = std::chrono::seconds(*i);
    else if (auto* u = v->if_uint64()) c.orphan_grace = std::chrono::seconds(static_cast<std::int64_t>(*u));
    else bad("orphanGraceSeconds", "expected a non-negative integer");
  }
  if (plan && usable) {
    sink s = [&](const void*, const std::string& p, const std::string& m) {
      // The single-range form has no "ranges[0][0]" in the document: name the top-level key.
      std::string q = p;
      if (legacy && !q.empty() && q[0] == '.') q.erase(0, 1);
      bad(q.empty() ? "subnet" : q, m);
    };
    build(sets, reserved, c, s, root);
  }
  if (!plan && c.ranges.empty())
    bad("ranges", "is required (neither this object nor the profile's [ipam] section gives ranges), e.g. "
                  "\"ranges\": [[{\"subnet\": \"10.22.0.0/24\"}]]");
  if (!problems.empty()) {
    std::string msg;
    for (auto& p : problems) msg += (msg.empty() ? "" : "\n") + p;
    return error(errc::invalid, msg);
  }
  return c;
}

// ---- configurations built in code ---------------------------------------------------

result<void> check_config(const config& c) {
  auto bad = [](const std::string& where, const std::string& what) {
    return error(errc::invalid, "host-local configuration: " + where + ": " + what);
  };
  if (c.ranges.empty()) return bad("ranges", "no range set");
  for (std::size_t i = 0; i < c.ranges.size(); ++i) {
    const auto& rs = c.ranges[i];
    const std::string si = "ranges[" + std::to_string(i) + "]";
    if (rs.ranges.empty()) return bad(si, "a range set needs at least one range");
    for (std::size_t j = 0; j < rs.ranges.size(); ++j) {
      const auto& r = rs.ranges[j];
      const std::string p = si + "[" + std::to_string(j) + "]";
      if (r.subnet.family() != rs.family()) return bad(p, "a range set holds one family");
      if (r.subnet.network() != r.subnet.address()) return bad(p + ".subnet", r.subnet.to_string() + " is not a network address");
      if (!r.subnet.contains(r.range_start)) return bad(p + ".rangeStart", r.range_start.to_string() + " is outside " + r.subnet.to_string());
      if (!r.subnet.contains(r.range_end)) return bad(p + ".rangeEnd", r.range_end.to_string() + " is outside " + r.subnet.to_string());
      if (r.range_end < r.range_start) return bad(p + ".rangeStart", "is after rangeEnd");
      if (!r.subnet.contains(r.gateway)) return bad(p + ".gateway", r.gateway.to_string() + " is outside " + r.subnet.to_string());
    }
  }
  if (auto p = scope_problem(c.scope)) return bad("scope", "'" + c.scope + "' " + *p);
  if (c.orphan_grace.count() < 0) return bad("orphan_grace", "must not be negative");
  return {};
}

// ---- TOML out -----------------------------------------------------------------------

std::string to_toml(const config& c) {
  std::string s = "ranges = [\n";
  for (auto& rs : c.ranges) {
    s += "  [";
    bool first = true;
    for (auto& r : rs.ranges) {
      s += first ? " " : ", ";
      first = false;
      s += "{ subnet = \"" + r.subnet.to_string() + "\", rangeStart = \"" + r.range_start.to_string() + "\", rangeEnd = \"" +
           r.range_end.to_string() + "\", gateway = \"" + r.gateway.to_string() + "\" }";
    }
    s += " ],\n";
  }
  s += "]\nreserved = [";
  bool first = true;
  for (auto& p : c.reserved) {
    s += first ? "" : ", ";
    first = false;
    s += "\"" + (p.length() == p.address().bits() ? p.address().to_string() : p.to_string()) + "\"";
  }
  s += "]\nscope = \"" + c.scope + "\"\n";
  s += "orphan_grace_seconds = " + std::to_string(c.orphan_grace.count()) + "\n";
  if (c.parallel_writes) s += std::string("parallel_writes = ") + (*c.parallel_writes ? "true" : "false") + "\n";
  return s;
}

// ---- names --------------------------------------------------------------------------

std::string allocation_name(std::string_view scope, const ip_address& a) {
  std::string n(scope);
  n += '.';
  for (char ch : a.to_string()) n += ch == ':' ? '-' : ch;
  return n;
}

std::string handle_name(std::string_view scope, std::string_view handle) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string enc;
  for (unsigned char ch : handle) {
    if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '-') enc += static_cast<char>(ch);
    else {
      enc += '_';
      enc += hex[ch >> 4];
      enc += hex[ch & 15];
    }
  }
  if (enc.size() > 200) {
    // Long handles: a readable head plus a hash of the whole; the spec keeps the real
    // handle, and readers compare it.
    std::uint64_t h = 1469598103934665603ull;
    for (unsigned char ch : handle) {
      h ^= ch;
      h *= 1099511628211ull;
    }
    enc.resize(180);
    enc += "_h";
    for (int i = 15; i >= 0; --i) enc += hex[(h >> (i * 4)) & 15];
  }
  return std::string(scope) + "." + enc;
}

}  // namespace host_local
CNF_END_NAMESPACE
