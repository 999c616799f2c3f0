#!/usr/bin/env python3
"""Encapsulation benchmark (issue 17), on `cnf lab`. Root; not part of CI.

  sudo tests/bench/encap/encap_bench.py --cnf build/bin/cnf [--seconds 5] [--repeat 3]

Side by side in one run, TCP throughput (iperf3, one stream) and ICMP round trips (ping,
200 echoes 5 ms apart) from a pod on one lab node to a pod on another:
  veth      a bare veth pair between two namespaces: the floor (no routing, no node hop)
  direct    `cnf lab up --nodes 2 --subnets 1`, the lab's default profile (host-gw routes)
  vxlan     the same with examples/profiles/vxlan.toml, the pool's vxlanMode = Always
  ipip      the same with examples/profiles/ipip.toml, ipipMode = Always (the eBPF datapath
            on a kernel without ipip, as here; kernel tunl0 elsewhere)
and the kernel's own paths, made with `ip` alone, to compare like with like:
  kvxlan        a kernel VXLAN pair over one veth (the issue's reference)
  routed        the lab's shape by hand: pod, node, bridge in a router namespace, node, pod
  routed-vxlan  the same with a kernel VXLAN device made by hand
Each iperf3 server runs in the destination namespace with a pid file and is stopped by its
PID. Prints Gbit/s (median of --repeat runs), the ratio to the floor, and the mean RTT; then
min-max, the ratios to direct / routed / vxlan by hand, and Gbit per CPU-second of the two
iperf3s. --rounds N interleaves N passes (every other one reversed); --cnf-b adds a second
build's lab rows for A/B; --hold stops at each path for perf/tcpdump.
"""
import argparse, json, os, re, signal, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.normpath(os.path.join(HERE, "..", "..", ".."))


def run(cmd, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stdout}{r.stderr}")
    return r


def measure(netns_src, netns_dst, dst_ip, seconds, repeat, tmp):
    gbits, per_cpu = [], []
    for i in range(repeat):
        pidfile = os.path.join(tmp, f"iperf3-{os.getpid()}-{i}.pid")
        run(["ip", "netns", "exec", netns_dst, "iperf3", "-s", "-1", "-D", "-I", pidfile, "-p", "5201"])
        for _ in range(100):
            if os.path.exists(pidfile):
                break
            time.sleep(0.02)
        time.sleep(0.2)
        try:
            r = run(["ip", "netns", "exec", netns_src, "iperf3", "-c", dst_ip, "-p", "5201", "-t", str(seconds), "-J"])
            end = json.loads(r.stdout)["end"]
            g = end["sum_received"]["bits_per_second"] / 1e9
            gbits.append(g)
            # CPU cost, steadier than throughput on a loaded machine: Gbit per second of CPU that
            # the sending and receiving iperf3 used (user + system, the stack's softirq work in
            # their context included; work pushed to ksoftirqd is not).
            cpu = (end["cpu_utilization_percent"]["host_total"] + end["cpu_utilization_percent"]["remote_total"]) / 100
            per_cpu.append(g / cpu if cpu > 0 else float("nan"))
        finally:
            try:
                pid = int(open(pidfile).read().strip())
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError):
                pass
    p = run(["ip", "netns", "exec", netns_src, "ping", "-n", "-q", "-c", "200", "-i", "0.005", dst_ip])
    m = re.search(r"= [\d.]+/([\d.]+)/", p.stdout)
    return gbits, per_cpu, float(m.group(1)) * 1000 if m else float("nan")


