#!/usr/bin/env python3
"""CNI ADD/DEL latency: cnf against the reference plugins and the kernel's own floor.

Every contender is run the same way: one process per CNI call, exec'd by this driver
from inside a node network namespace that this driver made, with the network config on
stdin and the CNI_* variables in a clean environment. Each pod gets its own network
namespace, made before any timing starts. Contenders are run round-robin per pod (in a
random order per pod, seeded), so noise from other work on the machine falls on all of
them alike.

Contenders (each in its own subnet; the key selects it with --only):
  cnf-hl      cnf with the local datastore and its host-local IPAM
  cnf-calico  cnf with the local datastore and calico-ipam
  ptp         reference ptp with reference host-local (dataDir in the temp dir)
  bridge      reference bridge with reference host-local
  hl-only     the reference host-local IPAM binary called alone (IPAM, no plumbing)
  cnf-ipam    cnf called alone as another plugin's IPAM (ipam.type names it; calico-ipam,
              local datastore): the like-for-like peer of hl-only
  cnf-agent   cnf-calico, with the profile's agent_socket served by `cnf agent` (started by
              this driver in the node namespace before the timing, stopped by PID after):
              the plugin process hands the call to the agent, which keeps the parts loaded
  cnf-ipam-agent  cnf-ipam, served by an agent of its own the same way
  cnf-shim    cnf-agent with `cnf-shim` as the plugin binary: the thin plugin that only
              hands the call to the agent at @cnf-agent, the abstract socket of its network
              namespace (it runs cnf when no agent serves the call)
  cnf-ipam-shim   cnf-ipam-agent with `cnf-shim` as the IPAM binary
  There is one agent per network namespace (it owns @cnf-agent there), so cnf-agent and
  cnf-shim share one agent and one profile in the node namespace, and cnf-ipam-agent and
  cnf-ipam-shim share another in a namespace of their own (<tag>-ipamagent; they plumb
  nothing, and the driver switches its own namespace there, untimed, around their calls).
  (the agents' CPU time is read from /proc before and after each phase, and its mean per
  call of the contenders it serves is added to their cpu column)
  floor       the kernel floor: the same link/address/route operations as cnf by iproute2,
              one `ip -batch` for the node side and one `ip -n <pod> -batch` for the pod
              side (iproute2 cannot switch namespace inside a batch), the node-side sysctls
              written by the driver itself; its DEL is `ip link del` of the host veth alone
              (the bare veth delete)
  true        /bin/true, exec'd the same way: the driver's own cost per call
  durable     dd appending 128 bytes to a file in the temp dir with conv=fdatasync: one
              process and one durable write, the least any IPAM that makes its assignment
              durable before answering can cost here (host-local makes none)
ADD runs for every pod of every contender first, then DEL, so the node holds every
plumbing contender's pods at the peak: 1,421 with all of them at the default 200 pods
(+3 warm-up), far more than a kubelet's default limit of 110 per node. Every plumbing
contender's ADD gets slower as the count grows (kernel work; the IPAM-only contenders
hardly change), so the report also gives the ADD medians by fifth of the run.

Run as root:
  tests/bench/cni/cni_bench.py --build <build dir> [--pods 200]
Everything (namespaces, temp dir) is removed on every exit path; the host namespace is
never changed.
"""
import argparse
import ctypes
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

PREFIX = "cnfbench"  # namespace names: cnfbench<pid>-<what>
REF_DIR = "/usr/lib/cni"
NODE_ADDR, UPLINK_ADDR = "192.0.2.1", "192.0.2.254"
HOST_MAC = "ee:ee:ee:ee:ee:ee"
# Contenders that make no pod interface (IPAM alone, the spawn and durable-write floors).
NO_POD_NS = ("hl-only", "cnf-ipam", "cnf-ipam-agent", "cnf-ipam-shim", "cnf-ipam-shim-before", "true", "durable")


CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def setns(path):
    """Moves this (single-threaded) process into the network namespace at path."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns {path}: {os.strerror(e)}")
    finally:
        os.close(fd)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, stdin=None, check=True):
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


# ---- namespaces (outer process, in the host namespace: only `ip netns add/del` and
# ---- commands addressed to our own namespaces with `ip -n`) --------------------------

def ip_batch(lines, netns=None, force=False):
    cmd = ["ip"] + (["-n", netns] if netns else []) + (["-force"] if force else []) + ["-batch", "-"]
    return run(cmd, stdin="\n".join(lines) + "\n", check=not force)


def stale_namespaces():
    """Namespaces of earlier runs of this benchmark whose process is gone (killed -9)."""
    out = []
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return out
    for n in names:
        if not n.startswith(PREFIX):
            continue
        pid = n[len(PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            out.append(n)
    return out


class lab:
    """The namespaces and temp dir of one run; cleanup() removes all of it."""

    def __init__(self, pods_per_contender, contenders_with_ns):
        self.tag = f"{PREFIX}{os.getpid()}"
        self.node = f"{self.tag}-node"
        self.uplink = f"{self.tag}-up"
        self.agent_ns = f"{self.tag}-ipamagent"  # the IPAM-only contenders' agent (one per namespace)
        self.made = []
        self.tmp = None
        self.pods = {c: [f"{self.tag}-{c}-{i}" for i in range(pods_per_contender)] for c in contenders_with_ns}

    def setup(self):
        self.tmp = tempfile.mkdtemp(prefix=self.tag + "-")
        os.chmod(self.tmp, 0o700)
        all_ns = [self.node, self.uplink, self.agent_ns] + [p for ps in self.pods.values() for p in ps]
        # Remember the names before creating them, so a failure half-way still cleans up.
        self.made = list(all_ns)
        ip_batch([f"netns add {n}" for n in all_ns])
        # The node's uplink: a veth to another namespace holding its default gateway.
        n, u = self.node, self.uplink
        run(["ip", "-n", n, "link", "set", "lo", "up"])
        run(["ip", "-n", u, "link", "set", "lo", "up"])
        run(["ip", "-n", n, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", u])
        run(["ip", "-n", n, "addr", "add", f"{NODE_ADDR}/24", "dev", "eth0"])
        run(["ip", "-n", u, "addr", "add", f"{UPLINK_ADDR}/24", "dev", "eth0"])
        run(["ip", "-n", n, "link", "set", "eth0", "up"])
        run(["ip", "-n", u, "link", "set", "eth0", "up"])
        run(["ip", "-n", n, "route", "add", "default", "via", UPLINK_ADDR])

    def cleanup(self):
        if self.made:
            ip_batch([f"netns del {n}" for n in self.made], force=True)
            self.made = []
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


# ---- the timed calls (inner process, inside the node namespace) -----------------------

def spawn_timed(path, argv, env, stdin_bytes, out_fd, err_fd):
    """fork/exec one call with posix_spawn; returns (exit status, wall ns, CPU ns of the child).
    stdin is a pipe filled before the spawn (configs are far below the pipe size);
    stdout and stderr go to files, read afterwards."""
    r, w = os.pipe()
    os.write(w, stdin_bytes)
    os.close(w)
    for fd in (out_fd, err_fd):
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
    t0 = time.perf_counter_ns()
    pid = os.posix_spawn(path, [path] + argv, env, file_actions=[
        (os.POSIX_SPAWN_DUP2, r, 0), (os.POSIX_SPAWN_DUP2, out_fd, 1), (os.POSIX_SPAWN_DUP2, err_fd, 2)])
    _, status, ru = os.wait4(pid, 0)
    t1 = time.perf_counter_ns()
    os.close(r)
    return os.waitstatus_to_exitcode(status), t1 - t0, int((ru.ru_utime + ru.ru_stime) * 1e9)


def read_fd(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while True:
        b = os.read(fd, 65536)
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks).decode(errors="replace")


def write_sysctl(key, value):
    with open("/proc/sys/" + key, "w") as f:
        f.write(value)


class contender:
    def __init__(self, key, label, binary=None, config=None, kind="cni", agent=None):
        self.key, self.label, self.binary, self.config, self.kind = key, label, binary, config, kind
        self.agent = agent                    # {"profile": ..., "socket": ..., "netns": ...} or None
        self.netns = agent and agent.get("netns")  # where its calls and agent run (None: the node's)
        self.agent_proc = None
        self.agent_share = 1                  # contenders its agent serves
        self.agent_cpu = {}                   # phase -> CPU ms of the agent over the phase
        self.add, self.dele = [], []          # wall milliseconds
        self.add_cpu, self.del_cpu = [], []   # CPU milliseconds of the process(es)


def proc_cpu_ms(pid):
    """user+system CPU of a process and all its threads, dead ones included (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000.0 / os.sysconf("SC_CLK_TCK")


def start_agent(c, tmp, home):
    """`cnf agent` for contender c, in its namespace (home: the node's); waits for its socket."""
    logf = open(os.path.join(tmp, c.key + "-agent.log"), "w")
    if c.netns:
        setns(c.netns)
    try:
        c.agent_proc = subprocess.Popen([c.agent.get("binary", c.binary), "agent", "--profile", c.agent["profile"]],
                                        stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
    finally:
        if c.netns:
            setns(home)
    logf.close()
    deadline = time.time() + 15
    while not os.path.exists(c.agent["socket"]):
        if c.agent_proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"{c.label}: cnf agent did not start: "
                               + open(os.path.join(tmp, c.key + "-agent.log")).read()[-2000:])
        time.sleep(0.02)


def stop_agent(c):
    if c.agent_proc and c.agent_proc.poll() is None:
        c.agent_proc.terminate()  # by PID (Popen keeps it)
        try:
            c.agent_proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            c.agent_proc.kill()
            c.agent_proc.wait()


def percentile(v, p):
    s = sorted(v)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))  # nearest rank
    return s[k]


