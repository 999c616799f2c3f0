// The etcd fault test (issue 5, item 4): a real etcd is SIGKILLed in the middle of a run of
// real CNI ADDs (the built `cnf` binary, profile with [datastore] plugin = "etcd" and
// calico-ipam) and started again on the same data dir and port.
//
//   * every ADD issued while etcd is down exits with CNI error code 11 within timeout_ms
//     plus a margin, and leaves nothing in the kernel (no host veth, no pod interface);
//   * an ADD in flight at the moment of the kill either succeeds or fails with 11, never
//     anything else, and leaves nothing in the kernel when it fails;
//   * ADDs after the restart succeed;
//   * watchers (one through the plugin loader, exactly as a host composes the profile, one
//     through the static library, started later from the current state) reconnect and
//     resume by themselves: within a bounded wait each one's map (key -> revision, built
//     only from events) equals a fresh list of the store, for every kind under the prefix
//     (the test checks that the CNI wrote no kind the watchers do not watch);
//   * DEL of every pod (the failed ones too, as a runtime does) leaves the store clean:
//     no WorkloadEndpoint, no IPAMHandle, no address in use, calico-ipam's check clean.
// A second case: etcd down (killed, then frozen with SIGSTOP) before the ADD: code 11 in
// bounded time and nothing created, in the kernel or in the store.
//
// Where it runs: root only (network namespaces; otherwise "skipped", exit 77) and only
// with Debian's etcd installed (otherwise skipped). The host's network namespace is never
// changed: the test's main thread enters a throw-away "node" namespace (and returns on
// every exit path) before etcd is started, so etcd, the watchers and every `cnf` call share
// that namespace's loopback, and the CNI's host-side veths appear in it. etcd listens on
// 127.0.0.1 only and is stopped by PID; namespaces are deleted on every exit path.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include "etcd_test_util.hpp"

#include "../integration/netns_harness.hpp"
#include "process.hpp"

#include <cnf/loader.hpp>
#include <cnf/plugins/calico_ipam.hpp>
#include <cnf/profile.hpp>

#include <boost/json.hpp>

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace fs = std::filesystem;
namespace bj = boost::json;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using cnf_test::etcd_server;
using cnf_test::enter_netns;
using cnf_test::test_netns;

namespace {

struct gate : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testRunStarting(Catch::TestRunInfo const& info) override {
    cnf_test::exit_77_unless_root("network namespaces");
    if (auto why = etcd_server::unavailable_reason()) cnf_test::exit_77_skipped(*why);
    ::signal(SIGPIPE, SIG_IGN);
    TestEventListenerBase::testRunStarting(info);
  }
};

}  // namespace
CATCH_REGISTER_LISTENER(gate)

