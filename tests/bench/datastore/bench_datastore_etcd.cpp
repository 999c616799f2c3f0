// bench_datastore_etcd — cnf's etcd client against a plain Beast client, same etcd, same run.
//
//   <build>/tests/bench/datastore/bench_datastore_etcd [--seconds S] [--threads T] [--events N] [--rounds R] [--only cnf|plain]
//
// Starts a real etcd (tests/support/etcd_server.hpp: 127.0.0.1, free ports, temp data dir)
// and measures, alternating cnf and the peer for R rounds so drift hits both alike:
//  1. compare-and-swap updates per second: T threads, each updating its own resource with
//     the revision the previous update returned (cnf: etcd_datastore::update; peer: the
//     same /v3/kv/txn request on one kept-alive connection per thread);
//  2. watch event latency: one writer, one cnf watch and one plain watch stream; N writes per
//     round alternating cnf and peer event by event (paired samples), each timed from just
//     before the write call until that client's watcher sees the write's revision.
// Prints the figures and the ratio cnf/peer for throughput and peer/cnf for latency (both
// read "cnf relative to the plain client", 1.0 = as fast, target >= 0.9).
#include <cnf/plugins/etcd.hpp>

#include <etcd_server.hpp>

#include "plain_client.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

struct options {
  double seconds = 2;
  int threads = 8;
  int events = 200;
  int rounds = 5;
  bool cnf = true, plain = true;  // --only cnf|plain (for profiling one side)
};

[[noreturn]] void die(const std::string& m) {
  std::fprintf(stderr, "bench_datastore_etcd: %s\n", m.c_str());
  std::exit(1);
}

cnf::resource bench_resource(int t) {
  cnf::resource r;
  r.kind = "IPAMBlock";
  r.name = "bench-" + std::to_string(t);
  r.spec = R"({"cidr":"10.0.0.0/26","affinity":"host:node-1","allocations":[0,null,1]})";
  return r;
}

// The value cnf stores for bench_resource(t), so the peer writes the same bytes.
std::string stored_value(const cnf::resource& r) { return R"({"labels":{},"spec":)" + r.spec + "}"; }

// CPU time (user + system) this process has used so far: during a phase only one client
// runs here (etcd is another process), so the difference is that client's cost.
double cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

struct rate {
  double per_second = 0;
  double cpu_us_per_op = 0;
};

template <class F>
rate run_threads(int threads, double seconds, F&& body) {
  std::atomic<bool> stop{false};
  std::atomic<long> done{0};
  std::vector<std::thread> ts;
  auto t0 = clock_type::now();
  auto c0 = cpu_seconds();
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      long n = 0;
      body(t, stop, n);
      done += n;
    });
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : ts) t.join();
  double elapsed = std::chrono::duration<double>(clock_type::now() - t0).count();
  double cpu = cpu_seconds() - c0;
  return {static_cast<double>(done) / elapsed, cpu * 1e6 / static_cast<double>(std::max<long>(done, 1))};
}

rate cnf_cas_rate(cnf::etcd_datastore& ds, const options& o) {
  return run_threads(o.threads, o.seconds, [&](int t, std::atomic<bool>& stop, long& n) {
    auto r = ds.get(bench_resource(t).key());
    if (!r) die("cnf get: " + r.error().message);
    cnf::resource cur = *r;
    while (!stop) {
      auto u = ds.update(cur);
      if (!u) die("cnf update: " + u.error().message);
      cur = std::move(*u);
      ++n;
    }
  });
}

rate plain_cas_rate(const std::string& host, int port, const options& o) {
  return run_threads(o.threads, o.seconds, [&](int t, std::atomic<bool>& stop, long& n) {
    bench::plain_client c(host, port);
    auto res = bench_resource(t);
    auto key = cnf::etcd_resource_key("/cnf", res.key());
    auto value = stored_value(res);
    auto rev = c.put(key, value);
    while (!stop) {
      rev = c.cas(key, value, rev);
      if (!rev) die("plain cas lost on a key no one else writes");
      ++n;
    }
  });
}