def inner(plan_path):
    # The outer process removes everything on the way out; here, just stop.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda n, f: sys.exit(128 + n))
    with open(plan_path) as f:
        plan = json.load(f)
    # Refuse to run anywhere but the node namespace this run made.
    me, node = os.stat("/proc/self/ns/net"), os.stat("/run/netns/" + plan["node"])
    if (me.st_dev, me.st_ino) != (node.st_dev, node.st_ino):
        sys.exit("inner driver is not in the node namespace " + plan["node"] + "; refusing to run")
    write_sysctl("net/ipv4/ip_forward", "1")  # a node forwards (this namespace only)
    if plan.get("rt"):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(5))  # inherited by every spawned call

    cs = []
    for c in plan["contenders"]:
        cs.append(contender(c["key"], c["label"], c.get("binary"), c.get("config"), c.get("kind", "cni"), c.get("agent")))
    pods = plan["pods"]
    n, warm = plan["pods_per_contender"], plan["warmup"]
    base_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    tmp = plan["tmp"]
    out_fd = os.open(os.path.join(tmp, "stdout"), os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    err_fd = os.open(os.path.join(tmp, "stderr"), os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)

    ip_bin = shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")
    dd_bin = shutil.which("dd", path="/usr/bin:/bin")

    def spawn(path, argv, env, stdin_bytes):
        return spawn_timed(path, argv, env, stdin_bytes, out_fd, err_fd)

    def floor(i, command):
        ns = pods["floor"][i]
        host = f"flr{i:05d}"
        addr = f"10.{plan['floor_net']}.{i // 250}.{i % 250 + 2}"
        if command == "DEL":
            st, dt, cpu = spawn(ip_bin, ["link", "del", host], base_env, b"")
            if st != 0:
                raise RuntimeError(f"floor DEL: {read_fd(err_fd)}")
            return dt, cpu
        # What cnf does, by iproute2: node side (veth with its pod end created in the pod
        # netns, host end up, host route), node-side sysctls, pod side (up, address,
        # gateway route, default route).
        node_b = (f"link add {host} mtu 1500 address {HOST_MAC} type veth peer name eth0 mtu 1500 netns {ns}\n"
                  f"link set {host} up\n"
                  f"route add {addr}/32 dev {host} scope link proto 80\n").encode()
        pod_b = (f"link set eth0 up\n"
                 f"addr add {addr}/32 dev eth0\n"
                 f"route add 169.254.1.1/32 dev eth0 scope link proto 80\n"
                 f"route add default via 169.254.1.1 dev eth0 proto 80\n").encode()
        t0 = time.perf_counter_ns()
        st, _, cpu1 = spawn(ip_bin, ["-batch", "-"], base_env, node_b)
        if st != 0:
            raise RuntimeError(f"floor ADD node side: {read_fd(err_fd)}")
        for k, v in (("route_localnet", "1"), ("proxy_arp", "1"), ("forwarding", "1")):
            write_sysctl(f"net/ipv4/conf/{host}/{k}", v)
        write_sysctl(f"net/ipv4/neigh/{host}/proxy_delay", "0")
        write_sysctl(f"net/ipv6/conf/{host}/accept_ra", "0")
        st, _, cpu2 = spawn(ip_bin, ["-n", ns, "-batch", "-"], base_env, pod_b)
        if st != 0:
            raise RuntimeError(f"floor ADD pod side: {read_fd(err_fd)}")
        return time.perf_counter_ns() - t0, cpu1 + cpu2

    def call(c, i, command):
        if c.kind == "true":
            return spawn("/bin/true", [], base_env, b"")[1:]
        if c.kind == "fsync":
            # One process that appends 128 bytes to a file in the temp dir and fdatasyncs it.
            st, dt, cpu = spawn(dd_bin, ["if=/dev/zero", f"of={tmp}/durable-floor.log", "bs=128", "count=1",
                                         "oflag=append", "conv=notrunc,fdatasync", "status=none"], base_env, b"")
            if st != 0:
                raise RuntimeError(f"durable-write floor: dd exit {st}: {read_fd(err_fd)}")
            return dt, cpu
        if c.kind == "floor":
            return floor(i, command)
        ns = pods[c.key][i] if c.key in pods else plan["node"]
        env = dict(base_env)
        env.update({"CNI_COMMAND": command, "CNI_CONTAINERID": f"{plan['tag']}-{c.key}-{i:05d}",
                    "CNI_NETNS": f"/run/netns/{ns}", "CNI_IFNAME": "eth0", "CNI_PATH": REF_DIR,
                    "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={c.key}-{i}"})
        if c.netns:
            setns(c.netns)
        try:
            st, dt, cpu = spawn(c.binary, [], env, json.dumps(c.config).encode())
        finally:
            if c.netns:
                setns(home)
        if st != 0:
            raise RuntimeError(f"{c.label} {command} pod {i}: exit {st}: {read_fd(out_fd).strip()} {read_fd(err_fd).strip()[-2000:]}")
        if command == "ADD":
            res = json.loads(read_fd(out_fd))
            if not res.get("ips"):
                raise RuntimeError(f"{c.label} ADD pod {i}: no ips in result: {res}")
        return dt, cpu

    total = n + warm
    loads = [os.getloadavg()]
    t_start = time.time()
    # Every pod runs each contender once, in a fresh random order (fixed seed: the same
    # orders every run). A rotation would give each contender the same predecessor almost
    # every time, and what the previous call left behind (a veth delete's RCU callbacks,
    # dirty pages) then favours or hurts some contenders systematically.
    rng = random.Random(plan.get("seed", 1))
    home = "/run/netns/" + plan["node"]
    # One agent per profile: contenders that name the same profile share the first one's.
    agents, by_profile = [], {}
    for c in cs:
        if c.agent:
            first = by_profile.setdefault(c.agent["profile"], c)
            if first is c:
                agents.append(c)
            else:
                first.agent_share += 1
    sharing = {c.key: by_profile[c.agent["profile"]] for c in cs if c.agent}
    try:
        for c in agents:
            start_agent(c, tmp, home)
        for phase in ("ADD", "DEL"):
            cpu0 = {c.key: proc_cpu_ms(c.agent_proc.pid) for c in agents}
            for i in range(total):
                order = list(cs)
                rng.shuffle(order)
                for c in order:
                    dt, cpu = call(c, i, phase)
                    if i >= warm:
                        (c.add if phase == "ADD" else c.dele).append(dt / 1e6)
                        (c.add_cpu if phase == "ADD" else c.del_cpu).append(cpu / 1e6)
                if (i + 1) % 50 == 0:
                    log(f"  {phase} {i + 1}/{total} pods per contender")
            for k, a in sharing.items():
                next(c for c in cs if c.key == k).agent_cpu[phase] = \
                    (proc_cpu_ms(a.agent_proc.pid) - cpu0[a.key]) / (total * a.agent_share)
            loads.append(os.getloadavg())
    finally:
        for c in agents:
            stop_agent(c)
    elapsed = time.time() - t_start
    os.close(out_fd)
    os.close(err_fd)
    out = {"contenders": [{"key": c.key, "label": c.label, "add_ms": c.add, "del_ms": c.dele, "add_cpu_ms": c.add_cpu,
                           "del_cpu_ms": c.del_cpu, "agent_cpu_ms": c.agent_cpu} for c in cs],
           "loadavg": loads, "seconds": elapsed}
    with open(plan["result"], "w") as f:
        json.dump(out, f)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", help="cnf build (or install) tree: <dir>/bin/cnf, plugins in <dir>/lib/cnf/plugins")
    ap.add_argument("--cnf", help="the cnf binary (default: <build>/bin/cnf)")
    ap.add_argument("--pods", type=int, default=200, help="timed pods per contender (default 200)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed pods per contender first (default 3)")
    ap.add_argument("--only", help="comma-separated contender keys (default: all)")
    ap.add_argument("--json", help="also write the raw figures here")
    ap.add_argument("--rt", action="store_true",
                    help="run the driver and every call with SCHED_FIFO priority 5 (children inherit it): on a machine "
                         "busy with other work (compilers), the contenders are then not preempted by it; kernel work "
                         "(RCU, block I/O) still competes. Every contender is treated alike either way")
    ap.add_argument("--before", metavar="BUILD",
                    help="another cnf build (e.g. before a change): adds its cnf-hl, cnf-calico and (when it has "
                         "bin/cnf-shim) cnf-shim and cnf-ipam-shim as the contenders cnf-hl-before, cnf-calico-before, "
                         "cnf-shim-before and cnf-ipam-shim-before, measured in the same run")
    ap.add_argument("--agent-log", metavar="DIR",
                    help="run the agents with log_level = \"debug\" (each ADD/DEL logs where its time went: "
                         "\"phases (us)\") and copy their logs to DIR as <contender>-agent.log; the debug log "
                         "costs the agent-served contenders some time of their own")
    ap.add_argument("--inner", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.inner:
        try:
            return inner(a.inner)
        except KeyboardInterrupt:
            return 130
        except (RuntimeError, OSError, ValueError) as e:
            log(f"cni_bench: {e}")
            return 1
    if os.geteuid() != 0:
        sys.exit("cni_bench: needs root (network namespaces)")
    cnf = a.cnf or (os.path.join(a.build, "bin", "cnf") if a.build else None)
    if not cnf or not os.access(cnf, os.X_OK):
        sys.exit("cni_bench: give --build <cnf build dir> or --cnf <path to cnf>")
    cnf = os.path.abspath(cnf)
    for b in ("ptp", "bridge", "host-local"):
        if not os.access(os.path.join(REF_DIR, b), os.X_OK):
            sys.exit(f"cni_bench: {REF_DIR}/{b} missing (apt-get install containernetworking-plugins)")
    for s in stale_namespaces():
        log(f"removing namespace {s} left by a killed run")
        ip_batch([f"netns del {s}"], force=True)

    keys = ["cnf-hl", "cnf-calico", "cnf-agent", "cnf-shim", "ptp", "bridge", "hl-only", "cnf-ipam", "cnf-ipam-agent",
            "cnf-ipam-shim", "floor", "true", "durable"]
    before = None
    if a.before:
        before = os.path.abspath(os.path.join(a.before, "bin", "cnf"))
        if not os.access(before, os.X_OK):
            sys.exit(f"cni_bench: --before {a.before}: no bin/cnf there")
        keys[2:2] = ["cnf-hl-before", "cnf-calico-before"]
        before_shim = os.path.join(os.path.dirname(before), "cnf-shim")
        if os.access(before_shim, os.X_OK):
            keys[4:4] = ["cnf-shim-before"]
            keys.insert(keys.index("cnf-ipam-shim") + 1, "cnf-ipam-shim-before")
    if a.only:
        want = a.only.split(",")
        bad = [k for k in want if k not in keys]
        if bad:
            sys.exit(f"cni_bench: unknown contender(s) {bad}; known: {keys}")
        keys = [k for k in keys if k in want]
    with_ns = [k for k in keys if k not in NO_POD_NS]
    shim = os.path.join(os.path.dirname(cnf), "cnf-shim")
    if any(k.endswith("shim") for k in keys) and not os.access(shim, os.X_OK):
        sys.exit(f"cni_bench: {shim} missing (ninja cnf-shim), or leave out the shim contenders with --only")
    total = a.pods + a.warmup
    L = lab(total, with_ns)

    def on_signal(sig, frame):
        raise SystemExit(128 + sig)

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    rc = 0
    try:
        log(f"cni_bench: creating {3 + total * len(with_ns)} namespaces ({L.tag}-*)")
        L.setup()
        tmp = L.tmp
        hl = lambda net, name: {"type": "host-local", "ranges": [[{"subnet": f"10.{net}.0.0/16"}]],
                                "routes": [{"dst": "0.0.0.0/0"}], "dataDir": os.path.join(tmp, "hl-" + name)}
        profiles = {}
        hl_ipam = '[ipam]\nplugin = "host-local"\nranges = [[{{ subnet = "10.{}.0.0/16" }}]]\n'
        calico_ipam = '[ipam]\nplugin = "calico-ipam"\n[[ipam.pools]]\ncidr = "10.{}.0.0/16"\nblock_size = 26\n'
        for key, ipam in (("cnf-hl", hl_ipam.format(101)), ("cnf-calico", calico_ipam.format(102)),
                          ("cnf-hl-before", hl_ipam.format(111)), ("cnf-calico-before", calico_ipam.format(112)),
                          ("cnf-shim-before", calico_ipam.format(115)), ("cnf-ipam-shim-before", calico_ipam.format(116)),
                          ("cnf-ipam", calico_ipam.format(107)), ("cnf-agent", calico_ipam.format(108)),
                          ("cnf-ipam-agent", calico_ipam.format(109)), ("cnf-shim", calico_ipam.format(113)),
                          ("cnf-ipam-shim", calico_ipam.format(114))):
            p = os.path.join(tmp, key + ".toml")
            debug = 'log_level = "debug"\n' if a.agent_log else ""
            cni = (f'[cni]\nagent_socket = "{os.path.join(tmp, key + ".sock")}"\n{debug}\n'
                   if key.endswith(("agent", "shim", "shim-before")) else "")
            with open(p, "w") as f:
                f.write(f'[node]\nname = "bench-node"\n\n{cni}[datastore]\nplugin = "local"\n'
                        f'dir = "{os.path.join(tmp, "ds-" + key)}"\n\n{ipam}')
            profiles[key] = p
        # One agent per network namespace: the shim contenders share the agent (and profile)
        # of their cnf counterparts, cnf-ipam-* theirs in the namespace of their own.
        profiles["cnf-shim"], profiles["cnf-ipam-shim"] = profiles["cnf-agent"], profiles["cnf-ipam-agent"]
        sock_of = {"cnf-shim": "cnf-agent", "cnf-ipam-shim": "cnf-ipam-agent"}
        ipam_ns = "/run/netns/" + L.agent_ns
        agent = lambda key, binary=cnf: {"profile": profiles[key], "socket": os.path.join(tmp, sock_of.get(key, key) + ".sock"),
                                         "binary": binary, "netns": ipam_ns if key in ("cnf-ipam-agent", "cnf-ipam-shim") else None}
        table = {
            "cnf-hl": dict(label="cnf (host-local)", binary=cnf,
                           config={"cniVersion": "1.0.0", "name": "bench", "type": "cnf", "profile": profiles["cnf-hl"]}),
            "cnf-calico": dict(label="cnf (calico-ipam)", binary=cnf,
                               config={"cniVersion": "1.0.0", "name": "bench", "type": "cnf", "profile": profiles["cnf-calico"]}),
            "cnf-agent": dict(label="cnf (calico) + agent", binary=cnf, agent=agent("cnf-agent"),
                              config={"cniVersion": "1.0.0", "name": "bench", "type": "cnf", "profile": profiles["cnf-agent"]}),
            "cnf-ipam-agent": dict(label="cnf as IPAM + agent", binary=cnf, agent=agent("cnf-ipam-agent"),
                                   config={"cniVersion": "1.0.0", "name": "bench-cia", "type": "ptp",
                                           "ipam": {"type": os.path.basename(cnf), "profile": profiles["cnf-ipam-agent"]}}),
            "cnf-shim": dict(label="cnf-shim (calico) + agent", binary=shim, agent=agent("cnf-shim"),
                             config={"cniVersion": "1.0.0", "name": "bench", "type": "cnf-shim", "profile": profiles["cnf-shim"]}),
            "cnf-ipam-shim": dict(label="cnf-shim as IPAM + agent", binary=shim, agent=agent("cnf-ipam-shim"),
                                  config={"cniVersion": "1.0.0", "name": "bench-cis", "type": "ptp",
                                          "ipam": {"type": "cnf-shim", "profile": profiles["cnf-ipam-shim"]}}),
            "cnf-hl-before": dict(label="before: cnf (host-local)", binary=before,
                                  config={"cniVersion": "1.0.0", "name": "bench", "type": "cnf", "profile": profiles["cnf-hl-before"]}),
            "cnf-shim-before": dict(label="before: cnf-shim + agent", binary=before and os.path.join(os.path.dirname(before), "cnf-shim"),
                                    agent=before and agent("cnf-shim-before", before),
                                    config={"cniVersion": "1.0.0", "name": "bench", "type": "cnf-shim",
                                            "profile": profiles.get("cnf-shim-before")}),
            "cnf-ipam-shim-before": dict(label="before: cnf-shim as IPAM + agent",
                                         binary=before and os.path.join(os.path.dirname(before), "cnf-shim"),
                                         agent=before and agent("cnf-ipam-shim-before", before),
                                         config={"cniVersion": "1.0.0", "name": "bench-cisb", "type": "ptp",
                                                 "ipam": {"type": "cnf-shim", "profile": profiles.get("cnf-ipam-shim-before")}}),
            "cnf-calico-before": dict(label="before: cnf (calico)", binary=before,
                                      config={"cniVersion": "1.0.0", "name": "bench", "type": "cnf",
                                              "profile": profiles["cnf-calico-before"]}),
            "ptp": dict(label="ref ptp+host-local", binary=f"{REF_DIR}/ptp",
                        config={"cniVersion": "1.0.0", "name": "bench-ptp", "type": "ptp", "ipMasq": False, "ipam": hl(103, "ptp")}),
            "bridge": dict(label="ref bridge+host-local", binary=f"{REF_DIR}/bridge",
                           config={"cniVersion": "1.0.0", "name": "bench-br", "type": "bridge", "bridge": "cnfbench0",
                                   "isGateway": True, "isDefaultGateway": True, "ipMasq": False,
                                   "ipam": {k: v for k, v in hl(104, "br").items() if k != "routes"}}),
            "hl-only": dict(label="ref host-local alone", binary=f"{REF_DIR}/host-local",
                            config={"cniVersion": "1.0.0", "name": "bench-hl", "ipam": hl(105, "only")}),
            # ipam.type names the cnf binary and type does not: cnf acts as that plugin's IPAM.
            "cnf-ipam": dict(label="cnf as IPAM (calico)", binary=cnf,
                             config={"cniVersion": "1.0.0", "name": "bench-ci", "type": "ptp",
                                     "ipam": {"type": os.path.basename(cnf), "profile": profiles["cnf-ipam"]}}),
            "floor": dict(label="kernel floor (ip)", kind="floor"),
            "true": dict(label="spawn baseline", kind="true"),
            "durable": dict(label="durable-write floor", kind="fsync"),
        }
        plan = {"tag": L.tag, "node": L.node, "tmp": tmp, "pods": L.pods, "pods_per_contender": a.pods, "rt": a.rt,
                "warmup": a.warmup, "floor_net": 106, "result": os.path.join(tmp, "result.json"),
                "contenders": [dict(key=k, **table[k]) for k in keys]}
        with open(os.path.join(tmp, "plan.json"), "w") as f:
            json.dump(plan, f)
        log(f"cni_bench: {a.pods} pods (+{a.warmup} warm-up) per contender, round-robin; load average {os.getloadavg()}")
        r = subprocess.run(["ip", "netns", "exec", L.node, sys.executable, os.path.abspath(__file__),
                            "--inner", os.path.join(tmp, "plan.json")])
        if r.returncode != 0:
            raise SystemExit(r.returncode)
        with open(plan["result"]) as f:
            res = json.load(f)
        report(res, a, cnf)
        if a.agent_log:
            os.makedirs(a.agent_log, exist_ok=True)
            for c in plan["contenders"]:
                if c.get("agent") and os.path.exists(os.path.join(tmp, c["key"] + "-agent.log")):  # shared: the first's
                    shutil.copy(os.path.join(tmp, c["key"] + "-agent.log"), a.agent_log)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=1)
    except KeyboardInterrupt:
        rc = 130
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    except Exception as e:  # report, then clean up
        log(f"cni_bench: {e}")
        rc = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        L.cleanup()
    return rc


def report(res, a, cnf):
    by = {c["key"]: c for c in res["contenders"]}

    def med(k, f):
        return statistics.median(by[k][f]) if k in by and by[k][f] else None

    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    la = res["loadavg"]
    print(f"CNI latency, {a.pods} pods per contender (+{a.warmup} warm-up), one process per call, round-robin"
          + (", SCHED_FIFO (--rt)" if a.rt else ""))
    print(f"machine: {os.cpu_count()} cpus, {cpu}, kernel {platform.release()}; cnf: {cnf}")
    print(f"load average (1/5/15 min): start {la[0][0]:.2f}/{la[0][1]:.2f}/{la[0][2]:.2f}, "
          f"after ADDs {la[1][0]:.2f}, end {la[-1][0]:.2f}; {res['seconds']:.0f} s")
    print()
    w = max([23] + [len(c["label"]) + 1 for c in res["contenders"]])  # the label column
    hdr = (f"{'contender':<{w}}{'ADD med':>9}{'p90':>8}{'cpu':>7}{'DEL med':>9}{'p90':>8}{'cpu':>7}"
           f"{'ADD/ptp':>9}{'DEL/ptp':>9}")
    print(hdr)
    print("-" * len(hdr))
    pa, pd = med("ptp", "add_ms"), med("ptp", "del_ms")
    for c in res["contenders"]:
        am, dm = statistics.median(c["add_ms"]), statistics.median(c["del_ms"])
        ap_, dp = percentile(c["add_ms"], 90), percentile(c["del_ms"], 90)
        ac, dc = statistics.median(c["add_cpu_ms"]), statistics.median(c["del_cpu_ms"])
        ag = c.get("agent_cpu_ms") or {}
        ac, dc = ac + ag.get("ADD", 0.0), dc + ag.get("DEL", 0.0)  # the agent's share, mean per call
        ra = f"{am / pa:.2f}x" if pa else "-"
        rd = f"{dm / pd:.2f}x" if pd else "-"
        print(f"{c['label']:<{w}}{am:>9.2f}{ap_:>8.2f}{ac:>7.2f}{dm:>9.2f}{dp:>8.2f}{dc:>7.2f}{ra:>9}{rd:>9}")
    print("milliseconds: med/p90 = wall time from spawn to exit as seen by the driver; cpu = median user+system")
    print("time of the process (ptp/bridge: including the host-local it runs). Floor ADD = two ip processes")
    print("(node side, pod side) plus the driver's sysctl writes; floor DEL = `ip link del` of the host veth alone.")
    if any(c.get("agent_cpu_ms") for c in res["contenders"]):
        print("+ agent: the plugin process hands the call to `cnf agent`; its cpu adds the agent's mean CPU per call")
        print("  (" + ", ".join(f"{c['label']}: ADD {c['agent_cpu_ms'].get('ADD', 0):.2f}, DEL {c['agent_cpu_ms'].get('DEL', 0):.2f}"
                            for c in res["contenders"] if c.get("agent_cpu_ms")) + " ms in the agent).")
    # The node's pod count grows through the ADD phase (each pod index adds one pod per
    # plumbing contender), and so does every plumbing contender's ADD: show it by fifths.
    plumbing = [c for c in res["contenders"] if c["key"] not in NO_POD_NS]
    n_add = min((len(c["add_ms"]) for c in res["contenders"]), default=0)
    if n_add >= 10 and plumbing:
        step = n_add // 5
        print()
        print(f"ADD median by fifth of the run (pods {step} at a time per contender; the node holds "
              f"{len(plumbing)} more pods per pod index, {len(plumbing) * (n_add + a.warmup)} at the end):")
        print(f"{'contender':<{w}}" + "".join(f"{k:>8}" for k in ("1st", "2nd", "3rd", "4th", "5th")) + f"{'1st/ptp':>9}{'5th/ptp':>9}")
        fifths = {c["key"]: [statistics.median(c["add_ms"][i * step:(i + 1) * step]) for i in range(5)] for c in res["contenders"]}
        for c in res["contenders"]:
            f = fifths[c["key"]]
            p = fifths.get("ptp")
            r = f"{f[0] / p[0]:>8.2f}x{f[4] / p[4]:>8.2f}x" if p else f"{'-':>9}{'-':>9}"
            print(f"{c['label']:<{w}}" + "".join(f"{v:>8.2f}" for v in f) + r)
    print()
    print("targets:")
    ok = True

    def target(desc, value, limit, fmt):
        nonlocal ok
        if value is None:
            print(f"  {desc}: not measured")
            return
        good = value <= limit
        ok = ok and good
        print(f"  {desc}: {fmt(value)} (target <= {fmt(limit)}) {'MET' if good else 'MISSED'}")

    for k in ("cnf-hl", "cnf-calico", "cnf-agent", "cnf-shim"):
        a_ = med(k, "add_ms")
        if a_ is not None and pa:
            target(f"{by[k]['label']} ADD median / ptp+host-local ADD median", a_ / pa, 0.25, lambda v: f"{v:.2f}x")
        d_, fl = med(k, "del_ms"), med("floor", "del_ms")
        if d_ is not None and fl is not None:
            target(f"{by[k]['label']} DEL median - bare veth delete median", d_ - fl, 3.0, lambda v: f"{v:+.2f} ms")
    ci, ho = med("cnf-ipam", "add_ms"), med("hl-only", "add_ms")
    if ci is not None and ho:
        target("cnf as IPAM (calico-ipam) ADD median / ref host-local alone ADD median (issue 4)", ci / ho, 0.3,
               lambda v: f"{v:.2f}x")
    cia = med("cnf-ipam-agent", "add_ms")
    if cia is not None and ho:
        target("cnf as IPAM + agent ADD median / ref host-local alone ADD median (issue 4)", cia / ho, 0.3,
               lambda v: f"{v:.2f}x")
    cis = med("cnf-ipam-shim", "add_ms")
    if cis is not None and ho:
        target("cnf-shim as IPAM + agent ADD median / ref host-local alone ADD median (issue 4)", cis / ho, 0.3,
               lambda v: f"{v:.2f}x")
    du = med("durable", "add_ms")
    if du is not None and ho:
        print(f"  (not a target) durable-write floor / host-local alone: {du / ho:.2f}x: the least an IPAM process that makes"
              " one durable write could reach")
    ca = med("cnf-calico", "add_ms")
    if ca is not None and ho:
        print(f"  (not a target) whole cnf ADD with calico-ipam, veth and routes included / host-local alone: {ca / ho:.2f}x")
    if "cnf-hl-before" in by:
        print()
        print("this build against --before (same run):")
        for k in ("cnf-hl", "cnf-calico", "cnf-shim", "cnf-ipam-shim"):
            for f in ("add_ms", "del_ms"):
                now, then = med(k, f), med(k + "-before", f)
                if now is not None and then:
                    print(f"  {by[k]['label']} {f[:3].upper()} median: {then:.2f} -> {now:.2f} ms ({now / then:.2f}x)")
            if k in by and k + "-before" in by and len(by[k]["add_ms"]) >= 10:
                last = len(by[k]["add_ms"]) // 5
                now = statistics.median(by[k]["add_ms"][-last:])
                then = statistics.median(by[k + "-before"]["add_ms"][-last:])
                print(f"  {by[k]['label']} ADD median, last fifth: {then:.2f} -> {now:.2f} ms ({now / then:.2f}x)")
    return ok


if __name__ == "__main__":
    sys.exit(main())