def bare_veth(args, tmp):
    a, b = f"cnfbench-{os.getpid()}-a", f"cnfbench-{os.getpid()}-b"
    try:
        run(["ip", "netns", "add", a])
        run(["ip", "netns", "add", b])
        run(["ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b])
        for ns, ip in ((a, "10.254.0.1/30"), (b, "10.254.0.2/30")):
            run(["ip", "-n", ns, "addr", "add", ip, "dev", "eth0"])
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        return measure(a, b, "10.254.0.2", args.seconds, args.repeat, tmp)
    finally:
        run(["ip", "netns", "del", a], check=False)
        run(["ip", "netns", "del", b], check=False)


def by_hand(args, tmp, encap):
    """The lab's shape built with `ip` alone, no cnf: pod -veth- node -veth- bridge (router
    namespace) -veth- node -veth- pod, Calico's pod plumbing (a /32 per pod, 169.254.1.1 answered
    by proxy ARP on the node's end), routes to the remote pod via the remote node (encap
    "none"), or via a kernel VXLAN device made by hand (VNI 4096, UDP 4789, learning off,
    static neighbour and FDB entries, MTU 1450 on it and the pods: encap "vxlan")."""
    tag = f"cnfbench-{os.getpid()}-h"
    ns = {k: f"{tag}-{k}" for k in ("r", "n1", "n2", "p1", "p2")}
    ipn = lambda n, *a: run(["ip", "-n", ns[n]] + list(a))
    sysctl = lambda n, k, v: run(["ip", "netns", "exec", ns[n], "sysctl", "-qw", f"{k}={v}"])
    mtu = "1450" if encap == "vxlan" else "1500"
    try:
        for n in ns.values():
            run(["ip", "netns", "add", n])
        for k in ns:
            ipn(k, "link", "set", "lo", "up")
        ipn("r", "link", "add", "br0", "type", "bridge")
        ipn("r", "addr", "add", "10.253.0.1/16", "dev", "br0")
        ipn("r", "link", "set", "br0", "up")
        for i in (1, 2):
            node, pod, addr = f"n{i}", f"p{i}", f"10.253.0.{9 + i}"
            ipn("r", "link", "add", f"n{i}", "type", "veth", "peer", "name", "eth0", "netns", ns[node])
            ipn("r", "link", "set", f"n{i}", "master", "br0", "up")
            ipn(node, "addr", "add", addr + "/16", "dev", "eth0")
            ipn(node, "link", "set", "eth0", "up")
            ipn(node, "route", "add", "default", "via", "10.253.0.1")
            sysctl(node, "net.ipv4.ip_forward", "1")
            ipn(node, "link", "add", "cali0", "mtu", mtu, "type", "veth", "peer", "name", "eth0", "mtu", mtu, "netns", ns[pod])
            ipn(node, "link", "set", "cali0", "up")
            sysctl(node, "net.ipv4.conf.cali0.proxy_arp", "1")
            ipn(node, "route", "add", f"10.252.{i}.1/32", "dev", "cali0")
            ipn(pod, "addr", "add", f"10.252.{i}.1/32", "dev", "eth0")
            ipn(pod, "link", "set", "eth0", "up")
            ipn(pod, "route", "add", "169.254.1.1", "dev", "eth0")
            ipn(pod, "route", "add", "default", "via", "169.254.1.1")
        for i, j in ((1, 2), (2, 1)):
            node, remote = f"n{i}", f"10.253.0.{9 + j}"
            if encap == "vxlan":
                ipn(node, "link", "add", "vxlan0", "mtu", mtu, "address", f"66:00:00:00:00:0{i}", "type", "vxlan", "id", "4096",
                    "dstport", "4789", "local", f"10.253.0.{9 + i}", "dev", "eth0", "nolearning")
                ipn(node, "addr", "add", f"10.251.0.{i}/32", "dev", "vxlan0")
                ipn(node, "link", "set", "vxlan0", "up")
                ipn(node, "neigh", "add", f"10.251.0.{j}", "lladdr", f"66:00:00:00:00:0{j}", "dev", "vxlan0", "nud", "permanent")
                run(["bridge", "-n", ns[node], "fdb", "add", f"66:00:00:00:00:0{j}", "dev", "vxlan0", "dst", remote, "self", "permanent"])
                ipn(node, "route", "add", f"10.252.{j}.0/24", "via", f"10.251.0.{j}", "dev", "vxlan0", "onlink")
            else:
                ipn(node, "route", "add", f"10.252.{j}.0/24", "via", remote)
        hold(args, ns["p1"], ns["p2"], "10.252.2.1")
        return measure(ns["p1"], ns["p2"], "10.252.2.1", args.seconds, args.repeat, tmp)
    finally:
        for n in ns.values():
            run(["ip", "netns", "del", n], check=False)


def kernel_vxlan_pair(args, tmp):
    """The issue's own reference: a kernel VXLAN pair over one veth between two namespaces."""
    a, b = f"cnfbench-{os.getpid()}-va", f"cnfbench-{os.getpid()}-vb"
    try:
        run(["ip", "netns", "add", a])
        run(["ip", "netns", "add", b])
        run(["ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b])
        for i, ns in ((1, a), (2, b)):
            j = 3 - i
            ipn = lambda *x: run(["ip", "-n", ns] + list(x))
            ipn("addr", "add", f"10.254.1.{i}/30", "dev", "eth0")
            ipn("link", "set", "eth0", "up")
            ipn("link", "set", "lo", "up")
            ipn("link", "add", "vxlan0", "address", f"66:00:00:00:01:0{i}", "type", "vxlan", "id", "4096", "dstport", "4789",
                "local", f"10.254.1.{i}", "dev", "eth0", "nolearning")
            ipn("addr", "add", f"10.254.2.{i}/24", "dev", "vxlan0")
            ipn("link", "set", "vxlan0", "up")
            ipn("neigh", "add", f"10.254.2.{j}", "lladdr", f"66:00:00:00:01:0{j}", "dev", "vxlan0", "nud", "permanent")
            run(["bridge", "-n", ns, "fdb", "add", f"66:00:00:00:01:0{j}", "dev", "vxlan0", "dst", f"10.254.1.{j}", "self", "permanent"])
        hold(args, a, b, "10.254.2.2")
        return measure(a, b, "10.254.2.2", args.seconds, args.repeat, tmp)
    finally:
        run(["ip", "netns", "del", a], check=False)
        run(["ip", "netns", "del", b], check=False)


def hold(args, src, dst, ip):
    """--hold: keep the path up for a look (perf, tcpdump, ethtool) until Enter."""
    if args.hold:
        print(f"holding: iperf3 from {src} to {dst} ({ip}); Enter to go on", file=sys.stderr, flush=True)
        sys.stdin.readline()


def lab_pair(args, tmp, profile, cnf):
    d = tempfile.mkdtemp(prefix="cnf-bench-encap-")
    os.rmdir(d)
    lab = lambda *a, check=True: run([cnf, "lab", "--dir", d] + list(a), check=check)
    try:
        up = ["up", "--nodes", "2", "--subnets", "1", "--pods-per-node", "1"]
        if profile:
            up += ["--profile", profile]
        lab(*up)
        for _ in range(100):
            if lab("ping", "--timeout-ms", "500", check=False).returncode == 0:
                break
            time.sleep(0.1)
        st = json.load(open(os.path.join(d, "lab.json")))
        pods = st["pods"]
        hold(args, pods[0]["netns"], pods[1]["netns"], pods[1]["ip"])
        return measure(pods[0]["netns"], pods[1]["netns"], pods[1]["ip"], args.seconds, args.repeat, tmp)
    finally:
        lab("down", check=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cnf", default=os.path.join(SRC, "build", "bin", "cnf"))
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated subset of " + ",".join(PATHS) + " (the floor is always run)")
    ap.add_argument("--rounds", type=int, default=1, help="run the whole list this many times, interleaved; "
                    "Gbit/s is then the median of every round's runs, with min-max")
    ap.add_argument("--cnf-b", default="", help="a second cnf build (A/B): its lab rows are added, marked [B]; "
                    "the same path of both builds is a control when the change does not touch it")
    ap.add_argument("--hold", action="store_true", help="stop once each path is up (for perf/tcpdump), Enter to go on")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    tmp = tempfile.mkdtemp(prefix="cnf-bench-encap-files-")
    vxlan = os.path.join(tmp, "vxlan-always.toml")
    text = open(os.path.join(SRC, "examples", "profiles", "vxlan.toml")).read()
    open(vxlan, "w").write(text.replace('vxlan_mode = "CrossSubnet"', 'vxlan_mode = "Always"'))
    ipip = os.path.join(tmp, "ipip-always.toml")
    text = open(os.path.join(SRC, "examples", "profiles", "ipip.toml")).read()
    open(ipip, "w").write(text.replace('ipip_mode = "CrossSubnet"', 'ipip_mode = "Always"'))
    lab_profiles = {"direct": None, "vxlan": vxlan, "ipip": ipip}
    paths = {"veth": (PATHS["veth"], lambda: bare_veth(args, tmp)),
             "kvxlan": (PATHS["kvxlan"], lambda: kernel_vxlan_pair(args, tmp)),
             "routed": (PATHS["routed"], lambda: by_hand(args, tmp, "none")),
             "routed-vxlan": (PATHS["routed-vxlan"], lambda: by_hand(args, tmp, "vxlan"))}
    for k, prof in lab_profiles.items():
        paths[k] = (PATHS[k], lambda prof=prof: lab_pair(args, tmp, prof, args.cnf))
    only = args.only.split(",") if args.only else list(PATHS)
    for k in only:
        if k not in PATHS:
            sys.exit(f"--only: unknown path '{k}' (known: {', '.join(PATHS)})")
    if "veth" not in only:
        only.insert(0, "veth")  # the floor, always
    keys = list(only)
    if args.cnf_b:
        for k in only:
            if k in lab_profiles:
                paths[k + "/B"] = (PATHS[k] + " [B]", lambda prof=lab_profiles[k]: lab_pair(args, tmp, prof, args.cnf_b))
                keys.append(k + "/B")
    samples = {k: [] for k in keys}
    cpus = {k: [] for k in keys}
    rtts = {k: [] for k in keys}
    for rnd in range(args.rounds):
        # Every other round in reverse order, so a drift within a round (the machine's load, warm
        # caches) does not favour the rows that come last, such as the [B] ones.
        for k in (keys if rnd % 2 == 0 else keys[::-1]):
            g, c, rtt = paths[k][1]()
            samples[k] += g
            cpus[k] += c
            rtts[k].append(rtt)
    med = {k: statistics.median(v) for k, v in samples.items()}
    floor = med["veth"]
    print(f"{'path':<16} {'Gbit/s':>8} {'x floor':>8} {'RTT us':>8}   (iperf3 -t {args.seconds}, median of {args.repeat}; ping x200)")
    for k in keys:
        print(f"{paths[k][0]:<16} {med[k]:8.2f} {med[k] / floor:8.2f} {statistics.median(rtts[k]):8.1f}")
    # Like for like: each lab path against the kernel's own of the same shape, and the spread.
    # Like for like: each path against the kernel's own of the same shape, the spread, and the
    # CPU cost (Gbit per CPU-second of both iperf3s, median; higher is cheaper).
    cpu = {k: statistics.median(v) for k, v in cpus.items()}
    print(f"\n{'path':<18} {'min':>6} {'max':>6} {'n':>3} {'x direct':>9} {'x routed':>9} {'x r-vxlan':>10} {'Gb/cpu-s':>9} {'x floor':>8}"
          f"   (load average {os.getloadavg()[0]:.1f} at the end, {args.rounds} round(s))")
    for k in keys:
        ref = lambda r: f"{med[k] / med[r]:.2f}" if r in med and med[r] else "-"
        print(f"{paths[k][0]:<18} {min(samples[k]):6.2f} {max(samples[k]):6.2f} {len(samples[k]):3d} {ref('direct'):>9} "
              f"{ref('routed'):>9} {ref('routed-vxlan'):>10} {cpu[k]:9.2f} {cpu[k] / cpu['veth']:8.2f}")


PATHS = {"veth": "veth (floor)", "kvxlan": "veth+kvxlan", "routed": "routed by hand", "routed-vxlan": "vxlan by hand",
         "direct": "direct", "vxlan": "vxlan (Always)", "ipip": "ipip (Always)"}


if __name__ == "__main__":
    main()