namespace {

const std::string cnf_bin = std::string(CNF_TEST_BIN_DIR) + "/cnf";
constexpr int timeout_ms = 2000;            // the profile's datastore timeout
constexpr auto margin = 3000ms;             // allowed on top of it (process start, netns exec)
constexpr auto convergence_limit = 30s;     // watchers must match the store within this
constexpr const char* node_name = "node-1";

/// The kinds a CNI ADD/DEL with calico-ipam may write (checked against the store's keys).
const std::vector<std::string> watched_kinds = {"IPPool",    "IPAMBlock", "BlockAffinity", "IPAMHandle",
                                                "IPAMConfig", "IPReservation", "Node", "WorkloadEndpoint"};

std::string ip_binary() {
  for (const char* c : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"})
    if (::access(c, X_OK) == 0) return c;
  throw std::runtime_error("ip(8) not found");
}


/// The test's temp directory: cnf-etcd-<pid>-fault-*, so the next etcd_server removes it
/// if this process dies without cleaning up.
std::string dir_prefix() { return "/tmp/cnf-etcd-" + std::to_string(::getpid()) + "-fault-"; }

// ---- one CNI call: `ip netns exec <node> cnf`, config on stdin, a hard deadline --------

struct cni_call : cnf_test::process_result {  // status (128+N: signal N), out, err, start, end, elapsed()
  std::string what;
  bj::value json;

  bool ok() const { return status == 0; }
  std::int64_t code() const {
    auto* o = json.if_object();
    auto* c = o ? o->if_contains("code") : nullptr;
    return c && c->is_int64() ? c->as_int64() : (c && c->is_uint64() ? static_cast<std::int64_t>(c->as_uint64()) : -1);
  }
  std::string describe() const {
    return what + ": exit " + std::to_string(status) + " after " + std::to_string(elapsed().count()) + " ms\n  stdout: " + out +
           "\n  stderr: " + err;
  }
};

/// Runs cnf inside `node` with only PATH and the CNI variables in its environment. The
/// process is killed (by its PID) after `hard_limit`: a hang shows up as a failed call.
/// Its stdin/stdout/stderr files are in a directory under `scratch`, removed on return.
cni_call run_cnf(const test_netns& node, const fs::path& scratch, const std::vector<std::pair<std::string, std::string>>& env,
                 const std::string& config, std::chrono::milliseconds hard_limit = 30000ms) {
  static const std::string ip = ip_binary();
  cni_call c;
  std::vector<std::string> argv{ip, "netns", "exec", node.name(), cnf_bin};
  std::vector<std::string> envv{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
  for (auto& [k, v] : env) {
    envv.push_back(k + "=" + v);
    if (k == "CNI_COMMAND" || k == "CNI_CONTAINERID") c.what += k + "=" + v + " ";
  }
  static_cast<cnf_test::process_result&>(c) = cnf_test::run_process(argv, envv, config, hard_limit, (scratch / "call-").string());
  if (!c.out.empty()) {
    boost::system::error_code jec;
    c.json = bj::parse(c.out, jec);
  }
  return c;
}

/// Calico's host-side name: "cali" + 11 hex digits of SHA-1("<namespace>.<pod>"), by sha1sum(1).
std::string host_veth_of(const std::string& k8s_ns, const std::string& pod) {
  auto out = cnf_test::run_or_throw("printf %s " + cnf_test::shell_quote(k8s_ns + "." + pod) + " | sha1sum");
  return "cali" + out.substr(0, 11);
}

/// Link names in a namespace (without lo), through `ip -j`.
std::set<std::string> links_in(const test_netns& ns) {
  auto r = ns.ip("-j link show");
  if (!r.ok()) throw std::runtime_error("ip -n " + ns.name() + " link: " + r.output);
  std::set<std::string> s;
  if (r.output.find_first_not_of(" \n") == std::string::npos) return s;
  const bj::value doc = bj::parse(r.output);
  for (auto& l : doc.as_array()) {
    auto* n = l.as_object().if_contains("ifname");
    if (n && n->is_string() && n->as_string() != "lo") s.insert(std::string(n->as_string()));
  }
  return s;
}

struct pod {
  std::unique_ptr<test_netns> ns = std::make_unique<test_netns>();
  std::string name, cid, host_veth;
  explicit pod(int i) : name("fault-" + std::to_string(i)), cid("c-fault-" + std::to_string(i)), host_veth(host_veth_of("default", name)) {}
  std::vector<std::pair<std::string, std::string>> env(const std::string& command) const {
    return {{"CNI_COMMAND", command},
            {"CNI_CONTAINERID", cid},
            {"CNI_NETNS", ns->path()},
            {"CNI_IFNAME", "eth0"},
            {"CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + name + ";K8S_POD_INFRA_CONTAINER_ID=" + cid}};
  }
  std::string handle() const { return std::string("k8s-pod-network.") + cid; }
};

std::string net_config(const std::string& profile) {
  return bj::serialize(bj::object{{"cniVersion", "1.1.0"}, {"name", "k8s-pod-network"}, {"type", "cnf"}, {"profile", profile}});
}

std::string write_profile(const fs::path& dir, int client_port) {
  auto p = dir / "calico-etcd.toml";
  std::ofstream f(p);
  f << "[node]\nname = \"" << node_name << "\"\n\n"
    << "[datastore]\nplugin = \"etcd\"\nendpoints = [\"http://127.0.0.1:" << client_port << "\"]\ntimeout_ms = " << timeout_ms << "\n\n"
    << "[ipam]\nplugin = \"calico-ipam\"\n[[ipam.pools]]\ncidr = \"10.244.0.0/16\"\nblock_size = 26\n\n"
    << "[cni]\nmtu = 1400\nlog_file = \"" << (dir / "cnf.log").string() << "\"\n";
  if (!f) throw std::runtime_error("cannot write " + p.string());
  return p.string();
}

// ---- watchers ------------------------------------------------------------------------------

std::string key_of(const cnf::resource& r) { return r.kind + "/" + r.ns + "/" + r.name; }
using state_map = std::map<std::string, std::string>;  // key -> revision

/// One change of one resource: what a watch delivers after in_sync, and what the test
/// reads back from etcd's history.
struct change {
  std::int64_t revision = 0;
  std::string key;
  char type = '?';  ///< 'A' added (created at this revision), 'M' modified, 'D' deleted
  friend bool operator==(const change&, const change&) = default;
  std::string to_string() const { return std::string(1, type) + " " + key + " @" + std::to_string(revision); }
};

/// Per kind: the revision its watch was in sync at, and every change delivered after.
struct kind_log {
  bool synced = false;
  std::int64_t sync_revision = 0;
  bool resynced = false;  ///< a compaction made it relist: changes before the relist are skipped
  std::vector<change> changes;
};

/// One watch per kind on one datastore, folding events into a map (and a log of changes). resync_needed (a
/// compaction) is honoured the documented way: list again, watch from the list's revision.
class watcher {
 public:
  watcher(std::string name, cnf::any_datastore ds) : name_(std::move(name)), ds_(std::move(ds)) {
    for (auto& k : watched_kinds) start(k, {});
  }
  ~watcher() { stop(); }
  void stop() {
    std::vector<cnf::watch_handle> hs;
    {
      std::lock_guard lk(mu_);
      for (auto& [k, h] : handles_) hs.push_back(std::move(h));
      handles_.clear();
    }
    hs.clear();  // cancels and joins outside mu_ (callbacks take mu_)
  }
  /// Restarts the watches that reported resync_needed; call from the test's thread.
  void service() {
    std::vector<std::string> kinds;
    {
      std::lock_guard lk(mu_);
      kinds.swap(resync_);
    }
    for (auto& k : kinds) {
      auto l = ds_.list_all({.kind = k});
      if (!l) {  // etcd may be down: try again on the next call
        std::lock_guard lk(mu_);
        resync_.push_back(k);
        continue;
      }
      {
        std::lock_guard lk(mu_);
        std::erase_if(state_, [&](auto& kv) { return kv.first.starts_with(k + "/"); });
        for (auto& r : l->items) state_[key_of(r)] = r.revision;
        auto& lg = logs_[k];
        lg.synced = lg.resynced = true;
        lg.sync_revision = std::stoll(l->revision);
      }
      start(k, l->revision);
    }
  }
  state_map state() const {
    std::lock_guard lk(mu_);
    return state_;
  }
  std::map<std::string, kind_log> logs() const {
    std::lock_guard lk(mu_);
    return logs_;
  }
  int errors() const { return errors_; }
  int resyncs() const { return resyncs_; }
  int in_syncs() const { return in_syncs_; }
  const std::string& name() const { return name_; }

 private:
  void start(const std::string& kind, const std::string& revision) {
    auto h = ds_.watch({.kind = kind, .revision = revision}, [this, kind](const cnf::watch_event& e) { on_event(kind, e); });
    if (!h) throw std::runtime_error(name_ + ": watch " + kind + ": " + h.error().message);
    cnf::watch_handle old;  // an ended watch; joined outside mu_
    std::lock_guard lk(mu_);
    old = std::exchange(handles_[kind], std::move(*h));
  }
  void on_event(const std::string& kind, const cnf::watch_event& e) {
    using t = cnf::watch_event::type;
    std::lock_guard lk(mu_);
    auto& lg = logs_[kind];
    auto log_change = [&](char type) {
      if (lg.synced) lg.changes.push_back({std::stoll(e.revision), key_of(e.object), type});
    };
    switch (e.kind) {
      case t::added:
        state_[key_of(e.object)] = e.object.revision;
        log_change('A');
        break;
      case t::modified:
        state_[key_of(e.object)] = e.object.revision;
        log_change('M');
        break;
      case t::deleted:
        state_.erase(key_of(e.object));
        log_change('D');
        break;
      case t::in_sync:
        ++in_syncs_;
        lg.synced = true;
        lg.sync_revision = std::stoll(e.revision);
        break;
      case t::resync_needed:
        ++resyncs_;
        resync_.push_back(kind);
        break;
      case t::error: ++errors_; break;
    }
  }

  std::string name_;
  cnf::any_datastore ds_;
  mutable std::mutex mu_;
  state_map state_;
  std::map<std::string, cnf::watch_handle> handles_;
  std::vector<std::string> resync_;
  std::map<std::string, kind_log> logs_;
  std::atomic<int> errors_{0}, resyncs_{0}, in_syncs_{0};
};

/// A fresh list of every watched kind: key -> revision.
state_map store_state(const cnf::any_datastore& ds) {
  state_map m;
  for (auto& k : watched_kinds) {
    auto l = ds.list_all({.kind = k});
    if (!l) throw std::runtime_error("list " + k + ": " + l.error().message);
    for (auto& r : l->items) m[key_of(r)] = r.revision;
  }
  return m;
}

std::string describe_diff(const state_map& want, const state_map& got) {
  std::string s;
  for (auto& [k, v] : want) {
    auto it = got.find(k);
    if (it == got.end()) s += "  missing " + k + "@" + v + "\n";
    else if (it->second != v) s += "  stale " + k + "@" + it->second + " (store @" + v + ")\n";
  }
  for (auto& [k, v] : got)
    if (!want.count(k)) s += "  extra " + k + "@" + v + "\n";
  return s;
}

/// Waits until every watcher's map equals a fresh list of the store; returns the time
/// it took, or nullopt (with the differences in `why`) after `limit`.
std::optional<std::chrono::milliseconds> converge(std::vector<watcher*> ws, const cnf::any_datastore& ds, std::string& why,
                                                  std::chrono::seconds limit = convergence_limit) {
  auto t0 = clock_type::now();
  for (;;) {
    bool all = true, listed = true;
    why.clear();
    state_map want;
    try {
      want = store_state(ds);
    } catch (const std::exception& e) {
      all = listed = false;
      why = e.what();
    }
    for (auto* w : ws) {
      w->service();
      if (!listed) continue;
      auto got = w->state();
      if (got != want) {
        all = false;
        why += w->name() + " differs from the store:\n" + describe_diff(want, got);
      }
    }
    if (all) return std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - t0);
    if (clock_type::now() - t0 > limit) return std::nullopt;
    std::this_thread::sleep_for(50ms);
  }
}

// ---- the raw store -------------------------------------------------------------------------

std::string b64decode(std::string_view in) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  unsigned buf = 0;
  int bits = 0;
  for (char c : in) {
    int v = val(c);
    if (v < 0) continue;
    buf = (buf << 6) | static_cast<unsigned>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((buf >> bits) & 0xff);
    }
  }
  return out;
}

/// Every key under <prefix>/ in etcd, read with the admin client (not through cnf).
std::vector<std::string> raw_keys(etcd_server& etcd, const std::string& prefix = "/cnf") {
  auto body = etcd.post("/v3/kv/range", "{\"key\":\"" + cnf_test::etcd_detail::base64(prefix + "/") + "\",\"range_end\":\"" +
                                            cnf_test::etcd_detail::base64(prefix + "0") + "\",\"keys_only\":true}");
  std::vector<std::string> keys;
  auto v = bj::parse(body);
  if (auto* kvs = v.as_object().if_contains("kvs"))
    for (auto& kv : kvs->as_array()) keys.push_back(b64decode(kv.as_object().at("key").as_string()));
  return keys;
}

/// The kinds of the keys cnf wrote; a key that is not a cnf resource key is returned as is.
std::set<std::string> kinds_in(const std::vector<std::string>& keys) {
  std::set<std::string> s;
  for (auto& k : keys) {
    auto rk = cnf::etcd_parse_resource_key("/cnf", k);
    s.insert(rk ? rk->kind : "unparsable key " + k);
  }
  return s;
}

/// etcd's own history of the keys under <prefix>/, revision by revision, read with the
/// admin client (range at each revision, keys only): a put at r is a key whose
/// mod_revision is r, a delete at r a key present at r-1 and absent at r. Works as long as
/// nothing compacted the history (nothing does in this test).
std::vector<change> history(etcd_server& etcd, const std::string& prefix = "/cnf") {
  std::vector<change> out;
  std::map<std::string, std::int64_t> prev;  // key -> mod_revision
  const std::int64_t last = etcd.revision();
  auto num = [](const bj::value& v) { return v.is_string() ? std::stoll(std::string(v.as_string())) : v.to_number<std::int64_t>(); };
  for (std::int64_t r = 1; r <= last; ++r) {
    auto body = etcd.post("/v3/kv/range", "{\"key\":\"" + cnf_test::etcd_detail::base64(prefix + "/") + "\",\"range_end\":\"" +
                                              cnf_test::etcd_detail::base64(prefix + "0") + "\",\"keys_only\":true,\"revision\":\"" +
                                              std::to_string(r) + "\"}");
    auto v = bj::parse(body);
    std::map<std::string, std::int64_t> cur;
    if (auto* kvs = v.as_object().if_contains("kvs"))
      for (auto& kv : kvs->as_array()) {
        auto& o = kv.as_object();
        auto rk = cnf::etcd_parse_resource_key(prefix, b64decode(o.at("key").as_string()));
        if (!rk) throw std::runtime_error("history: " + rk.error().message);
        std::string key = rk->kind + "/" + rk->ns + "/" + rk->name;
        auto mod = num(o.at("mod_revision"));
        cur[key] = mod;
        if (mod == r) out.push_back({r, key, num(o.at("create_revision")) == r ? 'A' : 'M'});
      }
    for (auto& [k, m] : prev)
      if (!cur.count(k)) out.push_back({r, k, 'D'});
    prev = std::move(cur);
  }
  return out;
}

/// Compares each kind's delivered changes with etcd's history after the kind's sync
/// revision; returns the differences ("" when every change was seen exactly once, in order).
std::string compare_with_history(const watcher& w, const std::vector<change>& hist, std::size_t* checked = nullptr) {
  std::string why;
  for (auto& [kind, lg] : w.logs()) {
    if (!lg.synced) {
      why += w.name() + ": " + kind + " never got in sync\n";
      continue;
    }
    std::vector<change> want;
    for (auto& c : hist)
      if (c.revision > lg.sync_revision && c.key.starts_with(kind + "/")) want.push_back(c);
    if (lg.resynced) continue;  // relisted after a compaction: the history check does not apply
    if (checked) *checked += want.size();
    if (want == lg.changes) continue;
    why += w.name() + ": " + kind + " from revision " + std::to_string(lg.sync_revision) + ": delivered " + std::to_string(lg.changes.size()) +
           " change(s), etcd's history has " + std::to_string(want.size()) + "\n";
    for (std::size_t i = 0; i < std::max(want.size(), lg.changes.size()); ++i) {
      std::string a = i < want.size() ? want[i].to_string() : "-", b = i < lg.changes.size() ? lg.changes[i].to_string() : "-";
      if (a != b) {
        why += "  first difference at #" + std::to_string(i) + ": etcd " + a + ", delivered " + b + "\n";
        break;
      }
    }
  }
  return why;
}

cnf::any_datastore open_static(const std::string& endpoint) {
  auto ds = cnf::etcd_datastore::open(cnf_test::config_for(endpoint, 3000ms));
  if (!ds) throw std::runtime_error("open: " + ds.error().message);
  return cnf::any_datastore(std::move(*ds));
}

/// The last part of cnf's log file, for failure messages.
std::string log_tail(const fs::path& dir, std::size_t n = 4000) {
  auto s = cnf_test::read_file(dir / "cnf.log");
  return s.size() > n ? s.substr(s.size() - n) : s;
}

}  // namespace

// =============================================================================================

TEST_CASE("etcd fails in the middle of a run of CNI ADDs and comes back", "[etcd][integration][fault]") {
  // The fault: a crash (SIGKILL: connections refused until etcd is started again on the
  // same data dir and port) or a hang (SIGSTOP: connections accepted, nothing answers,
  // requests already sent are served after SIGCONT).
  bool freeze = false;
  SECTION("SIGKILL, then started again on the same data dir and port") { freeze = false; }
  SECTION("SIGSTOP (hung), then SIGCONT") { freeze = true; }
  const char* outage = freeze ? "freeze" : "kill";
  REQUIRE(fs::exists(cnf_bin));
  REQUIRE(fs::exists(fs::path(CNF_TEST_PLUGIN_DIR) / "cnf-datastore-etcd.so"));
  test_netns node;
  enter_netns inside(node);  // etcd, the watchers and every cnf call share node's loopback
  cnf_test::temp_dir dir{dir_prefix()};
  etcd_server etcd;
  struct resume_on_exit {  // a frozen etcd is resumed on every way out (before it is stopped)
    etcd_server& etcd;
    bool frozen = false;
    ~resume_on_exit() {
      if (frozen && etcd.pid() > 0) ::kill(etcd.pid(), SIGCONT);
    }
  } resume{etcd};
  const std::string profile = write_profile(dir.path, etcd.client_port());
  const std::string config = net_config(profile);
  auto log_on_failure = [&] { return "cnf log:\n" + log_tail(dir.path) + "\netcd log:\n" + etcd.log_tail(1500); };

  // Watcher A: the datastore exactly as a host builds it from this profile (plugin loader).
  auto prof = cnf::load_profile(profile);
  INFO((prof ? std::string() : prof.error().message));
  REQUIRE(prof);
  cnf::plugin_loader loader({fs::path(CNF_TEST_PLUGIN_DIR)});
  auto composed = cnf::compose(*prof, loader, {cnf::part::datastore}, cnf::plugin_context{});
  INFO((composed ? std::string() : composed.error().message));
  REQUIRE(composed);
  cnf::any_datastore reader = open_static(etcd.endpoint());
  watcher wa("watcher A (plugin, from the empty store)", composed->datastore);

  // Pods: made up front, so the driver thread only runs processes.
  constexpr int max_pods = 40;
  std::vector<std::unique_ptr<pod>> pods;
  for (int i = 0; i < max_pods; ++i) pods.push_back(std::make_unique<pod>(i));

  // Phase 1: three ADDs with etcd up.
  std::vector<cni_call> calls;  // index = pod
  for (int i = 0; i < 3; ++i) {
    calls.push_back(run_cnf(node, dir.path, pods[static_cast<std::size_t>(i)]->env("ADD"), config));
    INFO(calls.back().describe() << "\n" << log_on_failure());
    REQUIRE(calls.back().ok());
  }
  // Watcher B: the static library, started from the current state (initial added events).
  std::unique_ptr<watcher> wb = std::make_unique<watcher>("watcher B (static, from 3 pods)", reader);

  // Phase 2: a driver thread issues ADDs back to back (a short pause between them); this
  // thread kills or freezes etcd while one is most likely in flight, waits for several
  // ADDs made entirely during the outage, brings etcd back, and waits for several ADDs
  // after that.
  std::mutex mu;
  std::condition_variable cv;
  std::size_t done = calls.size();  // calls[0, done) are complete
  std::size_t running = 0;  // the call in progress (== done while one runs)
  bool stop = false;
  calls.resize(max_pods);
  std::thread driver([&] {
    for (std::size_t i = 3; i < static_cast<std::size_t>(max_pods); ++i) {
      {
        std::lock_guard lk(mu);
        if (stop) break;
        running = i;
      }
      cv.notify_all();
      auto c = run_cnf(node, dir.path, pods[i]->env("ADD"), config);
      {
        std::lock_guard lk(mu);
        calls[i] = std::move(c);
        done = i + 1;
      }
      cv.notify_all();
      std::this_thread::sleep_for(100ms);
    }
    {
      std::lock_guard lk(mu);
      stop = true;
    }
    cv.notify_all();
  });
  struct joiner {
    std::thread& t;
    std::mutex& mu;
    std::condition_variable& cv;
    bool& stop;
    ~joiner() {
      {
        std::lock_guard lk(mu);
        stop = true;
      }
      cv.notify_all();
      if (t.joinable()) t.join();
    }
  } join_driver{driver, mu, cv, stop};

  auto count_started_after = [&](clock_type::time_point t) {
    std::size_t n = 0;
    for (std::size_t i = 3; i < done; ++i) n += calls[i].start >= t;
    return n;
  };
  clock_type::time_point kill_begin, kill_done, restart_begin, restart_done;
  {
    std::unique_lock lk(mu);
    REQUIRE(cv.wait_for(lk, 60s, [&] { return done >= 5 || stop; }));
    REQUIRE(done >= 5);
  }
  // Kill while the next ADD runs: at a random point between 20% and 80% of the average
  // duration of the ADDs so far (the first part of a call is process start-up).
  std::chrono::milliseconds kill_after;
  {
    std::unique_lock lk(mu);
    REQUIRE(cv.wait_for(lk, 60s, [&] { return running == done || stop; }));
    REQUIRE_FALSE(stop);
    std::chrono::milliseconds sum{0};
    for (std::size_t i = 0; i < done; ++i) sum += calls[i].elapsed();
    auto avg = sum / static_cast<long>(done);
    std::mt19937 rng(std::random_device{}());
    kill_after = std::chrono::milliseconds(std::uniform_int_distribution<long>(avg.count() / 5, avg.count() * 4 / 5)(rng));
  }
  std::this_thread::sleep_for(kill_after);
  const pid_t etcd_pid = etcd.pid();
  kill_begin = clock_type::now();
  if (freeze) {
    REQUIRE(::kill(etcd_pid, SIGSTOP) == 0);
    resume.frozen = true;
  } else {
    etcd.kill();  // SIGKILL by PID, reaped
  }
  kill_done = clock_type::now();
  // A hung etcd makes each ADD wait for the timeout: fewer of them suffice.
  const std::size_t want_during = freeze ? 2 : 4;
  {
    std::unique_lock lk(mu);
    REQUIRE(cv.wait_for(lk, 60s, [&] { return count_started_after(kill_done) >= want_during || stop; }));
    REQUIRE(count_started_after(kill_done) >= want_during);
  }
  restart_begin = clock_type::now();
  if (freeze) {
    REQUIRE(::kill(etcd_pid, SIGCONT) == 0);
    resume.frozen = false;
    etcd.revision();  // answers again
  } else {
    etcd.start();
  }
  restart_done = clock_type::now();
  {
    std::unique_lock lk(mu);
    REQUIRE(cv.wait_for(lk, 60s, [&] { return count_started_after(restart_done) >= 3 || stop; }));
    REQUIRE(count_started_after(restart_done) >= 3);
    stop = true;
  }
  cv.notify_all();
  driver.join();
  calls.resize(done);

  // Every call: the kind of outcome its timing allows.
  std::set<std::size_t> failed;
  std::size_t during = 0, overlapping_failed = 0;
  std::chrono::milliseconds slowest_failure{0};
  for (std::size_t i = 0; i < calls.size(); ++i) {
    const auto& c = calls[i];
    INFO("pod " << i << ": " << c.describe() << "\n" << log_on_failure());
    if (c.start >= kill_done && c.end <= restart_begin) {
      // Entirely during the outage: 11, in bounded time.
      ++during;
      REQUIRE_FALSE(c.ok());
      REQUIRE(c.code() == 11);
      CHECK(c.elapsed() <= std::chrono::milliseconds(timeout_ms) + margin);
      if (freeze) CHECK(c.elapsed() >= std::chrono::milliseconds(timeout_ms) - 100ms);  // it did wait for etcd
      slowest_failure = std::max(slowest_failure, c.elapsed());
      failed.insert(i);
    } else if (c.start >= restart_done || c.end < kill_begin) {
      // Entirely with etcd up.
      REQUIRE(c.ok());
    } else {
      // In flight at the fault or the recovery: either outcome, but only these two.
      if (!c.ok()) {
        CHECK(c.code() == 11);
        // Within one timeout, like the others: once the datastore timed out, the CNI's
        // rollback does not wait for it again (cnf/cni/fail_fast.hpp).
        CHECK(c.elapsed() <= std::chrono::milliseconds(timeout_ms) + margin);
        slowest_failure = std::max(slowest_failure, c.elapsed());
        failed.insert(i);
        ++overlapping_failed;
      }
    }
  }
  REQUIRE(during >= want_during);
  std::string in_flight = "none";
  for (std::size_t i = 0; i < calls.size(); ++i)
    if (calls[i].start < kill_done && calls[i].end > kill_begin)
      in_flight = "pod " + std::to_string(i) + " (started " +
                  std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(kill_begin - calls[i].start).count()) +
                  " ms before the fault): " + (calls[i].ok() ? "succeeded" : "code " + std::to_string(calls[i].code())) + " after " +
                  std::to_string(calls[i].elapsed().count()) + " ms";
  WARN(outage << ": ADDs: " << calls.size() << " in all, " << during << " entirely during the outage (code 11, slowest " << slowest_failure.count()
                << " ms, bound " << timeout_ms + margin.count() << " ms), " << overlapping_failed
                << " overlapping the fault or the recovery failed with 11; in flight at the fault: " << in_flight << "; bringing etcd back took "
                << std::chrono::duration_cast<std::chrono::milliseconds>(restart_done - restart_begin).count() << " ms");

