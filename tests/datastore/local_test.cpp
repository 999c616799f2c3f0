// The `local` datastore: the shared conformance suite (statically linked, and loaded as a
// plugin through cnf::plugin_loader with watch delivery on an executor), then what only a
// file-backed store shared by processes must get right: many processes doing CAS on one
// resource, SIGKILL in the middle of writes, file modes, hostile names, corrupt content,
// replay after a reboot, a writer that died between commit and publish, settings.
#include "conformance.hpp"
#include "format.hpp"  // white-box: on-disk record format (plugins/datastore-local/src)

#include <cnf/loader.hpp>
#include <cnf/plugins/local.hpp>
#include <cnf/settings.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using cnf_test::conformance::res;
using cnf_test::conformance::lopt;
using cnf_test::conformance::wopt;
using cnf_test::conformance::spec_int;
using T = cnf::watch_event::type;

namespace {

// A directory under /tmp removed on every way out of the test.
struct temp_dir {
  std::string path;
  temp_dir() {
    char t[] = "/tmp/cnf-local-test-XXXXXX";
    char* p = ::mkdtemp(t);
    REQUIRE(p != nullptr);
    path = p;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  std::string sub(const std::string& name) const { return path + "/" + name; }
};

// An executor with two worker threads, like a host's io_context run by two threads.
class pool_executor final : public cnf::executor {
 public:
  pool_executor() {
    for (int i = 0; i < 2; ++i) workers_.emplace_back([this] { run(); });
  }
  ~pool_executor() override {
    {
      std::lock_guard l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  void post(std::function<void()> f) override {
    {
      std::lock_guard l(mu_);
      q_.push_back(std::move(f));
    }
    cv_.notify_one();
  }
  timer_id post_after(std::chrono::milliseconds d, std::function<void()> f) override {
    std::this_thread::sleep_for(d);
    post(std::move(f));
    return 0;  // already posted: nothing left to cancel
  }
  bool cancel(timer_id) override { return false; }

 private:
  void run() {
    for (;;) {
      std::function<void()> f;
      {
        std::unique_lock l(mu_);
        cv_.wait(l, [&] { return stop_ || !q_.empty(); });
        if (q_.empty()) return;
        f = std::move(q_.front());
        q_.pop_front();
      }
      f();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> q_;
  std::vector<std::thread> workers_;
  bool stop_ = false;
};

cnf::local_datastore_options options(const std::string& dir, bool fsync = true) {
  cnf::local_datastore_options o;
  o.dir = dir;
  o.fsync = fsync;
  return o;
}

cnf::local_datastore open_local(const std::string& dir, bool fsync = true) {
  auto ds = cnf::local_datastore::open(options(dir, fsync));
  INFO(dir);
  if (!ds) FAIL(ds.error().message);
  return std::move(*ds);
}

// Rolls the log of the store in `dir` until no retained segment reaches back to `rev`:
// writes through a second handle that keeps tiny segments and only one of them.
void roll_log_past(const std::string& dir, const std::string& rev) {
  auto o = options(dir, false);
  o.log_segment_bytes = 4096;
  o.log_segments_kept = 1;
  auto ds = cnf::local_datastore::open(o).value();
  std::uint64_t target = std::stoull(rev);
  std::string pad(1500, 'x');
  for (int i = 0; i < 1000; ++i) {
    std::uint64_t oldest = UINT64_MAX;
    for (auto& e : fs::directory_iterator(dir + "/v1/log"))
      if (auto v = cnf::detail::local::parse_segment_name(e.path().filename().string())) oldest = std::min(oldest, *v);
    if (oldest != UINT64_MAX && oldest > target + 1) return;
    auto r = ds.get({"Scratch", "", "roll"});
    if (!r) REQUIRE(ds.create(res("Scratch", "roll", "{\"pad\":\"" + pad + "\"}")));
    else REQUIRE(ds.update(*r));
  }
  FAIL("the log of " << dir << " did not roll past revision " << rev);
}

cnf::any_datastore load_plugin(const std::string& dir, cnf::executor* exec, bool fsync = true) {
  cnf::plugin_loader loader({CNF_TEST_PLUGIN_DIR});
  cnf::plugin_context ctx;
  ctx.exec = exec;
  std::string text = "[datastore]\nplugin = \"local\"\ndir = \"" + dir + "\"\nfsync = " + (fsync ? "true" : "false") + "\n";
  auto ds = loader.make<cnf::part::datastore>("local", ctx, {text, "test.toml", "datastore"});
  if (!ds) FAIL(ds.error().message);
  return std::move(*ds);
}

// Every resource file under <dir>/v1/data parses and sits where its key says.
std::size_t check_all_files(const std::string& dir) {
  std::size_t n = 0;
  for (auto& e : fs::recursive_directory_iterator(dir + "/v1/data")) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path());
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    bool damaged = false;
    auto r = cnf::detail::local::decode_resource_file(text, e.path().string(), damaged);
    INFO(e.path() << ": " << (r ? std::string() : r.error().message));
    REQUIRE(r);
    CHECK(!damaged);
    auto rel = fs::relative(e.path(), dir + "/v1/data").string();
    CHECK(rel == cnf::detail::local::resource_path(r->key()));
    ++n;
  }
  return n;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

cnf_test::datastore_backend local_backend(temp_dir& root, std::function<cnf::any_datastore(const std::string&)> open,
                                          std::string name) {
  auto counter = std::make_shared<int>(0);
  cnf_test::datastore_backend b;
  b.name = std::move(name);
  b.make_fresh = [&root, counter, open] { return open(root.sub("store-" + std::to_string(++*counter))); };
  b.open_peer = [open](const cnf::any_datastore& ds) { return open(ds.status().value().endpoint); };
  b.forget_history = [](const cnf::any_datastore& ds, const std::string& rev) { roll_log_past(ds.status().value().endpoint, rev); };
  return b;
}

// Increments spec.value of `key` once, retrying on conflict. Returns the value written.
cnf::result<std::int64_t> increment(const cnf::local_datastore& ds, const cnf::resource_key& key) {
  for (;;) {
    auto cur = ds.get(key);
    if (!cur) return cur.error();
    auto v = spec_int(*cur, "value") + 1;
    cur->spec = "{\"value\":" + std::to_string(v) + "}";
    auto u = ds.update(*cur);
    if (u) return v;
    if (u.error().code != cnf::errc::conflict) return u.error();
  }
}

}  // namespace

static_assert(cnf::check_datastore<cnf::local_datastore>());

TEST_CASE("local datastore (static library): conformance", "[local][conformance]") {
  temp_dir root;
  auto b = local_backend(root, [](const std::string& dir) { return cnf::any_datastore(open_local(dir)); }, "local (static)");
  cnf_test::datastore_conformance(b);
}

TEST_CASE("local datastore (plugin, executor delivery): conformance", "[local][conformance][plugin]") {
  temp_dir root;
  pool_executor pool;
  auto b = local_backend(root, [&pool](const std::string& dir) { return load_plugin(dir, &pool); }, "local (plugin)");
  cnf_test::datastore_conformance(b);
}

TEST_CASE("local datastore: many processes doing CAS increments on one resource", "[local][processes]") {
  temp_dir root;
  auto dir = root.sub("store");
  const cnf::resource_key key{"IPAMBlock", "", "counter"};
  {
    auto ds = open_local(dir);
    REQUIRE(ds.create(res(key.kind, key.name, R"({"value":0})")));
  }
  constexpr int procs = 50, each = 6;  // "50+ CNI processes at once"
  std::vector<pid_t> kids;
  for (int p = 0; p < procs; ++p) {
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      // Child: its own handle, its own share of increments; the exit code says how it went.
      auto ds = cnf::local_datastore::open(options(dir));
      if (!ds) ::_exit(2);
      for (int i = 0; i < each; ++i)
        if (!increment(*ds, key)) ::_exit(3);
      ::_exit(0);
    }
    kids.push_back(pid);
  }
  int failed = 0;
  for (auto pid : kids) {
    int st = 0;
    REQUIRE(::waitpid(pid, &st, 0) == pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) ++failed;
  }
  CHECK(failed == 0);
  auto ds = open_local(dir);
  auto final_res = ds.get(key).value();
  CHECK(spec_int(final_res, "value") == procs * each);
  // Every increment is one record: the log holds exactly the creation plus the updates.
  CHECK(final_res.revision == std::to_string(1 + procs * each));
  CHECK(check_all_files(dir) == 1);
}

TEST_CASE("local datastore: SIGKILL in the middle of writes loses no acknowledged write", "[local][processes][kill]") {
  temp_dir root;
  auto dir = root.sub("store");
  const cnf::resource_key key{"IPAMBlock", "", "counter"};
  auto small = [&](bool fsync) {
    auto o = options(dir, fsync);
    o.log_segment_bytes = 16384;  // rotate often, so kills also land in rotations
    o.log_segments_kept = 100000;
    return o;
  };
  auto parent = cnf::local_datastore::open(small(true)).value();  // stays open across the kills
  REQUIRE(parent.create(res(key.kind, key.name, R"({"value":0})")));
  std::int64_t acked_total = 0;  // the counter's value as of the last acknowledged write
  std::int64_t committed_unacked = 0;
  std::mt19937 rng(12345);
  const int rounds = 24;
  for (int round = 0; round < rounds; ++round) {
    bool fsync = round % 2 == 0;
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(fds[0]);
      auto ds = cnf::local_datastore::open(small(fsync));
      if (!ds) ::_exit(2);
      for (std::uint64_t i = 0;; ++i) {
        auto v = increment(*ds, key);
        if (!v) ::_exit(3);
        // Acknowledge the value only after update() returned.
        std::int64_t x = *v;
        if (::write(fds[1], &x, sizeof x) != sizeof x) ::_exit(4);
        // Churn other resources too: creates, updates and removes of handles.
        auto h = "handle-" + std::to_string(i % 13);
        auto cur = ds->get({"IPAMHandle", "", h});
        if (cur) (void)ds->remove(cur->key(), cur->revision);
        else (void)ds->create(res("IPAMHandle", h, "{\"block\":\"10.0.0.0/26\",\"i\":" + std::to_string(i) + "}"));
      }
    }
    ::close(fds[1]);
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(20, 120)(rng)));
    ::kill(pid, SIGKILL);
    int st = 0;
    REQUIRE(::waitpid(pid, &st, 0) == pid);
    REQUIRE(WIFSIGNALED(st));
    std::int64_t x = 0, last = acked_total;
    std::int64_t count = 0;
    while (::read(fds[0], &x, sizeof x) == sizeof x) {
      CHECK(x == last + 1);  // acknowledged values are consecutive
      last = x;
      ++count;
    }
    ::close(fds[0]);
    // The store holds every acknowledged write, plus at most the one in flight.
    auto now = spec_int(parent.get(key).value(), "value");
    INFO("round " << round << " (fsync " << fsync << "): acked " << count << ", last acked " << last << ", store " << now);
    REQUIRE((now == last || now == last + 1));
    committed_unacked += now - last;
    acked_total = now;
  }
  // A fresh handle agrees, and every file parses.
  auto fresh = open_local(dir);
  CHECK(spec_int(fresh.get(key).value(), "value") == acked_total);
  check_all_files(dir);
  auto all = fresh.list(lopt("")).value();
  CHECK(all.items.size() >= 1);
  // The log replays as consecutive counter values from 1 to the end.
  cnf_test::conformance::collector c;
  auto h = fresh.watch(wopt("IPAMBlock", "0"), c.callback()).value();
  REQUIRE(c.wait([&](auto& ev) { return cnf_test::conformance::collector::count_changes(ev) >= static_cast<std::size_t>(acked_total) + 1; }, 30s));
  std::int64_t expect = 0;
  for (auto& e : c.changes()) {
    CHECK(spec_int(e.object, "value") == expect);
    ++expect;
  }
  CHECK(expect == acked_total + 1);
  INFO("writes committed but not acknowledged when killed: " << committed_unacked);
  CHECK(acked_total > rounds);  // the children got real work done
  for (auto& e : c.snapshot()) CHECK(e.kind != T::error);
}

