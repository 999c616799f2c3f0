// bench_policy [policies=10000] [endpoints=100] [rules-per-policy=10] [backend=nft|legacy|nftables]
//
// Runs as root in a network namespace of its own (unshared at start, gone when it exits).
// Times, in one run: cnf programming N policies (calculator + iptables part, one apply)
// on a node with E endpoints; a raw iptables-restore --noflush of exactly the same rules
// into a fresh namespace (IP sets made first, untimed) -- or for the nftables part a raw
// `nft -f` of the same transaction; one policy changed at that scale;
// one pod added at that scale. Prints the figures and the ratio cnf / raw.
#include <cnf/plugins/policy_iptables.hpp>
#ifdef CNF_BENCH_HAVE_NFTABLES
#include <cnf/plugins/policy_nftables.hpp>
#endif
#include <cnf/policy/calculator.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <fcntl.h>
#include <sched.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

using namespace cnf::netpol;
using clk = std::chrono::steady_clock;

namespace {

double ms_since(clk::time_point t) { return std::chrono::duration<double, std::milli>(clk::now() - t).count(); }

cnf::workload_endpoint pod(int i) {
  cnf::workload_endpoint w;
  w.ns = "bench";
  w.pod = "p" + std::to_string(i);
  w.name = "node1-k8s-" + w.pod + "-eth0";
  w.orchestrator = "k8s";
  w.node = "node1";
  w.interface_name = "cali" + std::to_string(100000 + i);
  w.ip_networks = {cnf::ip_prefix::parse("10.70." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1) + "/32").value()};
  w.labels = {{"app", "a" + std::to_string(i % 100)}, {"role", "r" + std::to_string(i % 50)}};
  w.profiles = {"kns.bench"};
  return w;
}

policy_def policy(int i, int rules, int port_base) {
  policy_def p;
  p.ns = "bench";
  p.name = "p" + std::to_string(i);
  p.order = i;
  p.sel = parse_selector("app == 'a" + std::to_string(i % 100) + "'").value();
  p.ingress = true;
  for (int r = 0; r < rules; ++r) {
    rule ru;
    ru.protocol = 6;
    ru.source.sel = parse_selector("role == 'r" + std::to_string((i + r) % 50) + "'").value();
    ru.destination.ports = {port_spec{{static_cast<std::uint16_t>(port_base + r), static_cast<std::uint16_t>(port_base + r)}, {}}};
    p.ingress_rules.push_back(std::move(ru));
  }
  return p;
}

