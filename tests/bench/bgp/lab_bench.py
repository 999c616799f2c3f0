#!/usr/bin/env python3
"""BGP across a whole `cnf lab` (issue 16, "What it must show"). Root; not part of CI.

  sudo tests/bench/bgp/lab_bench.py [--cnf build/bin/cnf] [--smoke] [RUN ...]

A RUN is N (N nodes in the iBGP full mesh) or N:R (N nodes, the first R route reflectors made
by `cnf lab up --route-reflectors R`: labelled route-reflector=true with a cluster ID, one
BGPPeer nodeSelector all() / peerSelector route-reflector == 'true', BGPConfiguration default
nodeToNodeMeshEnabled: false, all in the datastore before the first agent starts).
Default runs: 50 100:2. --smoke: 4:1 (and 4).

Each run: `cnf lab up --nodes N --pods-per-node 1 --profile tests/bgp/lab-bgp.toml` (one
subnet; the bgp routing plugin, no encapsulation; each node's one pod gives it one /26 block).
Timed from just before `cnf lab up` starts until every node's kernel routes a block via every
other node's address. A thread of this script watches: it joins each node's namespace in turn
(setns on that thread only) and reads its IPv4 routes there, every 20 ms, from the moment the
lab's namespaces exist. Then, not timed: every node's routes (protocol of cnf) are checked
against the exact blocks of the other nodes' pods, every BGP session is counted through `cnf
node status -o json`, and the agents' memory is read from /proc/<pid>/status (VmRSS now,
VmHWM the peak) with the PIDs from the lab's lab.json, and their CPU time from /proc/<pid>/stat
(up to then, and over --idle seconds of quiet after).
`cnf lab down` on every exit path (SIGINT and SIGTERM included).
"""
import argparse, ctypes, ipaddress, json, os, shutil, signal, statistics, subprocess, sys, tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL("libc.so.6", use_errno=True)


def run(cmd, check=True, timeout=None):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stdout}{r.stderr}")
    return r


def setns(fd):
    if libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def read_pool_routes(pool):
    """This thread's namespace's IPv4 routes inside the pool (/proc/thread-self/net/route): the
    gateways of routes via another node, and whether a blackhole (the node's own block) is there."""
    gws, blackhole = set(), False
    with open("/proc/thread-self/net/route") as f:
        f.readline()  # the header
        for line in f:
            c = line.split()
            dst, gw, flags, mask = int(c[1], 16), int(c[2], 16), int(c[3], 16), int(c[7], 16)
            if ipaddress.IPv4Address(dst.to_bytes(4, "little")) not in pool or not mask:
                continue
            if flags & 0x2:  # RTF_GATEWAY
                gws.add(str(ipaddress.IPv4Address(gw.to_bytes(4, "little"))))
            elif c[0] == "*" and mask != 0xFFFFFFFF:
                blackhole = True
    return gws, blackhole


class watcher(threading.Thread):
    """Records when each node first routes something of the pool via every other node, when each
    (node, next hop) pair is first seen, and when each node's own block (its blackhole) appears."""

    def __init__(self, state_file, pool, t0):
        super().__init__(daemon=True)
        self.state_file, self.pool, self.t0 = state_file, pool, t0
        self.done_at = {}  # node -> seconds since t0
        self.seen_at = {}  # (node, next hop address) -> seconds since t0
        self.own_at = {}   # node -> seconds since t0 its blackhole appeared
        self.stop = threading.Event()
        self.error = None

    def run(self):
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        fds = {}
        try:
            nodes = None
            while not self.stop.is_set() and nodes is None:
                try:
                    nodes = json.load(open(self.state_file))["nodes"]
                except (OSError, ValueError, KeyError):
                    time.sleep(0.01)
            if nodes is None:
                return
            addr = {n["name"]: n["address"] for n in nodes}
            while not self.stop.is_set() and len(self.done_at) < len(nodes):
                for n in nodes:
                    name = n["name"]
                    if name in self.done_at:
                        continue
                    if name not in fds:
                        try:
                            fds[name] = os.open("/var/run/netns/" + n["netns"], os.O_RDONLY)
                        except OSError:
                            continue  # not made yet
                    try:
                        setns(fds[name])
                    except OSError:  # the name is there, its bind mount not yet: open it again next time
                        os.close(fds.pop(name))
                        continue
                    want = {a for k, a in addr.items() if k != name}
                    gws, blackhole = read_pool_routes(self.pool)
                    now = time.monotonic() - self.t0
                    if blackhole and name not in self.own_at:
                        self.own_at[name] = now
                    for g in gws:
                        self.seen_at.setdefault((name, g), now)
                    if want <= gws and name in self.own_at:
                        self.done_at[name] = now
                setns(own)
                self.stop.wait(0.02)
        except Exception as e:  # reported by the main thread
            self.error = e
        finally:
            try:
                setns(own)
            finally:
                os.close(own)
                for fd in fds.values():
                    os.close(fd)


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024.0  # MiB
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    out["cpu"] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return out