TEST_CASE("local datastore: files 0600, directories 0700, whatever the umask", "[local][files]") {
  temp_dir root;
  auto dir = root.sub("a/b/store");  // missing parents are created too
  mode_t old = ::umask(0);
  {
    auto o = options(dir);
    o.log_segment_bytes = 4096;
    auto ds = cnf::local_datastore::open(o).value();
    for (int i = 0; i < 30; ++i) REQUIRE(ds.create(res("Node", "n" + std::to_string(i), "{\"pad\":\"" + std::string(300, 'p') + "\"}")));
    REQUIRE(ds.remove({"Node", "", "n0"}));
  }
  ::umask(old);
  std::size_t files = 0, dirs = 0;
  struct stat st {};
  REQUIRE(::stat(dir.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0700);
  for (auto& e : fs::recursive_directory_iterator(dir)) {
    REQUIRE(::lstat(e.path().c_str(), &st) == 0);
    INFO(e.path());
    if (S_ISDIR(st.st_mode)) {
      CHECK((st.st_mode & 07777) == 0700);
      ++dirs;
    } else {
      CHECK(S_ISREG(st.st_mode));
      CHECK((st.st_mode & 07777) == 0600);
      ++files;
    }
  }
  CHECK(files >= 29 + 3);  // resources, head, checkpoint, log segments
  CHECK(dirs >= 5);
  std::size_t segments = 0;
  for (auto& e : fs::directory_iterator(dir + "/v1/log")) segments += e.path().extension() == ".log";
  CHECK(segments >= 2);
}

TEST_CASE("local datastore: names with '/', '..' and other bytes stay inside the directory", "[local][names]") {
  temp_dir root;
  auto dir = root.sub("store");
  auto ds = open_local(dir, false);
  std::vector<cnf::resource_key> keys;
  std::vector<std::string> names = {"../../../etc/passwd", "a/b/c", "..", ".", ".hidden", "%2F", "%", "_", "~", "x~0123456789abcdef",
                                    "with space", "tab\there", "new\nline", "\xc3\xbc\xc3\xb1\xc3\xae", std::string("nul\0byte", 8),
                                    std::string(300, '/'), "long-" + std::string(400, 'a'), "long-" + std::string(400, 'a') + "b"};
  for (auto& n : names) keys.push_back({"IPPool", "", n});
  keys.push_back({"../Kind", "../ns", "../name"});
  keys.push_back({"/", "/", "/"});
  keys.push_back({"IPPool", "_", "_"});  // a namespace called "_" is not the cluster scope
  keys.push_back({".", "..", "..."});
  std::set<std::tuple<std::string, std::string, std::string>> want;
  for (auto& k : keys) {
    INFO("key " << k.to_string());
    auto c = ds.create(res(k.kind, k.name, "{\"name\":" + boost::json::serialize(boost::json::value(k.name)) + "}", k.ns));
    REQUIRE(c);
    want.insert({k.kind, k.ns, k.name});
  }
  for (auto& k : keys) {
    INFO("key " << k.to_string());
    auto g = ds.get(k);
    REQUIRE(g);
    CHECK(g->key() == k);
    CHECK(boost::json::parse(g->spec).at("name").as_string() == k.name);
  }
  // A second handle lists them back exactly, including through pages.
  cnf::any_datastore other = open_local(dir, false);
  auto all = other.list_all(lopt("", std::nullopt, "", 3)).value();
  std::set<std::tuple<std::string, std::string, std::string>> got;
  for (auto& r : all.items) got.insert({r.kind, r.ns, r.name});
  CHECK(got == want);
  CHECK(other.list(lopt("IPPool", std::string())).value().items.size() == names.size());
  CHECK(other.list(lopt("IPPool", "_")).value().items.size() == 1);
  CHECK(other.list(lopt("IPPool", std::string(), "long-")).value().items.size() == 2);
  CHECK(other.list(lopt("IPPool", std::string(), "long-" + std::string(400, 'a') + "b")).value().items.size() == 1);
  // Nothing was created next to the store, and every file sits at data/<kind>/<ns>/<file>.
  std::size_t outside = 0;
  for (auto& e : fs::directory_iterator(root.path)) outside += e.path().filename() != "store";
  CHECK(outside == 0);
  for (auto& e : fs::recursive_directory_iterator(dir + "/v1/data")) {
    auto rel = fs::relative(e.path(), dir + "/v1/data");
    auto depth = std::distance(rel.begin(), rel.end());
    INFO(rel);
    if (e.is_regular_file()) CHECK(depth == 3);
    else CHECK(depth <= 2);
    for (auto& part : rel) {
      CHECK(part != "..");
      CHECK(part != ".");
      CHECK(part.string().size() <= 255);
    }
  }
  CHECK(check_all_files(dir) == keys.size());
  for (auto& k : keys) {
    INFO("key " << k.to_string());
    REQUIRE(ds.remove(k));
    CHECK(ds.get(k).error().code == cnf::errc::not_found);
  }
  CHECK(check_all_files(dir) == 0);
}

TEST_CASE("local datastore: corrupt content is errc::invalid naming the file, never a crash", "[local][corrupt]") {
  temp_dir root;
  auto dir = root.sub("store");
  auto ds = open_local(dir);
  REQUIRE(ds.create(res("IPPool", "good", R"({"cidr":"10.0.0.0/16"})")));
  REQUIRE(ds.create(res("IPPool", "bad", R"({"cidr":"10.1.0.0/16"})")));
  auto path = dir + "/v1/data/IPPool/_/bad.json";
  REQUIRE(fs::exists(path));

  auto expect_invalid = [&](const std::string& content, const std::string& what) {
    INFO(what);
    write_file(path, content);
    auto fresh = open_local(dir);
    auto g = fresh.get({"IPPool", "", "bad"});
    REQUIRE(!g);
    CHECK(g.error().code == cnf::errc::invalid);
    CHECK(g.error().message.find(path) != std::string::npos);
    auto l = fresh.list(lopt("IPPool"));
    REQUIRE(!l);
    CHECK(l.error().code == cnf::errc::invalid);
    CHECK(l.error().message.find(path) != std::string::npos);
    // A write that must read it fails the same way and changes nothing.
    auto u = fresh.update(res("IPPool", "bad"));
    REQUIRE(!u);
    CHECK(u.error().code == cnf::errc::invalid);
    CHECK(read_file(path) == content);
    // Other resources are fine.
    CHECK(fresh.get({"IPPool", "", "good"}));
  };
  // Damage: cut short, altered, not JSON at all.
  auto good = read_file(path);
  CHECK(good.find("\"checksum\":\"crc32:") != std::string::npos);
  expect_invalid(good.substr(0, good.size() / 2), "cut short");
  auto altered = good;
  altered[altered.find("10.1")] = '9';
  expect_invalid(altered, "one byte changed");
  expect_invalid(good + good, "written twice");
  expect_invalid("{not json", "not JSON");
  expect_invalid("", "empty");
  expect_invalid(std::string("\0\0\0\xff", 4), "binary");
  // Intact files (right checksum) whose content is wrong.
  using cnf::detail::local::encode_resource_file;
  expect_invalid(encode_resource_file("[1,2,3]"), "not an object");
  expect_invalid(encode_resource_file(R"({"kind":"IPPool","namespace":"","name":"bad","revision":"x","labels":{},"spec":{}})"), "bad revision");
  expect_invalid(encode_resource_file(R"({"kind":"IPPool","namespace":"","name":"other","revision":"2","labels":{},"spec":{}})"), "wrong name");
  expect_invalid(encode_resource_file(R"({"kind":"IPPool","namespace":"","name":"bad","revision":"2","labels":{"a":1},"spec":{}})"), "bad label");
  expect_invalid(encode_resource_file(R"({"kind":"IPPool","namespace":"","name":"bad","revision":"2","labels":{},"spec":"x"})"), "spec not an object");

  // A damaged log record: a watch that reads it reports an error naming the segment.
  auto seg = dir + "/v1/log/" + cnf::detail::local::segment_name(1);
  auto log = read_file(seg);
  REQUIRE(log.size() > cnf::detail::local::segment_header_size + 60);
  log[cnf::detail::local::segment_header_size + 50] ^= 0x55;  // inside the first record
  write_file(seg, log);
  auto fresh = open_local(dir);
  cnf_test::conformance::collector c;
  auto h = fresh.watch(wopt("IPPool", "0"), c.callback()).value();
  REQUIRE(c.wait([](auto& ev) { return cnf_test::conformance::count_kind(ev, T::error) >= 1; }, 10s));
  auto ev = c.snapshot();
  auto err = std::find_if(ev.begin(), ev.end(), [](auto& e) { return e.kind == T::error; });
  CHECK(err->err.code == cnf::errc::invalid);
  CHECK(err->err.message.find(seg) != std::string::npos);
  CHECK(cnf_test::conformance::count_kind(ev, T::added) == 0);

  // Bad arguments are errc::invalid too.
  CHECK(fresh.update([] { auto r = res("IPPool", "good", "{"); r.revision = "1"; return r; }()).error().code == cnf::errc::invalid);
  CHECK(fresh.create(res("IPPool", "arr", "[1]")).error().code == cnf::errc::invalid);
  auto badrev = res("IPPool", "good");
  badrev.revision = "abc";
  CHECK(fresh.update(badrev).error().code == cnf::errc::invalid);
  CHECK(fresh.watch(wopt("IPPool", "12x"), [](auto&) {}).error().code == cnf::errc::invalid);
  CHECK(fresh.list(lopt("IPPool", std::nullopt, "", 1, "garbage")).error().code == cnf::errc::invalid);
}

TEST_CASE("local datastore: after a reboot the log puts back files the page cache lost", "[local][recovery]") {
  temp_dir root;
  auto dir = root.sub("store");
  std::string rev_b;
  {
    auto ds = open_local(dir);
    REQUIRE(ds.create(res("Node", "a", R"({"v":1})")));
    rev_b = ds.create(res("Node", "b", R"({"v":2})")).value().revision;
    REQUIRE(ds.create(res("Node", "c", R"({"v":3})")));
    REQUIRE(ds.remove({"Node", "", "c"}));
    auto a = ds.get({"Node", "", "a"}).value();
    a.spec = R"({"v":10})";
    REQUIRE(ds.update(a));
  }
  // What a crash of the machine can leave: a file gone, a file empty, a deleted file back,
  // and a head written by another boot (here: garbage).
  fs::remove(dir + "/v1/data/Node/_/a.json");
  write_file(dir + "/v1/data/Node/_/b.json", "");
  write_file(dir + "/v1/data/Node/_/c.json", R"({"kind":"Node","namespace":"","name":"c","revision":"3","labels":{},"spec":{"v":3}})");
  write_file(dir + "/v1/head", std::string(128, '\0'));
  auto ds = open_local(dir);
  CHECK(spec_int(ds.get({"Node", "", "a"}).value(), "v") == 10);
  auto b = ds.get({"Node", "", "b"}).value();
  CHECK(spec_int(b, "v") == 2);
  CHECK(b.revision == rev_b);
  CHECK(ds.get({"Node", "", "c"}).error().code == cnf::errc::not_found);
  CHECK(ds.status().value().revision == "5");
  CHECK(check_all_files(dir) == 2);
  // And it goes on from there.
  CHECK(ds.create(res("Node", "d")).value().revision == "6");
  // A torn record at the end of the log (a writer killed inside write()) is cut off by the
  // next writer and never seen by readers.
  auto seg = dir + "/v1/log/" + cnf::detail::local::segment_name(1);
  cnf::detail::local::record torn;
  torn.rev = 7;
  torn.what = cnf::detail::local::op::create;
  torn.pid = 1;
  torn.key = {"Node", "", "torn"};
  torn.body = R"({"kind":"Node","namespace":"","name":"torn","revision":"7","labels":{},"spec":{}})";
  auto bytes = cnf::detail::local::encode_record(torn);
  {
    std::ofstream out(seg, std::ios::binary | std::ios::app);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size() - 10));
  }
  auto reader = open_local(dir);
  CHECK(reader.get({"Node", "", "torn"}).error().code == cnf::errc::not_found);
  CHECK(reader.status().value().revision == "6");
  auto e = reader.create(res("Node", "e")).value();
  CHECK(e.revision == "7");
  CHECK(reader.get({"Node", "", "torn"}).error().code == cnf::errc::not_found);
  CHECK(ds.get({"Node", "", "e"}).value().revision == "7");
}

