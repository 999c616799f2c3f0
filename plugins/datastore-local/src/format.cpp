#include "format.hpp"

#include <boost/crc.hpp>
#include <boost/json.hpp>

#include <charconv>
#include <cstring>

CNF_BEGIN_NAMESPACE
namespace detail::local {

namespace {
constexpr char hexdigits[] = "0123456789ABCDEF";

bool plain(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
}
int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// Escaped names longer than this are cut and get a hash suffix (ext4 allows 255 bytes).
constexpr std::size_t max_plain_file = 200;
constexpr std::size_t hashed_prefix = 150;
// Longest kind, namespace and name accepted (bytes).
constexpr std::size_t max_component = 1024;

void put32(char* p, std::uint32_t v) { std::memcpy(p, &v, 4); }
void put64(char* p, std::uint64_t v) { std::memcpy(p, &v, 8); }
void put16(char* p, std::uint16_t v) { std::memcpy(p, &v, 2); }
std::uint32_t get32(const char* p) { std::uint32_t v; std::memcpy(&v, p, 4); return v; }
std::uint64_t get64(const char* p) { std::uint64_t v; std::memcpy(&v, p, 8); return v; }
std::uint16_t get16(const char* p) { std::uint16_t v; std::memcpy(&v, p, 2); return v; }

constexpr std::uint32_t head_magic = 0x48464e43;     // "CNFH"
constexpr std::uint32_t segment_magic = 0x53464e43;  // "CNFS"
constexpr std::uint32_t record_magic = 0x52464e43;   // "CNFR"
constexpr std::uint32_t format_version = 1;
}  // namespace

std::string escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (plain(c) && !(i == 0 && c == '.')) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hexdigits[c >> 4];
      out += hexdigits[c & 15];
    }
  }
  return out;
}

std::optional<std::string> unescape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (plain(static_cast<unsigned char>(c))) {
      out += c;
    } else {
      return std::nullopt;
    }
  }
  if (escape(out) != s) return std::nullopt;  // only the canonical form is ours
  return out;
}

std::string ns_dir(std::string_view ns) { return ns.empty() ? std::string("_") : escape(ns); }

std::optional<std::string> ns_from_dir(std::string_view d) {
  if (d == "_") return std::string();
  auto ns = unescape(d);
  if (!ns || ns->empty()) return std::nullopt;
  return ns;
}

std::string file_name(std::string_view name) {
  std::string e = escape(name);
  if (e.size() <= max_plain_file) return e + ".json";
  std::size_t n = hashed_prefix;
  if (e[n - 1] == '%') n -= 1;
  else if (e[n - 2] == '%') n -= 2;
  char h[17];
  std::uint64_t v = fnv1a(name);
  for (int i = 15; i >= 0; --i, v >>= 4) h[i] = hexdigits[v & 15];
  h[16] = 0;
  return e.substr(0, n) + "~" + h + ".json";
}

std::optional<parsed_file_name> parse_file_name(std::string_view file) {
  constexpr std::string_view ext = ".json";
  if (file.size() <= ext.size() || file.substr(file.size() - ext.size()) != ext) return std::nullopt;
  file.remove_suffix(ext.size());
  auto tilde = file.find('~');
  parsed_file_name p;
  if (tilde != std::string_view::npos) {
    if (file.size() - tilde != 17) return std::nullopt;
    auto pre = unescape(file.substr(0, tilde));
    if (!pre || pre->empty()) return std::nullopt;
    p.name = std::move(*pre);
    p.hashed = true;
    return p;
  }
  auto n = unescape(file);
  if (!n || n->empty()) return std::nullopt;
  if (escape(*n).size() > max_plain_file) return std::nullopt;
  p.name = std::move(*n);
  return p;
}

std::string resource_path(const resource_key& k) {
  return escape(k.kind) + "/" + ns_dir(k.ns) + "/" + file_name(k.name);
}