struct latency {
  double p50 = 0, p90 = 0, p99 = 0, mean = 0;
};

latency summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[static_cast<std::size_t>(q * (v.size() - 1))]; };
  return {at(0.5), at(0.9), at(0.99), std::accumulate(v.begin(), v.end(), 0.0) / v.size()};
}

// Waits for the watcher to report revision `rev`.
struct seen_revision {
  std::mutex mu;
  std::condition_variable cv;
  std::int64_t last = 0;
  clock_type::time_point at;
  void report(std::int64_t rev) {
    {
      std::lock_guard lk(mu);
      if (rev > last) {
        last = rev;
        at = clock_type::now();
      }
    }
    cv.notify_all();
  }
  clock_type::time_point wait(std::int64_t rev) {
    std::unique_lock lk(mu);
    if (!cv.wait_for(lk, 30s, [&] { return last >= rev; })) die("watch event for revision " + std::to_string(rev) + " never came");
    return at;
  }
};

// One writer alternates cnf and the peer event by event, so both see the same machine at
// the same moment: write with cnf and wait for cnf's watch callback, then write with the
// plain client and wait for the plain watch stream, and so on.
void paired_watch_latency(cnf::etcd_datastore& ds, const std::string& host, int port, const options& o, std::vector<double>& cnf_ms,
                          std::vector<double>& plain_ms) {
  seen_revision cnf_seen, plain_seen;
  auto r = ds.create(bench_resource(1000));
  if (!r) die("cnf create: " + r.error().message);
  auto h = ds.watch({.kind = "IPAMBlock", .ns = "", .name_prefix = "bench-1000", .revision = r->revision}, [&](const cnf::watch_event& e) {
    if (e.kind == cnf::watch_event::type::modified) cnf_seen.report(std::stoll(e.revision));
  });
  if (!h) die("cnf watch: " + h.error().message);
  cnf::resource cur = *r;

  bench::plain_client c(host, port);
  auto res = bench_resource(1001);
  auto key = cnf::etcd_resource_key("/cnf", res.key());
  auto value = stored_value(res);
  auto rev = c.put(key, value);
  std::string end = key;
  end.back() = static_cast<char>(end.back() + 1);
  bench::plain_watch w(host, port, key, end, rev + 1, [&](std::int64_t x) { plain_seen.report(x); });

  for (int i = 0; i < 2 * (o.events + 10); ++i) {
    bool warm = i >= 20;  // the first writes of each side warm up
    if (i % 2 == 0) {
      if (!o.cnf) continue;
      auto t0 = clock_type::now();
      auto u = ds.update(cur);
      if (!u) die("cnf update: " + u.error().message);
      cur = std::move(*u);
      auto t1 = cnf_seen.wait(std::stoll(cur.revision));
      if (warm) cnf_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    } else {
      if (!o.plain) continue;
      auto t0 = clock_type::now();
      rev = c.cas(key, value, rev);
      if (!rev) die("plain cas failed");
      auto t1 = plain_seen.wait(rev);
      if (warm) plain_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
  }
  h->cancel();
  if (!ds.remove(cur.key())) die("cnf remove failed");
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--seconds") o.seconds = std::stod(next());
    else if (a == "--threads") o.threads = std::stoi(next());
    else if (a == "--events") o.events = std::stoi(next());
    else if (a == "--rounds") o.rounds = std::stoi(next());
    else if (a == "--only") {
      auto w = next();
      o.cnf = w == "cnf";
      o.plain = w == "plain";
      if (!o.cnf && !o.plain) die("--only takes cnf or plain");
    }
    else die("unknown argument " + a + " (--seconds S --threads T --events N --rounds R)");
  }
  if (auto why = cnf_test::etcd_server::unavailable_reason()) {
    std::printf("skipped: %s\n", why->c_str());
    return 77;
  }
  cnf_test::etcd_server etcd;
  const std::string host = "127.0.0.1";
  const int port = etcd.client_port();
  cnf::etcd_config cfg;
  cfg.endpoints = {etcd.endpoint()};
  auto opened = cnf::etcd_datastore::open(cfg);
  if (!opened) die(opened.error().message);
  auto ds = std::move(*opened);
  for (int t = 0; t < o.threads; ++t)
    if (auto r = ds.create(bench_resource(t)); !r) die(r.error().message);

  std::printf("etcd %s (started by the benchmark, data dir in %s), %u cores\n", etcd.endpoint().c_str(), etcd.dir().c_str(),
              std::thread::hardware_concurrency());
  std::printf("CAS updates: %d threads, %.1f s per round, %d rounds alternating; watch latency: %d sequential writes per round\n\n",
              o.threads, o.seconds, o.rounds, o.events);

  std::vector<rate> cnf_rates, plain_rates;
  std::vector<double> cnf_ms, plain_ms;
  for (int round = 0; round < o.rounds; ++round) {
    // Alternate which goes first so neither always gets the warmer store.
    bool cnf_first = round % 2 == 0;
    for (int k = 0; k < 2; ++k) {
      if ((k == 0) == cnf_first) cnf_rates.push_back(o.cnf ? cnf_cas_rate(ds, o) : rate{1, 1});
      else plain_rates.push_back(o.plain ? plain_cas_rate(host, port, o) : rate{1, 1});
    }
    auto n0 = cnf_ms.size(), m0 = plain_ms.size();
    paired_watch_latency(ds, host, port, o, cnf_ms, plain_ms);
    auto p50 = [](std::vector<double> v) { return v.empty() ? 0.0 : summarize(std::move(v)).p50; };
    std::printf("round %d: CAS/s cnf %.0f plain %.0f | watch p50 ms cnf %.2f plain %.2f\n", round + 1, cnf_rates.back().per_second,
                plain_rates.back().per_second, p50({cnf_ms.begin() + static_cast<long>(n0), cnf_ms.end()}),
                p50({plain_ms.begin() + static_cast<long>(m0), plain_ms.end()}));
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  auto med_rate = [&](const std::vector<rate>& v, double rate::*f) {
    std::vector<double> x;
    for (auto& r : v) x.push_back(r.*f);
    return median(x);
  };
  double cr = med_rate(cnf_rates, &rate::per_second), pr = med_rate(plain_rates, &rate::per_second);
  double cc = med_rate(cnf_rates, &rate::cpu_us_per_op), pc = med_rate(plain_rates, &rate::cpu_us_per_op);
  std::printf("\n%-34s %12s %12s %8s\n", "", "cnf", "plain Beast", "ratio");
  std::printf("%-34s %12.0f %12.0f %7.2fx\n", "CAS updates/s (median of rounds)", cr, pr, cr / pr);
  std::printf("%-34s %12.1f %12.1f %7.2fx\n", "client CPU per CAS update (us)", cc, pc, pc / cc);
  if (!cnf_ms.empty() && !plain_ms.empty()) {
    auto cl = summarize(cnf_ms), pl = summarize(plain_ms);
    std::printf("watch latency over %zu + %zu paired events:\n", cnf_ms.size(), plain_ms.size());
    for (auto [name, f] : {std::pair{"  p50 (ms)", &latency::p50}, std::pair{"  p90 (ms)", &latency::p90}, std::pair{"  p99 (ms)", &latency::p99},
                           std::pair{"  mean (ms)", &latency::mean}})
      std::printf("%-34s %12.2f %12.2f %7.2fx\n", name, cl.*f, pl.*f, pl.*f / cl.*f);
  }
  std::printf("(ratio: cnf relative to the plain client; >= 0.9 is the target; for latency it is plain/cnf)\n");
  return 0;
}