int sh(const std::string& cmd) { return std::system(cmd.c_str()); }

}  // namespace

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 10000;
  const int e = argc > 2 ? std::atoi(argv[2]) : 100;
  const int rules = argc > 3 ? std::atoi(argv[3]) : 10;
  const std::string backend = argc > 4 ? argv[4] : "nft";
  if (::geteuid() != 0) {
    std::puts("skipped: needs root (network namespaces, iptables)");
    return 77;
  }
  if (::unshare(CLONE_NEWNET) != 0) {
    std::perror("unshare");
    return 1;
  }
  std::printf("policy bench: %d policies x %d rules, %d endpoints, %s\n", n, rules, e, backend == "nftables" ? "nftables part" : ("iptables-" + backend).c_str());

  // IPv4 only (ipv6 = false): the raw figure is one IPv4 restore of the same rules, and the
  // bench's pods have IPv4 addresses only.
  cnf::any_policy plugin;
  std::function<std::string()> last_text;
  if (backend == "nftables") {
#ifdef CNF_BENCH_HAVE_NFTABLES
    plugin = cnf::any_policy{cnf::nftables_policy::dataplane({.ipv6 = false})};
    auto* dp = &static_cast<cnf::detail::policy_model<cnf::nftables_policy::dataplane>&>(*plugin.interface()).impl;
    last_text = [dp] { return dp->last_transaction(); };
#else
    std::puts("skipped: built without the nftables part");
    return 77;
#endif
  } else {
    plugin = cnf::any_policy{cnf::iptables_policy::dataplane({.backend = backend, .ipv6 = false})};
    auto* dp = &static_cast<cnf::detail::policy_model<cnf::iptables_policy::dataplane>&>(*plugin.interface()).impl;
    last_text = [dp] { return dp->last_restore(); };
  }
  calculator calc("node1");
  calc.upsert_namespace("bench", {});
  for (int i = 0; i < e; ++i) calc.upsert_endpoint(pod(i));
  auto t0 = clk::now();
  for (int i = 0; i < n; ++i) calc.upsert_policy(policy(i, rules, 1000));
  auto updates = calc.take_updates();
  double calc_ms = ms_since(t0);
  auto t1 = clk::now();
  for (auto& u : updates)
    std::visit(
        [&](auto& x) {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, update::endpoint_upsert>) (void)plugin.upsert_endpoint(x.endpoint);
          else if constexpr (std::is_same_v<T, update::policy_upsert>) (void)plugin.upsert_policy(x.policy);
          else if constexpr (std::is_same_v<T, update::profile_upsert>) (void)plugin.upsert_profile(x.profile);
          else if constexpr (std::is_same_v<T, update::ip_set_members>) (void)plugin.add_ip_set_members(x.id, x.added);
        },
        u);
  auto applied = plugin.apply();
  double full_ms = ms_since(t1);
  if (!applied) {
    std::fprintf(stderr, "apply failed: %s\n", applied.error().message.c_str());
    return 1;
  }
  auto st = plugin.status().value();
  const std::string restore = last_text();
  std::printf("cnf: calculation %.0f ms; plugin (render, sets, one restore/transaction) %.0f ms; %zu rules in %zu bytes\n", calc_ms, full_ms,
              st.rules, restore.size());

  auto deliver = [&](const std::vector<policy_update>& ups) -> cnf::result<void> {
    for (auto& u : ups) {
      cnf::result<void> r;
      std::visit(
          [&](auto& x) {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, update::endpoint_upsert>) r = plugin.upsert_endpoint(x.endpoint);
            else if constexpr (std::is_same_v<T, update::endpoint_removal>) r = plugin.remove_endpoint(x.key);
            else if constexpr (std::is_same_v<T, update::policy_upsert>) r = plugin.upsert_policy(x.policy);
            else if constexpr (std::is_same_v<T, update::policy_removal>) r = plugin.remove_policy(x.key);
            else if constexpr (std::is_same_v<T, update::profile_upsert>) r = plugin.upsert_profile(x.profile);
            else if constexpr (std::is_same_v<T, update::profile_removal>) r = plugin.remove_profile(x.name);
            else if constexpr (std::is_same_v<T, update::ip_set_members>) {
              r = plugin.add_ip_set_members(x.id, x.added);
              if (r && !x.removed.empty()) r = plugin.remove_ip_set_members(x.id, x.removed);
            } else {
              r = plugin.remove_ip_set(x.id);
            }
          },
          u);
      if (!r) return r;
    }
    return plugin.apply();
  };
  auto timed = [&](const char* what, auto&& change) {
    auto t = clk::now();
    change();
    auto ups = calc.take_updates();
    double c = ms_since(t);
    auto t2 = clk::now();
    auto r = deliver(ups);
    double p = ms_since(t2);
    std::printf("%s: %.1f ms (calculation %.1f ms, %zu updates; plugin %.1f ms) %s\n", what, c + p, c, ups.size(), p,
                r ? "ok" : r.error().message.c_str());
  };
  // One policy changed at this scale; one pod added (selected by the policies of its app label).
  timed("one policy changed", [&] { calc.upsert_policy(policy(n / 2, rules, 2000)); });
  timed("one pod added", [&] { calc.upsert_endpoint(pod(e)); });

  // Raw: the same text into a fresh namespace.
  std::string tmp = "/tmp/cnf-policy-bench-" + std::to_string(::getpid());
  if (backend != "nftables") sh("ipset save > " + tmp + ".ipset");
  if (::unshare(CLONE_NEWNET) != 0) {
    std::perror("unshare");
    return 1;
  }
  FILE* f = std::fopen((tmp + ".rules").c_str(), "w");
  std::fwrite(restore.data(), 1, restore.size(), f);
  std::fclose(f);
  std::string raw_cmd;
  if (backend == "nftables") {
    raw_cmd = "nft -f " + tmp + ".rules";
  } else {
    sh("ipset restore < " + tmp + ".ipset");  // untimed: the sets the rules refer to
    raw_cmd = "iptables-" + backend + "-restore --noflush < " + tmp + ".rules";
  }
  auto t4 = clk::now();
  int rc = sh(raw_cmd);
  double raw_ms = ms_since(t4);
  std::remove((tmp + ".ipset").c_str());
  std::remove((tmp + ".rules").c_str());
  std::printf("raw %s of the same rules: %.0f ms (exit %d)\n", backend == "nftables" ? "nft -f" : ("iptables-" + backend + "-restore").c_str(), raw_ms, rc);
  std::printf("ratio cnf (plugin) / raw: %.2f; cnf (calculation + plugin) / raw: %.2f\n", full_ms / raw_ms, (calc_ms + full_ms) / raw_ms);
  return 0;
}