std::uint32_t crc32(const void* data, std::size_t n, std::uint32_t crc) noexcept {
  boost::crc_32_type c;
  if (crc) c.reset(crc ^ 0xFFFFFFFFu);
  c.process_bytes(data, n);
  return c.checksum();
}

// ---- head ----------------------------------------------------------------------------
// magic u32 | version u32 | boot[48] | seg u64 | m_off u64 | m_rev u64 | d_rev u64 |
// reserved[36] | crc u32 (over the first 124 bytes)

void encode_head(const head& h, char* out) {
  std::memset(out, 0, head_size);
  put32(out, head_magic);
  put32(out + 4, format_version);
  std::memcpy(out + 8, h.boot.data(), std::min<std::size_t>(h.boot.size(), 47));
  put64(out + 56, h.seg);
  put64(out + 64, h.m_off);
  put64(out + 72, h.m_rev);
  put64(out + 80, h.d_rev);
  put32(out + 124, crc32(out, 124));
}

bool decode_head(const char* in, std::size_t n, head& h) {
  if (n < head_size) return false;
  if (get32(in) != head_magic || get32(in + 4) != format_version) return false;
  if (get32(in + 124) != crc32(in, 124)) return false;
  h.boot.assign(in + 8, strnlen(in + 8, 48));
  h.seg = get64(in + 56);
  h.m_off = get64(in + 64);
  h.m_rev = get64(in + 72);
  h.d_rev = get64(in + 80);
  return h.seg > 0 && h.m_rev <= h.d_rev && h.m_off >= segment_header_size;
}

// ---- segments ------------------------------------------------------------------------
// magic u32 | version u32 | first_rev u64 | reserved[12] | crc u32

void encode_segment_header(std::uint64_t first_rev, char* out) {
  std::memset(out, 0, segment_header_size);
  put32(out, segment_magic);
  put32(out + 4, format_version);
  put64(out + 8, first_rev);
  put32(out + 28, crc32(out, 28));
}

bool decode_segment_header(const char* in, std::size_t n, std::uint64_t& first_rev) {
  if (n < segment_header_size) return false;
  if (get32(in) != segment_magic || get32(in + 4) != format_version || get32(in + 28) != crc32(in, 28)) return false;
  first_rev = get64(in + 8);
  return first_rev > 0;
}

std::string segment_name(std::uint64_t first_rev) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%020llu.log", static_cast<unsigned long long>(first_rev));
  return buf;
}

std::optional<std::uint64_t> parse_segment_name(std::string_view file) {
  if (file.size() != 24 || file.substr(20) != ".log") return std::nullopt;
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(file.data(), file.data() + 20, v);
  if (ec != std::errc() || p != file.data() + 20 || v == 0) return std::nullopt;
  return v;
}

// ---- records -------------------------------------------------------------------------
// magic u32 | total u32 | crc u32 (over bytes 12..total) | op u8 | pad[3] | rev u64 |
// pid u32 | kind_len u16 | ns_len u16 | name_len u16 | pad[6] | kind | ns | name | body

std::string encode_record(const record& r) {
  std::size_t total = record_header_size + r.key.kind.size() + r.key.ns.size() + r.key.name.size() + r.body.size();
  std::string out(total, '\0');
  char* p = out.data();
  put32(p, record_magic);
  put32(p + 4, static_cast<std::uint32_t>(total));
  p[12] = static_cast<char>(r.what);
  put64(p + 16, r.rev);
  put32(p + 24, r.pid);
  put16(p + 28, static_cast<std::uint16_t>(r.key.kind.size()));
  put16(p + 30, static_cast<std::uint16_t>(r.key.ns.size()));
  put16(p + 32, static_cast<std::uint16_t>(r.key.name.size()));
  char* q = p + record_header_size;
  std::memcpy(q, r.key.kind.data(), r.key.kind.size());
  q += r.key.kind.size();
  std::memcpy(q, r.key.ns.data(), r.key.ns.size());
  q += r.key.ns.size();
  std::memcpy(q, r.key.name.data(), r.key.name.size());
  q += r.key.name.size();
  std::memcpy(q, r.body.data(), r.body.size());
  put32(p + 8, crc32(p + 12, total - 12));
  return out;
}

