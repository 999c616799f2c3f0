#!/usr/bin/env python3
"""Mode-change benchmark (issue 17): how long after `cnf apply -f` of an IPPool with a new
ipipMode / vxlanMode every node of a running `cnf lab` has its datapath in the new mode.
Root; not part of CI.

    tests/bench/encap/mode_change_bench.py --cnf build/bin/cnf [--rounds 10] [--only vxlan,ipip]

The lab is the default topology (k8s-m, k8s-w1, k8s-w2 on one subnet, k8s-w0 alone on a
second, behind the router), with examples/profiles/vxlan.toml or ipip.toml (CrossSubnet).
Each round applies Always, then CrossSubnet, and times from just before the `cnf apply`
process starts (it runs in k8s-m through `cnf lab exec`, so its start-up counts) until every
node's kernel shows the new mode: the number of routes to other nodes' blocks that go
through the tunnel (vxlan: `dev vxlan.calico`; ipip with the eBPF datapath: the routes that
carry the tunnel's MTU) is 3 on every node for Always, and for CrossSubnet 3 on k8s-w0 and
1 elsewhere. Polled every 5 ms per node with `ip -n NS route show`; the figure is the
slowest node. Prints per plugin the median, p90 and max over the rounds, and the ratio to
the issue's goal of 1 s.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
NODES = ["k8s-m", "k8s-w1", "k8s-w2", "k8s-w0"]


def run(cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def pool_yaml(plugin, mode):
    ipip, vxlan = (mode, "Never") if plugin == "ipip" else ("Never", mode)
    return ("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: default-ipv4-ippool\n"
            "spec:\n  cidr: 10.244.0.0/16\n  blockSize: 26\n  nodeSelector: all()\n"
            f"  ipipMode: {ipip}\n  vxlanMode: {vxlan}\n")


def tunnelled(netns, plugin):
    out = run(["ip", "-n", netns, "-4", "route", "show"], check=False).stdout
    key = "dev vxlan.calico" if plugin == "vxlan" else " mtu "
    return sum(1 for line in out.splitlines() if key in line and not line.startswith("blackhole"))


def expected(node, mode):
    return 3 if mode == "Always" or node == "k8s-w0" else 1


def one_plugin(args, plugin, tmp):
    d = tempfile.mkdtemp(prefix="cnf-bench-mode-")
    os.rmdir(d)
    lab = lambda *a, check=True: run([args.cnf, "lab", "--dir", d] + list(a), check=check)
    profile = os.path.join(SRC, "examples", "profiles", plugin + ".toml")
    times = []
    try:
        lab("up", "--profile", profile, "--pods-per-node", "1")
        st = json.load(open(os.path.join(d, "lab.json")))
        netns = {n["name"]: n["netns"] for n in st["nodes"]}
        files = {}
        for mode in ("Always", "CrossSubnet"):
            files[mode] = os.path.join(tmp, f"{plugin}-{mode}.yaml")
            open(files[mode], "w").write(pool_yaml(plugin, mode))
        # Settle in CrossSubnet first.
        lab("exec", "k8s-m", "--", args.cnf, "apply", "-f", files["CrossSubnet"])
        deadline = time.monotonic() + 30
        while any(tunnelled(netns[n], plugin) != expected(n, "CrossSubnet") for n in NODES):
            if time.monotonic() > deadline:
                sys.exit(f"{plugin}: the lab never reached CrossSubnet: " +
                         ", ".join(f"{n}={tunnelled(netns[n], plugin)}" for n in NODES))
            time.sleep(0.05)
        for r in range(args.rounds):
            for mode in ("Always", "CrossSubnet"):
                t0 = time.monotonic()
                p = subprocess.Popen([args.cnf, "lab", "--dir", d, "exec", "k8s-m", "--", args.cnf, "apply", "-f", files[mode]],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                pending = set(NODES)
                while pending:
                    for n in list(pending):
                        if tunnelled(netns[n], plugin) == expected(n, mode):
                            pending.discard(n)
                    if time.monotonic() - t0 > 10:
                        p.wait()
                        sys.exit(f"{plugin}: {mode} not on {sorted(pending)} after 10 s (apply: {p.stderr.read().strip()})")
                    if pending:
                        time.sleep(0.005)
                times.append(time.monotonic() - t0)
                if p.wait() != 0:
                    sys.exit(f"{plugin}: cnf apply failed: {p.stderr.read().strip()}")
    finally:
        lab("down", check=False)
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cnf", default=os.path.join(SRC, "build", "bin", "cnf"))
    ap.add_argument("--rounds", type=int, default=10, help="each round is two changes: to Always and back")
    ap.add_argument("--only", default="vxlan,ipip")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    tmp = tempfile.mkdtemp(prefix="cnf-bench-mode-files-")
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    print(f"{'plugin':8} {'changes':>7} {'median ms':>10} {'p90 ms':>8} {'max ms':>8} {'max / 1 s goal':>15}")
    for plugin in args.only.split(","):
        t = sorted(one_plugin(args, plugin, tmp))
        p90 = t[min(len(t) - 1, int(0.9 * len(t)))]
        print(f"{plugin:8} {len(t):7d} {statistics.median(t) * 1000:10.0f} {p90 * 1000:8.0f} {t[-1] * 1000:8.0f} {t[-1]:15.2f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
