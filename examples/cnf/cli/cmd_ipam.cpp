// cnf ipam show | check | release | configure — calicoctl's `ipam` commands over
// calico-ipam's state in the profile's datastore (calico_ipam.hpp does the work).
#include "cli/tool.hpp"

#if CNF_TOOL_CALICO
#include <cnf/cni/workload.hpp>

#include <cnf/plugins/calico_ipam.hpp>

#include <cstdint>
#include <fstream>
#include <map>

namespace cnf_app {
namespace {

namespace ci = cnf::calico_ipam;

std::string profile_or_default(const std::string& p) { return p.empty() ? default_profile_path() : p; }

/// The datastore, after making sure the profile's IPAM (if any) is calico-ipam.
cnf::result<tool::opened> open_for_ipam(const std::string& profile) {
  auto op = tool::open_datastore(profile_or_default(profile));
  if (!op) return op;
  if (!op->ipam_plugin.empty() && op->ipam_plugin != "calico-ipam")
    return cnf::error(cnf::errc::unsupported, op->prof.file + ": the profile's IPAM is '" + op->ipam_plugin +
                                                  "'; `cnf ipam` reads calico-ipam's state (IPPools, IPAMBlocks), which it does not keep");
  return op;
}

/// address -> "namespace/name" of the WorkloadEndpoint listing it.
cnf::result<std::map<cnf::ip_address, std::string>> endpoint_addresses(const cnf::any_datastore& ds, std::vector<cnf::resource>* raw = nullptr) {
  auto l = ds.list_all({.kind = std::string(cnf::kinds::workload_endpoint)});
  if (!l) return cnf::error(l.error().code, "listing WorkloadEndpoints: " + l.error().message);
  std::map<cnf::ip_address, std::string> out;
  for (auto& r : l->items) {
    auto w = cnf::cni::parse_workload_endpoint(r);
    if (!w) continue;
    for (auto& a : w->addresses) out[a.address()] = r.ns + "/" + r.name;
  }
  if (raw) *raw = std::move(l->items);
  return out;
}

// ---- show ----------------------------------------------------------------------------

struct show_flags {
  bool blocks = false, borrowed = false, configuration = false;
  std::string ip;
};

int show_ip(const cnf::any_datastore& ds, const std::string& text) {
  auto a = cnf::ip_address::parse(text);
  if (!a) return tool::fail("ipam show", "--ip " + text + ": " + a.error().message);
  auto info = ci::lookup(ds, *a);
  if (!info) return tool::fail("ipam show", info.error().message);
  fmt::print("IP {} is {}\n", a->to_string(), info->allocated ? "in use" : "not assigned");
  if (info->allocated) {
    fmt::print("  handle:     {}\n", info->handle.empty() ? "(none)" : info->handle);
    for (auto& [k, v] : info->attributes) fmt::print("  {:<11} {}\n", k + ":", v);
    auto eps = endpoint_addresses(ds);
    if (!eps) return tool::fail("ipam show", eps.error().message);
    auto it = eps->find(*a);
    fmt::print("  endpoint:   {}\n", it == eps->end() ? "(none: no WorkloadEndpoint lists it; `cnf ipam check` calls it leaked)" : it->second);
  }
  if (info->block) fmt::print("  block:      {}{}\n", info->block->to_string(), info->block_affinity.empty() ? "" : " (affinity " + info->block_affinity + ")");
  if (info->in_pool) fmt::print("  pool:       {} ({}{})\n", info->in_pool->name, info->in_pool->cidr.to_string(), info->in_pool->disabled ? ", disabled" : "");
  else fmt::print("  pool:       (in no valid IPPool)\n");
  if (info->reserved) fmt::print("  reserved:   yes (an IPReservation covers it; it is never assigned)\n");
  return 0;
}

int cmd_show(const std::string& profile, const show_flags& f) {
  constexpr std::string_view what = "ipam show";
  auto op = open_for_ipam(profile);
  if (!op) return tool::fail(what, op.error().message);
  auto& ds = op->ds;
  if (!f.ip.empty()) return show_ip(ds, f.ip);
  bool table_wanted = f.blocks || (!f.borrowed && !f.configuration);
  if (table_wanted) {
    auto u = ci::usage(ds);
    if (!u) return tool::fail(what, u.error().message);
    auto pools = ds.list_all({.kind = std::string(cnf::kinds::ip_pool)});
    if (!pools) return tool::fail(what, pools.error().message);
    for (auto& e : ci::validate_pools(pools->items)) fmt::print(stderr, "warning: {} (not shown)\n", e.message);
    if (pools->items.empty())
      fmt::print(stderr, "No IPPool in the datastore{}.\n",
                 op->ipam_plugin == "calico-ipam" ? " (the profile's [[ipam.pools]], if any, are created at the first assignment)" : "");
    tool::table t({"GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"}, {false, false, true, false, false});
    for (auto& p : u->pools) {
      t.add({"IP Pool", p.cidr.to_string(), std::to_string(p.total), tool::with_percent(p.in_use, p.total),
             tool::with_percent(p.total - p.in_use, p.total)});
      if (!f.blocks) continue;
      for (auto& b : p.blocks)
        t.add({"Block", b.cidr.to_string(), std::to_string(b.total), tool::with_percent(b.in_use, b.total),
               tool::with_percent(b.total - b.in_use, b.total)});
    }
    fmt::print("{}", t.render());
  }
  if (f.borrowed) {
    auto b = ci::borrowed(ds);
    if (!b) return tool::fail(what, b.error().message);
    tool::table t({"IP", "BORROWING-NODE", "BLOCK", "BLOCK OWNER", "TYPE", "ALLOCATED-TO"});
    for (auto& x : *b)
      t.add({x.address.to_string(), x.node, x.block.to_string(), x.block_node.empty() ? "(none)" : x.block_node,
             ci::is_tunnel_handle(x.handle) ? "tunnel" : "pod", x.handle});
    fmt::print("{}", t.render());
    if (b->empty()) fmt::print("No borrowed addresses.\n");
  }
  if (f.configuration) {
    auto c = ci::read_config(ds);
    if (!c) return tool::fail(what, c.error().message);
    tool::table t({"PROPERTY", "VALUE"}, {false, true});
    t.add({"StrictAffinity", c->strict_affinity ? "true" : "false"});
    t.add({"AutoAllocateBlocks", c->auto_allocate_blocks ? "true" : "false"});
    t.add({"MaxBlocksPerHost", std::to_string(c->max_blocks_per_host)});
    fmt::print("{}", t.render());
  }
  return 0;
}

// ---- check ---------------------------------------------------------------------------

int cmd_check(const std::string& profile, bool show_ips, const std::string& out_file) {
  constexpr std::string_view what = "ipam check";
  auto op = open_for_ipam(profile);
  if (!op) return tool::fail(what, op.error().message);
  fmt::print("Checking IPAM for inconsistencies...\n\n");
  std::vector<cnf::resource> eps;
  if (auto e = endpoint_addresses(op->ds, &eps); !e) return tool::fail(what, e.error().message);
  ci::check_options co;
  co.endpoints = eps;
  auto rep = ci::check(op->ds, co);
  if (!rep) return tool::fail(what, rep.error().message);
  fmt::print("Found {} IPAM blocks, {} IPAM handles, {} addresses in use, {} workload endpoints.\n", rep->blocks, rep->handles,
             rep->addresses_in_use, eps.size());
  std::map<ci::problem::kind, std::size_t> count;
  for (auto& p : rep->problems) ++count[p.what];
  using K = ci::problem::kind;
  const std::pair<K, const char*> lines[] = {
      {K::leaked_address, "leaked addresses (allocated, but no workload endpoint lists them)"},
      {K::endpoint_without_allocation, "workload endpoint addresses that are not allocated"},
      {K::handle_without_addresses, "IPAM handles naming blocks that hold none of their addresses"},
      {K::block_outside_pools, "IPAM blocks outside every IPPool"},
      {K::affinity_to_missing_node, "affinities to nodes that do not exist (checked only when the datastore holds Node resources)"},
      {K::stale_affinity, "stale block affinities"},
      {K::duplicate_address, "addresses allocated twice"},
      {K::invalid_resource, "resources that do not parse or validate"},
  };
  for (auto& [k, text] : lines) {
    std::size_t n = count[k];
    if (n == 0 && (k == K::stale_affinity || k == K::duplicate_address || k == K::invalid_resource)) continue;
    fmt::print("Found {} {}.\n", n, text);
    for (auto& p : rep->problems) {
      if (p.what != k) continue;
      // Address problems (possibly thousands) only on request; the others always.
      if (p.address && !show_ips) continue;
      fmt::print("  {}\n", p.message);
    }
  }
  if (!out_file.empty()) {
    std::ofstream f(out_file, std::ios::binary | std::ios::trunc);
    f << rep->to_json() << "\n";
    f.close();
    if (!f) return tool::fail(what, out_file + ": cannot write the report");
    fmt::print("Wrote the report to {}; `cnf ipam release --from-report {}` releases the leaked addresses it lists.\n", out_file, out_file);
  }
  fmt::print("Check complete; found {} problems.\n", rep->problems.size());
  return 0;
}

// ---- release -------------------------------------------------------------------------

int print_release(const ci::release_report& r, bool from_report) {
  for (auto& [a, h] : r.released) fmt::print("Released {} (handle {})\n", a.to_string(), h.empty() ? "(none)" : h);
  for (auto& a : r.not_allocated) fmt::print("{} {}\n", a.to_string(), from_report ? "is already free" : "is not assigned; nothing to release");
  for (auto& [a, h] : r.held_by_other)
    fmt::print("Skipped {}: now held by handle {} (assigned again since the report)\n", a.to_string(), h.empty() ? "(none)" : h);
  fmt::print("Released {} address(es).\n", r.released.size());
  return (!from_report && !r.not_allocated.empty()) ? 1 : 0;
}

int cmd_release(const std::string& profile, const std::vector<std::string>& ips, const std::string& report_file, bool force) {
  constexpr std::string_view what = "ipam release";
  if (ips.empty() == report_file.empty()) return tool::fail(what, "give either --ip ADDR (repeatable) or --from-report FILE");
  std::vector<ci::release_item> items;
  std::size_t other_problems = 0;
  if (!report_file.empty()) {
    std::string err;
    auto text = tool::read_text_file(report_file, &err);
    if (!text) return tool::fail(what, err);
    auto rep = ci::parse_check_report(*text);
    if (!rep) return tool::fail(what, report_file + ": " + rep.error().message);
    for (auto& p : rep->problems) {
      if (p.what == ci::problem::kind::leaked_address && p.address) items.push_back({*p.address, p.handle});
      else ++other_problems;
    }
  } else {
    for (auto& s : ips) {
      auto a = cnf::ip_address::parse(s);
      if (!a) return tool::fail(what, "--ip " + s + ": " + a.error().message);
      items.push_back({*a, {}});
    }
  }
  auto op = open_for_ipam(profile);
  if (!op) return tool::fail(what, op.error().message);
  // An address a live endpoint lists is in use by a pod whatever a report said.
  auto eps = endpoint_addresses(op->ds);
  if (!eps) return tool::fail(what, eps.error().message);
  int rc = 0;
  std::vector<ci::release_item> go;
  for (auto& it : items) {
    auto e = eps->find(it.address);
    if (e != eps->end() && !force) {
      fmt::print(stderr, "Refused {}: workload endpoint {} uses it (--force releases it anyway)\n", it.address.to_string(), e->second);
      if (report_file.empty()) rc = 1;
      continue;
    }
    go.push_back(it);
  }
  if (!go.empty()) {
    auto r = ci::release_addresses(op->ds, std::span<const ci::release_item>(go));
    if (!r) return tool::fail(what, r.error().message);
    rc |= print_release(*r, !report_file.empty());
  } else {
    fmt::print("Released 0 address(es).\n");
  }
  if (other_problems)
    fmt::print("{} problem(s) in the report are not leaked addresses; release does not change them (see `cnf ipam check`).\n", other_problems);
  return rc;
}

// ---- configure -----------------------------------------------------------------------

int cmd_configure(const std::string& profile, const std::string& strict, std::int64_t max_blocks) {
  constexpr std::string_view what = "ipam configure";
  ci::config_change c;
  if (!strict.empty()) {
    if (strict == "true") c.strict_affinity = true;
    else if (strict == "false") c.strict_affinity = false;
    else return tool::fail(what, "--strictaffinity: expected true or false, not '" + strict + "'");
  }
  if (max_blocks != -1) {
    if (max_blocks < 0 || max_blocks > INT32_MAX) return tool::fail(what, "--max-blocks-per-host: expected a count of blocks (0 = no limit)");
    c.max_blocks_per_host = static_cast<std::uint32_t>(max_blocks);
  }
  if (!c.strict_affinity && !c.max_blocks_per_host) return tool::fail(what, "nothing to change: give --strictaffinity and/or --max-blocks-per-host");
  auto op = open_for_ipam(profile);
  if (!op) return tool::fail(what, op.error().message);
  auto r = ci::change_config(op->ds, c);
  if (!r) return tool::fail(what, r.error().message);
  fmt::print("IPAMConfiguration/default: StrictAffinity={} AutoAllocateBlocks={} MaxBlocksPerHost={}\n", r->strict_affinity,
             r->auto_allocate_blocks, r->max_blocks_per_host);
  return 0;
}

}  // namespace

void add_ipam_commands(CLI::App& app) {
  static std::string profile;
  auto* ipam = app.add_subcommand("ipam", "Inspect and repair calico-ipam's address state (calicoctl ipam)");
  ipam->require_subcommand(1);
  const char* profile_help = "Profile naming the datastore (default: $CNF_PROFILE or /etc/cnf/profile.toml)";

  static show_flags sf;
  auto* show = ipam->add_subcommand("show",
                                    "Pool usage as a table (GROUPING | CIDR | IPS TOTAL | IPS IN USE | IPS FREE), or what IPAM knows of one\n"
                                    "address (--ip)");
  show->add_flag("--show-blocks", sf.blocks, "Add a row for each block of each pool");
  show->add_flag("--show-borrowed", sf.borrowed, "List addresses in use in a block affine to another node than theirs");
  show->add_flag("--show-configuration", sf.configuration, "Print the IPAM configuration (StrictAffinity, AutoAllocateBlocks, MaxBlocksPerHost)");
  show->add_option("--ip", sf.ip, "Whether this address is in use, and by which handle, pod and workload endpoint");
  show->add_option("--profile,-p", profile, profile_help);
  show->callback([] { exit_code() = cmd_show(profile, sf); });

  static bool show_ips = false;
  static std::string out_file;
  auto* check = ipam->add_subcommand(
      "check",
      "Look for inconsistencies: leaked addresses (allocated, no WorkloadEndpoint lists them), endpoint addresses not\n"
      "allocated, handles with no addresses, blocks outside every pool, affinities to nodes that do not exist (when Node\n"
      "resources are kept), stale affinities, duplicates, unreadable resources. Ends with `Check complete; found N problems.`\n"
      "Exits 0 whatever it finds (as calicoctl does); non-zero only when it cannot read the datastore or write the\n"
      "report. An address being assigned by an ADD still in progress has no endpoint yet and shows as leaked: re-check\n"
      "before releasing.");
  check->add_flag("--show-problem-ips", show_ips, "List every problem address (by default only their counts)");
  check->add_option("-o,--output", out_file, "Write the report as JSON to this file (for `cnf ipam release --from-report`)");
  check->add_option("--profile,-p", profile, profile_help);
  check->callback([] { exit_code() = cmd_check(profile, show_ips, out_file); });

  static std::vector<std::string> ips;
  static std::string report;
  static bool force = false;
  auto* release = ipam->add_subcommand(
      "release",
      "Release addresses: --ip ADDR (repeatable), or the leaked addresses of a `cnf ipam check -o` report. An address a\n"
      "WorkloadEndpoint lists is refused unless --force; with --from-report an address held by another handle than the\n"
      "report says (assigned again since) is skipped. Prints each address released and its handle. Exits 1 when an --ip\n"
      "address was refused or not assigned.");
  release->add_option("--ip", ips, "Address to release");
  release->add_option("--from-report", report, "Release the leaked addresses listed in this report");
  release->add_flag("--force", force, "Release even addresses that a workload endpoint lists");
  release->add_option("--profile,-p", profile, profile_help);
  release->callback([] { exit_code() = cmd_release(profile, ips, report, force); });

  static std::string strict;
  static std::int64_t max_blocks = -1;
  auto* configure = ipam->add_subcommand("configure", "Change the IPAM configuration (IPAMConfiguration 'default')");
  configure->add_option("--strictaffinity", strict, "true: never borrow addresses from blocks affine to other nodes")
      ->check(CLI::IsMember({"true", "false"}));
  configure->add_option("--max-blocks-per-host", max_blocks, "Blocks a node may claim (0 = no limit)");
  configure->add_option("--profile,-p", profile, profile_help);
  configure->callback([] { exit_code() = cmd_configure(profile, strict, max_blocks); });
}

}  // namespace cnf_app

#else
namespace cnf_app {
void add_ipam_commands(CLI::App&) {}
}  // namespace cnf_app
#endif