decoded decode_record(const char* in, std::size_t n, record& out, std::size_t& used) {
  if (n < 8) return decoded::incomplete;
  if (get32(in) != record_magic) return n >= record_header_size ? decoded::corrupt : decoded::incomplete;
  std::uint32_t total = get32(in + 4);
  if (total < record_header_size || total > max_record_size) return decoded::corrupt;
  if (n < total) return decoded::incomplete;
  if (get32(in + 8) != crc32(in + 12, total - 12)) return decoded::corrupt;
  auto what = static_cast<std::uint8_t>(in[12]);
  if (what < 1 || what > 3) return decoded::corrupt;
  std::size_t kl = get16(in + 28), nl = get16(in + 30), ml = get16(in + 32);
  if (record_header_size + kl + nl + ml > total) return decoded::corrupt;
  out.what = static_cast<op>(what);
  out.rev = get64(in + 16);
  out.pid = get32(in + 24);
  const char* q = in + record_header_size;
  out.key.kind.assign(q, kl);
  q += kl;
  out.key.ns.assign(q, nl);
  q += nl;
  out.key.name.assign(q, ml);
  q += ml;
  out.body.assign(q, in + total);
  used = total;
  return decoded::ok;
}

// ---- resources -----------------------------------------------------------------------

std::string to_rev(std::uint64_t r) { return std::to_string(r); }

