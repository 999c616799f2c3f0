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
Each iperf3 server runs in the destination namespace with a pid file and is stopped by its
PID. Prints Gbit/s (median of --repeat runs), the ratio to the floor, and the mean RTT.
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
    gbits = []
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
            gbits.append(json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9)
        finally:
            try:
                pid = int(open(pidfile).read().strip())
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError):
                pass
    p = run(["ip", "netns", "exec", netns_src, "ping", "-n", "-q", "-c", "200", "-i", "0.005", dst_ip])
    m = re.search(r"= [\d.]+/([\d.]+)/", p.stdout)
    return statistics.median(gbits), float(m.group(1)) * 1000 if m else float("nan")


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


def lab_pair(args, tmp, profile):
    d = tempfile.mkdtemp(prefix="cnf-bench-encap-")
    os.rmdir(d)
    lab = lambda *a, check=True: run([args.cnf, "lab", "--dir", d] + list(a), check=check)
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
        return measure(pods[0]["netns"], pods[1]["netns"], pods[1]["ip"], args.seconds, args.repeat, tmp)
    finally:
        lab("down", check=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cnf", default=os.path.join(SRC, "build", "bin", "cnf"))
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated subset of veth,direct,vxlan,ipip (the floor is always run)")
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
    paths = {"veth": ("veth (floor)", lambda: bare_veth(args, tmp)), "direct": ("direct", lambda: lab_pair(args, tmp, None)),
             "vxlan": ("vxlan (Always)", lambda: lab_pair(args, tmp, vxlan)), "ipip": ("ipip (Always)", lambda: lab_pair(args, tmp, ipip))}
    only = args.only.split(",") if args.only else list(paths)
    if "veth" not in only:
        only.insert(0, "veth")  # the floor, always
    rows = [(paths[k][0], paths[k][1]()) for k in only]
    floor = rows[0][1][0]
    print(f"{'path':<16} {'Gbit/s':>8} {'x floor':>8} {'RTT us':>8}   (iperf3 -t {args.seconds}, median of {args.repeat}; ping x200)")
    for name, (g, rtt) in rows:
        print(f"{name:<16} {g:8.2f} {g / floor:8.2f} {rtt:8.1f}")


if __name__ == "__main__":
    main()