TEST_CASE("local datastore: a record whose writer died before publishing becomes visible", "[local][recovery]") {
  temp_dir root;
  auto dir = root.sub("store");
  auto ds = open_local(dir);
  auto a = ds.create(res("Node", "a", R"({"v":1})")).value();
  // A writer that appended its record and died before fsync/publish: a process that has
  // exited, so its pid is free.
  pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  REQUIRE(::waitpid(dead, nullptr, 0) == dead);
  cnf::detail::local::record r;
  r.rev = 2;
  r.what = cnf::detail::local::op::update;
  r.pid = static_cast<std::uint32_t>(dead);
  r.key = {"Node", "", "a"};
  r.body = R"({"kind":"Node","namespace":"","name":"a","revision":"2","labels":{},"spec":{"v":2}})";
  auto bytes = cnf::detail::local::encode_record(r);
  {
    std::ofstream out(dir + "/v1/log/" + cnf::detail::local::segment_name(1), std::ios::binary | std::ios::app);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  // A reader notices the writer is gone and publishes the record on its behalf.
  auto reader = open_local(dir);
  auto g = reader.get({"Node", "", "a"}).value();
  CHECK(g.revision == "2");
  CHECK(spec_int(g, "v") == 2);
  CHECK(spec_int(open_local(dir).get({"Node", "", "a"}).value(), "v") == 2);
  CHECK(read_file(dir + "/v1/data/Node/_/a.json").find("\"v\":2") != std::string::npos);
  // The first handle's stale revision loses.
  auto stale = a;
  stale.spec = R"({"v":99})";
  CHECK(ds.update(stale).error().code == cnf::errc::conflict);
  CHECK(ds.update(g));
}

TEST_CASE("local datastore: deferred sync: own writes visible at once, others' at sync(), one flush", "[local][deferred]") {
  temp_dir root;
  auto dir = root.sub("store");
  auto w = open_local(dir);
  auto other = open_local(dir);  // another handle: the same as another process, for reads
  cnf::any_datastore any = w;    // through the type-erased wrapper, as a CNI call uses it
  any.defer_sync(true);
  auto a = any.create(res("Node", "a", R"({"v":1})")).value();
  auto b = any.create(res("Node", "b", R"({"v":1})")).value();
  a.spec = R"({"v":2})";
  a = any.update(a).value();
  // This handle reads its own writes...
  CHECK(spec_int(any.get({"Node", "", "a"}).value(), "v") == 2);
  CHECK(any.list(lopt("Node")).value().items.size() == 2);
  // ...another reader sees none of them before sync(): not durable yet.
  CHECK(other.get({"Node", "", "a"}).error().code == cnf::errc::not_found);
  CHECK(other.list(lopt("Node")).value().items.empty());
  CHECK_FALSE(fs::exists(dir + "/v1/data/Node/_/a.json"));
  // A writer of another handle is still decided against them (compare-and-swap).
  CHECK(other.create(res("Node", "b", R"({"v":9})")).error().code == cnf::errc::already_exists);
  REQUIRE(any.sync());
  CHECK(spec_int(other.get({"Node", "", "a"}).value(), "v") == 2);
  CHECK(other.get({"Node", "", "b"}).value().revision == b.revision);
  CHECK(read_file(dir + "/v1/data/Node/_/a.json").find("\"v\":2") != std::string::npos);
  CHECK(any.sync());  // nothing pending: a no-op
  // Off again: a write is durable and visible when it returns.
  any.defer_sync(false);
  REQUIRE(any.remove({"Node", "", "b"}));
  CHECK(other.get({"Node", "", "b"}).error().code == cnf::errc::not_found);
}

// An executor whose posted work runs only when the test says so (the agent runs it
// between two calls).
class manual_executor final : public cnf::executor {
 public:
  void post(std::function<void()> f) override { q_.push_back(std::move(f)); }
  timer_id post_after(std::chrono::milliseconds, std::function<void()> f) override {
    q_.push_back(std::move(f));
    return 0;  // runs with the posted work; not cancellable
  }
  bool cancel(timer_id) override { return false; }
  std::size_t run() {
    auto q = std::move(q_);
    q_.clear();
    for (auto& f : q) f();
    return q.size();
  }

 private:
  std::vector<std::function<void()>> q_;
};

TEST_CASE("local datastore: deferred sync with an executor: visible when sync() returns, files written by the posted work",
          "[local][deferred][executor]") {
  temp_dir root;
  auto dir = root.sub("store");
  manual_executor exec;
  auto o = options(dir);
  o.exec = &exec;
  auto w = cnf::local_datastore::open(o).value();
  auto other = open_local(dir);
  w.defer_sync(true);
  auto a = w.create(res("Node", "a", R"({"v":1})")).value();
  CHECK(other.get({"Node", "", "a"}).error().code == cnf::errc::not_found);  // not durable yet
  REQUIRE(w.sync());
  // Durable and visible to every reader (from the log) before its file is written; the
  // reader leaves the file to its live writer...
  CHECK(spec_int(other.get({"Node", "", "a"}).value(), "v") == 1);
  CHECK(other.list(lopt("Node")).value().items.size() == 1);
  CHECK_FALSE(fs::exists(dir + "/v1/data/Node/_/a.json"));
  // ...whose posted work writes it.
  CHECK(exec.run() == 1);
  CHECK(read_file(dir + "/v1/data/Node/_/a.json").find("\"v\":1") != std::string::npos);
  CHECK(exec.run() == 0);
  // Another round; the handle closes before its posted work runs: the record stays
  // visible, and the next write's publication writes the file.
  a.spec = R"({"v":2})";
  a = w.update(a).value();
  REQUIRE(w.sync());
  CHECK(spec_int(other.get({"Node", "", "a"}).value(), "v") == 2);
  { auto gone = std::move(w); }
  CHECK(exec.run() == 1);  // a no-op now
  CHECK(read_file(dir + "/v1/data/Node/_/a.json").find("\"v\":1") != std::string::npos);
  CHECK(spec_int(open_local(dir).get({"Node", "", "a"}).value(), "v") == 2);
  REQUIRE(other.create(res("Node", "b", "{}")));
  CHECK(read_file(dir + "/v1/data/Node/_/a.json").find("\"v\":2") != std::string::npos);
  CHECK(fs::exists(dir + "/v1/data/Node/_/b.json"));
}

TEST_CASE("local datastore: deferred writes of a process that dies before sync() are not lost", "[local][deferred][processes]") {
  temp_dir root;
  auto dir = root.sub("store");
  (void)open_local(dir).create(res("Node", "seed", "{}")).value();
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    auto ds = cnf::local_datastore::open(options(dir, true));
    if (!ds) ::_exit(2);
    ds->defer_sync(true);
    bool ok = ds->create(res("Node", "x", R"({"v":1})")) && ds->create(res("Node", "y", R"({"v":1})"));
    ::kill(::getpid(), SIGKILL);  // no sync(), no destructor
    ::_exit(ok ? 0 : 3);
  }
  int st = 0;
  REQUIRE(::waitpid(child, &st, 0) == child);
  REQUIRE(WIFSIGNALED(st));
  // Committed to the log in order: a reader publishes them for the dead writer.
  auto r = open_local(dir);
  CHECK(spec_int(r.get({"Node", "", "x"}).value(), "v") == 1);
  CHECK(spec_int(r.get({"Node", "", "y"}).value(), "v") == 1);
  CHECK(r.list(lopt("Node")).value().items.size() == 3);
}

