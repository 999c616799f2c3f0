#!/usr/bin/env python3
"""Policy forwarding benchmark (issue 18), on `cnf lab`. Root; not part of CI.

  tests/bench/policy/forward_bench.py --cnf build/bin/cnf [--policies 1000] [--seconds 5] [--repeat 3]

Side by side in one run, from a pod on one lab node to a pod on another (`cnf lab up
--nodes 2 --subnets 1`, direct routing), for each policy plugin (iptables, nftables):
  none      the plugin in place, no policy: each pod's chains are the profile's allow-all
  N         N Calico NetworkPolicies (default namespace, selector all(), Ingress) of one
            rule each, allowing TCP 5201 from a /32 that is no pod; the last one (highest
            order) allows the client pod (TCP, and ICMP for the round trips). A new connection walks every policy before it is
            allowed; the packets after it are accepted by the conntrack rule at the top.
plus a bare veth pair between two namespaces as the floor. Figures per case:
  Gbit/s    iperf3, one TCP stream, median of --repeat runs (the established path)
  conn/s    new TCP connections per second, each opened and closed in turn (the walk)
  rtt us    mean of 200 ping round trips 5 ms apart
with the ratio to `none` of the same plugin, and of `none` to the floor.
Each server runs in the destination namespace with a pid file and is stopped by its PID; the
lab is taken down on every exit path.
"""
import argparse, json, os, re, signal, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
PORT = 5201
CONN_PORT = 5301


def run(cmd, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stdout}{r.stderr}")
    return r


# A TCP server that accepts and closes, and a client that opens N connections in turn.
CONN_SERVER = r"""
import os, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(512)
open(sys.argv[2], "w").write(str(os.getpid()))
while True:
    c, _ = s.accept(); c.close()
"""
CONN_CLIENT = r"""
import socket, sys, time
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t0 = time.monotonic()
for _ in range(n):
    c = socket.create_connection((ip, port), timeout=5)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST: no TIME_WAIT pile-up
    c.close()
print(n / (time.monotonic() - t0))
"""


def stop_pid(pidfile):
    try:
        os.kill(int(open(pidfile).read().strip()), signal.SIGTERM)
    except (OSError, ValueError):
        pass


def wait_file(path):
    for _ in range(200):
        if os.path.exists(path) and open(path).read().strip():
            return
        time.sleep(0.02)
    raise SystemExit(f"server did not start: {path} not written")


