#include "store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <system_error>
#include <thread>
#include <tuple>
#include <utility>
#include <unordered_map>

CNF_BEGIN_NAMESPACE
namespace detail::local {

#define CNF_LOCAL_TRY(expr)                  \
  do {                                       \
    auto cnf_local_r_ = (expr);              \
    if (!cnf_local_r_) return cnf_local_r_.error(); \
  } while (0)

void file_descriptor::reset() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

namespace {

using namespace std::chrono_literals;

std::string errno_text(int e) { return std::generic_category().message(e); }

// Reads up to n bytes at off (fewer only at the end of the file).
ssize_t pread_full(int fd, char* p, std::size_t n, std::uint64_t off) {
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = ::pread(fd, p + got, n - got, static_cast<off_t>(off + got));
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  return static_cast<ssize_t>(got);
}

bool pwrite_full(int fd, const char* p, std::size_t n, std::uint64_t off) {
  std::size_t done = 0;
  while (done < n) {
    ssize_t r = ::pwrite(fd, p + done, n - done, static_cast<off_t>(off + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (r == 0) { errno = EIO; return false; }
    done += static_cast<std::size_t>(r);
  }
  return true;
}

bool write_all(int fd, std::string_view s) {
  std::size_t done = 0;
  while (done < s.size()) {
    ssize_t r = ::write(fd, s.data() + done, s.size() - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    done += static_cast<std::size_t>(r);
  }
  return true;
}

// flock that survives EINTR; released on destruction.
class flock_guard {
 public:
  flock_guard(int fd, int op) : fd_(fd) {
    while (::flock(fd_, op) != 0) {
      if (errno != EINTR) throw error_exception(errc::io, "flock: " + errno_text(errno));
    }
  }
  ~flock_guard() { ::flock(fd_, LOCK_UN); }
  flock_guard(const flock_guard&) = delete;
  flock_guard& operator=(const flock_guard&) = delete;

 private:
  int fd_;
};

std::string read_boot_id() {
  std::FILE* f = std::fopen("/proc/sys/kernel/random/boot_id", "re");
  if (!f) return "unknown-boot";
  char buf[64] = {};
  std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  std::string s(buf, n);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s.empty() ? "unknown-boot" : s;
}

bool matches(const resource_key& k, const std::string& kind, const std::optional<std::string>& ns, const std::string& prefix) {
  if (!kind.empty() && k.kind != kind) return false;
  if (ns && k.ns != *ns) return false;
  return k.name.compare(0, prefix.size(), prefix) == 0;
}

using key_tuple = std::tuple<std::string, std::string, std::string>;
key_tuple tuple_of(const resource_key& k) { return {k.kind, k.ns, k.name}; }

std::string hex(std::string_view s) {
  static constexpr char d[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += d[c >> 4];
    out += d[c & 15];
  }
  return out;
}
bool unhex(std::string_view s, std::string& out) {
  if (s.size() % 2) return false;
  auto v = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  out.clear();
  for (std::size_t i = 0; i < s.size(); i += 2) {
    int hi = v(s[i]), lo = v(s[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out += static_cast<char>(hi * 16 + lo);
  }
  return true;
}

// Continue token: "l1:" hex(kind) ":" hex(ns) ":" hex(name) of the last item returned.
std::string make_token(const resource& r) { return "l1:" + hex(r.kind) + ":" + hex(r.ns) + ":" + hex(r.name); }
std::optional<key_tuple> parse_token(std::string_view t) {
  if (t.substr(0, 3) != "l1:") return std::nullopt;
  t.remove_prefix(3);
  auto c1 = t.find(':');
  if (c1 == std::string_view::npos) return std::nullopt;
  auto c2 = t.find(':', c1 + 1);
  if (c2 == std::string_view::npos) return std::nullopt;
  key_tuple k;
  if (!unhex(t.substr(0, c1), std::get<0>(k)) || !unhex(t.substr(c1 + 1, c2 - c1 - 1), std::get<1>(k)) ||
      !unhex(t.substr(c2 + 1), std::get<2>(k)))
    return std::nullopt;
  return k;
}

// Keep at least this many already-published records in the window, so that a list can
// check what changed while it read the files.
constexpr std::size_t window_keep = 1024;
constexpr std::size_t window_keep_bytes = 4u << 20;
// A reader further behind than this skips ahead instead of reading the log.
constexpr std::uint64_t jump_bytes = 1u << 20;

}  // namespace

// ---- scanning the log ----------------------------------------------------------------

result<scan_outcome> scan_segment(int fd, const std::string& path, std::uint64_t seg, std::uint64_t& off,
                                  std::uint64_t& last_rev, std::uint64_t max_rev, std::vector<char>& buf,
                                  const std::function<void(record&&)>& sink) {
  // Start small (a new process usually reads a few records) and grow while reads fill it.
  if (buf.size() < (16u << 10)) buf.resize(16u << 10);
  for (;;) {
    ssize_t n = pread_full(fd, buf.data(), buf.size(), off);
    if (n < 0) return error(errc::io, "read " + path + ": " + errno_text(errno));
    if (n == 0) return scan_outcome{scan_outcome::eof, {}};
    std::size_t have = static_cast<std::size_t>(n), pos = 0;
    bool full = have == buf.size();
    if (full && buf.size() < (1u << 20)) {
      buf.resize(buf.size() * 4);
      continue;
    }
    while (pos < have) {
      record r;
      std::size_t used = 0;
      auto d = decode_record(buf.data() + pos, have - pos, r, used);
      if (d == decoded::incomplete) {
        if (pos == 0 && full && have >= 8) {
          // A record larger than the buffer: grow it and read again.
          std::uint32_t total = 0;
          std::memcpy(&total, buf.data() + 4, 4);
          if (total > buf.size() && total <= max_record_size) {
            buf.resize(total);
            break;
          }
        }
        if (pos == 0 && !full) return scan_outcome{scan_outcome::partial, {}};
        break;
      }
      if (d == decoded::corrupt) {
        off += pos;
        return scan_outcome{scan_outcome::corrupt, path + ": log record at offset " + std::to_string(off) + " is corrupt"};
      }
      if (r.rev != last_rev + 1) {
        off += pos;
        return scan_outcome{scan_outcome::corrupt, path + ": log record at offset " + std::to_string(off) + " has revision " +
                                                       std::to_string(r.rev) + ", expected " + std::to_string(last_rev + 1)};
      }
      if (r.rev > max_rev) {
        off += pos;
        return scan_outcome{scan_outcome::limit, {}};
      }
      r.seg = seg;
      r.end = off + pos + used;
      pos += used;
      last_rev = r.rev;
      sink(std::move(r));
    }
    off += pos;
    if (!full && pos == have) return scan_outcome{scan_outcome::eof, {}};
    if (!full && pos < have && pos > 0) continue;  // re-read the tail from its start
  }
}

// ---- opening ---------------------------------------------------------------------------

store::store(local_datastore_options o) : opt_(std::move(o)) {
  if (!opt_.log) opt_.log = &default_logger();
}

store::~store() {
  stop_refill_ = true;
  if (refill_.joinable()) refill_.join();
}

error store::sys_error(std::string_view what, const std::string& path, int err) const {
  return error(errc::io, "local datastore: " + std::string(what) + " " + path + ": " + errno_text(err));
}

result<std::shared_ptr<store>> store::open(local_datastore_options o) {
  CNF_LOCAL_TRY(check_local_datastore_options(o));
  std::shared_ptr<store> s(new store(std::move(o)));
  CNF_LOCAL_TRY(s->init());
  return s;
}

result<void> store::init() {
  root_ = std::filesystem::path(opt_.dir).lexically_normal().string();
  while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
  v1_ = root_ + "/v1";
  root_fd_ = file_descriptor(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root_fd_ && errno == ENOENT) {
    // Create the directory and any missing parents, 0700.
    std::string cur;
    std::filesystem::path p(root_);
    for (auto& part : p) {
      if (part == "/") { cur = "/"; continue; }
      cur = (cur == "/" ? "/" : cur + "/") + part.string();
      if (::mkdir(cur.c_str(), 0700) != 0 && errno != EEXIST) return sys_error("create directory", cur, errno);
    }
    root_fd_ = file_descriptor(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  }
  if (!root_fd_) return sys_error("open directory", root_, errno);
  auto subdir = [&](int parent, const char* name, const std::string& path, file_descriptor& out) -> result<void> {
    out = file_descriptor(::openat(parent, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
    if (out) return {};
    if (errno != ENOENT) return sys_error("open directory", path, errno);
    if (::mkdirat(parent, name, 0700) != 0 && errno != EEXIST) return sys_error("create directory", path, errno);
    out = file_descriptor(::openat(parent, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
    if (!out) return sys_error("open directory", path, errno);
    return {};
  };
  CNF_LOCAL_TRY(subdir(root_fd_.get(), "v1", v1_, v1_fd_));
  CNF_LOCAL_TRY(subdir(v1_fd_.get(), "data", v1_ + "/data", data_fd_));
  CNF_LOCAL_TRY(subdir(v1_fd_.get(), "log", v1_ + "/log", log_fd_));
  head_fd_ = file_descriptor(::openat(v1_fd_.get(), "head", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!head_fd_) return sys_error("open", v1_ + "/head", errno);
  // A second open file description of the head, for shared (list) locks: flock treats
  // every open file description as its own owner.
  shared_fd_ = file_descriptor(::openat(v1_fd_.get(), "head", O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!shared_fd_) return sys_error("open", v1_ + "/head", errno);
  live_fd_ = file_descriptor(::openat(v1_fd_.get(), "live", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!live_fd_) return sys_error("open", v1_ + "/live", errno);
  probe_fd_ = file_descriptor(::openat(v1_fd_.get(), "live", O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!probe_fd_) return sys_error("open", v1_ + "/live", errno);
  boot_ = read_boot_id();
  pid_ = ::getpid();
  if (!opt_.fsync)
    log().warn("local datastore " + root_ + ": fsync is off; a crash of the machine can lose acknowledged writes "
               "(meant for tests and benchmarks only)");
  auto v = snapshot();
  if (!v) return v.error();
  return open_spares();
}

// ---- reading the head and the log -----------------------------------------------------

result<store::refreshed> store::refresh(bool locked) {
  head h;
  bool ok = false;
  for (int i = 0; i < (locked ? 1 : 200); ++i) {
    char buf[head_size];
    ssize_t n = pread_full(head_fd_.get(), buf, head_size, 0);
    if (n < 0) return sys_error("read", v1_ + "/head", errno);
    if (decode_head(buf, static_cast<std::size_t>(n), h)) { ok = true; break; }
    if (n == 0) break;                  // a new store
    std::this_thread::sleep_for(50us);  // a writer is rewriting it
  }
  if (!ok || h.boot != boot_) return refreshed::recover;
  if (!seg_ || h.seg != seg_first_) {
    auto fd = std::make_shared<file_descriptor>(::openat(log_fd_.get(), segment_name(h.seg).c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
    if (!*fd) {
      if (errno == ENOENT) return locked ? refreshed::recover : refreshed::retry;
      return sys_error("open", segment_path(h.seg), errno);
    }
    seg_ = std::move(fd);
    seg_first_ = h.seg;
    off_ = h.m_off;
    last_rev_ = base_ = h.m_rev;
    window_clear();
  } else if (off_ < h.m_off && h.m_off - off_ > jump_bytes) {
    off_ = h.m_off;
    last_rev_ = base_ = h.m_rev;
    window_clear();
  }
  head_ = h;
  auto path = segment_path(seg_first_);
  auto out = scan_segment(seg_->get(), path, seg_first_, off_, last_rev_, UINT64_MAX, buf_, [&](record&& r) {
    window_push(std::make_shared<const record>(std::move(r)));
  });
  if (!out) return out.error();
  if (out->stop == scan_outcome::corrupt) return error(errc::invalid, "local datastore: " + out->why);
  if (out->stop == scan_outcome::partial && locked) {
    // Under the lock nobody is appending: these bytes are a record whose writer died
    // while writing it. It was never acknowledged; cut it off.
    struct stat st {};
    ::fstat(seg_->get(), &st);
    log().warn("local datastore: " + path + ": discarding " + std::to_string(static_cast<std::uint64_t>(st.st_size) - off_) +
               " bytes of an incomplete log record at offset " + std::to_string(off_) + " (its writer died)");
    if (::ftruncate(seg_->get(), static_cast<off_t>(off_)) != 0) return sys_error("truncate", path, errno);
  }
  if (last_rev_ < head_.d_rev) {
    // The head says more is durable than the log holds: the log lost its tail.
    if (locked) return refreshed::recover;
    return error(errc::invalid, "local datastore: " + path + " ends at revision " + std::to_string(last_rev_) + " but " +
                                    v1_ + "/head says " + std::to_string(head_.d_rev) + " is durable");
  }
  // Drop published records beyond what lists need.
  while (!window_.empty() && window_.front()->rev <= head_.m_rev &&
         (window_.size() > window_keep || window_bytes_ > window_keep_bytes))
    window_pop_front();
  return refreshed::ok;
}

std::string store::key_string(const resource_key& k) {
  std::string s;
  s.reserve(k.kind.size() + k.ns.size() + k.name.size() + 2);
  s += k.kind;
  s += '\0';
  s += k.ns;
  s += '\0';
  s += k.name;
  return s;
}

void store::window_push(record_ptr r) {
  window_bytes_ += r->body.size() + 128;
  latest_[key_string(r->key)] = r;
  window_.push_back(std::move(r));
}

void store::window_pop_front() {
  auto& r = window_.front();
  window_bytes_ -= r->body.size() + 128;
  base_ = r->rev;
  if (auto it = latest_.find(key_string(r->key)); it != latest_.end() && it->second == r) latest_.erase(it);
  window_.pop_front();
}

void store::window_clear() {
  window_.clear();
  latest_.clear();
  window_bytes_ = 0;
}

record_ptr store::window_latest(const resource_key& k, std::uint64_t max_rev) const {
  auto it = latest_.find(key_string(k));
  if (it == latest_.end()) return nullptr;
  if (it->second->rev <= max_rev) return it->second;
  // Its newest record is not visible yet: the one before, if the window has it.
  for (auto w = window_.rbegin(); w != window_.rend(); ++w)
    if ((*w)->rev <= max_rev && (*w)->key == k) return *w;
  return nullptr;
}

void store::hold_live() {
  std::lock_guard l(live_mu_);
  if (live_holders_++ > 0) return;
  while (::flock(live_fd_.get(), LOCK_SH) != 0)
    if (errno != EINTR) {
      // Without it this writer looks dead to others between its append and its publish:
      // they would publish its record for it (harmless: publishing is idempotent).
      log().warn("local datastore: flock " + v1_ + "/live: " + errno_text(errno));
      break;
    }
}

void store::release_live() {
  std::lock_guard l(live_mu_);
  if (live_holders_ == 0 || --live_holders_ > 0) return;
  ::flock(live_fd_.get(), LOCK_UN);
}

bool store::writers_at_work() const {
  std::lock_guard l(live_mu_);
  if (live_holders_ > 0) return true;
  if (::flock(probe_fd_.get(), LOCK_EX | LOCK_NB) != 0) return true;  // held (or unknown: do not step in)
  ::flock(probe_fd_.get(), LOCK_UN);
  return false;
}

bool store::publisher_alive() const { return writers_at_work(); }

bool store::writer_gone() const {
  if (window_.empty() || last_rev_ <= head_.d_rev) return false;
  return !writers_at_work();
}

result<void> store::check_process() const {
  if (::getpid() != pid_)
    return error(errc::invalid, "local datastore " + root_ + ": this handle was opened in process " + std::to_string(pid_) +
                                    " and used in process " + std::to_string(::getpid()) +
                                    " after fork(); its file locks are shared with the parent: open a new handle in the child");
  return {};
}

result<store::view> store::snapshot(bool may_lock, const std::function<bool(const record&)>* keep, const resource_key* key,
                                    bool with_records) {
  CNF_LOCAL_TRY(check_process());
  bool repaired = false;
  for (int attempt = 0;; ++attempt) {
    std::unique_lock l(mu_);
    auto r = refresh(false);
    if (!r) return r.error();
    if (*r == refreshed::ok) {
      if (may_lock && writer_gone()) {
        // The last record's writer died before publishing it: do it on its behalf.
        auto rev = last_rev_;
        auto seg = seg_;
        l.unlock();
        CNF_LOCAL_TRY(settle(rev, seg));
        continue;
      }
      if (may_lock && !repaired && head_.m_rev < head_.d_rev && !publisher_alive()) {
        // Files are written under the lock; if nobody holds it, their writer died
        // half-way: finish its work, so that the files on disk are whole again. (A live
        // writer whose sync() left them to its executor writes them itself; until then
        // readers take those records from the log, as they do while any publish runs.)
        repaired = true;
        l.unlock();
        CNF_LOCAL_TRY(finish_publish());
        continue;
      }
      view v;
      v.m_rev = head_.m_rev;
      // This handle's own deferred writes (sync() not yet called) are in the window and
      // visible to it; every record before them is complete, so the bound is a prefix.
      v.d_rev = std::max(head_.d_rev, std::min(pending_rev_, last_rev_));
      v.base = base_;
      if (!with_records) return v;
      if (key) {
        if (auto rec = window_latest(*key, v.d_rev)) v.recs.push_back(std::move(rec));
        return v;
      }
      for (auto& rec : window_)
        if (rec->rev <= v.d_rev && (!keep || (*keep)(*rec))) v.recs.push_back(rec);
      return v;
    }
    l.unlock();
    if (!may_lock) return error(errc::unavailable, "local datastore: " + v1_ + " needs recovery");
    if (*r == refreshed::recover || attempt > 100) {
      std::lock_guard w(wmu_);
      flock_guard f(head_fd_.get(), LOCK_EX);
      std::unique_lock l2(mu_);
      CNF_LOCAL_TRY(refresh_locked());
    } else {
      std::this_thread::sleep_for(100us);
    }
  }
}

result<void> store::refresh_locked() {
  auto r = refresh(true);
  if (!r) return r.error();
  if (*r == refreshed::ok) return {};
  CNF_LOCAL_TRY(recover());
  auto again = refresh(true);
  if (!again) return again.error();
  if (*again != refreshed::ok)
    return error(errc::internal, "local datastore: " + v1_ + ": the log is not readable after recovery");
  return {};
}

std::string store::segment_path(std::uint64_t first) const { return v1_ + "/log/" + segment_name(first); }

result<std::vector<std::string>> store::list_dir(int dirfd, const std::string& rel, bool& missing) {
  missing = false;
  int fd = ::openat(dirfd, rel.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      missing = true;
      return std::vector<std::string>{};
    }
    return sys_error("open directory", rel, errno);
  }
  DIR* d = ::fdopendir(fd);
  if (!d) {
    int e = errno;
    ::close(fd);
    return sys_error("read directory", rel, e);
  }
  std::vector<std::string> out;
  while (auto* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    out.emplace_back(e->d_name);
  }
  ::closedir(d);
  return out;
}

result<std::vector<std::uint64_t>> store::segments() {
  bool missing = false;
  auto names = list_dir(log_fd_.get(), ".", missing);
  if (!names) return names.error();
  std::uint64_t active = 0;
  {
    std::lock_guard l(mu_);
    active = seg_first_;
  }
  std::vector<std::uint64_t> out;
  for (auto& n : *names)
    if (auto v = parse_segment_name(n); v && (active == 0 || *v <= active)) out.push_back(*v);
  std::sort(out.begin(), out.end());
  return out;
}

result<file_descriptor> store::open_segment(std::uint64_t first) {
  file_descriptor fd(::openat(log_fd_.get(), segment_name(first).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) {
    if (errno == ENOENT) return error(errc::not_found, segment_path(first) + " is gone");
    return sys_error("open", segment_path(first), errno);
  }
  return fd;
}

result<std::uint64_t> store::visible_revision() {
  auto v = snapshot(true, nullptr, nullptr, /*with_records=*/false);
  if (!v) return v.error();
  return v->d_rev;
}

// ---- recovery, checkpoints, segments ---------------------------------------------------

std::uint64_t store::read_checkpoint() {
  int fd = ::openat(v1_fd_.get(), "checkpoint", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return 0;
  char buf[64] = {};
  ssize_t n = pread_full(fd, buf, sizeof buf - 1, 0);
  ::close(fd);
  std::uint64_t v = 0;
  std::string_view s(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
  while (!s.empty() && (s.back() == '\n')) s.remove_suffix(1);
  if (!parse_rev(s, v)) {
    log().warn("local datastore: " + v1_ + "/checkpoint is unreadable; replaying the whole log");
    return 0;
  }
  return v;
}

result<void> store::write_checkpoint(std::uint64_t rev) {
  std::string tmp_path = v1_ + "/checkpoint.tmp";
  file_descriptor fd(::openat(v1_fd_.get(), "checkpoint.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return sys_error("create", tmp_path, errno);
  if (!write_all(fd.get(), to_rev(rev) + "\n")) return sys_error("write", tmp_path, errno);
  if (opt_.fsync && ::fsync(fd.get()) != 0) return sys_error("fsync", tmp_path, errno);
  fd.reset();
  if (::renameat(v1_fd_.get(), "checkpoint.tmp", v1_fd_.get(), "checkpoint") != 0)
    return sys_error("rename", tmp_path, errno);
  if (opt_.fsync && ::fsync(v1_fd_.get()) != 0) return sys_error("fsync", v1_, errno);
  return {};
}

result<void> store::create_segment(std::uint64_t first) {
  std::string tmp_path = v1_ + "/log/segment.tmp";
  file_descriptor fd(::openat(log_fd_.get(), "segment.tmp", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return sys_error("create", tmp_path, errno);
  char h[segment_header_size];
  encode_segment_header(first, h);
  if (!pwrite_full(fd.get(), h, sizeof h, 0)) return sys_error("write", tmp_path, errno);
  if (opt_.fsync && ::fsync(fd.get()) != 0) return sys_error("fsync", tmp_path, errno);
  fd.reset();
  if (::renameat(log_fd_.get(), "segment.tmp", log_fd_.get(), segment_name(first).c_str()) != 0)
    return sys_error("rename", tmp_path, errno);
  if (opt_.fsync && ::fsync(log_fd_.get()) != 0) return sys_error("fsync", v1_ + "/log", errno);
  return {};
}

result<void> store::remove_old_segments() {
  bool missing = false;
  auto names = list_dir(log_fd_.get(), ".", missing);
  if (!names) return names.error();
  std::vector<std::uint64_t> segs;
  for (auto& n : *names)
    if (auto v = parse_segment_name(n)) segs.push_back(*v);
  std::sort(segs.begin(), segs.end());
  std::size_t keep = std::max<std::uint32_t>(opt_.log_segments_kept, 1);
  for (std::size_t i = 0; i + keep < segs.size(); ++i) {
    if (segs[i] >= seg_first_) break;
    if (::unlinkat(log_fd_.get(), segment_name(segs[i]).c_str(), 0) != 0 && errno != ENOENT)
      return sys_error("remove", segment_path(segs[i]), errno);
  }
  return {};
}

// Rebuilds the resource files from the log after a reboot (or on a new store): every
// record after the checkpoint is applied again, whatever the files hold.
result<void> store::recover() {
  std::uint64_t checkpoint = read_checkpoint();
  bool missing = false;
  auto names = list_dir(log_fd_.get(), ".", missing);
  if (!names) return names.error();
  std::vector<std::uint64_t> segs;
  for (auto& n : *names)
    if (auto v = parse_segment_name(n)) segs.push_back(*v);
  std::sort(segs.begin(), segs.end());
  // A newest segment with a bad header is what a crashed rotation left: drop it.
  while (!segs.empty()) {
    auto fd = open_segment(segs.back());
    if (!fd) return fd.error();
    char h[segment_header_size];
    ssize_t n = pread_full(fd->get(), h, sizeof h, 0);
    std::uint64_t first = 0;
    if (n == static_cast<ssize_t>(sizeof h) && decode_segment_header(h, sizeof h, first) && first == segs.back()) break;
    log().warn("local datastore: removing " + segment_path(segs.back()) + ": no valid segment header (interrupted rotation)");
    if (::unlinkat(log_fd_.get(), segment_name(segs.back()).c_str(), 0) != 0) return sys_error("remove", segment_path(segs.back()), errno);
    segs.pop_back();
  }
  if (segs.empty()) {
    CNF_LOCAL_TRY(create_segment(checkpoint + 1));
    segs.push_back(checkpoint + 1);
  }
  std::size_t start = 0;
  for (std::size_t i = 0; i < segs.size(); ++i)
    if (segs[i] <= checkpoint + 1) start = i;
  if (segs[start] > checkpoint + 1)
    log().warn("local datastore: the log in " + v1_ + "/log starts at revision " + std::to_string(segs[start]) +
               ", after the checkpoint " + std::to_string(checkpoint) + "; replaying what is there");
  std::map<key_tuple, record_ptr> latest;
  std::uint64_t last = segs[start] - 1, off = 0;
  std::shared_ptr<file_descriptor> active;
  for (std::size_t i = start; i < segs.size(); ++i) {
    bool newest = i + 1 == segs.size();
    auto path = segment_path(segs[i]);
    auto fd = std::make_shared<file_descriptor>(::openat(log_fd_.get(), segment_name(segs[i]).c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
    if (!*fd) return sys_error("open", path, errno);
    if (segs[i] != last + 1)
      return error(errc::invalid, "local datastore: " + path + " starts at revision " + std::to_string(segs[i]) +
                                      " but the previous segment ends at " + std::to_string(last) +
                                      "; the log is damaged (restore " + v1_ + " from a backup)");
    off = segment_header_size;
    auto out = scan_segment(fd->get(), path, segs[i], off, last, UINT64_MAX, buf_, [&](record&& r) {
      if (r.rev <= checkpoint) return;
      auto k = tuple_of(r.key);  // before r is moved from
      latest[k] = std::make_shared<const record>(std::move(r));
    });
    if (!out) return out.error();
    if (out->stop == scan_outcome::corrupt || out->stop == scan_outcome::partial) {
      if (!newest)
        return error(errc::invalid, "local datastore: " + (out->why.empty() ? path + ": truncated record" : out->why) +
                                        " inside a completed log segment; restore " + v1_ + " from a backup");
      struct stat st {};
      ::fstat(fd->get(), &st);
      log().warn("local datastore: " + path + ": discarding " + std::to_string(static_cast<std::uint64_t>(st.st_size) - off) +
                 " bytes after offset " + std::to_string(off) + " (a write that never completed)");
      if (::ftruncate(fd->get(), static_cast<off_t>(off)) != 0) return sys_error("truncate", path, errno);
    }
    if (newest) active = fd;
  }
  std::vector<record_ptr> apply;
  for (auto& [k, r] : latest) apply.push_back(r);
  if (!apply.empty()) {
    log().info("local datastore: " + v1_ + ": replaying " + std::to_string(apply.size()) + " resources from the log (revisions " +
               std::to_string(checkpoint + 1) + ".." + std::to_string(last) + ")");
    CNF_LOCAL_TRY(materialize(apply));
  }
  if (opt_.fsync && ::syncfs(data_fd_.get()) != 0) return sys_error("syncfs", v1_, errno);
  if (last != checkpoint || read_checkpoint() != last) CNF_LOCAL_TRY(write_checkpoint(last));
  head_.boot = boot_;
  head_.seg = segs.back();
  head_.m_off = off;
  head_.m_rev = head_.d_rev = last;
  CNF_LOCAL_TRY(write_head());
  seg_ = active;
  seg_first_ = segs.back();
  off_ = off;
  last_rev_ = base_ = last;
  window_clear();
  return {};
}

result<void> store::write_head() {
  char buf[head_size];
  head_.boot = boot_;
  encode_head(head_, buf);
  if (!pwrite_full(head_fd_.get(), buf, head_size, 0)) return sys_error("write", v1_ + "/head", errno);
  return {};
}

// Starts a new segment (all locks held). Everything in the old one is made durable,
// published and checkpointed first, so nothing unpublished ever spans two segments.
result<void> store::rotate() {
  if (opt_.fsync && ::fdatasync(seg_->get()) != 0) return sys_error("fdatasync", segment_path(seg_first_), errno);
  head_.d_rev = last_rev_;
  CNF_LOCAL_TRY(write_head());
  std::vector<record_ptr> pending;
  for (auto& r : window_)
    if (r->rev > head_.m_rev) pending.push_back(r);
  CNF_LOCAL_TRY(materialize(pending));
  head_.m_rev = last_rev_;
  head_.m_off = off_;
  CNF_LOCAL_TRY(write_head());
  if (opt_.fsync && ::syncfs(data_fd_.get()) != 0) return sys_error("syncfs", v1_, errno);
  CNF_LOCAL_TRY(write_checkpoint(last_rev_));
  // Segments newer than the active one are leftovers of an interrupted rotation.
  bool missing = false;
  auto names = list_dir(log_fd_.get(), ".", missing);
  if (!names) return names.error();
  for (auto& n : *names)
    if (auto v = parse_segment_name(n); v && *v > seg_first_) ::unlinkat(log_fd_.get(), n.c_str(), 0);
  std::uint64_t first = last_rev_ + 1;
  CNF_LOCAL_TRY(create_segment(first));
  auto fd = std::make_shared<file_descriptor>(::openat(log_fd_.get(), segment_name(first).c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
  if (!*fd) return sys_error("open", segment_path(first), errno);
  head_.seg = first;
  head_.m_off = segment_header_size;
  head_.m_rev = head_.d_rev = last_rev_;
  CNF_LOCAL_TRY(write_head());
  seg_ = std::move(fd);
  seg_first_ = first;
  off_ = segment_header_size;
  base_ = last_rev_;
  window_clear();
  return remove_old_segments();
}

// ---- publishing -------------------------------------------------------------------------

// Writes the latest state of every key in `recs` (ascending revisions) to its file, in
// place (pwrite + ftruncate: no new inode, no rename, and ext4 does not flush on this
// path). A lock-free reader may see a file half-written; its checksum says so, and the
// reader then finds the record in the log window instead (it stays there until the
// publish that writes the file is complete). A writer killed here leaves the record
// unpublished, so the next publish writes the file again.
result<void> store::materialize(const std::vector<record_ptr>& recs) {
  std::unordered_map<std::string, record_ptr> latest;
  std::vector<std::string> order;
  for (auto& r : recs) {
    auto path = resource_path(r->key);
    auto [it, inserted] = latest.try_emplace(path, r);
    if (inserted) order.push_back(path);
    else it->second = r;
  }
  int dfd = data_fd_.get();
  for (auto& path : order) {
    auto& r = latest[path];
    std::string full = v1_ + "/data/" + path;
    if (r->what == op::remove) {
      CNF_LOCAL_TRY(retire_file(dfd, path, r->rev));
      continue;
    }
    std::string text = encode_resource_file(r->body);
    std::string dir = path.substr(0, path.rfind('/'));
    file_descriptor fd(::openat(dfd, path.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd && errno == ENOENT) {
      // A new resource: an inode from the spare pool, else a new file.
      if (place_from_spare(dfd, path, text)) continue;
      fd = file_descriptor(::openat(dfd, path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    }
    if (!fd && errno == ENOENT) {
      // The kind's or the namespace's directory does not exist yet.
      std::string kind_dir = path.substr(0, path.find('/'));
      if (::mkdirat(dfd, kind_dir.c_str(), 0700) != 0 && errno != EEXIST)
        return sys_error("create directory", v1_ + "/data/" + kind_dir, errno);
      if (::mkdirat(dfd, dir.c_str(), 0700) != 0 && errno != EEXIST) return sys_error("create directory", v1_ + "/data/" + dir, errno);
      fd = file_descriptor(::openat(dfd, path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    }
    if (!fd) return sys_error("open", full, errno);
    if (!pwrite_full(fd.get(), text.data(), text.size(), 0)) return sys_error("write", full, errno);
    if (::ftruncate(fd.get(), static_cast<off_t>(text.size())) != 0) return sys_error("truncate", full, errno);
  }
  return {};
}

namespace {
// Most removed files the pool takes back (beyond it they are unlinked).
constexpr std::size_t spare_pool_max = 256;
// Most files one handle adds to the pool when it opens: a CNI ADD uses about three.
constexpr std::uint32_t spare_refill_max = 8;

bool make_dirs_for(int dfd, const std::string& path) {
  std::string kind_dir = path.substr(0, path.find('/'));
  std::string dir = path.substr(0, path.rfind('/'));
  if (::mkdirat(dfd, kind_dir.c_str(), 0700) != 0 && errno != EEXIST) return false;
  if (::mkdirat(dfd, dir.c_str(), 0700) != 0 && errno != EEXIST) return false;
  return true;
}
}  // namespace

bool store::place_from_spare(int dfd, const std::string& path, const std::string& text) {
  if (!spare_fd_) return false;
  bool listed_now = false;
  for (;;) {
    if (spares_.empty()) {
      if (listed_now) return false;
      bool missing = false;
      auto names = list_dir(spare_fd_.get(), ".", missing);
      if (!names || names->empty()) return false;
      spares_ = std::move(*names);
      spares_known_ = spares_.size();
      listed_now = true;
    }
    std::string name = std::move(spares_.back());
    spares_.pop_back();
    // Gone: another handle took it since this one listed the pool.
    file_descriptor fd(::openat(spare_fd_.get(), name.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) continue;
    // Written while still in the pool, so a reader never sees it with another content.
    if (!pwrite_full(fd.get(), text.data(), text.size(), 0) || ::ftruncate(fd.get(), static_cast<off_t>(text.size())) != 0)
      return false;
    if (::renameat(spare_fd_.get(), name.c_str(), dfd, path.c_str()) != 0) {
      if (errno != ENOENT || !make_dirs_for(dfd, path) || ::renameat(spare_fd_.get(), name.c_str(), dfd, path.c_str()) != 0)
        return false;
    }
    if (spares_known_ > 0) --spares_known_;
    return true;
  }
}

result<void> store::retire_file(int dfd, const std::string& path, std::uint64_t rev) {
  if (spare_fd_ && spares_known_ < spare_pool_max) {
    std::string name = "r" + std::to_string(rev);
    if (::renameat(dfd, path.c_str(), spare_fd_.get(), name.c_str()) == 0) {
      ++spares_known_;
      if (spares_listed_) spares_.push_back(std::move(name));
      return {};
    }
    if (errno == ENOENT || errno == ENOTDIR) return {};
  }
  if (::unlinkat(dfd, path.c_str(), 0) != 0 && errno != ENOENT && errno != ENOTDIR)
    return sys_error("remove", v1_ + "/data/" + path, errno);
  return {};
}

result<void> store::open_spares() {
  if (opt_.spare_files == 0) return {};
  file_descriptor fd(::openat(v1_fd_.get(), "spare", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd && errno == ENOENT) {
    if (::mkdirat(v1_fd_.get(), "spare", 0700) != 0 && errno != EEXIST) return sys_error("create directory", v1_ + "/spare", errno);
    fd = file_descriptor(::openat(v1_fd_.get(), "spare", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
  }
  if (!fd) return sys_error("open directory", v1_ + "/spare", errno);
  spare_fd_ = std::move(fd);
  bool missing = false;
  auto names = list_dir(spare_fd_.get(), ".", missing);
  if (!names) return names.error();
  spares_known_ = names->size();
  spares_ = std::move(*names);
  spares_listed_ = true;
  if (spares_known_ < opt_.spare_files) {
    auto n = std::min<std::uint32_t>(opt_.spare_files - static_cast<std::uint32_t>(spares_known_), spare_refill_max);
    try {
      refill_ = std::thread([this, n] { refill_spares(n); });
    } catch (const std::system_error&) {
      // No thread now: new resources get new files, as without a pool.
    }
  }
  return {};
}

// Creates up to n empty 0600 files under names no other handle uses. They join the pool
// when a handle next lists it; this handle's own list is not touched (no lock is held).
void store::refill_spares(std::uint32_t n) {
  const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
  const auto salt = std::random_device{}();  // names unique across processes (and PID namespaces)
  for (std::uint32_t i = 0; i < n && !stop_refill_.load(std::memory_order_relaxed); ++i) {
    std::string name = "n" + std::to_string(salt) + "-" + std::to_string(stamp) + "-" + std::to_string(i);
    int fd = ::openat(spare_fd_.get(), name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return;
    ::close(fd);
  }
}

result<void> store::expose_locked(std::uint64_t rev) {
  if (rev > last_rev_) rev = last_rev_;
  if (head_.d_rev >= rev) return {};
  head_.d_rev = rev;
  return write_head();  // before the files change: a list that sees a file sees its revision
}

result<void> store::publish_locked(std::uint64_t rev, std::unique_lock<std::mutex>& l) {
  CNF_LOCAL_TRY(expose_locked(rev));
  if (head_.m_rev >= head_.d_rev) return {};
  std::vector<record_ptr> pending;
  std::uint64_t m_off = head_.m_off;
  for (auto& r : window_)
    if (r->rev > head_.m_rev && r->rev <= head_.d_rev) {
      pending.push_back(r);
      m_off = r->end;
    }
  if (base_ > head_.m_rev || pending.empty() || pending.back()->rev != head_.d_rev)
    return error(errc::internal, "local datastore: " + v1_ + ": records to publish are missing from memory");
  std::uint64_t to = head_.d_rev;
  l.unlock();  // the flock keeps other writers out; readers of this process may go on
  auto m = materialize(pending);
  l.lock();
  if (!m) return m.error();
  head_.m_rev = to;
  head_.m_off = m_off;
  return write_head();
}

result<void> store::publish(std::uint64_t rev, bool files) {
  {
    // Usually a concurrent writer has published this already (group commit).
    char buf[head_size];
    head h;
    if (pread_full(head_fd_.get(), buf, head_size, 0) == static_cast<ssize_t>(head_size) && decode_head(buf, head_size, h) &&
        h.boot == boot_ && (files ? h.m_rev : h.d_rev) >= rev)
      return {};
  }
  std::lock_guard w(wmu_);
  flock_guard f(head_fd_.get(), LOCK_EX);
  std::unique_lock l(mu_);
  CNF_LOCAL_TRY(refresh_locked());
  return files ? publish_locked(rev, l) : expose_locked(rev);
}

result<void> store::finish_publish() {
  if (!wmu_.try_lock()) return {};  // a writer of this process is at work
  std::lock_guard w(wmu_, std::adopt_lock);
  if (::flock(head_fd_.get(), LOCK_EX | LOCK_NB) != 0) return {};  // another process is
  struct unlock {
    int fd;
    ~unlock() { ::flock(fd, LOCK_UN); }
  } u{head_fd_.get()};
  std::unique_lock l(mu_);
  CNF_LOCAL_TRY(refresh_locked());
  if (head_.m_rev >= head_.d_rev) return {};
  log().warn("local datastore: " + v1_ + ": finishing the publication of revisions " + std::to_string(head_.m_rev + 1) + ".." +
             std::to_string(head_.d_rev) + " (their writer died)");
  return publish_locked(head_.d_rev, l);
}

result<void> store::settle(std::uint64_t rev, std::shared_ptr<file_descriptor> seg) {
  if (opt_.fsync && seg && ::fdatasync(seg->get()) != 0) return sys_error("fdatasync", v1_ + "/log", errno);
  return publish(rev);
}

// ---- operations -------------------------------------------------------------------------

result<std::optional<resource>> store::read_path(const std::string& rel, const resource_key* expect, bool* damaged) {
  if (damaged) *damaged = false;
  std::string full = v1_ + "/data/" + rel;
  file_descriptor fd(::openat(data_fd_.get(), rel.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) {
    if (errno == ENOENT || errno == ENOTDIR) return std::optional<resource>();
    return sys_error("open", full, errno);
  }
  std::string text;
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error("read", full, errno);
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  bool torn = false;
  auto r = decode_resource_file(text, full, torn);
  if (damaged) *damaged = torn;
  if (!r) return r.error();
  if (expect && r->key() != *expect) {
    // Either corrupt, or a lock-free read that raced with the spare pool: between this
    // open and read, a writer retired the file (the resource was removed) and gave its
    // inode to a new resource. Callers look again, as for a torn file; still so under
    // the shared lock, it is corrupt.
    if (damaged) *damaged = true;
    return error(errc::invalid, full + ": holds " + r->key().to_string() + " but its path is that of " + expect->to_string() +
                                    " (corrupt datastore content; restore or remove the file)");
  }
  return std::optional<resource>(std::move(*r));
}

result<std::optional<resource>> store::read_file(const resource_key& k, bool* damaged) {
  return read_path(resource_path(k), &k, damaged);
}

result<resource> store::get(const resource_key& k) {
  CNF_LOCAL_TRY(check_key(k));
  for (int attempt = 0;; ++attempt) {
    // The key's newest record in the window is its state; else the file is.
    auto v = snapshot(true, nullptr, &k);
    if (!v) return v.error();
    if (!v->recs.empty()) {
      auto& rec = v->recs.back();
      if (rec->what == op::remove) return error(errc::not_found, k.to_string() + " not found");
      return decode_resource(rec->body, segment_path(rec->seg));
    }
    bool damaged = false;
    auto f = read_file(k, &damaged);
    if (!f) {
      // A file caught while a writer rewrites it: look again (the writer's record is in
      // the window by then). Still damaged after that: corrupt.
      if (damaged && attempt < 5) {
        if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(attempt));
        continue;
      }
      return f.error();
    }
    if (!*f) return error(errc::not_found, k.to_string() + " not found");
    return std::move(**f);
  }
}

result<resource> store::write(op what, const resource_key& key, const resource* desired, std::string_view expected) {
  std::uint64_t my_rev = 0;
  std::shared_ptr<file_descriptor> seg;
  std::string seg_path;
  resource out;
  std::optional<error> fail;
  std::uint64_t settle_rev = 0;
  CNF_LOCAL_TRY(check_process());
  struct live_guard {
    store& s;
    bool held = false;
    ~live_guard() {
      if (held) s.release_live();
    }
  } live{*this};
  {
    std::lock_guard w(wmu_);
    flock_guard f(head_fd_.get(), LOCK_EX);
    std::unique_lock l(mu_);
    CNF_LOCAL_TRY(refresh_locked());
    // The current state: the key's newest record in the window (it holds every record
    // after base_), else its file (the flock keeps the files still). A record's revision
    // is the resource's, so only a removal needs the body decoded.
    record_ptr latest = window_latest(key, UINT64_MAX);
    std::optional<resource> cur;
    bool exists = false;
    std::string cur_rev;
    if (latest) {
      exists = latest->what != op::remove;
      cur_rev = to_rev(latest->rev);
      if (exists && what == op::remove) {
        auto d = decode_resource(latest->body, segment_path(latest->seg));
        if (!d) return d.error();
        cur = std::move(*d);
      }
    } else {
      l.unlock();
      auto fr = read_file(key);
      l.lock();
      if (!fr) return fr.error();
      cur = std::move(*fr);
      exists = cur.has_value();
      if (cur) cur_rev = cur->revision;
    }
    switch (what) {
      case op::create:
        if (exists) fail = error(errc::already_exists, key.to_string() + " already exists (revision " + cur_rev + ")");
        break;
      case op::update:
      case op::remove:
        if (!exists) fail = error(errc::not_found, key.to_string() + " not found");
        else if (!expected.empty() && expected != cur_rev)
          fail = error(errc::conflict, key.to_string() + ": revision " + std::string(expected) + " is stale (current " +
                                           cur_rev + "); read it again and retry");
        break;
    }
    if (fail) {
      // The state that decided it may come from a writer that has not published yet (or
      // died before it could): make it visible before answering, so a re-read sees it.
      if (latest && latest->rev > head_.d_rev) {
        settle_rev = last_rev_;
        seg = seg_;
      }
    } else {
      my_rev = last_rev_ + 1;
      if (what == op::remove) out = std::move(*cur);
      else out = *desired;
      out.revision = to_rev(my_rev);
      record rec;
      rec.rev = my_rev;
      rec.what = what;
      rec.pid = 0;  // the format's field; no process id is stored
      rec.key = key;
      rec.body = encode_resource(out);
      std::string bytes = encode_record(rec);
      if (bytes.size() > max_record_size)
        return error(errc::invalid, "resource " + key.to_string() + " is too large (" + std::to_string(bytes.size()) + " bytes)");
      if (off_ + bytes.size() > opt_.log_segment_bytes && off_ > segment_header_size) {
        CNF_LOCAL_TRY(rotate());
        my_rev = last_rev_ + 1;  // unchanged: rotation adds no records
      }
      hold_live();  // before the record exists: nobody may take it for a dead writer's
      live.held = true;
      if (!pwrite_full(seg_->get(), bytes.data(), bytes.size(), off_)) {
        int e = errno;
        (void)::ftruncate(seg_->get(), static_cast<off_t>(off_));
        return sys_error("append to", segment_path(seg_first_), e);
      }
      rec.seg = seg_first_;
      rec.end = off_ + bytes.size();
      off_ = rec.end;
      last_rev_ = my_rev;
      window_push(std::make_shared<const record>(std::move(rec)));
      seg = seg_;
      seg_path = segment_path(seg_first_);
      if (opt_.fsync && defer_.load(std::memory_order_relaxed)) {
        // Deferred: sync() flushes and publishes it, with every other write made so.
        if (my_rev > pending_rev_) {
          pending_rev_ = my_rev;
          pending_seg_ = seg_;
        }
        if (!pending_live_) {
          pending_live_ = true;  // this write's hold stays until sync() publishes
          live.held = false;
        }
        return out;
      }
      if (!opt_.fsync) {
        // Committed: a failure to write the files now is repaired by the next publish.
        if (auto p = publish_locked(my_rev, l); !p)
          log().warn("local datastore: " + key.to_string() + " is written (revision " + to_rev(my_rev) +
                     ") but its file is not yet: " + p.error().message);
      }
    }
  }
  if (fail) {
    if (settle_rev) {
      if (auto st = settle(settle_rev, seg); !st) log().warn(st.error().message);
    }
    return std::move(*fail);
  }
  if (opt_.fsync) {
    if (::fdatasync(seg->get()) != 0)
      return error(errc::io, "local datastore: fdatasync " + seg_path + ": " + errno_text(errno) + "; " +
                                 key.to_string() + " may or may not have been written; read it again");
    // Durable now: the write has happened. Publishing makes it visible to readers; if
    // that fails (a full disk), the record stays in every reader's window and the next
    // publish writes the files.
    if (auto p = publish(my_rev); !p)
      log().warn("local datastore: " + key.to_string() + " is written (revision " + to_rev(my_rev) +
                 ") but publishing it failed: " + p.error().message);
  }
  return out;
}

void store::defer_sync(bool on) { defer_.store(on, std::memory_order_relaxed); }

result<void> store::sync() {
  CNF_LOCAL_TRY(check_process());
  std::uint64_t rev = 0;
  std::shared_ptr<file_descriptor> seg;
  {
    std::lock_guard l(mu_);
    rev = pending_rev_;
    seg = pending_seg_;
  }
  if (rev == 0) return {};
  // One flush for every deferred write: they are all in `seg` or in segments before it,
  // which rotation flushed already.
  if (::fdatasync(seg->get()) != 0)
    return error(errc::io, "local datastore: fdatasync " + v1_ + "/log: " + errno_text(errno) +
                               "; the writes since the last sync may or may not have been made; read them again");
  bool held = false;  // the deferred writes' hold on v1/live, released once published
  {
    std::lock_guard l(mu_);
    if (pending_rev_ == rev) {
      pending_rev_ = 0;
      pending_seg_.reset();
      held = std::exchange(pending_live_, false);
    }
  }
  // Durable now; publishing makes them visible to other readers. If that fails, the
  // records stay in every reader's window and the next publish writes the files.
  if (opt_.exec) {
    // A long-lived host (the CNI agent): make them visible now (the head's d_rev: readers
    // take them from the log) and write their files on the host's executor, which runs
    // after the caller has answered (the agent runs it between two calls). Everything a
    // reader can see is the same; the answer waits for one head write instead of the
    // files (0.1-0.2 ms of an agent-served IPAM ADD).
    if (auto e = publish(rev, /*files=*/false); !e) {
      if (held) release_live();
      log().warn("local datastore: revisions up to " + to_rev(rev) + " are written but publishing them failed: " + e.error().message);
      return {};
    }
    opt_.exec->post([self = weak_from_this(), rev, held] {
      auto s = self.lock();
      if (!s) return;  // closed (its lock went with it): the records are visible; the next publish writes the files
      if (auto p = s->publish(rev); !p)
        s->log().warn("local datastore: revisions up to " + to_rev(rev) + " are visible but writing their files failed: " + p.error().message);
      if (held) s->release_live();
    });
    return {};
  }
  if (auto p = publish(rev); !p)
    log().warn("local datastore: revisions up to " + to_rev(rev) + " are written but publishing them failed: " + p.error().message);
  if (held) release_live();
  return {};
}

result<resource> store::create(const resource& r) {
  auto c = check_resource(r);
  if (!c) return c.error();
  return write(op::create, c->key(), &*c, {});
}

result<resource> store::update(const resource& r) {
  auto c = check_resource(r);
  if (!c) return c.error();
  std::uint64_t v = 0;
  if (!r.revision.empty() && !parse_rev(r.revision, v))
    return error(errc::invalid, "update " + r.key().to_string() + ": revision '" + r.revision + "' is not a decimal number");
  return write(op::update, c->key(), &*c, r.revision);
}

result<void> store::remove(const resource_key& k, std::string_view revision) {
  CNF_LOCAL_TRY(check_key(k));
  std::uint64_t v = 0;
  if (!revision.empty() && !parse_rev(revision, v))
    return error(errc::invalid, "remove " + k.to_string() + ": revision '" + std::string(revision) + "' is not a decimal number");
  auto r = write(op::remove, k, nullptr, revision);
  if (!r) return r.error();
  return {};
}

result<datastore_status> store::status() {
  auto v = snapshot();
  if (!v) return v.error();
  return datastore_status{"local", root_, to_rev(v->d_rev)};
}

// Lists without locks: the files, corrected by the log records not yet in them, then a
// check that nothing this list covers changed meanwhile (else again; after a few tries,
// under a shared lock that holds writers back).
result<resource_list> store::list(const list_options& o) {
  std::optional<key_tuple> after;
  if (!o.continue_token.empty()) {
    after = parse_token(o.continue_token);
    if (!after) return error(errc::invalid, "list " + o.kind + ": malformed continue token '" + o.continue_token + "'");
    if ((!o.kind.empty() && std::get<0>(*after) != o.kind) || (o.ns && std::get<1>(*after) != *o.ns))
      return error(errc::invalid, "list " + o.kind + ": continue token '" + o.continue_token + "' belongs to another list");
  }
  auto in_range = [&](const key_tuple& k) { return !after || k > *after; };
  std::function<bool(const record&)> wanted = [&](const record& r) { return matches(r.key, o.kind, o.ns, o.name_prefix); };

  for (int attempt = 0;; ++attempt) {
    bool shared = attempt >= 4;
    std::optional<flock_guard> sh;
    if (shared) sh.emplace(shared_fd_.get(), LOCK_SH);
    // Under the shared lock, taking the exclusive one (recovery, settling) would deadlock.
    auto v1 = snapshot(!shared, &wanted);
    if (!v1 && shared) {
      sh.reset();
      v1 = snapshot(true, &wanted);
      if (!v1) return v1.error();
      continue;
    }
    if (!v1) return v1.error();
    // Newest unpublished record per key.
    std::map<key_tuple, record_ptr> overlay;
    for (auto& r : v1->recs)
      if (in_range(tuple_of(r->key))) overlay[tuple_of(r->key)] = r;

    // Candidates from the directories: key -> relative path (or an already read resource).
    struct cand {
      std::string path;
      std::optional<resource> read;
    };
    std::map<key_tuple, cand> cands;
    bool torn = false;  // a file caught half-written: read the list again
    std::vector<std::string> kinds;
    bool missing = false;
    if (o.kind.empty()) {
      auto ks = list_dir(data_fd_.get(), ".", missing);
      if (!ks) return ks.error();
      for (auto& k : *ks)
        if (unescape(k)) kinds.push_back(k);
    } else {
      kinds.push_back(escape(o.kind));
    }
    for (auto& kd : kinds) {
      auto kind = *unescape(kd);
      std::vector<std::string> nss;
      if (o.ns) {
        nss.push_back(ns_dir(*o.ns));
      } else {
        auto ds = list_dir(data_fd_.get(), kd, missing);
        if (!ds) return ds.error();
        for (auto& d : *ds)
          if (ns_from_dir(d)) nss.push_back(d);
      }
      for (auto& nd : nss) {
        auto ns = *ns_from_dir(nd);
        auto files = list_dir(data_fd_.get(), kd + "/" + nd, missing);
        if (!files) return files.error();
        for (auto& f : *files) {
          auto p = parse_file_name(f);
          if (!p) continue;
          std::string rel = kd + "/" + nd + "/" + f;
          if (p->hashed) {
            // The real name is only in the file.
            if (p->name.compare(0, std::min(p->name.size(), o.name_prefix.size()), o.name_prefix, 0,
                                std::min(p->name.size(), o.name_prefix.size())) != 0)
              continue;
            bool damaged = false;
            auto r = read_path(rel, nullptr, &damaged);
            if (!r && damaged && !shared) {
              torn = true;
              continue;
            }
            if (!r) return r.error();
            if (!*r) continue;
            if ((*r)->kind != kind || (*r)->ns != ns) {
              if (!shared) {
                torn = true;  // a recycled inode (see read_path), or corrupt: look again under the lock
                continue;
              }
              return error(errc::invalid, v1_ + "/data/" + rel + ": holds " + (*r)->key().to_string() +
                                              " but lies in the directory of " + kind + "/" + ns);
            }
            key_tuple k{kind, ns, (*r)->name};
            if (!matches((*r)->key(), o.kind, o.ns, o.name_prefix) || !in_range(k)) continue;
            cands[k] = cand{rel, std::move(**r)};
            continue;
          }
          key_tuple k{kind, ns, p->name};
          if (!matches({kind, ns, p->name}, o.kind, o.ns, o.name_prefix) || !in_range(k)) continue;
          cands[k] = cand{rel, std::nullopt};
        }
      }
    }
    for (auto& [k, r] : overlay)
      if (!cands.count(k)) cands[k] = cand{};

    resource_list out;
    for (auto& [k, c] : cands) {
      if (o.limit && out.items.size() > o.limit) break;
      if (auto it = overlay.find(k); it != overlay.end()) {
        if (it->second->what == op::remove) continue;
        auto d = decode_resource(it->second->body, segment_path(it->second->seg));
        if (!d) return d.error();
        out.items.push_back(std::move(*d));
        continue;
      }
      if (c.read) {
        out.items.push_back(std::move(*c.read));
        continue;
      }
      resource_key rk{std::get<0>(k), std::get<1>(k), std::get<2>(k)};
      bool damaged = false;
      auto r = read_path(c.path, &rk, &damaged);
      if (!r && damaged && !shared) {
        torn = true;
        break;
      }
      if (!r) return r.error();
      if (*r) out.items.push_back(std::move(**r));
    }

    auto v2 = snapshot(!shared, &wanted);
    if (!v2) return v2.error();
    bool changed = torn || v2->base > v1->m_rev;
    for (auto& r : v2->recs)
      if (r->rev > v1->d_rev) changed = true;
    if (changed && !shared) continue;
    out.revision = to_rev(shared ? v1->d_rev : v2->d_rev);
    if (o.limit && out.items.size() > o.limit) {
      out.items.resize(o.limit);
      out.continue_token = make_token(out.items.back());
    }
    return out;
  }
}

}  // namespace detail::local

// ---- the public wrapper -------------------------------------------------------------------

result<local_datastore> local_datastore::open(local_datastore_options o) {
  return detail::call<local_datastore>([&]() -> result<local_datastore> {
    auto s = detail::local::store::open(std::move(o));
    if (!s) return s.error();
    return local_datastore(std::move(*s));
  });
}

result<resource> local_datastore::get(const resource_key& k) const {
  return detail::call<resource>([&] { return s_->get(k); });
}
result<resource_list> local_datastore::list(const list_options& o) const {
  return detail::call<resource_list>([&] { return s_->list(o); });
}
result<resource> local_datastore::create(const resource& r) const {
  return detail::call<resource>([&] { return s_->create(r); });
}
result<resource> local_datastore::update(const resource& r) const {
  return detail::call<resource>([&] { return s_->update(r); });
}
result<void> local_datastore::remove(const resource_key& k, std::string_view revision) const {
  return detail::call<void>([&] { return s_->remove(k, revision); });
}
result<watch_handle> local_datastore::watch(const watch_options& o, watch_callback cb) const {
  return detail::call<watch_handle>([&] { return s_->watch(o, std::move(cb)); });
}
result<datastore_status> local_datastore::status() const {
  return detail::call<datastore_status>([&] { return s_->status(); });
}
void local_datastore::defer_sync(bool on) const { s_->defer_sync(on); }
bool local_datastore::sync_deferred() const noexcept { return s_->sync_deferred(); }
result<void> local_datastore::sync() const {
  return detail::call<void>([&] { return s_->sync(); });
}
const local_datastore_options& local_datastore::options() const noexcept { return s_->options(); }

CNF_END_NAMESPACE