TEST_CASE("local datastore: new resources take their file from the spare pool, removed ones give it back", "[local][spare]") {
  temp_dir root;
  auto dir = root.sub("store");
  auto spare_inodes = [&] {
    std::set<ino_t> out;
    for (auto& e : fs::directory_iterator(dir + "/v1/spare")) {
      struct stat st {};
      REQUIRE(::stat(e.path().c_str(), &st) == 0);
      CHECK((st.st_mode & 0777) == 0600);
      out.insert(st.st_ino);
    }
    return out;
  };
  auto inode_of = [](const std::string& path) {
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    return st.st_ino;
  };
  std::set<ino_t> pool;
  {
    auto o = options(dir);
    o.spare_files = 4;
    auto ds = cnf::local_datastore::open(o);
    REQUIRE(ds);
    // The handle tops the pool up on a thread (stopped and joined when it goes).
    for (int i = 0; i < 400 && spare_inodes().size() < 4; ++i) std::this_thread::sleep_for(5ms);
  }
  pool = spare_inodes();
  REQUIRE(pool.size() == 4);
  auto o = options(dir);
  o.spare_files = 4;
  auto ds = cnf::local_datastore::open(o).value();
  auto a = ds.create(res("Node", "a", R"({"v":1})")).value();
  const auto file = dir + "/v1/data/Node/_/a.json";
  auto ino = inode_of(file);
  CHECK(pool.count(ino) == 1);  // an inode of the pool, not a new file
  CHECK(spare_inodes().count(ino) == 0);
  CHECK(spec_int(open_local(dir).get({"Node", "", "a"}).value(), "v") == 1);
  CHECK(read_file(file).find("\"v\":1") != std::string::npos);
  REQUIRE(ds.remove({"Node", "", "a"}, a.revision));
  CHECK_FALSE(fs::exists(file));
  CHECK(spare_inodes().count(ino) == 1);  // back in the pool
  CHECK(open_local(dir).get({"Node", "", "a"}).error().code == cnf::errc::not_found);
  // A pool emptied by others: new files are created as usual.
  for (auto& e : fs::directory_iterator(dir + "/v1/spare")) fs::remove(e.path());
  auto b = ds.create(res("Node", "b", R"({"v":2})"));
  REQUIRE(b);
  CHECK(spec_int(open_local(dir).get({"Node", "", "b"}).value(), "v") == 2);
  // spare_files = 0: no pool at all.
  temp_dir root2;
  auto o2 = options(root2.sub("store"));
  o2.spare_files = 0;
  auto none = cnf::local_datastore::open(o2).value();
  REQUIRE(none.create(res("Node", "c", "{}")));
  REQUIRE(none.remove({"Node", "", "c"}));
  CHECK_FALSE(fs::exists(root2.sub("store") + "/v1/spare"));
}

