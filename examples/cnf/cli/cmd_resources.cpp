// cnf apply -f FILE | cnf get KIND [NAME] [-n NS] [-o yaml|json|wide] | cnf delete KIND NAME [-n NS] | cnf delete -f FILE
//
// Resources in Calico's projectcalico.org/v3 shape (IPPool, IPAMConfiguration,
// IPReservation, NetworkPolicy, GlobalNetworkPolicy, NetworkSet, GlobalNetworkSet), the
// Kubernetes NetworkPolicy (networking.k8s.io/v1, stored as KubernetesNetworkPolicy), v1
// Namespace objects (their labels, for namespaceSelector) and v1 ServiceAccount objects (their
// labels, for serviceAccountSelector and the ksa.<ns>.<sa> profiles), BGPPeer and BGPConfiguration
// (validated with cnf/model/bgp.hpp, the parsers the agents read them with), in YAML or JSON, one document or
// many, a List (or <Kind>List) too. apply validates every document (the policy kinds with
// the policy calculation's own parsers, so what apply accepts the agents can program), and
// the whole set against what the datastore holds (overlapping pools, changed CIDRs,
// reservations outside every pool), before it writes the first one: a bad file writes nothing.
#include "cli/tool.hpp"

#if CNF_TOOL_CALICO
#include <cnf/model/bgp.hpp>
#include <cnf/plugins/calico_ipam.hpp>
#include <cnf/policy/rules.hpp>

#include <boost/json.hpp>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <cstdint>
#include <iostream>
#include <iterator>
#include <map>
#include <set>
#include <tuple>