bool parse_rev(std::string_view s, std::uint64_t& out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

std::string encode_resource(const resource& r) {
  // The spec is already canonical JSON (check_resource / decode_resource made it so).
  auto quote = [](std::string_view v) { return boost::json::serialize(boost::json::string_view(v.data(), v.size())); };
  std::string out = "{\"kind\":" + quote(r.kind) + ",\"namespace\":" + quote(r.ns) + ",\"name\":" + quote(r.name) +
                    ",\"revision\":" + quote(r.revision) + ",\"labels\":{";
  bool first = true;
  for (auto& [k, v] : r.labels) {
    if (!first) out += ',';
    first = false;
    out += quote(k);
    out += ':';
    out += quote(v);
  }
  out += "},\"spec\":";
  out += r.spec.empty() ? std::string_view("{}") : std::string_view(r.spec);
  out += '}';
  return out;
}

result<resource> decode_resource(std::string_view text, std::string_view where) {
  auto bad = [&](std::string what) {
    return error(errc::invalid, std::string(where) + ": " + what + " (corrupt datastore content; restore or remove the file)");
  };
  boost::system::error_code ec;
  auto v = boost::json::parse(text, ec);
  if (ec) return bad("not valid JSON: " + ec.message());
  auto* o = v.if_object();
  if (!o) return bad("not a JSON object");
  resource r;
  auto str = [&](std::string_view key, std::string& out) {
    auto* f = o->if_contains(key);
    if (!f || !f->is_string()) return false;
    out = std::string(f->get_string());
    return true;
  };
  if (!str("kind", r.kind) || r.kind.empty()) return bad("field 'kind' is missing or not a non-empty string");
  if (!str("namespace", r.ns)) return bad("field 'namespace' is missing or not a string");
  if (!str("name", r.name) || r.name.empty()) return bad("field 'name' is missing or not a non-empty string");
  std::uint64_t rv = 0;
  if (!str("revision", r.revision) || !parse_rev(r.revision, rv)) return bad("field 'revision' is missing or not a decimal number");
  if (auto* l = o->if_contains("labels")) {
    if (!l->is_object()) return bad("field 'labels' is not an object");
    for (auto& [k, lv] : l->get_object()) {
      if (!lv.is_string()) return bad("label '" + std::string(k) + "' is not a string");
      r.labels.emplace(std::string(k), std::string(lv.get_string()));
    }
  }
  auto* s = o->if_contains("spec");
  if (!s || !s->is_object()) return bad("field 'spec' is missing or not an object");
  r.spec = boost::json::serialize(*s);
  return r;
}

namespace {
constexpr std::string_view checksum_member = ",\"checksum\":\"crc32:";
}

std::string encode_resource_file(std::string_view body) {
  // body is "{...}": put the checksum in as its last member.
  std::string out(body.substr(0, body.size() - 1));
  std::uint32_t c = crc32(out.data(), out.size());
  char h[9];
  for (int i = 7; i >= 0; --i, c >>= 4) h[i] = hexdigits[c & 15];
  h[8] = 0;
  out += checksum_member;
  out += h;
  out += "\"}\n";
  return out;
}

result<resource> decode_resource_file(std::string_view text, std::string_view where, bool& damaged) {
  damaged = false;
  auto bad = [&](std::string what) {
    damaged = true;
    return error(errc::invalid, std::string(where) + ": " + what + " (corrupt datastore content; restore or remove the file)");
  };
  auto at = text.rfind(checksum_member);
  if (at == std::string_view::npos) return bad(text.empty() ? "empty file" : "no checksum (cut short or not written by cnf)");
  auto tail = text.substr(at + checksum_member.size());
  if (tail.size() < 8 + 2 || tail.substr(8, 2) != "\"}") return bad("malformed checksum");
  for (std::size_t i = 10; i < tail.size(); ++i)
    if (tail[i] != '\n' && tail[i] != ' ' && tail[i] != '\r') return bad("data after the end");
  std::uint32_t want = 0;
  for (int i = 0; i < 8; ++i) {
    int v = hexval(tail[static_cast<std::size_t>(i)]);
    if (v < 0) return bad("malformed checksum");
    want = want * 16 + static_cast<std::uint32_t>(v);
  }
  if (crc32(text.data(), at) != want) return bad("checksum mismatch (damaged, or edited by hand)");
  std::string body(text.substr(0, at));
  body += '}';
  auto r = decode_resource(body, where);
  return r;
}

result<void> check_key(const resource_key& k) {
  if (k.kind.empty()) return error(errc::invalid, "resource " + k.to_string() + ": kind is empty");
  if (k.name.empty()) return error(errc::invalid, "resource " + k.to_string() + ": name is empty");
  if (k.kind.size() > max_component || k.ns.size() > max_component || k.name.size() > max_component)
    return error(errc::invalid, "resource " + k.to_string().substr(0, 200) + "...: kind, namespace and name must be at most " +
                                    std::to_string(max_component) + " bytes each");
  if (escape(k.kind).size() > max_plain_file || escape(k.ns).size() > max_plain_file)
    return error(errc::invalid, "resource " + k.to_string() + ": kind or namespace too long for a directory name");
  return {};
}

result<resource> check_resource(const resource& r) {
  if (auto e = check_key(r.key()); !e) return e.error();
  // Every write passes here, so the parse borrows a stack buffer (a calico-ipam block
  // is 2-10 KB of JSON: hundreds of small allocations otherwise) and the canonical text
  // is written into a string of the input's size: 40% less CPU than parse + serialize.
  unsigned char arena[32768];
  boost::json::monotonic_resource mr(arena, sizeof arena);
  boost::system::error_code ec;
  auto spec = boost::json::parse(r.spec.empty() ? std::string_view("{}") : std::string_view(r.spec), ec, &mr);
  if (ec) return error(errc::invalid, "resource " + r.key().to_string() + ": spec is not valid JSON: " + ec.message());
  if (!spec.is_object()) return error(errc::invalid, "resource " + r.key().to_string() + ": spec must be a JSON object");
  resource out{r.kind, r.ns, r.name, r.labels, std::string(), r.revision};  // all but the spec
  out.spec.reserve(r.spec.size() + 2);
  boost::json::serializer sr;
  sr.reset(&spec);
  char chunk[4096];
  while (!sr.done()) out.spec.append(sr.read(chunk));
  return out;
}

}  // namespace detail::local
CNF_END_NAMESPACE