TEST_CASE("local datastore: settings", "[local][settings]") {
  cnf::plugin_loader loader({CNF_TEST_PLUGIN_DIR});
  auto lp = loader.find(cnf::part::datastore, "local");
  REQUIRE(lp);
  CHECK(lp->info.path.filename() == "cnf-datastore-local.so");
  auto check = [&](const std::string& body) {
    std::string text = "[datastore]\nplugin = \"local\"\n" + body;
    return cnf::plugin_loader::validate(*lp, {text, "profile.toml", "datastore"});
  };
  CHECK(check("dir = \"/var/lib/cnf\"\n"));
  CHECK(check(""));
  CHECK(check("dir = \"/tmp/x\"\nfsync = false\nlog_segment_bytes = 65536\nlog_segments_kept = 2\n"));
  auto rel = check("dir = \"relative/path\"\n");
  REQUIRE(!rel);
  CHECK(rel.error().code == cnf::errc::invalid);
  CHECK(rel.error().message.find("datastore.dir") != std::string::npos);
  CHECK(rel.error().message.find("profile.toml:3") != std::string::npos);
  auto fs_ = check("fsync = \"yes\"\n");
  REQUIRE(!fs_);
  CHECK(fs_.error().message.find("datastore.fsync") != std::string::npos);
  auto seg = check("log_segment_bytes = 10\n");
  REQUIRE(!seg);
  CHECK(seg.error().message.find("log_segment_bytes") != std::string::npos);
  CHECK(check("spare_files = 0\n"));
  auto spare = check("spare_files = -1\n");
  REQUIRE(!spare);
  CHECK(spare.error().message.find("datastore.spare_files") != std::string::npos);
  auto typo = check("fsnyc = false\n");
  REQUIRE(!typo);
  CHECK(typo.error().message.find("did you mean 'fsync'") != std::string::npos);
  // In code: the same rule, and opening a directory that cannot be created fails clearly.
  CHECK(cnf::local_datastore::open(options("relative")).error().code == cnf::errc::invalid);
  auto bad = cnf::local_datastore::open(options("/proc/cnf-cannot-exist"));
  REQUIRE(!bad);
  CHECK(bad.error().code == cnf::errc::io);
  CHECK(bad.error().message.find("/proc/cnf-cannot-exist") != std::string::npos);
}