  // The kernel: exactly the host veths of the pods that were added; failed pods have no
  // interface at all.
  std::set<std::string> want_links;
  for (std::size_t i = 0; i < calls.size(); ++i)
    if (!failed.count(i)) want_links.insert(pods[i]->host_veth);
  CHECK(links_in(node) == want_links);
  for (auto i : failed) {
    INFO("failed pod " << i);
    CHECK(links_in(*pods[i]->ns).empty());
  }
  for (std::size_t i = 0; i < calls.size(); ++i)
    if (!failed.count(i)) {
      INFO("added pod " << i);
      CHECK(links_in(*pods[i]->ns) == std::set<std::string>{"eth0"});
    }

  // The watchers saw the outage (stream errors) and converged by themselves.
  std::string why;
  auto conv = converge({&wa, wb.get()}, reader, why);
  INFO(why);
  REQUIRE(conv);
  if (!freeze) {  // the streams broke (a frozen etcd keeps them open: no error is expected)
    CHECK(wa.errors() > 0);
    CHECK(wb->errors() > 0);
  }
  auto ms_since = [](clock_type::time_point t) { return std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - t).count(); };
  WARN(outage << ": watchers matched the store " << ms_since(restart_done) << " ms after etcd was back, " << ms_since(calls.back().end)
                                     << " ms after the last ADD ended (" << conv->count()
                                     << " ms of waiting); stream errors seen: A " << wa.errors() << ", B " << wb->errors()
                              << "; resyncs: A " << wa.resyncs() << ", B " << wb->resyncs());
  // Every watcher saw every change exactly once, in order: its log after in_sync equals
  // etcd's own history (read revision by revision with the admin client).
  {
    auto hist = history(etcd);
    std::size_t checked_a = 0, checked_b = 0;
    auto da = compare_with_history(wa, hist, &checked_a), db = compare_with_history(*wb, hist, &checked_b);
    INFO(da << db);
    CHECK(da.empty());
    CHECK(db.empty());
    CHECK(checked_a > 0);
    CHECK(checked_b > 0);
    WARN(outage << ": history: " << hist.size() << " changes in etcd; watcher A delivered all " << checked_a << " after its start, watcher B all "
                     << checked_b << " after its start");
  }
  // Nothing the CNI wrote escapes the watched kinds.
  auto kinds = kinds_in(raw_keys(etcd));
  for (auto& k : kinds) {
    INFO("kind in the store: " << k);
    CHECK(std::find(watched_kinds.begin(), watched_kinds.end(), k) != watched_kinds.end());
  }
  CHECK(kinds.count("WorkloadEndpoint"));
  CHECK(kinds.count("IPAMBlock"));

  // The store: a WorkloadEndpoint for every added pod. An ADD cut by the outage may have
  // left its address allocated, or (frozen etcd: requests sent before the freeze are
  // served after it) even its WorkloadEndpoint, because its rollback could not reach etcd
  // either: such leftovers must belong to failed pods, and the runtime's DEL removes them.
  {
    std::set<std::string> added_pods, failed_pods, wep_pods;
    for (std::size_t i = 0; i < calls.size(); ++i) (failed.count(i) ? failed_pods : added_pods).insert(pods[i]->name);
    auto weps = reader.list_all({.kind = "WorkloadEndpoint"});
    REQUIRE(weps);
    for (auto& w : weps->items) {
      auto spec = bj::parse(w.spec);
      auto* pn = spec.as_object().if_contains("pod");
      wep_pods.insert(pn && pn->is_string() ? std::string(pn->as_string()) : "?" + w.name);
    }
    std::size_t stray = 0;
    for (auto& n : added_pods) {
      INFO("added pod " << n);
      CHECK(wep_pods.count(n));
    }
    for (auto& n : wep_pods)
      if (!added_pods.count(n)) {
        INFO("WorkloadEndpoint of " << n);
        CHECK(failed_pods.count(n));
        ++stray;
      }
    if (stray) WARN(outage << ": " << stray << " WorkloadEndpoint(s) of failed ADDs (removed by their DEL below)");
    auto rep = cnf::calico_ipam::check(reader, {.check_nodes = false});
    REQUIRE(rep);
    std::set<std::string> failed_handles;
    for (auto i : failed) failed_handles.insert(pods[i]->handle());
    auto of_failed_pod = [&](const std::string& resource) {  // WorkloadEndpoint/<ns>/<node>-k8s-<pod>-eth0, '-' doubled
      for (auto i : failed) {
        std::string esc;
        for (char ch : pods[i]->name) esc += ch == '-' ? std::string("--") : std::string(1, ch);
        if (resource.ends_with("-k8s-" + esc + "-eth0")) return true;
      }
      return false;
    };
    for (auto& p : rep->problems) {
      INFO("ipam check: " << cnf::calico_ipam::to_string(p.what) << " " << p.resource << " (handle " << p.handle << "): " << p.message);
      using k = cnf::calico_ipam::problem::kind;
      if (p.what == k::endpoint_without_allocation) CHECK(of_failed_pod(p.resource));  // a late WorkloadEndpoint write
      else {
        CHECK(p.what == k::leaked_address);  // an allocation whose rollback could not reach etcd
        CHECK(failed_handles.count(p.handle));
      }
    }
    if (!rep->problems.empty()) WARN(outage << ": " << rep->problems.size() << " address(es) left by failed ADDs (released by their DEL below)");
    CHECK(rep->addresses_in_use >= want_links.size());
  }

  // DEL every pod, the failed ones too (a runtime DELs after a failed ADD).
  for (std::size_t i = 0; i < calls.size(); ++i) {
    auto d = run_cnf(node, dir.path, pods[i]->env("DEL"), config);
    INFO("DEL pod " << i << ": " << d.describe() << "\n" << log_on_failure());
    CHECK(d.ok());
  }
  CHECK(links_in(node).empty());
  {
    auto weps = reader.list_all({.kind = "WorkloadEndpoint"});
    REQUIRE(weps);
    CHECK(weps->items.empty());
    auto handles = reader.list_all({.kind = "IPAMHandle"});
    REQUIRE(handles);
    CHECK(handles->items.empty());
    auto blocks = reader.list_all({.kind = "IPAMBlock"});
    REQUIRE(blocks);
    for (auto& b : blocks->items) {
      auto pb = cnf::calico_ipam::parse_block(b);
      INFO(b.name << ": " << (pb ? std::string() : pb.error().message));
      REQUIRE(pb);
      CHECK(pb->in_use() == 0);
    }
    auto rep = cnf::calico_ipam::check(reader, {.check_nodes = false});
    REQUIRE(rep);
    CHECK(rep->problems.empty());
    CHECK(rep->addresses_in_use == 0);
  }
  // And the watchers follow the DELs too.
  auto conv2 = converge({&wa, wb.get()}, reader, why);
  INFO(why);
  REQUIRE(conv2);
  {
    auto hist = history(etcd);
    auto da = compare_with_history(wa, hist), db = compare_with_history(*wb, hist);
    INFO(da << db);
    CHECK(da.empty());
    CHECK(db.empty());
  }
  for (auto* w : {&wa, wb.get()}) {
    auto s = w->state();
    for (auto& [k, v] : s) {
      INFO(w->name() << " still has " << k);
      CHECK_FALSE(k.starts_with("WorkloadEndpoint/"));
      CHECK_FALSE(k.starts_with("IPAMHandle/"));
    }
  }
}