def one_run(args, nodes, reflectors):
    d = tempfile.mkdtemp(prefix="cnf-bench-bgplab-")
    os.rmdir(d)
    lab = lambda *a, check=True, timeout=None: run([args.cnf, "lab", "--dir", d] + list(a), check=check, timeout=timeout)
    pool = ipaddress.ip_network("10.244.0.0/16")
    w = None
    try:
        up = ["up", "--nodes", str(nodes), "--pods-per-node", "1", "--profile", args.profile]
        if reflectors:
            up += ["--route-reflectors", str(reflectors)]
        if args.datastore:
            up += ["--datastore", args.datastore]
        t0 = time.monotonic()
        w = watcher(os.path.join(d, "lab.json"), pool, t0)
        w.start()
        r = lab(*up, timeout=args.timeout)
        t_up = time.monotonic() - t0
        while w.is_alive() and time.monotonic() - t0 < args.timeout:
            w.join(0.1)
        w.stop.set()
        w.join()
        if w.error:
            raise RuntimeError(f"watcher: {w.error!r}")
        st = json.load(open(os.path.join(d, "lab.json")))
        if len(w.done_at) < nodes:
            missing = sorted(set(n["name"] for n in st["nodes"]) - set(w.done_at))
            raise RuntimeError(f"{len(missing)} node(s) without every other node's block after {args.timeout} s: {missing[:10]}")
        t_all = max(w.done_at.values())
        # Per block: from its blackhole on its owner to its route on the last other node.
        by_addr = {n["address"]: n["name"] for n in st["nodes"]}
        last = {}  # owner -> (time, node)
        for (node, g), t in w.seen_at.items():
            if g in by_addr and t >= last.get(by_addr[g], (0.0, ""))[0]:
                last[by_addr[g]] = (t, node)
        spread = sorted(last[o][0] - w.own_at[o] for o in last if o in w.own_at)
        if args.logs:
            slow = sorted(((last[o][0] - w.own_at[o], o, last[o][1]) for o in last if o in w.own_at), reverse=True)[:3]
            first = [n["name"] for n in st["nodes"][:max(reflectors, 1)]]
            addr = {n["name"]: n["address"] for n in st["nodes"]}
            for dt, o, n in slow:
                arr = sorted(t for (node, g), t in w.seen_at.items() if by_addr.get(g) == o)
                via = ", ".join(f"{f} at +{w.seen_at.get((f, addr[o]), float('nan')) - w.own_at[o]:.2f} s" for f in first if f != o)
                print(f"   slow: {o}'s block (blackhole at {w.own_at[o]:.2f} s) reached {n} last, {dt:.2f} s later; "
                      f"{via}; median node +{statistics.median(arr) - w.own_at[o]:.2f} s")
            dst = os.path.join(args.logs, f"{nodes}-{reflectors}")
            os.makedirs(dst, exist_ok=True)
            for n in st["nodes"]:
                shutil.copy(os.path.join(d, "nodes", n["name"], "agent.log"), os.path.join(dst, n["name"] + ".log"))
        phases = ", ".join(l.split(":")[0] + " at " + l[l.rfind("(") + 1:-1] for l in r.stdout.splitlines() if l.endswith(" s)"))

        # Not timed: the exact blocks, via the right node, protocol of cnf; every session.
        block_of = {}
        for p in st["pods"]:
            block_of.setdefault(p["node"], set()).add(str(ipaddress.ip_network(p["ip"] + "/26", strict=False)))
        addr = {n["name"]: n["address"] for n in st["nodes"]}
        wrong = []
        for n in st["nodes"]:
            out = run(["ip", "-n", n["netns"], "route", "show", "proto", "81"]).stdout
            routes = {l.split()[0]: l for l in out.splitlines() if not l.startswith("blackhole")}
            for other, blocks in block_of.items():
                if other == n["name"]:
                    continue
                for b in blocks:
                    if f"via {addr[other]} " not in routes.get(b, "") + " ":
                        wrong.append(f"{n['name']}: {b} {routes.get(b, '(none)')}")
        if wrong:
            raise RuntimeError(f"{len(wrong)} route(s) wrong: {wrong[:5]}")
        sessions, want_sessions = 0, 0
        for i, n in enumerate(st["nodes"]):
            js = json.loads(lab("exec", n["name"], "--", args.cnf, "node", "status", "-o", "json").stdout)
            sessions += sum(1 for p in js["routing"]["peers"] if p["state"] == "Established")
            want_sessions += (nodes - 1) if not reflectors or i < reflectors else reflectors
        if sessions != want_sessions:
            raise RuntimeError(f"{sessions} BGP sessions Established (counted from both ends), {want_sessions} expected")

        mem = [proc_status(n["agent"]["pid"]) for n in st["nodes"]]
        time.sleep(args.idle)  # then the agents' CPU while nothing changes
        idle_cpu = sum(proc_status(n["agent"]["pid"])["cpu"] for n in st["nodes"]) - sum(m["cpu"] for m in mem)
        rss = [m["VmRSS"] for m in mem]
        hwm = [m["VmHWM"] for m in mem]
        cpu = [m["cpu"] for m in mem]
        res = dict(nodes=nodes, reflectors=reflectors, t_up=t_up, t_all=t_all, median_node=statistics.median(w.done_at.values()),
                   phases=phases, sessions=sessions // 2, rss=sum(rss), hwm=sum(hwm), cpu=sum(cpu), rss_per=sum(rss) / nodes,
                   hwm_per=sum(hwm) / nodes, hwm_max=max(hwm), idle_cpu=idle_cpu, spread_median=statistics.median(spread), spread_max=spread[-1],
                   spread_p90=spread[int(0.9 * (len(spread) - 1))])
        if reflectors:
            res["hwm_rr"] = statistics.mean(hwm[:reflectors])
            res["hwm_client"] = statistics.mean(hwm[reflectors:]) if nodes > reflectors else 0.0
        return res
    finally:
        if w:
            w.stop.set()
            w.join()
        r = lab("down", check=False, timeout=600)
        if r.returncode != 0:
            print(f"cnf lab down: exit {r.returncode}\n{r.stdout}{r.stderr}", file=sys.stderr)