def measure(src, dst, dst_ip, args, tmp):
    gbits = []
    for i in range(args.repeat):
        pidfile = os.path.join(tmp, f"iperf3-{os.getpid()}-{i}.pid")
        run(["ip", "netns", "exec", dst, "iperf3", "-s", "-1", "-D", "-I", pidfile, "-p", str(PORT)])
        wait_file(pidfile)
        time.sleep(0.2)
        try:
            r = run(["ip", "netns", "exec", src, "iperf3", "-c", dst_ip, "-p", str(PORT), "-t", str(args.seconds), "-J"])
            gbits.append(json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9)
        finally:
            stop_pid(pidfile)
    pidfile = os.path.join(tmp, f"conn-{os.getpid()}.pid")
    srv = subprocess.Popen(["ip", "netns", "exec", dst, sys.executable, "-c", CONN_SERVER, str(CONN_PORT), pidfile],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_file(pidfile)
        rates = []
        for _ in range(args.repeat):
            r = run(["ip", "netns", "exec", src, sys.executable, "-c", CONN_CLIENT, dst_ip, str(CONN_PORT), str(args.connections)])
            rates.append(float(r.stdout.strip()))
    finally:
        stop_pid(pidfile)
        srv.wait()
        os.unlink(pidfile)
    p = run(["ip", "netns", "exec", src, "ping", "-n", "-q", "-c", "200", "-i", "0.005", dst_ip], check=False)
    m = re.search(r"= [\d.]+/([\d.]+)/", p.stdout)
    if not m:
        print(f"  (ping {dst_ip} from {src}: no answer; rtt not measured)\n{p.stdout.strip()}", file=sys.stderr)
    return {"gbit": statistics.median(gbits), "conn": statistics.median(rates),
            "rtt": float(m.group(1)) * 1000 if m else float("nan")}


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
        return measure(a, b, "10.254.0.2", args, tmp)
    finally:
        run(["ip", "netns", "del", a], check=False)
        run(["ip", "netns", "del", b], check=False)


def policies_yaml(n, client_ip):
    docs = []
    for i in range(n):
        last = i == n - 1
        src = f"{client_ip}/32" if last else f"10.{200 + i // 65536 % 50}.{i // 256 % 256}.{i % 256}/32"
        docs.append(f"""apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: bench-{i:05d}
  namespace: default
spec:
  order: {i + 1}
  selector: all()
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source:
      nets: [{src}]
    destination:
      ports: [{PORT}, {CONN_PORT}]
""" + (f"""  - action: Allow
    protocol: ICMP
    source:
      nets: [{src}]
""" if last else ""))
    return "---\n".join(docs)


def lab_case(args, tmp, plugin, n_policies):
    profile = os.path.join(SRC, "examples", "profiles", f"policy-{plugin}.toml")
    d = tempfile.mkdtemp(prefix="cnf-bench-policy-")
    os.rmdir(d)
    lab = lambda *a, check=True: run([args.cnf, "lab", "--dir", d] + list(a), check=check)
    try:
        lab("up", "--nodes", "2", "--subnets", "1", "--pods-per-node", "1", "--profile", profile)
        st = json.load(open(os.path.join(d, "lab.json")))
        pods = st["pods"]
        src = next(p for p in pods if p["node"] == "node-1")
        dst = next(p for p in pods if p["node"] == "node-2")
        nodes = [n["name"] for n in st["nodes"]]
        programmed = 0.0
        if n_policies:
            f = os.path.join(tmp, f"policies-{os.getpid()}.yaml")
            open(f, "w").write(policies_yaml(n_policies, src["ip"]))
            lab("exec", "node-1", "--", args.cnf, "apply", "-f", f)
            programmed = wait_status(lab, args.cnf, nodes, n_policies)
        for _ in range(100):
            if lab("ping", "--timeout-ms", "500", check=False).returncode == 0:
                break
            time.sleep(0.2)
        r = measure(src["netns"], dst["netns"], dst["ip"], args, tmp)
        r["programmed"] = programmed
        return r
    finally:
        lab("down", check=False)


def wait_status(lab, cnf, nodes, policies, timeout=600):
    """Seconds until every node's agent reports `policies` policies programmed and up to date."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        done = True
        for n in nodes:
            r = lab("exec", n, "--", cnf, "node", "status", "-o", "json", check=False)
            try:
                po = json.loads(r.stdout).get("policy", {})
            except ValueError:
                po = {}
            done = done and bool(po.get("upToDate")) and po.get("policies", -1) == policies
        if done:
            return time.monotonic() - t0
        time.sleep(0.25)
    raise SystemExit(f"{policies} policies not programmed on {nodes} within {timeout} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cnf", default=os.path.join(SRC, "build", "bin", "cnf"))
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--connections", type=int, default=1000, help="new connections per conn/s run")
    ap.add_argument("--plugins", default="iptables,nftables")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("root only (network namespaces)")
    if args.policies < 1 and args.policies != 0:
        raise SystemExit("--policies: must be 0 or more")
    tmp = tempfile.mkdtemp(prefix="cnf-bench-policy-tmp-")
    print(f"load average before: {open('/proc/loadavg').read().split()[0]}")
    floor = bare_veth(args, tmp)
    print(f"{'case':<22}{'Gbit/s':>9}{'conn/s':>10}{'rtt us':>9}{'vs none':>24}{'programmed s':>14}")
    print(f"{'veth floor':<22}{floor['gbit']:>9.2f}{floor['conn']:>10.0f}{floor['rtt']:>9.0f}")
    for plugin in args.plugins.split(","):
        none = lab_case(args, tmp, plugin, 0)
        full = lab_case(args, tmp, plugin, args.policies)
        print(f"{plugin + ' none':<22}{none['gbit']:>9.2f}{none['conn']:>10.0f}{none['rtt']:>9.0f}"
              f"{'floor x' + format(none['gbit'] / floor['gbit'], '.2f'):>24}")
        print(f"{plugin + ' ' + str(args.policies) + ' policies':<22}{full['gbit']:>9.2f}{full['conn']:>10.0f}{full['rtt']:>9.0f}"
              f"{'  x' + format(full['gbit'] / none['gbit'], '.2f') + ' Gbit, x' + format(full['conn'] / none['conn'], '.2f') + ' conn':>24}"
              f"{full['programmed']:>14.1f}")
    print(f"load average after: {open('/proc/loadavg').read().split()[0]}")


if __name__ == "__main__":
    main()
