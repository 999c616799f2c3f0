// The projectcalico.org/v3 resources calico-ipam keeps, as JSON specs, with validation.
#include "internal.hpp"

#include <cnf/detail/json_text.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <ctime>

CNF_BEGIN_NAMESPACE
namespace calico_ipam {

namespace json = boost::json;
using namespace detail;

namespace detail {

std::string format_time(sys_clock::time_point t) {
  std::time_t tt = sys_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string now_text() { return format_time(sys_clock::now()); }

std::optional<sys_clock::time_point> parse_time(std::string_view s) {
  if (s.size() < 20) return std::nullopt;
  std::tm tm{};
  std::string str(s.substr(0, 19));
  const char* end = strptime(str.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (!end || *end) return std::nullopt;
  std::time_t t = timegm(&tm);
  if (t == static_cast<std::time_t>(-1)) return std::nullopt;
  return sys_clock::from_time_t(t);
}

std::uint64_t fnv1a(std::string_view s) noexcept {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

ip_address add(const ip_address& a, u128 n) noexcept {
  ip_address r = a;
  int i = static_cast<int>(r.size()) - 1;
  unsigned carry = 0;
  while (i >= 0 && (n || carry)) {
    unsigned v = r.data()[i] + static_cast<unsigned>(n & 0xff) + carry;
    r.data()[i] = static_cast<std::uint8_t>(v);
    carry = v >> 8;
    n >>= 8;
    --i;
  }
  return r;
}

std::string family_name(ip_family f) { return f == ip_family::v4 ? "IPv4" : "IPv6"; }

std::string where(const resource& r) { return r.key().to_string(); }

result<json::object> spec_object(const resource& r) { return spec_object(r, {}); }

result<json::object> spec_object(const resource& r, json::storage_ptr sp) {
  boost::system::error_code ec;
  json::value v = json::parse(r.spec, ec, std::move(sp));
  if (ec) return error(errc::invalid, where(r) + ": spec: not valid JSON (" + ec.message() + ")");
  if (!v.is_object()) return error(errc::invalid, where(r) + ": spec: expected a JSON object");
  return std::move(v.as_object());
}

const std::string* reserved_set::holder(const ip_address& a) const noexcept {
  for (auto& [c, n] : cidrs)
    if (c.contains(a)) return &n;
  return nullptr;
}
bool reserved_set::covers(const ip_prefix& b) const noexcept {
  for (auto& [c, n] : cidrs)
    if (c.contains(b)) return true;
  return false;
}
bool reserved_set::touches(const ip_prefix& b) const noexcept {
  for (auto& [c, n] : cidrs)
    if (c.overlaps(b)) return true;
  return false;
}
std::uint32_t reserved_set::free_in(const block& b) const {
  if (!touches(b.cidr)) return static_cast<std::uint32_t>(b.unallocated.size());
  std::uint32_t n = 0;
  for (auto o : b.unallocated)
    if (!holder(b.address(o))) ++n;
  return n;
}

namespace {
std::uint32_t attribute_index(block& b, const std::string& handle, const std::map<std::string, std::string>& secondary) {
  for (std::uint32_t i = 0; i < b.attributes.size(); ++i) {
    auto& a = b.attributes[i];
    if (a.handle_id && *a.handle_id == handle && a.secondary == secondary) return i;
  }
  b.attributes.push_back({handle, secondary});
  return static_cast<std::uint32_t>(b.attributes.size() - 1);
}

void note_allocated(block& b, std::uint32_t ordinal) {
  b.sequence_number_for_allocation[ordinal] = b.sequence_number;
  ++b.sequence_number;
  b.empty_since.clear();
}
}  // namespace

std::vector<std::uint32_t> take(block& b, std::uint32_t n, const std::string& handle,
                                const std::map<std::string, std::string>& secondary, const reserved_set& reserved) {
  std::vector<std::uint32_t> got;
  if (n == 0) return got;
  bool check = reserved.touches(b.cidr);
  std::vector<std::uint32_t> keep;
  keep.reserve(b.unallocated.size());
  std::optional<std::uint32_t> attr;
  for (std::size_t i = 0; i < b.unallocated.size(); ++i) {
    auto o = b.unallocated[i];
    if (got.size() >= n || (check && reserved.holder(b.address(o)))) {
      keep.push_back(o);
      continue;
    }
    if (!attr) attr = attribute_index(b, handle, secondary);
    b.allocations[o] = *attr;
    note_allocated(b, o);
    got.push_back(o);
  }
  b.unallocated = std::move(keep);
  return got;
}

void take_ordinal(block& b, std::uint32_t ordinal, const std::string& handle, const std::map<std::string, std::string>& secondary) {
  b.allocations[ordinal] = attribute_index(b, handle, secondary);
  std::erase(b.unallocated, ordinal);
  note_allocated(b, ordinal);
}

void free_ordinals(block& b, const std::vector<std::uint32_t>& ordinals) {
  for (auto o : ordinals) {
    if (o >= b.allocations.size() || !b.allocations[o]) continue;
    b.allocations[o].reset();
    b.unallocated.push_back(o);
    b.sequence_number_for_allocation.erase(o);
  }
  // Drop attributes nothing refers to any more and renumber the rest.
  std::vector<std::uint32_t> refs(b.attributes.size(), 0);
  for (auto& a : b.allocations)
    if (a && *a < refs.size()) ++refs[*a];
  std::vector<std::uint32_t> remap(b.attributes.size(), 0);
  std::vector<allocation_attribute> kept;
  for (std::uint32_t i = 0; i < b.attributes.size(); ++i) {
    if (!refs[i]) continue;
    remap[i] = static_cast<std::uint32_t>(kept.size());
    kept.push_back(std::move(b.attributes[i]));
  }
  b.attributes = std::move(kept);
  for (auto& a : b.allocations)
    if (a) a = remap[*a];
  if (b.in_use() == 0 && b.empty_since.empty()) b.empty_since = now_text();
}

}  // namespace detail

// ---- names -------------------------------------------------------------------------------

std::string block_name(const ip_prefix& cidr) {
  std::string s = cidr.to_string();
  for (auto& c : s)
    if (c == '.' || c == ':' || c == '/') c = '-';
  return s;
}

namespace {
bool plain_name(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.')) return false;
  return std::isalnum(static_cast<unsigned char>(s.front())) && std::isalnum(static_cast<unsigned char>(s.back()));
}

std::string sanitized(std::string_view s, std::size_t max) {
  std::string out;
  for (char c : s) {
    char l = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out += ((l >= 'a' && l <= 'z') || (l >= '0' && l <= '9') || l == '.') ? l : '-';
  }
  if (out.size() > max) out.resize(max);
  while (!out.empty() && !std::isalnum(static_cast<unsigned char>(out.back()))) out.pop_back();
  return out + "-" + fmt::format("{:016x}", fnv1a(s));
}
}  // namespace

std::string affinity_name(std::string_view node, const ip_prefix& cidr) {
  std::string n = std::string(node) + "-" + block_name(cidr);
  if (plain_name(n)) return n;
  return sanitized(n, 200);
}

std::string handle_name(std::string_view handle_id) {
  if (plain_name(handle_id)) return std::string(handle_id);
  return sanitized(handle_id, 200);
}

// ---- JSON field readers (each error names resource and field) --------------------------------

namespace {
struct reader {
  const resource& r;
  const json::object& o;

  std::string field(std::string_view f) const { return where(r) + ": spec." + std::string(f); }

  result<std::optional<std::string>> str(std::string_view f) const {
    auto* v = o.if_contains(f);
    if (!v || v->is_null()) return std::optional<std::string>{};
    if (!v->is_string()) return error(errc::invalid, field(f) + ": expected a string");
    return std::optional<std::string>(std::string(v->as_string()));
  }
  result<std::optional<bool>> boolean(std::string_view f) const {
    auto* v = o.if_contains(f);
    if (!v || v->is_null()) return std::optional<bool>{};
    if (v->is_bool()) return std::optional<bool>(v->as_bool());
    if (v->is_string()) {  // Calico writes some booleans as strings (BlockAffinity.deleted)
      auto s = v->as_string();
      if (s == "true") return std::optional<bool>(true);
      if (s == "false" || s.empty()) return std::optional<bool>(false);
    }
    return error(errc::invalid, field(f) + ": expected true or false");
  }
  result<std::optional<std::int64_t>> integer(std::string_view f) const {
    auto* v = o.if_contains(f);
    if (!v || v->is_null()) return std::optional<std::int64_t>{};
    if (v->is_int64()) return std::optional<std::int64_t>(v->as_int64());
    if (v->is_uint64() && v->as_uint64() <= static_cast<std::uint64_t>(INT64_MAX))
      return std::optional<std::int64_t>(static_cast<std::int64_t>(v->as_uint64()));
    return error(errc::invalid, field(f) + ": expected an integer");
  }
  result<std::uint64_t> unsigned64(std::string_view f) const {
    auto* v = o.if_contains(f);
    if (!v || v->is_null()) return std::uint64_t{0};
    if (v->is_uint64()) return v->as_uint64();
    if (v->is_int64() && v->as_int64() >= 0) return static_cast<std::uint64_t>(v->as_int64());
    return error(errc::invalid, field(f) + ": expected a non-negative integer");
  }
};

#define CNF_TRY(var, expr)                     \
  auto var##_r = (expr);                       \
  if (!var##_r) return std::move(var##_r).error(); \
  auto var = std::move(*var##_r)

result<ip_prefix> parse_cidr(const reader& rd, std::string_view f, const std::string& text) {
  auto p = ip_prefix::parse(text);
  if (!p) {
    auto loose = ip_prefix::parse(text, true);
    if (loose)
      return error(errc::invalid, rd.field(f) + ": " + text + " is not a network address (the network is " +
                                      loose->canonical().to_string() + ")");
    return error(errc::invalid, rd.field(f) + ": " + p.error().message);
  }
  return *p;
}
}  // namespace

// ---- IPPool -------------------------------------------------------------------------------

result<pool> parse_pool(const resource& r) {
  CNF_TRY(o, spec_object(r));
  reader rd{r, o};
  pool p;
  p.name = r.name;
  CNF_TRY(cidr_text, rd.str("cidr"));
  if (!cidr_text) return error(errc::invalid, rd.field("cidr") + ": is required");
  CNF_TRY(cidr, parse_cidr(rd, "cidr", *cidr_text));
  p.cidr = cidr;
  bool v4 = cidr.family() == ip_family::v4;
  CNF_TRY(bs, rd.integer("blockSize"));
  std::int64_t size = bs ? *bs : (v4 ? 26 : 122);
  std::int64_t lo = v4 ? 20 : 116, hi = v4 ? 32 : 128;
  if (size < lo || size > hi)
    return error(errc::invalid, rd.field("blockSize") + ": " + std::to_string(size) + " is outside " + std::to_string(lo) + "-" +
                                    std::to_string(hi) + " for an " + family_name(cidr.family()) + " pool");
  if (static_cast<unsigned>(size) < cidr.length())
    return error(errc::invalid, rd.field("blockSize") + ": /" + std::to_string(size) + " blocks do not fit in the pool " +
                                    cidr.to_string() + " (blockSize must be at least " + std::to_string(cidr.length()) + ")");
  p.block_size = static_cast<unsigned>(size);
  CNF_TRY(sel, rd.str("nodeSelector"));
  p.node_selector = sel && !sel->empty() ? *sel : "all()";
  if (auto m = selector_matches(p.node_selector, {}); !m)
    return error(errc::invalid, rd.field("nodeSelector") + ": " + m.error().message);
  CNF_TRY(dis, rd.boolean("disabled"));
  p.disabled = dis.value_or(false);
  CNF_TRY(nat, rd.boolean("natOutgoing"));
  p.nat_outgoing = nat.value_or(false);
  for (auto [key, dst] : {std::pair<std::string_view, std::string*>{"ipipMode", &p.ipip_mode}, {"vxlanMode", &p.vxlan_mode}}) {
    CNF_TRY(mode, rd.str(key));
    std::string m = mode && !mode->empty() ? *mode : "Never";
    if (m != "Never" && m != "Always" && m != "CrossSubnet")
      return error(errc::invalid, rd.field(key) + ": '" + m + "' is not one of Never, Always, CrossSubnet");
    *dst = m;
  }
  if (p.ipip_mode != "Never" && !v4) return error(errc::invalid, rd.field("ipipMode") + ": IPIP is for IPv4 pools only");
  if (p.ipip_mode != "Never" && p.vxlan_mode != "Never")
    return error(errc::invalid, rd.field("ipipMode") + ": ipipMode and vxlanMode cannot both be enabled");
  return p;
}

resource to_resource(const pool& p) {
  json::object o;
  o["cidr"] = p.cidr.to_string();
  o["blockSize"] = p.block_size;
  o["nodeSelector"] = p.node_selector;
  o["ipipMode"] = p.ipip_mode;
  o["vxlanMode"] = p.vxlan_mode;
  o["natOutgoing"] = p.nat_outgoing;
  o["disabled"] = p.disabled;
  resource r;
  r.kind = std::string(kinds::ip_pool);
  r.name = p.name;
  r.spec = json::serialize(o);
  return r;
}

std::vector<error> validate_pools(const std::vector<resource>& pools, std::vector<pool>* valid) {
  std::vector<error> problems;
  std::vector<pool> ok;
  for (auto& r : pools) {
    auto p = parse_pool(r);
    if (!p) problems.push_back(p.error());
    else ok.push_back(std::move(*p));
  }
  std::vector<bool> bad(ok.size(), false);
  for (std::size_t i = 0; i < ok.size(); ++i)
    for (std::size_t j = i + 1; j < ok.size(); ++j)
      if (ok[i].cidr.overlaps(ok[j].cidr)) {
        bad[i] = bad[j] = true;
        problems.push_back(error(errc::invalid, "IPPool/" + ok[i].name + ": spec.cidr: " + ok[i].cidr.to_string() + " overlaps IPPool/" +
                                                    ok[j].name + " (" + ok[j].cidr.to_string() +
                                                    "); neither is used until one is changed or deleted"));
      }
  if (valid) {
    valid->clear();
    for (std::size_t i = 0; i < ok.size(); ++i)
      if (!bad[i]) valid->push_back(std::move(ok[i]));
    std::sort(valid->begin(), valid->end(), [](const pool& a, const pool& b) { return a.name < b.name; });
  }
  return problems;
}

// ---- node selectors ------------------------------------------------------------------------

namespace {
std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> split_top(std::string_view s, std::string_view sep) {
  std::vector<std::string_view> parts;
  char quote = 0;
  std::size_t start = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (quote) {
      if (c == quote) quote = 0;
    } else if (c == '\'' || c == '"') {
      quote = c;
    } else if (s.substr(i, sep.size()) == sep) {
      parts.push_back(s.substr(start, i - start));
      i += sep.size() - 1;
      start = i + 1;
    }
  }
  parts.push_back(s.substr(start));
  return parts;
}

bool label_key(std::string_view k) {
  if (k.empty()) return false;
  for (char c : k)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == '/')) return false;
  return true;
}

result<bool> term(std::string_view t, const std::map<std::string, std::string>& labels) {
  t = trim(t);
  if (t == "all()") return true;
  bool neg = false;
  std::string_view u = t;
  if (u.starts_with("!")) {
    neg = true;
    u = trim(u.substr(1));
  }
  if (u.starts_with("has(") && u.ends_with(")")) {
    auto k = trim(u.substr(4, u.size() - 5));
    if (!label_key(k)) return error(errc::invalid, "bad label name in '" + std::string(t) + "'");
    return labels.count(std::string(k)) ? !neg : neg;
  }
  if (neg) return error(errc::invalid, "unsupported selector term '" + std::string(t) + "' (supported: all(), k == 'v', k != 'v', has(k), !has(k), && and ||)");
  for (std::string_view op : {"==", "!="}) {
    auto pos = t.find(op);
    if (pos == std::string_view::npos) continue;
    auto k = trim(t.substr(0, pos));
    auto v = trim(t.substr(pos + 2));
    if (!label_key(k)) return error(errc::invalid, "bad label name in '" + std::string(t) + "'");
    if (v.size() < 2 || (v.front() != '\'' && v.front() != '"') || v.back() != v.front())
      return error(errc::invalid, "the value in '" + std::string(t) + "' must be quoted");
    v = v.substr(1, v.size() - 2);
    auto it = labels.find(std::string(k));
    bool eq = it != labels.end() && it->second == v;
    return op == "==" ? eq : !eq;
  }
  return error(errc::invalid, "unsupported selector term '" + std::string(t) + "' (supported: all(), k == 'v', k != 'v', has(k), !has(k), && and ||)");
}
}  // namespace

result<bool> selector_matches(std::string_view selector, const std::map<std::string, std::string>& labels) {
  if (trim(selector).empty()) return true;
  bool any = false;
  for (auto alt : split_top(selector, "||")) {
    bool all = true;
    for (auto t : split_top(alt, "&&")) {
      auto m = term(t, labels);
      if (!m) return m.error();
      all = all && *m;
    }
    any = any || all;
  }
  return any;
}

// ---- IPAMBlock ----------------------------------------------------------------------------

block block::make(const ip_prefix& cidr, std::optional<std::string> affinity) {
  block b;
  b.cidr = cidr.canonical();
  b.affinity = std::move(affinity);
  std::uint32_t n = static_cast<std::uint32_t>(std::uint64_t(1) << (cidr.address().bits() - cidr.length()));
  b.allocations.assign(n, std::nullopt);
  b.unallocated.resize(n);
  for (std::uint32_t i = 0; i < n; ++i) b.unallocated[i] = i;
  b.sequence_number = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(sys_clock::now().time_since_epoch()).count());
  b.affinity_claim_time = now_text();
  return b;
}

std::uint32_t block::in_use() const noexcept { return size() - static_cast<std::uint32_t>(unallocated.size()); }

std::optional<std::uint32_t> block::ordinal(const ip_address& a) const noexcept {
  if (!cidr.contains(a)) return std::nullopt;
  auto net = cidr.network();
  // The host part fits in the last two bytes (blocks have at most 4096 addresses).
  std::size_t n = a.size();
  auto o = static_cast<std::uint32_t>((static_cast<std::uint32_t>(a.data()[n - 2]) << 8 | a.data()[n - 1]) -
                                 (static_cast<std::uint32_t>(net.data()[n - 2]) << 8 | net.data()[n - 1]));
  if (o >= allocations.size()) return std::nullopt;
  return o;
}

std::string block::affinity_node() const {
  if (affinity && affinity->starts_with("host:")) return affinity->substr(5);
  return {};
}

std::string block::handle_of(std::uint32_t o) const {
  if (o >= allocations.size() || !allocations[o]) return {};
  auto& a = attributes[*allocations[o]];
  return a.handle_id ? *a.handle_id : std::string();
}

result<block> parse_block(const resource& r) {
  // Blocks are parsed often: build the DOM in one arena, freed at once.
  json::monotonic_resource arena;
  CNF_TRY(o, spec_object(r, json::storage_ptr(&arena)));
  reader rd{r, o};
  block b;
  CNF_TRY(cidr_text, rd.str("cidr"));
  if (!cidr_text) return error(errc::invalid, rd.field("cidr") + ": is required");
  CNF_TRY(cidr, parse_cidr(rd, "cidr", *cidr_text));
  b.cidr = cidr;
  unsigned host = cidr.address().bits() - cidr.length();
  if (host > 12)
    return error(errc::invalid, rd.field("cidr") + ": " + cidr.to_string() + " is larger than any block (at most 4096 addresses)");
  if (r.name != block_name(cidr))
    return error(errc::invalid, rd.field("cidr") + ": " + cidr.to_string() + " does not match the resource name (expected " +
                                    block_name(cidr) + ")");
  std::uint32_t n = 1u << host;
  CNF_TRY(aff, rd.str("affinity"));
  if (aff && !aff->empty()) {
    if (aff->find(':') == std::string::npos || aff->back() == ':')
      return error(errc::invalid, rd.field("affinity") + ": '" + *aff + "' is not of the form host:<node>");
    b.affinity = *aff;
  }
  CNF_TRY(claim, rd.str("affinityClaimTime"));
  b.affinity_claim_time = claim.value_or("");
  CNF_TRY(empty_since, rd.str("emptySince"));
  b.empty_since = empty_since.value_or("");

  const json::value* attrs = o.if_contains("attributes");
  if (attrs && !attrs->is_null()) {
    if (!attrs->is_array()) return error(errc::invalid, rd.field("attributes") + ": expected an array");
    std::size_t i = 0;
    for (auto& a : attrs->as_array()) {
      std::string f = "attributes[" + std::to_string(i++) + "]";
      if (!a.is_object()) return error(errc::invalid, rd.field(f) + ": expected an object");
      allocation_attribute at;
      if (auto* h = a.as_object().if_contains("handle_id"); h && !h->is_null()) {
        if (!h->is_string()) return error(errc::invalid, rd.field(f + ".handle_id") + ": expected a string");
        at.handle_id = std::string(h->as_string());
      }
      if (auto* s = a.as_object().if_contains("secondary"); s && !s->is_null()) {
        if (!s->is_object()) return error(errc::invalid, rd.field(f + ".secondary") + ": expected an object");
        for (auto& [k, v] : s->as_object()) {
          if (!v.is_string()) return error(errc::invalid, rd.field(f + ".secondary." + std::string(k)) + ": expected a string");
          at.secondary[std::string(k)] = std::string(v.as_string());
        }
      }
      b.attributes.push_back(std::move(at));
    }
  }

  const json::value* allocs = o.if_contains("allocations");
  if (!allocs || !allocs->is_array()) return error(errc::invalid, rd.field("allocations") + ": expected an array");
  if (allocs->as_array().size() != n)
    return error(errc::invalid, rd.field("allocations") + ": " + std::to_string(allocs->as_array().size()) + " entries, but " +
                                    cidr.to_string() + " has " + std::to_string(n) + " addresses");
  b.allocations.reserve(n);
  std::uint32_t i = 0;
  for (auto& a : allocs->as_array()) {
    if (a.is_null()) {
      b.allocations.push_back(std::nullopt);
    } else if ((a.is_int64() && a.as_int64() >= 0 && static_cast<std::uint64_t>(a.as_int64()) < b.attributes.size()) ||
               (a.is_uint64() && a.as_uint64() < b.attributes.size())) {
      b.allocations.push_back(static_cast<std::uint32_t>(a.is_int64() ? a.as_int64() : static_cast<std::int64_t>(a.as_uint64())));
    } else {
      return error(errc::invalid, rd.field("allocations[" + std::to_string(i) + "]") + ": " + json::serialize(a) +
                                      " is not null or an index into attributes (" + std::to_string(b.attributes.size()) + " entries)");
    }
    ++i;
  }

  const json::value* un = o.if_contains("unallocated");
  if (!un || !un->is_array()) return error(errc::invalid, rd.field("unallocated") + ": expected an array");
  std::vector<bool> seen(n, false);
  i = 0;
  for (auto& u : un->as_array()) {
    std::string f = "unallocated[" + std::to_string(i++) + "]";
    std::int64_t v = u.is_int64() ? u.as_int64() : (u.is_uint64() ? static_cast<std::int64_t>(std::min<std::uint64_t>(u.as_uint64(), INT64_MAX)) : -1);
    if (v < 0 || v >= static_cast<std::int64_t>(n))
      return error(errc::invalid, rd.field(f) + ": " + json::serialize(u) + " is not an ordinal of " + cidr.to_string());
    auto ord = static_cast<std::uint32_t>(v);
    if (seen[ord]) return error(errc::invalid, rd.field(f) + ": ordinal " + std::to_string(ord) + " is listed twice");
    if (b.allocations[ord])
      return error(errc::invalid, rd.field(f) + ": ordinal " + std::to_string(ord) + " (" + b.address(ord).to_string() +
                                      ") is listed as free but is allocated");
    seen[ord] = true;
    b.unallocated.push_back(ord);
  }
  for (std::uint32_t k = 0; k < n; ++k)
    if (!b.allocations[k] && !seen[k])
      return error(errc::invalid, rd.field("unallocated") + ": ordinal " + std::to_string(k) + " (" + b.address(k).to_string() +
                                      ") is neither allocated nor listed as free");

  CNF_TRY(seq, rd.unsigned64("sequenceNumber"));
  b.sequence_number = seq;
  if (auto* s = o.if_contains("sequenceNumberForAllocation"); s && !s->is_null()) {
    if (!s->is_object()) return error(errc::invalid, rd.field("sequenceNumberForAllocation") + ": expected an object");
    for (auto& [k, v] : s->as_object()) {
      std::uint32_t ord = 0;
      auto [ptr, ec] = std::from_chars(k.data(), k.data() + k.size(), ord);
      if (ec != std::errc() || ptr != k.data() + k.size() || ord >= n)
        return error(errc::invalid, rd.field("sequenceNumberForAllocation") + ": key '" + std::string(k) + "' is not an ordinal of " + cidr.to_string());
      if (v.is_uint64()) b.sequence_number_for_allocation[ord] = v.as_uint64();
      else if (v.is_int64() && v.as_int64() >= 0) b.sequence_number_for_allocation[ord] = static_cast<std::uint64_t>(v.as_int64());
      else return error(errc::invalid, rd.field("sequenceNumberForAllocation." + std::string(k)) + ": expected a non-negative integer");
    }
  }
  CNF_TRY(del, rd.boolean("deleted"));
  b.deleted = del.value_or(false);
  return b;
}

namespace {
using cnf::detail::append_json_string;
using cnf::detail::append_uint;
}  // namespace

// Written by hand (not through a JSON DOM): blocks are serialised on every write.
std::string to_json(const block& b) {
  std::string o;
  o.reserve(64 + b.allocations.size() * 12 + b.attributes.size() * 96);
  o += "{\"cidr\":";
  append_json_string(o, b.cidr.to_string());
  o += ",\"affinity\":";
  if (b.affinity) append_json_string(o, *b.affinity);
  else o += "null";
  if (!b.affinity_claim_time.empty()) {
    o += ",\"affinityClaimTime\":";
    append_json_string(o, b.affinity_claim_time);
  }
  o += ",\"allocations\":[";
  for (std::size_t i = 0; i < b.allocations.size(); ++i) {
    if (i) o += ',';
    if (b.allocations[i]) append_uint(o, *b.allocations[i]);
    else o += "null";
  }
  o += "],\"unallocated\":[";
  for (std::size_t i = 0; i < b.unallocated.size(); ++i) {
    if (i) o += ',';
    append_uint(o, b.unallocated[i]);
  }
  o += "],\"attributes\":[";
  for (std::size_t i = 0; i < b.attributes.size(); ++i) {
    auto& a = b.attributes[i];
    if (i) o += ',';
    o += '{';
    if (a.handle_id) {
      o += "\"handle_id\":";
      append_json_string(o, *a.handle_id);
      o += ',';
    }
    o += "\"secondary\":{";
    bool first = true;
    for (auto& [k, v] : a.secondary) {
      if (!first) o += ',';
      first = false;
      append_json_string(o, k);
      o += ':';
      append_json_string(o, v);
    }
    o += "}}";
  }
  o += "],\"sequenceNumber\":";
  append_uint(o, b.sequence_number);
  o += ",\"sequenceNumberForAllocation\":{";
  bool first = true;
  for (auto& [k, v] : b.sequence_number_for_allocation) {
    if (!first) o += ',';
    first = false;
    o += '"';
    append_uint(o, k);
    o += "\":";
    append_uint(o, v);
  }
  o += "},\"deleted\":";
  o += b.deleted ? "true" : "false";
  if (!b.empty_since.empty()) {
    o += ",\"emptySince\":";
    append_json_string(o, b.empty_since);
  }
  o += '}';
  return o;
}

resource to_resource(const block& b) {
  resource r;
  r.kind = std::string(kinds::ipam_block);
  r.name = block_name(b.cidr);
  r.spec = to_json(b);
  return r;
}

// ---- BlockAffinity ---------------------------------------------------------------------------

result<block_affinity> parse_affinity(const resource& r) {
  CNF_TRY(o, spec_object(r));
  reader rd{r, o};
  block_affinity a;
  a.name = r.name;
  CNF_TRY(state, rd.str("state"));
  a.state = state.value_or("");
  if (a.state != "pending" && a.state != "confirmed" && a.state != "pendingDeletion")
    return error(errc::invalid, rd.field("state") + ": '" + a.state + "' is not one of pending, confirmed, pendingDeletion");
  CNF_TRY(node, rd.str("node"));
  if (!node || node->empty()) return error(errc::invalid, rd.field("node") + ": is required");
  a.node = *node;
  CNF_TRY(cidr_text, rd.str("cidr"));
  if (!cidr_text) return error(errc::invalid, rd.field("cidr") + ": is required");
  CNF_TRY(cidr, parse_cidr(rd, "cidr", *cidr_text));
  a.cidr = cidr;
  CNF_TRY(del, rd.boolean("deleted"));
  a.deleted = del.value_or(false);
  return a;
}

resource to_resource(const block_affinity& a) {
  json::object o;
  o["state"] = a.state;
  o["node"] = a.node;
  o["type"] = "host";
  o["cidr"] = a.cidr.to_string();
  o["deleted"] = a.deleted ? "true" : "false";
  resource r;
  r.kind = std::string(kinds::block_affinity);
  r.name = a.name.empty() ? affinity_name(a.node, a.cidr) : a.name;
  r.spec = json::serialize(o);
  return r;
}

// ---- IPAMHandle ------------------------------------------------------------------------------

result<handle_record> parse_handle(const resource& r) {
  CNF_TRY(o, spec_object(r));
  reader rd{r, o};
  handle_record h;
  CNF_TRY(id, rd.str("handleID"));
  if (!id || id->empty()) return error(errc::invalid, rd.field("handleID") + ": is required");
  h.handle_id = *id;
  if (auto* b = o.if_contains("block"); b && !b->is_null()) {
    if (!b->is_object()) return error(errc::invalid, rd.field("block") + ": expected an object of CIDR: count");
    for (auto& [k, v] : b->as_object()) {
      std::string f = "block." + std::string(k);
      if (!ip_prefix::parse(k)) return error(errc::invalid, rd.field(f) + ": '" + std::string(k) + "' is not a block CIDR");
      std::int64_t n = v.is_int64() ? v.as_int64() : (v.is_uint64() ? static_cast<std::int64_t>(std::min<std::uint64_t>(v.as_uint64(), INT64_MAX)) : -1);
      if (n < 0 || n > 4096) return error(errc::invalid, rd.field(f) + ": expected a count of addresses");
      if (n > 0) h.blocks[std::string(k)] = static_cast<std::uint32_t>(n);
    }
  }
  CNF_TRY(del, rd.boolean("deleted"));
  h.deleted = del.value_or(false);
  return h;
}

resource to_resource(const handle_record& h) {
  json::object o;
  o["handleID"] = h.handle_id;
  json::object b;
  for (auto& [k, v] : h.blocks) b[k] = v;
  o["block"] = std::move(b);
  o["deleted"] = h.deleted;
  resource r;
  r.kind = std::string(kinds::ipam_handle);
  r.name = handle_name(h.handle_id);
  r.spec = json::serialize(o);
  return r;
}

// ---- IPAMConfig, IPReservation -----------------------------------------------------------------

result<ipam_config> parse_config(const resource& r) {
  CNF_TRY(o, spec_object(r));
  reader rd{r, o};
  ipam_config c;
  CNF_TRY(strict, rd.boolean("strictAffinity"));
  c.strict_affinity = strict.value_or(false);
  CNF_TRY(aut, rd.boolean("autoAllocateBlocks"));
  c.auto_allocate_blocks = aut.value_or(true);
  CNF_TRY(mx, rd.integer("maxBlocksPerHost"));
  if (mx && (*mx < 0 || *mx > INT32_MAX))
    return error(errc::invalid, rd.field("maxBlocksPerHost") + ": " + std::to_string(*mx) + " is not a count of blocks (0 = no limit)");
  c.max_blocks_per_host = mx ? static_cast<std::uint32_t>(*mx) : 0;
  return c;
}

result<reservation> parse_reservation(const resource& r) {
  CNF_TRY(o, spec_object(r));
  reader rd{r, o};
  reservation res;
  res.name = r.name;
  auto* v = o.if_contains("reservedCIDRs");
  if (!v || v->is_null()) return res;
  if (!v->is_array()) return error(errc::invalid, rd.field("reservedCIDRs") + ": expected an array of CIDRs");
  std::size_t i = 0;
  for (auto& e : v->as_array()) {
    std::string f = "reservedCIDRs[" + std::to_string(i++) + "]";
    if (!e.is_string()) return error(errc::invalid, rd.field(f) + ": expected a CIDR string");
    std::string s(e.as_string());
    if (s.find('/') == std::string::npos) {
      auto a = ip_address::parse(s);
      if (!a) return error(errc::invalid, rd.field(f) + ": '" + s + "' is not an address or CIDR");
      res.cidrs.emplace_back(*a, a->bits());
      continue;
    }
    CNF_TRY(c, parse_cidr(rd, f, s));
    res.cidrs.push_back(c);
  }
  return res;
}

std::vector<error> validate_reservations(const std::vector<reservation>& rs, const std::vector<pool>& pools) {
  std::vector<error> out;
  for (auto& r : rs)
    for (std::size_t i = 0; i < r.cidrs.size(); ++i) {
      bool inside = std::any_of(pools.begin(), pools.end(), [&](const pool& p) { return p.cidr.contains(r.cidrs[i]); });
      if (!inside)
        out.push_back(error(errc::invalid, "IPReservation/" + r.name + ": spec.reservedCIDRs[" + std::to_string(i) + "]: " +
                                               r.cidrs[i].to_string() + " is outside every IPPool"));
    }
  return out;
}

// ---- settings ------------------------------------------------------------------------------

options configure(settings& s) {
  options o;
  auto retries = s.get<std::int64_t>("max_retries", 100);
  if (retries < 1 || retries > 100000) s.fail("max_retries", "must be between 1 and 100000");
  else o.max_retries = static_cast<std::uint32_t>(retries);
  auto ttl = s.get<std::int64_t>("cache_ttl_ms", 2000);
  if (ttl < 0) s.fail("cache_ttl_ms", "must not be negative (0 reads pools and IPAMConfig on every assignment)");
  else o.cache_ttl = std::chrono::milliseconds(ttl);
  o.empty_block_grace = std::chrono::seconds(s.get<std::int64_t>("empty_block_grace_seconds", 300));
  auto reclaim = s.get<std::int64_t>("reclaim_age_seconds", 60);
  if (reclaim < 0) s.fail("reclaim_age_seconds", "must not be negative");
  else o.reclaim_age = std::chrono::seconds(reclaim);
  o.release_scan = s.get<bool>("release_scan", false);
  o.lock_dir = s.get<std::string>("lock_dir", std::string());
  auto lock_ms = s.get<std::int64_t>("lock_timeout_ms", 30000);
  if (lock_ms < 1) s.fail("lock_timeout_ms", "must be at least 1");
  else o.lock_timeout = std::chrono::milliseconds(lock_ms);

  if (const toml::node* n = s.node("pools")) {
    const toml::array* arr = n->as_array();
    if (!arr) {
      s.fail("pools", "expected an array of tables: [[" + s.section() + ".pools]] cidr = \"10.244.0.0/16\"");
      return o;
    }
    static const std::set<std::string> keys = {"cidr", "block_size", "name", "node_selector", "disabled", "ipip_mode", "vxlan_mode", "nat_outgoing"};
    std::size_t idx = 0;
    unsigned v4 = 0, v6 = 0;
    for (auto& e : *arr) {
      std::string path = "pools[" + std::to_string(idx++) + "]";
      const toml::table* t = e.as_table();
      if (!t) {
        s.fail_at(e, path, "expected a table with cidr = \"...\"");
        continue;
      }
      for (auto& [k, v] : *t) {
        std::string key(k.str());
        if (keys.count(key)) continue;
        std::string msg = "unknown key";
        if (auto m = did_you_mean(key, keys)) msg += "; did you mean '" + *m + "'?";
        s.fail_at(v, path + "." + key, msg);
      }
      auto cidr = t->get_as<std::string>("cidr");
      if (!cidr) {
        s.fail_at(e, path + ".cidr", "is required (a string such as \"10.244.0.0/16\")");
        continue;
      }
      json::object spec;
      spec["cidr"] = cidr->get();
      auto copy_int = [&](const char* k, const char* f) {
        if (auto* x = t->get(k)) {
          if (auto i = x->as_integer()) spec[f] = i->get();
          else s.fail_at(*x, path + "." + k, "expected an integer");
        }
      };
      auto copy_str = [&](const char* k, const char* f) {
        if (auto* x = t->get(k)) {
          if (auto str = x->as_string()) spec[f] = str->get();
          else s.fail_at(*x, path + "." + k, "expected a string");
        }
      };
      auto copy_bool = [&](const char* k, const char* f) {
        if (auto* x = t->get(k)) {
          if (auto b = x->as_boolean()) spec[f] = b->get();
          else s.fail_at(*x, path + "." + k, "expected true or false");
        }
      };
      copy_int("block_size", "blockSize");
      copy_str("node_selector", "nodeSelector");
      copy_str("ipip_mode", "ipipMode");
      copy_str("vxlan_mode", "vxlanMode");
      copy_bool("nat_outgoing", "natOutgoing");
      copy_bool("disabled", "disabled");
      resource r;
      r.kind = std::string(kinds::ip_pool);
      if (auto nm = t->get_as<std::string>("name")) r.name = nm->get();
      auto parsed_cidr = ip_prefix::parse(cidr->get(), true);
      if (r.name.empty()) {
        bool is_v4 = parsed_cidr && parsed_cidr->family() == ip_family::v4;
        unsigned& count = is_v4 ? v4 : v6;
        r.name = count == 0 ? (is_v4 ? "default-ipv4-ippool" : "default-ipv6-ippool")
                            : (parsed_cidr ? "pool-" + block_name(parsed_cidr->canonical()) : "pool");
        ++count;
      }
      r.spec = json::serialize(spec);
      auto p = parse_pool(r);
      if (!p) {
        // The message names the IPPool field; point at the settings key instead.
        std::string m = p.error().message;
        auto colon = m.find(": spec.");
        s.fail_at(e, path, colon == std::string::npos ? m : m.substr(colon + 2));
        continue;
      }
      o.default_pools.push_back(std::move(*p));
    }
    std::vector<resource> rs;
    for (auto& p : o.default_pools) rs.push_back(to_resource(p));
    for (auto& problem : validate_pools(rs)) s.fail("pools", problem.message);
  }
  return o;
}

}  // namespace calico_ipam
CNF_END_NAMESPACE