def parse_run(text):
    n, _, r = text.partition(":")
    try:
        nodes, refl = int(n), int(r) if r else 0
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected N or N:R (nodes, route reflectors)")
    if nodes < 2 or refl < 0 or refl > nodes:
        raise argparse.ArgumentTypeError(f"{text!r}: N must be 2 or more and R between 0 and N")
    return nodes, refl


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", type=parse_run, help="N (full mesh) or N:R (R route reflectors); default 50 100:2")
    ap.add_argument("--cnf", default=os.path.join(SRC, "build", "bin", "cnf"))
    ap.add_argument("--profile", default=os.path.join(SRC, "tests", "bgp", "lab-bgp.toml"))
    ap.add_argument("--datastore", default="", choices=["", "local", "etcd"], help="passed to `cnf lab up` (default: the profile's)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds for `up` and for convergence (default 600)")
    ap.add_argument("--idle", type=float, default=5, help="seconds of quiet after the figures, to read the agents' idle CPU (default 5)")
    ap.add_argument("--logs", default="", help="copy the agents' logs to LOGS/<N>-<R>/ and name the slowest blocks")
    ap.add_argument("--smoke", action="store_true", help="4:1 and 4: a quick check of the benchmark itself")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    runs = [(4, 1), (4, 0)] if args.smoke else (args.runs or [(50, 0), (100, 2)])

    def interrupted(sig, _frame):
        raise KeyboardInterrupt(f"signal {sig}")
    signal.signal(signal.SIGTERM, interrupted)

    rows = []
    for nodes, refl in runs:
        what = f"{nodes} nodes, " + (f"{refl} route reflector(s)" if refl else "full mesh")
        print(f"== {what}", flush=True)
        try:
            r = one_run(args, nodes, refl)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print(f"   FAILED: {e}", flush=True)
            continue
        rows.append((what, r))
        print(f"   `cnf lab up` returned after {r['t_up']:.2f} s ({r['phases']})")
        print(f"   every node routes every other node's block: {r['t_all']:.2f} s after `up` started (median node {r['median_node']:.2f} s)")
        print(f"   a block, from its owner's blackhole to the last other node's route: median {r['spread_median']:.2f} s, "
              f"p90 {r['spread_p90']:.2f} s, max {r['spread_max']:.2f} s (20 ms polls)")
        print(f"   {r['sessions']} BGP sessions Established; agents: VmRSS {r['rss']:.1f} MiB total ({r['rss_per']:.1f} per agent), "
              f"VmHWM {r['hwm']:.1f} MiB total ({r['hwm_per']:.1f} per agent, max {r['hwm_max']:.1f}), CPU {r['cpu']:.1f} s total")
        print(f"   agents' CPU over the next {args.idle:.0f} s with nothing changing: {r['idle_cpu']:.2f} s in total")
        if refl:
            print(f"   VmHWM per reflector {r['hwm_rr']:.1f} MiB, per client {r['hwm_client']:.1f} MiB")
        sys.stdout.flush()
    if len(rows) > 1:
        base_what, base = rows[0]
        print(f"\nagainst the first run ({base_what}), per node:")
        for what, r in rows[1:]:
            print(f"   {what}: time to all blocks x{r['t_all'] / base['t_all']:.2f}, VmHWM per agent x{r['hwm_per'] / base['hwm_per']:.2f}, "
                  f"sessions per node {2 * r['sessions'] / r['nodes']:.1f} vs {2 * base['sessions'] / base['nodes']:.1f}")
    if len(rows) < len(runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