TEST_CASE("etcd down before the ADD: code 11 in bounded time and nothing created", "[etcd][integration][fault]") {
  REQUIRE(fs::exists(cnf_bin));
  test_netns node;
  enter_netns inside(node);
  cnf_test::temp_dir dir{dir_prefix()};
  etcd_server etcd;
  const std::string profile = write_profile(dir.path, etcd.client_port());
  const std::string config = net_config(profile);
  pod p(100);

  auto require_nothing_created = [&] {
    CHECK(links_in(node).empty());
    CHECK(links_in(*p.ns).empty());
  };

  SECTION("killed: the port refuses connections") {
    etcd.kill();
    auto c = run_cnf(node, dir.path, p.env("ADD"), config);
    INFO(c.describe() << "\ncnf log:\n" << log_tail(dir.path));
    REQUIRE_FALSE(c.ok());
    CHECK(c.code() == 11);
    CHECK(c.elapsed() <= std::chrono::milliseconds(timeout_ms) + margin);
    CHECK(c.json.as_object().at("msg").as_string().find("127.0.0.1:" + std::to_string(etcd.client_port())) != bj::string::npos);
    WARN("ADD with etcd killed: code " << c.code() << " after " << c.elapsed().count() << " ms");
    require_nothing_created();
    etcd.start();
  }

  SECTION("frozen (SIGSTOP): connections are accepted, nothing answers") {
    struct resume {
      pid_t pid;
      ~resume() { ::kill(pid, SIGCONT); }
    } r{etcd.pid()};
    REQUIRE(::kill(etcd.pid(), SIGSTOP) == 0);
    auto c = run_cnf(node, dir.path, p.env("ADD"), config);
    INFO(c.describe() << "\ncnf log:\n" << log_tail(dir.path));
    REQUIRE_FALSE(c.ok());
    CHECK(c.code() == 11);
    CHECK(c.elapsed() >= std::chrono::milliseconds(timeout_ms) - 100ms);  // it did wait for etcd
    CHECK(c.elapsed() <= std::chrono::milliseconds(timeout_ms) + margin);
    WARN("ADD with etcd frozen: code " << c.code() << " after " << c.elapsed().count() << " ms (timeout_ms " << timeout_ms << ")");
    require_nothing_created();
    ::kill(etcd.pid(), SIGCONT);
  }

  // etcd is up again: the failed ADD wrote nothing (every key under /cnf is absent or
  // belongs to no pod: no WorkloadEndpoint, handle or allocation).
  auto reader = open_static(etcd.endpoint());
  auto weps = reader.list_all({.kind = "WorkloadEndpoint"});
  REQUIRE(weps);
  CHECK(weps->items.empty());
  auto rep = cnf::calico_ipam::check(reader, {.check_nodes = false});
  REQUIRE(rep);
  CHECK(rep->addresses_in_use == 0);
  CHECK(rep->handles == 0);
  // A DEL (what the runtime does next) succeeds once etcd is back.
  auto d = run_cnf(node, dir.path, p.env("DEL"), config);
  INFO(d.describe());
  CHECK(d.ok());
}
