#!/usr/bin/env python3
"""The node agent benchmark (issue 15), on `cnf lab`. Root; not part of CI.

  sudo tests/bench/agent/agent_bench.py --cnf build/bin/cnf [--sizes 10,50] [--big 100x10] [--idle 30]

1. Route convergence, at each size N in --sizes: `cnf lab up --nodes N --pods-per-node 0
   --subnets 1`, an `ip monitor route` in every node namespace, then one pod added on each
   node in turn (`cnf lab pod add`); each node's first pod claims a new block, and the time
   from the start of that `pod add` (and from its return) to the block's route appearing on
   every other node is one sample. Prints p50/p99/max over the N samples.
2. --big NxM: `cnf lab up --nodes N --pods-per-node M --subnets 1 --static-neighbours`, then
   `cnf lab ping --sample 1000` until it exits 0: time from the start of `up` until every
   sampled pair answers, with up's own phase times.
3. On that big lab, after it is quiet: each agent's resident memory (VmRSS) and its CPU over
   --idle seconds (utime+stime from /proc/PID/stat).
"""
import argparse, json, os, re, statistics, subprocess, sys, tempfile, threading, time, ipaddress


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, max(0, int(round(p / 100.0 * len(v) + 0.5)) - 1))]


class monitor:
    """`ip -n NS monitor route`: the time each prefix first appears."""

    def __init__(self, netns):
        self.seen = {}
        self.p = subprocess.Popen(["ip", "-n", netns, "monitor", "route"], stdout=subprocess.PIPE, text=True)
        self.t = threading.Thread(target=self.read, daemon=True)
        self.t.start()

    def read(self):
        for line in self.p.stdout:
            now = time.monotonic()
            if line.startswith("Deleted"):
                continue
            dst = line.split()[0] if line.split() else ""
            self.seen.setdefault(dst, now)

    def stop(self):
        self.p.terminate()
        self.p.wait()


def lab(cnf, d, *args, check=True):
    r = run([cnf, "lab", "--dir", d] + list(args))
    if check and r.returncode != 0:
        raise SystemExit(f"cnf lab {' '.join(args)}: exit {r.returncode}\n{r.stdout}{r.stderr}")
    return r


def convergence(cnf, n):
    d = tempfile.mkdtemp(prefix="cnf-bench-agent-")
    try:
        lab(cnf, d, "up", "--nodes", str(n), "--pods-per-node", "0", "--subnets", "1")
        st = json.load(open(os.path.join(d, "lab.json")))
        mons = {x["name"]: monitor(x["netns"]) for x in st["nodes"]}
        time.sleep(2)  # agents in sync, monitors listening
        from_start, from_return, missing = [], [], 0
        for i, node in enumerate(st["nodes"]):
            t0 = time.monotonic()
            r = lab(cnf, d, "pod", "add", f"bench/p{i}", "--node", node["name"])
            t1 = time.monotonic()
            ip = re.search(r": (\d+\.\d+\.\d+\.\d+)", r.stdout).group(1)
            block = str(ipaddress.ip_network(ip + "/26", strict=False))
            until = t1 + 10
            others = [m for name, m in mons.items() if name != node["name"]]
            while time.monotonic() < until and not all(block in m.seen for m in others):
                time.sleep(0.005)
            if not all(block in m.seen for m in others):
                missing += 1
                continue
            last = max(m.seen[block] for m in others)
            from_start.append((last - t0) * 1000)
            from_return.append((last - t1) * 1000)
        for m in mons.values():
            m.stop()
        return from_start, from_return, missing
    finally:
        lab(cnf, d, "down", check=False)


def big(cnf, nodes, pods, idle):
    d = tempfile.mkdtemp(prefix="cnf-bench-agent-")
    try:
        t0 = time.monotonic()
        r = lab(cnf, d, "up", "--nodes", str(nodes), "--pods-per-node", str(pods), "--subnets", "1", "--static-neighbours")
        t_up = time.monotonic() - t0
        tries, last = 0, None
        while True:
            tries += 1
            last = lab(cnf, d, "ping", "--sample", "1000", "--timeout-ms", "3000", check=False)
            if last.returncode == 0 or time.monotonic() - t0 > t_up + 60:
                break
        t_ping = time.monotonic() - t0
        st = json.load(open(os.path.join(d, "lab.json")))
        pids = [x["agent"]["pid"] for x in st["nodes"]]
        time.sleep(5)
        hz = os.sysconf("SC_CLK_TCK")

        def ticks(pid):
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            return int(f[11]) + int(f[12])

        a = {p: ticks(p) for p in pids}
        time.sleep(idle)
        cpu = [(ticks(p) - a[p]) / hz / idle * 100 for p in pids]
        rss, pss = [], []
        for p in pids:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    rss.append(int(line.split()[1]) / 1024)
            # PSS: the agent's own pages plus its share of the pages it shares with the other
            # agents (the binary's text, libc): what one more agent costs the machine.
            for line in open(f"/proc/{p}/smaps_rollup"):
                if line.startswith("Pss:"):
                    pss.append(int(line.split()[1]) / 1024)
        return (r.stdout, t_up, t_ping, tries, last.returncode == 0, last.stdout.splitlines()[0] if last.stdout else last.stderr,
                cpu, rss, pss)
    finally:
        lab(cnf, d, "down", check=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cnf", default="build/bin/cnf")
    ap.add_argument("--sizes", default="10,50")
    ap.add_argument("--big", default="100x10")
    ap.add_argument("--idle", type=int, default=30)
    a = ap.parse_args()
    cnf = os.path.abspath(a.cnf)
    for n in [int(x) for x in a.sizes.split(",") if x]:
        s, r, missing = convergence(cnf, n)
        if s:
            print(f"convergence N={n}: {len(s)} blocks, from pod add start p50 {statistics.median(s):.0f} ms p99 {pct(s, 99):.0f} ms "
                  f"max {max(s):.0f} ms; from its return p50 {statistics.median(r):.0f} ms p99 {pct(r, 99):.0f} ms; "
                  f"{missing} never seen on every node within 10 s", flush=True)
        else:
            print(f"convergence N={n}: no block route seen on every other node ({missing} samples missing)", flush=True)
    if a.big:
        nodes, pods = [int(x) for x in a.big.split("x")]
        out, t_up, t_ping, tries, all_answer, ping, cpu, rss, pss = big(cnf, nodes, pods, a.idle)
        print(out.strip())
        reach = (f"every sampled pair answering {t_ping:.1f} s after up started" if all_answer
                 else f"NOT every sampled pair answering by {t_ping:.1f} s after up started (the limit: up + 60 s)")
        print(f"big {nodes}x{pods}: up {t_up:.1f} s; {reach} ({tries} ping run(s)); last: {ping}")
        print(f"idle agents ({len(cpu)}, {a.idle} s): CPU median {statistics.median(cpu):.3f}% max {max(cpu):.3f}%; "
              f"RSS median {statistics.median(rss):.1f} MB max {max(rss):.1f} MB; "
              f"PSS median {statistics.median(pss):.1f} MB max {max(pss):.1f} MB")


if __name__ == "__main__":
    main()
