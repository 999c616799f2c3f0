// cnf lab: a cluster in a box. Nodes are network namespaces, each with its own `cnf agent`;
// a router namespace joins the fabric's subnets; pods are network namespaces networked by
// the real CNI binary (run in the node's namespace, config on stdin, as a runtime runs it);
// every node shares one datastore (a local-datastore directory, or an etcd the lab starts).
//
// Everything the lab makes is written down in its state directory (lab.json) and carries
// the lab's id in its name (namespaces "cnflab-<id>-..."), so that `down` finds it again,
// even after a partial `up` or a crashed agent. Inside the lab code, failures are thrown
// as lab_error and reported by the command (cmd_lab.cpp) as "cnf lab <cmd>: <message>".
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace cnf_app::lab {

struct lab_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---- state (state.cpp) ----------------------------------------------------------------

/// A process the lab started, named by PID and its start time (so that a reused PID is
/// never taken for it).
struct process_ref {
  pid_t pid = 0;
  std::uint64_t start_time = 0;  ///< /proc/<pid>/stat field 22
};

struct subnet_state {
  std::string cidr;     ///< "10.100.0.0/16"
  std::string gateway;  ///< the router's address on it
  std::string bridge;   ///< the bridge in the router namespace
  std::string cidr6;    ///< "fd00:cf:64::/64" with up --ipv6, else ""
  std::string gateway6; ///< the router's IPv6 address on it ("" without --ipv6)
};

struct node_state {
  std::string name;     ///< k8s-m, node-3, ...
  std::string netns;    ///< cnflab-<id>-<name>
  int subnet = 0;
  std::string address;  ///< on eth0, without prefix length
  std::string address6; ///< its IPv6 address on eth0 with up --ipv6, else ""
  std::string router_link;
  std::string profile;  ///< <dir>/nodes/<name>/profile.toml
  std::string agent_socket;
  process_ref agent;
};

struct pod_state {
  std::string ns, name;  ///< Kubernetes namespace and name
  std::string node;
  std::string netns;     ///< cnflab-<id>-pod<N>
  std::string container_id;
  std::string ip;        ///< first IPv4 address of the ADD result ("" if none)
  std::vector<std::string> ips;
  std::map<std::string, std::string> labels;
  std::string ports;     ///< spec.ports of its WorkloadEndpoint as JSON (pod add --ports; "" none; not kept in lab.json)
  std::string key() const { return ns + "/" + name; }
};

struct lab_state {
  std::string id;        ///< 6 hex digits of SHA-1 of the state directory's path
  std::string dir;
  std::string phase;     ///< "building", "up"
  std::string datastore; ///< "local" or "etcd"
  std::string etcd_endpoint;  ///< as the nodes reach it (in the router namespace)
  process_ref etcd;
  std::string router_netns;
  std::vector<subnet_state> subnets;
  std::vector<node_state> nodes;
  std::vector<pod_state> pods;
  std::uint64_t next_pod = 0;
  bool static_neighbours = false;  ///< pods' neighbours pinned (up --static-neighbours)
  bool ipv6 = false;               ///< a dual-stack fabric and pods (up --ipv6)

  node_state* find_node(const std::string& name);
  pod_state* find_pod(const std::string& key);
};

/// The state directory: --dir, else $CNF_LAB_DIR, else /run/cnf-lab/default.
std::filesystem::path resolve_dir(const std::string& opt);
/// The lab id of a state directory: namespace names start with "cnflab-<id>-".
std::string lab_id(const std::filesystem::path& dir);
std::string netns_prefix(const std::string& id);

std::optional<lab_state> load_state(const std::filesystem::path& dir);
void save_state(const lab_state& s);

/// An exclusive lock on <dir>/lock for the commands that change the lab.
class dir_lock {
 public:
  explicit dir_lock(const std::filesystem::path& dir);
  ~dir_lock();
  dir_lock(const dir_lock&) = delete;
  dir_lock& operator=(const dir_lock&) = delete;

 private:
  int fd_ = -1;
};

// ---- the system: namespaces and processes (system.cpp) ---------------------------------

std::string netns_path(const std::string& name);
bool netns_exists(const std::string& name);
/// Makes a named network namespace the way iproute2 does (a bind mount on
/// /var/run/netns/NAME), loopback up. Throws if the name is taken.
void create_netns(const std::string& name);
/// Removes the namespace's name (idempotent); the kernel frees it with its last user.
void delete_netns(const std::string& name);
/// Every /var/run/netns entry starting with `prefix`.
std::vector<std::string> list_netns(const std::string& prefix);
/// PIDs of the processes whose network namespace is the named one.
std::vector<pid_t> processes_in_netns(const std::string& name);

std::uint64_t process_start_time(pid_t pid);
bool alive(const process_ref& p);
/// Starts argv (argv[0] absolute) inside the namespace, in a session of its own, stdin
/// /dev/null, stdout and stderr appended to `log`, with exactly `env`.
process_ref spawn_in_netns(const std::string& netns, const std::vector<std::string>& argv,
                           const std::vector<std::string>& env, const std::string& log);
/// SIGTERM, up to `grace` for it to go, then SIGKILL. True when it is gone.
bool stop_process(const process_ref& p, std::chrono::milliseconds grace = std::chrono::milliseconds(5000));

struct run_result {
  int status = -1;  ///< exit code; 128+N when killed by signal N
  std::string out, err;
};
/// Runs argv inside the namespace with `input` on stdin and waits (killed by PID after
/// `timeout`).
run_result run_in_netns(const std::string& netns, const std::vector<std::string>& argv, const std::vector<std::string>& env,
                        const std::string& input, std::chrono::milliseconds timeout);

// ---- the commands (lab.cpp, ping.cpp) ------------------------------------------------

struct up_options {
  std::optional<int> nodes;
  int pods_per_node = 2;
  std::optional<int> subnets;
  std::string profile;    ///< "" = the built-in lab profile (examples/profiles/lab.toml)
  std::string datastore;  ///< "" = the profile's; "local" or "etcd"
  int jobs = 8;           ///< CNI ADDs in flight
  bool static_neighbours = false;
  /// Route reflectors as Calico makes them, written to the datastore before any agent starts:
  /// the first N nodes labelled route-reflector=true with spec.bgp.routeReflectorClusterID,
  /// BGPPeer peer-with-route-reflectors (nodeSelector all(), peerSelector route-reflector ==
  /// 'true') and BGPConfiguration default with nodeToNodeMeshEnabled false. 0: none (the
  /// full mesh). Needs [routing] plugin = "bgp".
  int route_reflectors = 0;
  /// A dual-stack lab: an IPv6 /64 per subnet beside the IPv4 /16 (nodes and router), each
  /// node's [node] ipv6_address, [cni] assign_ipv6, and an IPv6 pool when the profile has
  /// none (default_ipv6_pool, block size 122, the IPv4 pool's vxlan_mode).
  bool ipv6 = false;
};

/// The IPv6 pool `up --ipv6` adds to a profile that has none (a ULA /48, as Calico's default).
inline constexpr const char* default_ipv6_pool = "fd00:10:244::/48";

/// The cluster ID `up --route-reflectors` writes on the reflectors (Calico's documented example).
inline constexpr const char* route_reflector_cluster_id = "244.0.0.1";

int up(const std::filesystem::path& dir, const up_options& o);
int down(const std::filesystem::path& dir);
/// labels "k=v,..."; ports "name=PROTO:port,..." (the pod's named container ports).
int pod_add(const std::filesystem::path& dir, const std::string& key, const std::string& node, const std::string& labels,
            const std::string& ports = {});
int pod_del(const std::filesystem::path& dir, const std::string& key);
int exec(const std::filesystem::path& dir, const std::string& target, const std::vector<std::string>& cmd);
int status(const std::filesystem::path& dir);

struct ping_options {
  std::size_t sample = 0;  ///< 0: every pair
  bool same_node = false;  ///< only pairs on one node, plus each pod to its node
  std::chrono::milliseconds timeout{5000};
  std::uint64_t seed = 0;  ///< 0: random
  bool ipv6 = false;       ///< probe the pods' IPv6 addresses (ICMPv6) instead of IPv4
};
int ping(const std::filesystem::path& dir, const ping_options& o);

/// The built-in lab profile's text (examples/profiles/lab.toml, compiled in).
const char* default_profile_text();

}  // namespace cnf_app::lab