namespace cnf_app {
namespace {

namespace json = boost::json;
namespace ci = cnf::calico_ipam;

constexpr std::string_view api_version = "projectcalico.org/v3";

// ---- YAML <-> JSON -------------------------------------------------------------------

bool plain_bool(const std::string& s, bool* v) {
  if (s == "true" || s == "True" || s == "TRUE") return *v = true, true;
  if (s == "false" || s == "False" || s == "FALSE") return *v = false, true;
  return false;
}
bool plain_null(const std::string& s) { return s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL"; }
bool plain_int(const std::string& s, std::int64_t* v) {
  if (s.empty()) return false;
  std::size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
  if (i == s.size() || s.size() - i > 18) return false;
  for (std::size_t j = i; j < s.size(); ++j)
    if (s[j] < '0' || s[j] > '9') return false;
  *v = std::stoll(s);
  return true;
}
bool plain_float_like(const std::string& s) {
  if (s.empty()) return false;
  bool digit = false;
  for (char c : s) {
    if (c >= '0' && c <= '9') digit = true;
    else if (!std::strchr("+-.eE", c)) return false;
  }
  return digit;
}

// YAML 1.2 core schema for plain scalars; quoted scalars stay strings.
json::value to_json(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined: return nullptr;
    case YAML::NodeType::Scalar: {
      const std::string& s = n.Scalar();
      if (n.Tag() == "!") return json::string(s);
      bool b;
      std::int64_t i;
      if (plain_bool(s, &b)) return b;
      if (plain_null(s)) return nullptr;
      if (plain_int(s, &i)) return i;
      return json::string(s);
    }
    case YAML::NodeType::Sequence: {
      json::array a;
      for (const auto& e : n) a.push_back(to_json(e));
      return a;
    }
    case YAML::NodeType::Map: {
      json::object o;
      for (const auto& kv : n) o[kv.first.as<std::string>()] = to_json(kv.second);
      return o;
    }
  }
  return nullptr;
}

void emit(YAML::Emitter& e, const json::value& v) {
  switch (v.kind()) {
    case json::kind::null: e << YAML::Null; break;
    case json::kind::bool_: e << (v.get_bool() ? "true" : "false"); break;
    case json::kind::int64: e << v.get_int64(); break;
    case json::kind::uint64: e << v.get_uint64(); break;
    case json::kind::double_: e << v.get_double(); break;
    case json::kind::string: {
      std::string s(v.get_string());
      bool b;
      std::int64_t i;
      bool quote = plain_bool(s, &b) || plain_null(s) || plain_int(s, &i) || plain_float_like(s);
      if (quote) e << YAML::DoubleQuoted;
      e << s;
      break;
    }
    case json::kind::array:
      e << YAML::BeginSeq;
      for (auto& x : v.get_array()) emit(e, x);
      e << YAML::EndSeq;
      break;
    case json::kind::object:
      e << YAML::BeginMap;
      for (auto& [k, x] : v.get_object()) {
        e << YAML::Key << std::string(k) << YAML::Value;
        emit(e, x);
      }
      e << YAML::EndMap;
      break;
  }
}

// JSON with two-space indentation (Boost 1.81 has no pretty printer).
void pretty(std::string& out, const json::value& v, int depth) {
  std::string ind(static_cast<std::size_t>(depth + 1) * 2, ' '), end(static_cast<std::size_t>(depth) * 2, ' ');
  if (v.is_object() && !v.get_object().empty()) {
    out += "{\n";
    bool first = true;
    for (auto& [k, x] : v.get_object()) {
      out += (first ? "" : ",\n") + ind + json::serialize(json::string(k)) + ": ";
      pretty(out, x, depth + 1);
      first = false;
    }
    out += "\n" + end + "}";
  } else if (v.is_array() && !v.get_array().empty()) {
    out += "[\n";
    bool first = true;
    for (auto& x : v.get_array()) {
      out += (first ? "" : ",\n") + ind;
      pretty(out, x, depth + 1);
      first = false;
    }
    out += "\n" + end + "]";
  } else {
    out += json::serialize(v);
  }
}

// ---- reading documents ---------------------------------------------------------------

struct document {
  std::string where;  ///< "FILE: document 2" or "FILE:14: document 2, items[0]"
  json::value v;
};

cnf::result<std::vector<document>> read_documents(const std::string& path) {
  std::string text;
  if (path == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else {
    std::string err;
    auto t = tool::read_text_file(path, &err);
    if (!t) return cnf::error(cnf::errc::not_found, err);
    text = std::move(*t);
  }
  const std::string name = path == "-" ? "(stdin)" : path;
  std::vector<document> raw;
  auto first = text.find_first_not_of(" \t\r\n");
  bool is_json = path.ends_with(".json") || (first != std::string::npos && (text[first] == '{' || text[first] == '['));
  if (is_json) {
    boost::system::error_code ec;
    json::value v = json::parse(text, ec);
    if (ec) return cnf::error(cnf::errc::invalid, name + ": not valid JSON: " + ec.message());
    if (v.is_array()) {
      std::size_t i = 0;
      for (auto& x : v.get_array()) raw.push_back({name + ": document " + std::to_string(++i), x});
    } else {
      raw.push_back({name + ": document 1", std::move(v)});
    }
  } else {
    try {
      std::size_t i = 0;
      for (auto& n : YAML::LoadAll(text)) {
        ++i;
        if (n.IsNull()) continue;  // an empty document ("---" at the end)
        raw.push_back({name + ":" + std::to_string(n.Mark().line + 1) + ": document " + std::to_string(i), to_json(n)});
      }
    } catch (const YAML::Exception& e) {  // syntax, or a mapping key that is not a scalar
      return cnf::error(cnf::errc::invalid, name + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                                                ": not valid YAML: " + e.msg);
    }
  }
  // Lists: kind List or <Kind>List with items.
  std::vector<document> out;
  for (auto& d : raw) {
    auto* o = d.v.if_object();
    auto* kind = o ? o->if_contains("kind") : nullptr;
    if (kind && kind->is_string() && std::string_view(kind->get_string()).ends_with("List")) {
      auto* items = o->if_contains("items");
      if (!items || !items->is_array()) return cnf::error(cnf::errc::invalid, d.where + ": items: a " + std::string(kind->get_string()) + " needs an array of items");
      std::size_t j = 0;
      for (auto& it : items->get_array()) out.push_back({d.where + ", items[" + std::to_string(j++) + "]", it});
      continue;
    }
    out.push_back(std::move(d));
  }
  if (out.empty()) return cnf::error(cnf::errc::invalid, name + ": no resources in the file");
  return out;
}

// ---- validating documents ------------------------------------------------------------

/// A kind cnf apply/get/delete know: as written in documents and as stored.
struct kind_info {
  std::string kind;    ///< in documents: IPPool, NetworkPolicy, Namespace, ...
  std::string api;     ///< apiVersion in documents
  std::string stored;  ///< the datastore's kind
  bool namespaced = false;
  std::set<std::string> spec_fields;  ///< checked here; empty: the kind's parser checks them
  std::string label() const { return api == "networking.k8s.io/v1" ? kind + ".networking.k8s.io" : kind; }
};

const std::vector<kind_info>& kinds_known() {
  static const std::vector<kind_info> k = {
      {"IPPool", std::string(api_version), std::string(cnf::kinds::ip_pool), false,
       {"cidr", "blockSize", "ipipMode", "vxlanMode", "natOutgoing", "disabled", "nodeSelector", "allowedUses", "disableBGPExport"}},
      {"IPAMConfiguration", std::string(api_version), std::string(cnf::kinds::ipam_config), false,
       {"strictAffinity", "autoAllocateBlocks", "maxBlocksPerHost"}},
      {"IPReservation", std::string(api_version), std::string(cnf::kinds::ip_reservation), false, {"reservedCIDRs"}},
      {"NetworkPolicy", std::string(api_version), std::string(cnf::kinds::network_policy), true, {}},
      {"GlobalNetworkPolicy", std::string(api_version), std::string(cnf::kinds::global_network_policy), false, {}},
      {"NetworkSet", std::string(api_version), std::string(cnf::kinds::network_set), true, {}},
      {"GlobalNetworkSet", std::string(api_version), "GlobalNetworkSet", false, {}},
      {"NetworkPolicy", "networking.k8s.io/v1", "KubernetesNetworkPolicy", true, {}},
      {"Namespace", "v1", "Namespace", false, {"finalizers"}},
      {"ServiceAccount", "v1", "ServiceAccount", true, {}},
      {"BGPPeer", std::string(api_version), std::string(cnf::kinds::bgp_peer), false, {}},
      {"BGPConfiguration", std::string(api_version), std::string(cnf::kinds::bgp_configuration), false, {}},
      {"BGPFilter", std::string(api_version), std::string(cnf::kinds::bgp_filter), false, {}},
  };
  return k;
}

const kind_info* find_kind(std::string_view api, std::string_view kind) {
  for (auto& k : kinds_known())
    if (k.api == api && k.kind == kind) return &k;
  return nullptr;
}

struct planned {
  std::string where;
  const kind_info* info = nullptr;
  cnf::resource res;  ///< as stored
  std::optional<ci::pool> pool;
  std::optional<ci::reservation> reservation;
  std::string display() const { return info->label() + "/" + (res.ns.empty() ? "" : res.ns + "/") + res.name; }
};

bool dns_label(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  return s.front() != '-' && s.back() != '-';
}

bool dns_subdomain(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.')) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  return alnum(s.front()) && alnum(s.back());
}

/// Strips the "IPPool/name: " the calico-ipam parsers put in front of the field (and the
/// "NetworkPolicy/ns/name: " of the policy parsers).
std::string field_part(const std::string& msg, const cnf::resource& r) {
  std::string pre = r.key().to_string() + ": ";
  if (msg.starts_with(pre)) return msg.substr(pre.size());
  for (std::string_view k : {"NetworkPolicy/", "GlobalNetworkPolicy/", "NetworkSet/", "GlobalNetworkSet/"}) {
    std::string p2 = std::string(k) + (r.ns.empty() ? "" : r.ns + "/") + r.name + ": ";
    if (msg.starts_with(p2)) return msg.substr(p2.size());
  }
  return msg;
}

cnf::result<planned> validate_document(const document& d) {
  auto bad = [&](const std::string& what) { return cnf::error(cnf::errc::invalid, d.where + ": " + what); };
  auto* o = d.v.if_object();
  if (!o) return bad("expected a mapping with apiVersion, kind, metadata and spec");
  auto* kv = o->if_contains("kind");
  if (!kv || !kv->is_string()) return bad("kind: is required");
  std::string kind(kv->get_string());
  auto* av = o->if_contains("apiVersion");
  const std::string api = av && av->is_string() ? std::string(av->get_string()) : std::string();
  const kind_info* info = find_kind(api, kind);
  if (!info) {
    std::string apis;
    for (auto& k : kinds_known())
      if (k.kind == kind) apis += (apis.empty() ? "" : " or ") + k.api;
    if (!apis.empty())
      return bad("apiVersion: a " + kind + " must be " + apis + (api.empty() ? std::string(" (apiVersion is missing)") : ", not '" + api + "'"));
    return bad("kind: '" + kind +
               "' is not supported (IPPool, IPAMConfiguration, IPReservation, NetworkPolicy, GlobalNetworkPolicy, NetworkSet, "
               "GlobalNetworkSet, BGPPeer, BGPConfiguration, BGPFilter of projectcalico.org/v3; NetworkPolicy of networking.k8s.io/v1; Namespace, ServiceAccount of v1)");
  }
  for (auto& [k, v] : *o) {
    (void)v;
    if (k == "status" && info->kind == "Namespace") continue;  // as `kubectl get -o yaml` prints it; not stored
    if (info->kind == "ServiceAccount") {
      // A ServiceAccount has no spec: its own fields sit beside metadata. cnf uses only its labels.
      if (k == "secrets" || k == "imagePullSecrets") {
        if (!v.is_array() && !v.is_null()) return bad(std::string(k) + ": expected a list");
        continue;
      }
      if (k == "automountServiceAccountToken") {
        if (!v.is_bool() && !v.is_null()) return bad(std::string(k) + ": expected true or false");
        continue;
      }
      if (k != "apiVersion" && k != "kind" && k != "metadata")
        return bad(std::string(k) + ": unknown field (a ServiceAccount has apiVersion, kind, metadata, secrets, imagePullSecrets, "
                                    "automountServiceAccountToken)");
      continue;
    }
    if (k != "apiVersion" && k != "kind" && k != "metadata" && k != "spec")
      return bad(std::string(k) + ": unknown field (a resource has apiVersion, kind, metadata, spec)");
  }
  planned p;
  p.info = info;
  p.res.kind = info->stored;

  auto* md = o->if_contains("metadata");
  if (!md || !md->is_object()) return bad("metadata: is required (with a name)");
  for (auto& [k, v] : md->get_object()) {
    if (k == "name" || k == "labels" || k == "annotations" || k == "resourceVersion" || k == "uid" || k == "creationTimestamp" ||
        k == "generation" || k == "managedFields")
      continue;
    if (k == "namespace") {
      if (!info->namespaced) return bad("metadata.namespace: " + kind + " is cluster-wide and has no namespace");
      if (!v.is_string() || !dns_label(v.get_string()))
        return bad("metadata.namespace: expected a namespace name (lower-case letters, digits and '-', at most 63)");
      p.res.ns = std::string(v.get_string());
      continue;
    }
    return bad("metadata." + std::string(k) + ": unknown field");
  }
  if (info->namespaced && p.res.ns.empty()) p.res.ns = "default";  // as kubectl and calicoctl do
  auto* nm = md->get_object().if_contains("name");
  if (!nm || !nm->is_string() || nm->get_string().empty()) return bad("metadata.name: is required");
  p.res.name = std::string(nm->get_string());
  if (info->kind == "Namespace" && !dns_label(p.res.name))
    return bad("metadata.name: '" + p.res.name + "' is not a valid namespace name (lower-case letters, digits and '-', at most 63, "
               "starting and ending with a letter or digit)");
  if (!dns_subdomain(p.res.name))
    return bad("metadata.name: '" + p.res.name + "' is not a valid name (lower-case letters, digits, '-' and '.', starting and ending with a letter or digit)");
  if (kind == "IPAMConfiguration" && p.res.name != ci::config_name) return bad("metadata.name: an IPAMConfiguration must be named 'default'");
  if (auto* lb = md->get_object().if_contains("labels"); lb && !lb->is_null()) {
    if (!lb->is_object()) return bad("metadata.labels: expected a mapping of strings");
    for (auto& [k, v] : lb->get_object()) {
      if (!v.is_string()) return bad("metadata.labels." + std::string(k) + ": expected a string");
      p.res.labels[std::string(k)] = std::string(v.get_string());
    }
  }
  p.where = d.where + " (" + p.display() + ")";
  auto badr = [&](const std::string& what) { return cnf::error(cnf::errc::invalid, p.where + ": " + what); };

  json::object spec;
  if (auto* sp = o->if_contains("spec"); sp && !sp->is_null()) {
    if (!sp->is_object()) return badr("spec: expected a mapping");
    spec = sp->get_object();
  }
  const auto& allowed = info->spec_fields;
  for (auto& [k, v] : spec) {
    (void)v;
    if (!allowed.empty() && !allowed.count(std::string(k))) {
      std::string list;
      for (auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      return badr("spec." + std::string(k) + ": unknown field (" + kind + " has " + list + ")");
    }
  }
  if (kind == "IPPool") {
    if (auto* x = spec.if_contains("allowedUses"); x && !x->is_null()) {
      if (!x->is_array()) return badr("spec.allowedUses: expected a list of Workload, Tunnel");
      for (auto& u : x->get_array())
        if (!u.is_string() || (u.get_string() != "Workload" && u.get_string() != "Tunnel"))
          return badr("spec.allowedUses: each entry must be Workload or Tunnel");
    }
    if (auto* x = spec.if_contains("disableBGPExport"); x && !x->is_null() && !x->is_bool())
      return badr("spec.disableBGPExport: expected true or false");
  }
  p.res.spec = json::serialize(spec);
  if (info->stored == cnf::kinds::network_policy || info->stored == cnf::kinds::global_network_policy) {
    if (auto r = cnf::netpol::parse_calico_policy(p.res); !r) return badr(field_part(r.error().message, p.res));
  } else if (info->stored == "KubernetesNetworkPolicy") {
    auto k = p.res;
    k.kind = "NetworkPolicy";
    if (auto r = cnf::netpol::parse_k8s_network_policy(k); !r) return badr(field_part(r.error().message, k));
  } else if (info->stored == cnf::kinds::network_set || info->stored == "GlobalNetworkSet") {
    if (auto r = cnf::netpol::parse_network_set(p.res); !r) return badr(field_part(r.error().message, p.res));
  } else if (info->stored == cnf::kinds::bgp_peer) {
    if (auto r = cnf::model::parse_bgp_peer(p.res); !r) return badr(field_part(r.error().message, p.res));
  } else if (info->stored == cnf::kinds::bgp_configuration) {
    if (auto r = cnf::model::parse_bgp_configuration(p.res); !r) return badr(field_part(r.error().message, p.res));
  } else if (info->stored == cnf::kinds::bgp_filter) {
    if (auto r = cnf::model::parse_bgp_filter(p.res); !r) return badr(field_part(r.error().message, p.res));
  } else if (kind == "Namespace") {
    if (auto* f = spec.if_contains("finalizers"); f && !f->is_null() && !f->is_array()) return badr("spec.finalizers: expected a list");
    p.res.spec = "{}";  // only its labels matter to cnf
  } else if (kind == "ServiceAccount") {
    p.res.spec = "{}";  // only its labels matter to cnf
  } else if (kind == "IPPool") {
    auto pl = ci::parse_pool(p.res);
    if (!pl) return badr(field_part(pl.error().message, p.res));
    // Stored normalised (defaults filled in), keeping the fields cnf records but does not use.
    json::object norm = json::parse(ci::to_resource(*pl).spec).as_object();
    for (const char* k : {"allowedUses", "disableBGPExport"})
      if (auto* x = spec.if_contains(k)) norm[k] = *x;
    p.res.spec = json::serialize(norm);
    p.pool = *pl;
  } else if (kind == "IPAMConfiguration") {
    auto c = ci::parse_config(p.res);
    if (!c) return badr(field_part(c.error().message, p.res));
  } else {
    auto r = ci::parse_reservation(p.res);
    if (!r) return badr(field_part(r.error().message, p.res));
    p.reservation = *r;
  }
  return p;
}

cnf::result<std::vector<cnf::resource>> list_kind(const cnf::any_datastore& ds, std::string_view kind) {
  auto l = ds.list_all({.kind = std::string(kind)});
  if (!l) return cnf::error(l.error().code, "listing " + std::string(kind) + "s: " + l.error().message);
  return std::move(l->items);
}

std::string profile_or_default(const std::string& p) { return p.empty() ? default_profile_path() : p; }

/// Every document of the files, validated as `apply` validates it; what cannot be read or
/// validated goes to `errors` (apply and delete -f then write nothing).
std::vector<planned> plan_files(const std::vector<std::string>& files, std::vector<std::string>& errors) {
  std::vector<planned> plan;
  for (auto& f : files) {
    auto docs = read_documents(f);
    if (!docs) {
      errors.push_back(docs.error().message);
      continue;
    }
    for (auto& d : *docs) {
      auto p = validate_document(d);
      if (!p) errors.push_back(p.error().message);
      else plan.push_back(std::move(*p));
    }
  }
  return plan;
}

// ---- apply ---------------------------------------------------------------------------

int cmd_apply(const std::string& profile, const std::vector<std::string>& files) {
  constexpr std::string_view what = "apply";
  std::vector<std::string> errors;
  std::vector<planned> plan = plan_files(files, errors);
  // The same resource twice in one apply: which one wins would depend on the order.
  for (std::size_t i = 0; i < plan.size(); ++i)
    for (std::size_t j = 0; j < i; ++j)
      if (plan[i].res.key() == plan[j].res.key()) errors.push_back(plan[i].where + ": metadata.name: also defined at " + plan[j].where);
  auto op = tool::open_datastore(profile_or_default(profile));
  if (!op) {
    for (auto& e : errors) fmt::print(stderr, "{}\n", e);
    return tool::fail(what, op.error().message + "; nothing was written");
  }
  auto& ds = op->ds;

  // The pools after this apply: the stored ones, replaced by name by the applied ones.
  auto stored = list_kind(ds, cnf::kinds::ip_pool);
  if (!stored) return tool::fail(what, stored.error().message);
  std::map<std::string, ci::pool> final_pools;
  std::map<std::string, const planned*> applied_pool;
  for (auto& r : *stored)
    if (auto p = ci::parse_pool(r)) final_pools[p->name] = *p;
  for (auto& p : plan) {
    if (!p.pool) continue;
    if (auto it = final_pools.find(p.pool->name); it != final_pools.end() && !applied_pool.count(p.pool->name)) {
      const auto& old = it->second;
      if (old.cidr != p.pool->cidr)
        errors.push_back(p.where + ": spec.cidr: the pool exists with " + old.cidr.to_string() +
                         "; a pool's CIDR cannot change (create a new pool, move the pods, then delete this one)");
      else if (old.block_size != p.pool->block_size)
        errors.push_back(p.where + ": spec.blockSize: the pool exists with blockSize " + std::to_string(old.block_size) +
                         "; it cannot change while blocks of that size may exist (create a new pool instead)");
    }
    final_pools[p.pool->name] = *p.pool;
    applied_pool[p.pool->name] = &p;
  }
  // Overlaps, reported at the later document of a pair (or at the applied one).
  std::vector<const planned*> applied_order;
  for (auto& p : plan)
    if (p.pool) applied_order.push_back(&p);
  for (std::size_t j = 0; j < applied_order.size(); ++j) {
    const auto& pj = *applied_order[j];
    for (auto& [other, o] : final_pools)
      if (!applied_pool.count(other) && pj.pool->cidr.overlaps(o.cidr))
        errors.push_back(pj.where + ": spec.cidr: " + pj.pool->cidr.to_string() + " overlaps IPPool/" + other + " (" + o.cidr.to_string() +
                         ", in the datastore)");
    for (std::size_t i = 0; i < j; ++i) {
      const auto& pi = *applied_order[i];
      if (pi.pool->name != pj.pool->name && pj.pool->cidr.overlaps(pi.pool->cidr))
        errors.push_back(pj.where + ": spec.cidr: " + pj.pool->cidr.to_string() + " overlaps IPPool/" + pi.pool->name + " (" +
                         pi.pool->cidr.to_string() + ", also in this apply)");
    }
  }
  std::vector<ci::pool> pools_after;
  for (auto& [n, p] : final_pools) pools_after.push_back(p);
  for (auto& p : plan)
    if (p.reservation)
      for (auto& e : ci::validate_reservations({*p.reservation}, pools_after)) errors.push_back(p.where + ": " + field_part(e.message, p.res));

  if (!errors.empty()) {
    for (auto& e : errors) fmt::print(stderr, "{}\n", e);
    fmt::print(stderr, "cnf apply: {} error(s); nothing was written\n", errors.size());
    return 1;
  }

  int rc = 0;
  std::size_t written = 0;
  for (auto& p : plan) {
    auto cur = ds.get(p.res.key());
    cnf::result<cnf::resource> w = cnf::error(cnf::errc::internal, "");
    std::string verb;
    if (cur) {
      if (cur->spec == p.res.spec && cur->labels == p.res.labels) {
        fmt::print("{} unchanged\n", p.display());
        ++written;
        continue;
      }
      auto r = p.res;
      r.revision = cur->revision;
      w = ds.update(r);
      verb = "configured";
    } else if (cur.error().code == cnf::errc::not_found) {
      w = ds.create(p.res);
      verb = "created";
    } else {
      w = cur.error();
    }
    if (!w) {
      fmt::print(stderr, "{}: {}\n", p.where, w.error().message);
      rc = 1;
      break;
    }
    ++written;
    fmt::print("{} {}\n", p.display(), verb);
  }
  if (rc) fmt::print(stderr, "cnf apply: stopped after {} of {} resource(s)\n", written, plan.size());
  return rc;
}

// ---- get -----------------------------------------------------------------------------

/// The kind a command line names: singular or plural, any case; Calico's NetworkPolicy is
/// networkpolicy, the Kubernetes one networkpolicy.networking.k8s.io (or k8snetworkpolicy).
const kind_info* resolve_kind(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  auto by = [](std::string_view api, std::string_view kind) { return find_kind(api, kind); };
  const std::string v3(api_version);
  if (s == "ippool" || s == "ippools") return by(v3, "IPPool");
  if (s == "ipreservation" || s == "ipreservations") return by(v3, "IPReservation");
  if (s == "ipamconfig" || s == "ipamconfigs" || s == "ipamconfiguration" || s == "ipamconfigurations") return by(v3, "IPAMConfiguration");
  if (s == "networkpolicy" || s == "networkpolicies" || s == "netpol" || s == "networkpolicy.projectcalico.org" ||
      s == "networkpolicies.projectcalico.org")
    return by(v3, "NetworkPolicy");
  if (s == "globalnetworkpolicy" || s == "globalnetworkpolicies" || s == "gnp") return by(v3, "GlobalNetworkPolicy");
  if (s == "networkset" || s == "networksets" || s == "netset" || s == "netsets") return by(v3, "NetworkSet");
  if (s == "globalnetworkset" || s == "globalnetworksets" || s == "gns") return by(v3, "GlobalNetworkSet");
  if (s == "networkpolicy.networking.k8s.io" || s == "networkpolicies.networking.k8s.io" || s == "k8snetworkpolicy" ||
      s == "k8snetworkpolicies" || s == "knp")
    return by("networking.k8s.io/v1", "NetworkPolicy");
  if (s == "namespace" || s == "namespaces" || s == "ns") return by("v1", "Namespace");
  if (s == "serviceaccount" || s == "serviceaccounts" || s == "sa") return by("v1", "ServiceAccount");
  if (s == "bgppeer" || s == "bgppeers") return by(v3, "BGPPeer");
  if (s == "bgpconfiguration" || s == "bgpconfigurations" || s == "bgpconfig" || s == "bgpconfigs") return by(v3, "BGPConfiguration");
  if (s == "bgpfilter" || s == "bgpfilters") return by(v3, "BGPFilter");
  return nullptr;
}

constexpr std::string_view kinds_help =
    "ippools, ipreservations, ipamconfigurations, networkpolicies, globalnetworkpolicies, networksets, globalnetworksets, "
    "networkpolicies.networking.k8s.io (knp), namespaces, serviceaccounts (sa), bgppeers, bgpconfigurations, bgpfilters";

json::object v3_document(const kind_info& k, const cnf::resource& r) {
  json::object md;
  md["name"] = r.name;
  if (!r.ns.empty()) md["namespace"] = r.ns;
  if (!r.labels.empty()) {
    json::object lb;
    for (auto& [a, b] : r.labels) lb[a] = b;
    md["labels"] = std::move(lb);
  }
  if (!r.revision.empty()) md["resourceVersion"] = r.revision;
  boost::system::error_code ec;
  json::value spec = json::parse(r.spec, ec);
  json::object d;
  d["apiVersion"] = k.api;
  d["kind"] = k.kind;
  d["metadata"] = std::move(md);
  if (k.kind != "ServiceAccount") d["spec"] = ec ? json::value(json::string(r.spec)) : std::move(spec);  // it has none
  return d;
}

std::string spec_text(const json::object& spec, const char* k, const char* def) {
  auto* v = spec.if_contains(k);
  if (!v || v->is_null()) return def;
  return v->is_string() ? std::string(v->get_string()) : json::serialize(*v);
}

std::string columns(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> w;
  for (auto& r : rows)
    for (std::size_t i = 0; i < r.size(); ++i) {
      if (w.size() <= i) w.push_back(0);
      w[i] = std::max(w[i], r[i].size());
    }
  std::string out;
  for (auto& r : rows) {
    std::string line;
    for (std::size_t i = 0; i < r.size(); ++i) line += i + 1 == r.size() ? r[i] : fmt::format("{:<{}}   ", r[i], w[i]);
    out += line + "\n";
  }
  return out;
}

std::string selector_text(const json::value* v) {
  if (!v || v->is_null()) return "all()";
  return v->is_string() ? std::string(v->get_string()) : json::serialize(*v);
}

std::string list_text(const json::object& spec, const char* k) {
  std::string out;
  if (auto* a = spec.if_contains(k); a && a->is_array())
    for (auto& c : a->get_array()) out += (out.empty() ? "" : ",") + (c.is_string() ? std::string(c.get_string()) : json::serialize(c));
  return out;
}

std::string labels_text(const std::map<std::string, std::string>& l) {
  std::string out;
  for (auto& [k, v] : l) out += (out.empty() ? "" : ",") + k + "=" + v;
  return out.empty() ? "<none>" : out;
}

int cmd_get(const std::string& profile, const std::string& kind_arg, const std::string& name, const std::string& output, const std::string& ns_arg) {
  constexpr std::string_view what = "get";
  auto k = resolve_kind(kind_arg);
  if (!k) return tool::fail(what, "'" + kind_arg + "' is not a resource kind cnf knows (" + std::string(kinds_help) + ")");
  if (!ns_arg.empty() && !k->namespaced) return tool::fail(what, "-n " + ns_arg + ": " + k->label() + " is cluster-wide and has no namespace");
  const std::string ns = k->namespaced && !name.empty() && ns_arg.empty() ? "default" : ns_arg;
  if (output != "table" && output != "wide" && output != "yaml" && output != "json")
    return tool::fail(what, "-o " + output + ": expected yaml, json, wide or table");
  auto op = tool::open_datastore(profile_or_default(profile));
  if (!op) return tool::fail(what, op.error().message);
  std::vector<cnf::resource> items;
  if (!name.empty()) {
    auto g = op->ds.get({k->stored, ns, name});
    if (!g)
      return tool::fail(what, g.error().code == cnf::errc::not_found
                                  ? k->label() + " '" + name + "' not found" + (ns.empty() ? std::string() : " in namespace " + ns)
                                  : g.error().message);
    items.push_back(std::move(*g));
  } else {
    auto l = list_kind(op->ds, k->stored);
    if (!l) return tool::fail(what, l.error().message);
    for (auto& r : *l)
      if (ns.empty() || r.ns == ns) items.push_back(std::move(r));
    std::sort(items.begin(), items.end(), [](auto& a, auto& b) { return std::tie(a.ns, a.name) < std::tie(b.ns, b.name); });
  }
  if (output == "yaml" || output == "json") {
    json::value doc;
    if (!name.empty()) doc = v3_document(*k, items.front());
    else {
      json::array arr;
      for (auto& r : items) arr.push_back(v3_document(*k, r));
      doc = json::object{{"apiVersion", k->api}, {"kind", k->kind + "List"}, {"items", std::move(arr)}};
    }
    if (output == "json") {
      std::string s;
      pretty(s, doc, 0);
      fmt::print("{}\n", s);
    } else {
      YAML::Emitter e;
      emit(e, doc);
      fmt::print("{}\n", e.c_str());
    }
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  bool wide = output == "wide";
  const std::string& kv = k->kind;
  const bool k8s = k->api == "networking.k8s.io/v1";
  if (kv == "IPPool") {
    if (wide) rows.push_back({"NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED", "BLOCKSIZE", "SELECTOR"});
    else rows.push_back({"NAME", "CIDR", "SELECTOR"});
  } else if (kv == "IPReservation") {
    rows.push_back({"NAME", "CIDRS"});
  } else if (kv == "IPAMConfiguration") {
    rows.push_back({"NAME", "STRICTAFFINITY", "AUTOALLOCATEBLOCKS", "MAXBLOCKSPERHOST"});
  } else if (kv == "BGPPeer") {
    rows.push_back({"NAME", "PEERIP", "NODE", "ASN"});
  } else if (kv == "BGPConfiguration") {
    rows.push_back({"NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"});
  } else if (kv == "BGPFilter") {
    rows.push_back({"NAME", "EXPORTV4", "IMPORTV4", "EXPORTV6", "IMPORTV6"});
  } else if (k8s) {
    rows.push_back({"NAMESPACE", "NAME", "POD-SELECTOR", "POLICY-TYPES"});
  } else if (kv == "NetworkPolicy" || kv == "GlobalNetworkPolicy") {
    rows.push_back({"NAME", "ORDER", "SELECTOR"});
    if (wide) rows.back().push_back("TYPES");
    if (k->namespaced) rows.back().insert(rows.back().begin(), "NAMESPACE");
  } else if (kv == "NetworkSet" || kv == "GlobalNetworkSet") {
    rows.push_back({"NAME", "NETS", "LABELS"});
    if (k->namespaced) rows.back().insert(rows.back().begin(), "NAMESPACE");
  } else if (kv == "ServiceAccount") {
    rows.push_back({"NAMESPACE", "NAME", "LABELS"});
  } else {
    rows.push_back({"NAME", "LABELS"});
  }
  for (auto& r : items) {
    boost::system::error_code ec;
    json::value v = json::parse(r.spec, ec);
    json::object spec = !ec && v.is_object() ? v.get_object() : json::object{};
    if (k8s) {
      std::string pod_sel = "<none>";
      if (auto* ps = spec.if_contains("podSelector"); ps && ps->is_object()) {
        pod_sel.clear();
        if (auto* ml = ps->get_object().if_contains("matchLabels"); ml && ml->is_object())
          for (auto& [a, b] : ml->get_object())
            pod_sel += (pod_sel.empty() ? "" : ",") + std::string(a) + "=" + (b.is_string() ? std::string(b.get_string()) : json::serialize(b));
        if (auto* me = ps->get_object().if_contains("matchExpressions"); me && me->is_array() && !me->get_array().empty())
          pod_sel += std::string(pod_sel.empty() ? "" : ",") + "(" + std::to_string(me->get_array().size()) + " expressions)";
        if (pod_sel.empty()) pod_sel = "<none>";
      }
      std::string types = list_text(spec, "policyTypes");
      rows.push_back({r.ns, r.name, pod_sel, types.empty() ? "Ingress" : types});
    } else if (kv == "NetworkPolicy" || kv == "GlobalNetworkPolicy") {
      std::vector<std::string> row{r.name, spec_text(spec, "order", ""), selector_text(spec.if_contains("selector"))};
      if (wide) row.push_back(list_text(spec, "types"));
      if (k->namespaced) row.insert(row.begin(), r.ns);
      rows.push_back(std::move(row));
    } else if (kv == "NetworkSet" || kv == "GlobalNetworkSet") {
      std::vector<std::string> row{r.name, list_text(spec, "nets"), labels_text(r.labels)};
      if (k->namespaced) row.insert(row.begin(), r.ns);
      rows.push_back(std::move(row));
    } else if (kv == "Namespace") {
      rows.push_back({r.name, labels_text(r.labels)});
    } else if (kv == "ServiceAccount") {
      rows.push_back({r.ns, r.name, labels_text(r.labels)});
    } else if (kv == "BGPPeer") {
      std::string node = spec_text(spec, "node", "");
      if (node.empty()) node = spec.if_contains("nodeSelector") ? "(" + spec_text(spec, "nodeSelector", "") + ")" : "(global)";
      std::string peer = spec_text(spec, "peerIP", "");
      if (peer.empty()) peer = "(" + spec_text(spec, "peerSelector", "") + ")";
      rows.push_back({r.name, peer, node, spec_text(spec, "asNumber", "")});
    } else if (kv == "BGPFilter") {
      auto count = [&](const char* k) {
        auto* x = spec.if_contains(k);
        return std::to_string(x && x->is_array() ? x->get_array().size() : 0) + " rule(s)";
      };
      rows.push_back({r.name, count("exportV4"), count("importV4"), count("exportV6"), count("importV6")});
    } else if (kv == "BGPConfiguration") {
      rows.push_back({r.name, spec_text(spec, "logSeverityScreen", "Info"), spec_text(spec, "nodeToNodeMeshEnabled", "true"),
                      spec_text(spec, "asNumber", "64512")});
    } else if (kv == "IPPool") {
      if (wide)
        rows.push_back({r.name, spec_text(spec, "cidr", ""), spec_text(spec, "natOutgoing", "false"), spec_text(spec, "ipipMode", "Never"),
                        spec_text(spec, "vxlanMode", "Never"), spec_text(spec, "disabled", "false"), spec_text(spec, "blockSize", ""),
                        spec_text(spec, "nodeSelector", "all()")});
      else rows.push_back({r.name, spec_text(spec, "cidr", ""), spec_text(spec, "nodeSelector", "all()")});
    } else if (kv == "IPReservation") {
      std::string cidrs;
      if (auto* a = spec.if_contains("reservedCIDRs"); a && a->is_array())
        for (auto& c : a->get_array()) cidrs += (cidrs.empty() ? "" : ",") + (c.is_string() ? std::string(c.get_string()) : json::serialize(c));
      rows.push_back({r.name, cidrs});
    } else {
      rows.push_back({r.name, spec_text(spec, "strictAffinity", "false"), spec_text(spec, "autoAllocateBlocks", "true"),
                      spec_text(spec, "maxBlocksPerHost", "0")});
    }
  }
  fmt::print("{}", columns(rows));
  return 0;
}

// ---- delete --------------------------------------------------------------------------

/// `cnf delete node NAME`: what calico-kube-controllers does for a deleted node.
int cmd_delete_node(const std::string& profile, const std::string& name) {
  constexpr std::string_view what = "delete node";
  if (name.empty()) return tool::fail(what, "the node name is empty");
  auto op = tool::open_datastore(profile_or_default(profile));
  if (!op) return tool::fail(what, op.error().message);
  auto& ds = op->ds;
  auto rep = ci::release_node(ds, name);
  if (!rep) return tool::fail(what, "Node/" + name + ": " + rep.error().message);
  std::size_t endpoints = 0;
  auto eps = list_kind(ds, cnf::kinds::workload_endpoint);
  if (!eps) return tool::fail(what, eps.error().message);
  for (auto& r : *eps) {
    boost::system::error_code ec;
    json::value v = json::parse(r.spec, ec);
    auto* node = !ec && v.is_object() ? v.get_object().if_contains("node") : nullptr;
    if (!node || !node->is_string() || node->get_string() != name) continue;
    if (auto x = ds.remove(r.key(), r.revision); x) ++endpoints;
    else if (x.error().code != cnf::errc::not_found) return tool::fail(what, r.key().to_string() + ": " + x.error().message);
  }
  bool had_node = false;
  if (auto g = ds.get({std::string(cnf::kinds::node), "", name}); g) {
    if (auto x = ds.remove(g->key(), g->revision); !x && x.error().code != cnf::errc::not_found)
      return tool::fail(what, "Node/" + name + ": " + x.error().message);
    had_node = true;
  } else if (g.error().code != cnf::errc::not_found) {
    return tool::fail(what, g.error().message);
  }
  fmt::print("Node/{} {}; released {} address(es), {} IPAM handle(s), {} block(s) ({} kept without affinity: they hold other nodes' "
             "addresses), {} block affinit{}; removed {} workload endpoint(s)\n",
             name, had_node ? "deleted" : "(no Node resource)", rep->addresses, rep->handles, rep->blocks, rep->blocks_kept,
             rep->affinities, rep->affinities == 1 ? "y" : "ies", endpoints);
  return 0;
}

int cmd_delete(const std::string& profile, const std::string& kind_arg, const std::string& name, bool force, const std::string& ns_arg) {
  constexpr std::string_view what = "delete";
  if (kind_arg == "node" || kind_arg == "nodes") return cmd_delete_node(profile, name);
  auto k = resolve_kind(kind_arg);
  if (!k) return tool::fail(what, "'" + kind_arg + "' is not a resource kind cnf knows (" + std::string(kinds_help) + ", node)");
  if (!ns_arg.empty() && !k->namespaced) return tool::fail(what, "-n " + ns_arg + ": " + k->label() + " is cluster-wide and has no namespace");
  const std::string ns = k->namespaced && ns_arg.empty() ? "default" : ns_arg;
  auto op = tool::open_datastore(profile_or_default(profile));
  if (!op) return tool::fail(what, op.error().message);
  auto& ds = op->ds;
  auto g = ds.get({k->stored, ns, name});
  if (!g)
    return tool::fail(what, g.error().code == cnf::errc::not_found
                                ? k->label() + " '" + name + "' not found" + (ns.empty() ? std::string() : " in namespace " + ns)
                                : g.error().message);
  if (k->kind != "IPPool") {
    if (auto r = ds.remove(g->key(), g->revision); !r) return tool::fail(what, r.error().message);
    fmt::print("{}/{}{} deleted\n", k->label(), ns.empty() ? "" : ns + "/", name);
    return 0;
  }
  auto pl = ci::parse_pool(*g);
  std::vector<std::pair<cnf::resource, ci::block>> inside;
  std::uint64_t in_use = 0;
  if (pl) {
    auto blocks = list_kind(ds, cnf::kinds::ipam_block);
    if (!blocks) return tool::fail(what, blocks.error().message);
    for (auto& r : *blocks) {
      auto b = ci::parse_block(r);
      if (!b) {
        fmt::print(stderr, "warning: {} (not counted; `cnf ipam check` reports it)\n", b.error().message);
        continue;
      }
      if (b->deleted || !pl->cidr.contains(b->cidr)) continue;
      in_use += b->in_use();
      inside.emplace_back(r, std::move(*b));
    }
  }
  if (in_use > 0 && !force) {
    std::string which;
    for (auto& [r, b] : inside)
      if (!b.empty()) which += (which.empty() ? "" : ", ") + b.cidr.to_string() + " (" + std::to_string(b.in_use()) + ")";
    fmt::print(stderr,
               "cnf delete: IPPool/{}: {} address(es) are still allocated from it, in blocks {}.\n"
               "  Deleting it now would strand them (`cnf ipam check` reports such blocks as outside every pool).\n"
               "  Disable it first (spec.disabled: true, then `cnf apply`) so nothing new is assigned from it, recreate the pods\n"
               "  that use it (`cnf ipam show --show-blocks`), then delete it; --force deletes it anyway.\n",
               name, in_use, which);
    return 1;
  }
  if (auto r = ds.remove(g->key(), g->revision); !r) return tool::fail(what, r.error().message);
  // Its empty blocks and their affinities go with it; a block that changed since it was
  // read (an assignment raced this delete) is left for `cnf ipam check` to report.
  std::size_t blocks_removed = 0, affinities_removed = 0, kept = 0;
  std::set<std::string> removed_cidrs;
  for (auto& [r, b] : inside) {
    if (!b.empty()) {
      ++kept;
      continue;
    }
    if (auto x = ds.remove(r.key(), r.revision); x) {
      ++blocks_removed;
      removed_cidrs.insert(b.cidr.to_string());
    } else {
      ++kept;
      fmt::print(stderr, "warning: {} kept: {}\n", r.key().to_string(), x.error().message);
    }
  }
  if (pl) {
    auto affs = list_kind(ds, cnf::kinds::block_affinity);
    if (affs)
      for (auto& r : *affs)
        if (auto a = ci::parse_affinity(r); a && pl->cidr.contains(a->cidr) && removed_cidrs.count(a->cidr.to_string()))
          if (ds.remove(r.key(), r.revision)) ++affinities_removed;
  }
  fmt::print("IPPool/{} deleted; removed {} empty block(s) and {} block affinit{}", name, blocks_removed, affinities_removed,
             affinities_removed == 1 ? "y" : "ies");
  if (kept) fmt::print("; {} block(s) still holding addresses were kept", kept);
  fmt::print("\n");
  if (op->prof.ipam && op->prof.ipam->plugin == "calico-ipam") {
    auto left = list_kind(ds, cnf::kinds::ip_pool);
    if (left && left->empty())
      fmt::print("note: no IPPool is left; if the profile's [ipam] section lists pools, the next assignment creates them again\n");
  }
  return 0;
}

/// `cnf delete -f FILE...`: every resource the files name (each document is validated as
/// `apply` would, so a file that apply refuses deletes nothing); an IPPool goes through the
/// same checks as `delete ippool NAME`. Resources already gone are reported and skipped.
int cmd_delete_files(const std::string& profile, const std::vector<std::string>& files, bool force) {
  constexpr std::string_view what = "delete";
  std::vector<std::string> errors;
  std::vector<planned> plan = plan_files(files, errors);
  if (!errors.empty()) {
    for (auto& e : errors) fmt::print(stderr, "{}\n", e);
    fmt::print(stderr, "cnf delete: {} error(s); nothing was deleted\n", errors.size());
    return 1;
  }
  auto op = tool::open_datastore(profile_or_default(profile));
  if (!op) return tool::fail(what, op.error().message + "; nothing was deleted");
  int rc = 0;
  for (auto& p : plan) {
    if (p.info->kind == "IPPool") {
      if (cmd_delete(profile, "ippool", p.res.name, force, "") != 0) rc = 1;
      continue;
    }
    auto g = op->ds.get(p.res.key());
    if (!g) {
      fmt::print(stderr, "{}: {}\n", p.where, g.error().code == cnf::errc::not_found ? std::string("not found") : g.error().message);
      rc = 1;
      continue;
    }
    if (auto r = op->ds.remove(g->key(), g->revision); !r) {
      fmt::print(stderr, "{}: {}\n", p.where, r.error().message);
      rc = 1;
      continue;
    }
    fmt::print("{} deleted\n", p.display());
  }
  return rc;
}

}  // namespace

void add_resource_commands(CLI::App& app) {
  static std::string profile;
  static std::vector<std::string> files;
  auto* apply = app.add_subcommand("apply",
                                   "Create or update resources from files: Calico's projectcalico.org/v3 IPPool, IPAMConfiguration,\n"
                                   "IPReservation, NetworkPolicy, GlobalNetworkPolicy, NetworkSet and GlobalNetworkSet, Kubernetes'\n"
                                   "networking.k8s.io/v1 NetworkPolicy, v1 Namespace (its labels, for namespaceSelector) and v1\n"
                                   "ServiceAccount (its labels, for serviceAccountSelector), in YAML or JSON, one or many documents,\n"
                                   "or a List. Every document is validated (unknown fields, CIDRs,\n"
                                   "blockSize, overlapping pools, a changed pool CIDR, selectors, rules, ports) before anything is\n"
                                   "written: a file with an error writes nothing. Namespaced kinds without metadata.namespace go to\n"
                                   "'default'.");
  apply->add_option("-f,--filename", files, "File to apply ('-' for stdin); may be repeated")->required();
  apply->add_option("--profile,-p", profile, "Profile naming the datastore (default: $CNF_PROFILE or /etc/cnf/profile.toml)");
  apply->callback([] { exit_code() = cmd_apply(profile, files); });

  static std::string kind, name, output = "table", ns;
  auto* get = app.add_subcommand("get", "Show resources: " + std::string(kinds_help) + " (table, or -o wide|yaml|json)");
  get->add_option("kind", kind, std::string(kinds_help))->required();
  get->add_option("name", name, "Only this resource");
  static bool all_ns = false;
  auto* nopt = get->add_option("-n,--namespace", ns, "Only this namespace (namespaced kinds; default: every namespace, or 'default' with a NAME)");
  get->add_flag("-A,--all-namespaces", all_ns, "Every namespace (the default without a NAME)")->excludes(nopt);
  get->add_option("-o,--output", output, "table (default), wide, yaml or json; yaml and json can be given back to `cnf apply`");
  get->add_option("--profile,-p", profile, "Profile naming the datastore (default: $CNF_PROFILE or /etc/cnf/profile.toml)");
  get->callback([] { exit_code() = cmd_get(profile, kind, name, output, ns); });

  static bool force = false;
  static std::vector<std::string> del_files;
  auto* del = app.add_subcommand("delete",
                                 "Delete a resource (KIND NAME [-n NAMESPACE], or every resource of -f FILE). An IPPool from which addresses are\n"
                                 "still allocated is refused, disabled or not (its pods would keep addresses in blocks outside every\n"
                                 "pool): disable it, recreate its pods, then delete it, or pass --force. Its empty blocks and their\n"
                                 "affinities are removed with it. `delete node NAME` removes a node that is gone: the addresses\n"
                                 "assigned for it, its IPAM handles, blocks and block affinities, its workload endpoints and the Node.");
  del->add_option("kind", kind, std::string(kinds_help) + ", node");
  del->add_option("name", name, "Resource name");
  del->add_option("-n,--namespace", ns, "The resource's namespace (namespaced kinds; default 'default')");
  del->add_option("-f,--filename", del_files, "Delete the resources this file names ('-' for stdin); may be repeated");
  del->add_flag("--force", force, "Delete an IPPool even while addresses are allocated from it");
  del->add_option("--profile,-p", profile, "Profile naming the datastore (default: $CNF_PROFILE or /etc/cnf/profile.toml)");
  del->callback([] {
    if (!del_files.empty()) {
      if (!kind.empty()) exit_code() = tool::fail("delete", "give either KIND NAME or -f FILE, not both");
      else exit_code() = cmd_delete_files(profile, del_files, force);
    } else if (kind.empty() || name.empty()) {
      exit_code() = tool::fail("delete", "KIND and NAME are required (or -f FILE)");
    } else {
      exit_code() = cmd_delete(profile, kind, name, force, ns);
    }
  });
}

}  // namespace cnf_app

#else
namespace cnf_app {
void add_resource_commands(CLI::App&) {}
}  // namespace cnf_app
#endif
