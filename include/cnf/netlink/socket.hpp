// cnf/netlink/socket.hpp — a small RAII rtnetlink socket over libmnl, request builders
// and batching with per-request ACK checking.
//
//   auto sock = cnf::netlink::rtnl_socket::open();       // bound to this thread's netns
//   cnf::netlink::request_batch b;
//   b.add(set_link_up_msg(7), "set cali123 up");
//   b.add(add_route_msg(spec), "add route 10.0.0.5/32 dev cali123");
//   if (auto r = sock->execute(b); !r) return r.error(); // "add route ...: File exists"
//
// A batch goes to the kernel in ONE sendmsg. rtnetlink handles requests synchronously in
// the sender's context, in order, and answers each one (reply data, then an ACK or an
// error). It does not stop at a failed request: later requests of the batch still run,
// so batch only requests for which that is acceptable (the caller rolls back anyway, or
// later requests are read-only). Dumps cannot share a batch (one dump per socket at a
// time); use rtnl_socket::dump.
//
// The socket is bound to the network namespace of the thread that opened it, for its
// whole life (see netns.hpp). Not thread-safe: one socket per thread.
// Link with -lmnl.
#pragma once
#include <cnf/error.hpp>
#include <cnf/net.hpp>
#include <cnf/netlink/netns.hpp>

#include <libmnl/libmnl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#ifndef NETLINK_EXT_ACK
#define NETLINK_EXT_ACK 11
#endif
#ifndef NETLINK_GET_STRICT_CHK
#define NETLINK_GET_STRICT_CHK 12
#endif

CNF_BEGIN_NAMESPACE
namespace netlink {

/// One netlink request under construction, in its own fixed buffer. Attribute writes
/// past the buffer are refused and remembered (overflowed()); a batch refuses such a
/// message with an error instead of sending it truncated.
class message {
 public:
  static constexpr std::size_t capacity = 2048;

  message(std::uint16_t type, std::uint16_t flags) {
    nlh_ = mnl_nlmsg_put_header(buf_.data());
    nlh_->nlmsg_type = type;
    nlh_->nlmsg_flags = static_cast<std::uint16_t>(NLM_F_REQUEST | flags);
  }
  message(const message& o) : buf_(o.buf_), overflow_(o.overflow_) { nlh_ = reinterpret_cast<nlmsghdr*>(buf_.data()); }
  message& operator=(const message& o) {
    buf_ = o.buf_;
    overflow_ = o.overflow_;
    nlh_ = reinterpret_cast<nlmsghdr*>(buf_.data());
    return *this;
  }

  /// Appends the family header (ifinfomsg, ifaddrmsg, rtmsg...), zeroed. Call first.
  template <class T>
  T& header() {
    return *static_cast<T*>(put_raw(nullptr, sizeof(T)));
  }
  /// Appends `len` raw bytes (zeroes if data is null), aligned; returns where they went
  /// (a static dummy on overflow, so the caller may write into it harmlessly).
  void* put_raw(const void* data, std::size_t len) {
    if (overflow_ || nlh_->nlmsg_len + MNL_ALIGN(len) > capacity) {
      overflow_ = true;
      static thread_local std::array<std::max_align_t, 64> sink;
      return sink.data();
    }
    void* p = mnl_nlmsg_put_extra_header(nlh_, len);
    if (data) std::memcpy(p, data, len);
    return p;
  }
  void put(std::uint16_t type, const void* data, std::size_t len) {
    if (!overflow_ && !mnl_attr_put_check(nlh_, capacity, type, len, data)) overflow_ = true;
  }
  void put_u8(std::uint16_t type, std::uint8_t v) { put(type, &v, sizeof v); }
  void put_u16(std::uint16_t type, std::uint16_t v) { put(type, &v, sizeof v); }
  void put_u32(std::uint16_t type, std::uint32_t v) { put(type, &v, sizeof v); }
  void put_s32(std::uint16_t type, std::int32_t v) { put(type, &v, sizeof v); }
  /// A NUL-terminated string attribute (what rtnetlink expects for names and kinds).
  void put_str(std::uint16_t type, std::string_view s) {
    std::string tmp(s);
    put(type, tmp.c_str(), tmp.size() + 1);
  }
  void put_addr(std::uint16_t type, const ip_address& a) { put(type, a.data(), a.size()); }

  nlattr* begin_nest(std::uint16_t type) {
    if (overflow_) return nullptr;
    nlattr* n = mnl_attr_nest_start_check(nlh_, capacity, type);
    if (!n) overflow_ = true;
    return n;
  }
  void end_nest(nlattr* n) {
    if (n && !overflow_) mnl_attr_nest_end(nlh_, n);
  }

  nlmsghdr* nlh() noexcept { return nlh_; }
  const nlmsghdr* nlh() const noexcept { return nlh_; }
  bool overflowed() const noexcept { return overflow_; }
  bool is_dump() const noexcept { return (nlh_->nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP; }

 private:
  alignas(8) std::array<unsigned char, capacity> buf_{};
  nlmsghdr* nlh_ = nullptr;
  bool overflow_ = false;
};

/// Called for each reply data message of a request.
using reply_handler = std::function<void(const nlmsghdr&)>;

/// Several requests sent with one sendmsg. Every non-dump request gets NLM_F_ACK, so
/// each one ends with an ACK or an error that is matched back to it by sequence number.
class request_batch {
 public:
  struct entry {
    std::size_t offset = 0;       // of its nlmsghdr in the buffer
    std::string what;             // names the request in errors
    reply_handler on_reply;
    std::uint32_t seq = 0;
    bool done = false;
    int err = 0;                  // positive errno once done
    std::string extack;           // kernel's explanation, if any
  };

  /// Appends a request; returns its index. `what` names it in errors, e.g.
  /// "add route 10.0.0.5/32 dev cali1234567890a".
  std::size_t add(const message& m, std::string what, reply_handler on_reply = {}) {
    entry e;
    e.offset = buf_.size();
    e.what = std::move(what);
    e.on_reply = std::move(on_reply);
    if (m.overflowed()) {
      e.done = true;
      e.err = EMSGSIZE;
      e.extack = "request too large for cnf::netlink::message";
    } else {
      const auto* p = reinterpret_cast<const unsigned char*>(m.nlh());
      buf_.insert(buf_.end(), p, p + m.nlh()->nlmsg_len);
      auto* h = reinterpret_cast<nlmsghdr*>(buf_.data() + e.offset);
      if (!m.is_dump()) h->nlmsg_flags |= NLM_F_ACK;
    }
    entries_.push_back(std::move(e));
    return entries_.size() - 1;
  }

  std::size_t size() const noexcept { return entries_.size(); }
  bool empty() const noexcept { return entries_.empty(); }
  /// errno of request i after execute (0 = success).
  int error_of(std::size_t i) const { return entries_.at(i).err; }
  const entry& at(std::size_t i) const { return entries_.at(i); }
  void clear() { buf_.clear(); entries_.clear(); }

  /// The first failed request as a cnf::error, in batch order; ok if none failed.
  result<void> first_error() const {
    for (const auto& e : entries_)
      if (e.err != 0) return describe(e);
    return {};
  }
  static error describe(const entry& e) {
    std::string m = e.what + ": " + detail::errno_text(e.err);
    if (!e.extack.empty()) m += " (kernel: " + e.extack + ")";
    return error(detail::errc_from_errno(e.err), std::move(m));
  }

 private:
  friend class rtnl_socket;
  std::vector<unsigned char> buf_;
  std::vector<entry> entries_;
};

/// An rtnetlink (NETLINK_ROUTE) socket. Move-only.
class rtnl_socket {
 public:
  static constexpr std::size_t recv_buffer_size = 32768;

  /// Opens a socket in the calling thread's current network namespace. `label` names
  /// that namespace in error messages ("netns /var/run/netns/pod1"); empty: the caller's.
  static result<rtnl_socket> open(std::string label = {}) {
    mnl_socket* nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
    if (!nl) {
      int e = errno;
      return error(detail::errc_from_errno(e), "cannot open rtnetlink socket: " + detail::errno_text(e));
    }
    std::unique_ptr<mnl_socket, close_fn> holder(nl);
    if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
      int e = errno;
      return error(detail::errc_from_errno(e), "cannot bind rtnetlink socket: " + detail::errno_text(e));
    }
    int one = 1;
    // Best effort: explanations in errors, no echo of our request in errors, kernel-side
    // filtering of dumps. Old kernels without them still work.
    mnl_socket_setsockopt(nl, NETLINK_EXT_ACK, &one, sizeof one);
    mnl_socket_setsockopt(nl, NETLINK_CAP_ACK, &one, sizeof one);
    mnl_socket_setsockopt(nl, NETLINK_GET_STRICT_CHK, &one, sizeof one);
    timeval tv{10, 0};  // the kernel answers synchronously; this only bounds a bug
    ::setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    rtnl_socket s(std::move(holder));
    s.label_ = std::move(label);
    return s;
  }

  rtnl_socket(rtnl_socket&&) noexcept = default;
  rtnl_socket& operator=(rtnl_socket&&) noexcept = default;

  int fd() const noexcept { return mnl_socket_get_fd(nl_.get()); }
  const std::string& label() const noexcept { return label_; }
  /// Number of sendmsg calls made (for round-trip accounting in tests and benchmarks).
  std::uint64_t round_trips() const noexcept { return round_trips_; }

  /// Sends every request of the batch in one sendmsg and waits for all answers. Returns
  /// the first failed request's error (with the kernel's explanation when it gives one);
  /// per-request errno is in b.error_of(i).
  result<void> execute(request_batch& b) {
    if (b.empty()) return {};
    for (auto& e : b.entries_) {
      if (e.done) continue;  // refused at add()
      e.seq = ++seq_;
      reinterpret_cast<nlmsghdr*>(b.buf_.data() + e.offset)->nlmsg_seq = e.seq;
    }
    // Requests refused at add() are not in the buffer; send only what is there.
    if (!b.buf_.empty()) {
      if (auto r = send(b.buf_.data(), b.buf_.size(), b.entries_.front().what); !r) return r;
      if (auto r = receive(b); !r) return r;
    }
    return b.first_error();
  }

  /// Runs a dump request (the message must carry NLM_F_DUMP); on_reply sees each object.
  /// If the kernel flags the dump as interrupted (the table changed during it), returns
  /// errc::unavailable: the caller should discard what it got and retry.
  result<void> dump(const message& m, std::string what, const reply_handler& on_reply) {
    request_batch b;
    b.add(m, std::move(what), on_reply);
    interrupted_ = false;
    if (auto r = execute(b); !r) return r;
    if (interrupted_)
      return error(errc::unavailable, b.at(0).what + ": dump interrupted by a concurrent change; retry");
    return {};
  }

 private:
  struct close_fn {
    void operator()(mnl_socket* s) const noexcept { mnl_socket_close(s); }
  };
  explicit rtnl_socket(std::unique_ptr<mnl_socket, close_fn> nl)
      : nl_(std::move(nl)), buf_(recv_buffer_size), portid_(mnl_socket_get_portid(nl_.get())) {}

  result<void> send(const void* data, std::size_t len, const std::string& what) {
    ++round_trips_;
    ssize_t n;
    do {
      n = mnl_socket_sendto(nl_.get(), data, len);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      int e = errno;
      return error(detail::errc_from_errno(e), what + ": netlink send failed: " + detail::errno_text(e));
    }
    return {};
  }

  static void parse_error(const nlmsghdr* nlh, request_batch::entry& e) {
    const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
    if (mnl_nlmsg_get_payload_len(nlh) < sizeof(int)) {
      e.err = EBADMSG;
      return;
    }
    e.err = err->error < 0 ? -err->error : err->error;
    if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS) || mnl_nlmsg_get_payload_len(nlh) < sizeof(nlmsgerr)) return;
    std::size_t off = sizeof(int) + ((nlh->nlmsg_flags & NLM_F_CAPPED) ? sizeof(nlmsghdr) : err->msg.nlmsg_len);
    if (mnl_nlmsg_get_payload_len(nlh) <= off) return;
    const auto* attr = static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(nlh, off));
    int left = static_cast<int>(mnl_nlmsg_get_payload_len(nlh) - off);
    for (; mnl_attr_ok(attr, left); ) {
      if (mnl_attr_get_type(attr) == NLMSGERR_ATTR_MSG && mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) >= 0)
        e.extack = mnl_attr_get_str(attr);
      left -= static_cast<int>(MNL_ALIGN(attr->nla_len));
      attr = mnl_attr_next(attr);
    }
  }

  result<void> receive(request_batch& b) {
    std::size_t pending = 0;
    for (const auto& e : b.entries_) if (!e.done) ++pending;
    // seq -> entry: requests were numbered consecutively from the first one's seq.
    std::uint32_t first_seq = 0;
    for (const auto& e : b.entries_) if (e.seq) { first_seq = e.seq; break; }
    auto find = [&](std::uint32_t seq) -> request_batch::entry* {
      if (seq < first_seq) return nullptr;
      std::size_t idx = 0, want = seq - first_seq;
      for (auto& e : b.entries_) {
        if (!e.seq) continue;
        if (idx++ == want) return &e;
      }
      return nullptr;
    };
    while (pending > 0) {
      ssize_t n = mnl_socket_recvfrom(nl_.get(), buf_.data(), buf_.size());
      if (n < 0) {
        int e = errno;
        if (e == EINTR) continue;
        std::string what = b.entries_.front().what;
        if (e == EAGAIN || e == EWOULDBLOCK)
          return error(errc::unavailable, what + ": no answer from the kernel within 10 s");
        return error(detail::errc_from_errno(e), what + ": netlink receive failed: " + detail::errno_text(e));
      }
      int len = static_cast<int>(n);
      for (auto* nlh = reinterpret_cast<const nlmsghdr*>(buf_.data()); mnl_nlmsg_ok(nlh, len);
           nlh = mnl_nlmsg_next(nlh, &len)) {
        if (nlh->nlmsg_pid != portid_ && nlh->nlmsg_pid != 0) continue;
        request_batch::entry* e = find(nlh->nlmsg_seq);
        if (!e || e->done) continue;  // stale answer from an earlier, abandoned exchange
        if (nlh->nlmsg_flags & NLM_F_DUMP_INTR) interrupted_ = true;
        if (nlh->nlmsg_type == NLMSG_ERROR) {
          parse_error(nlh, *e);
          e->done = true;
          --pending;
        } else if (nlh->nlmsg_type == NLMSG_DONE) {
          // A dump's end; it may carry an error code.
          if (mnl_nlmsg_get_payload_len(nlh) >= sizeof(int)) {
            int v;
            std::memcpy(&v, mnl_nlmsg_get_payload(nlh), sizeof v);
            if (v < 0) e->err = -v;
          }
          e->done = true;
          --pending;
        } else if (nlh->nlmsg_type == NLMSG_NOOP || nlh->nlmsg_type == NLMSG_OVERRUN) {
          continue;
        } else if (e->on_reply) {
          e->on_reply(*nlh);
        }
      }
    }
    return {};
  }

  std::unique_ptr<mnl_socket, close_fn> nl_;
  std::vector<unsigned char> buf_;
  unsigned portid_ = 0;
  std::uint32_t seq_ = 0;
  std::uint64_t round_trips_ = 0;
  bool interrupted_ = false;
  std::string label_;
};

namespace detail {
/// Fills tb[type] for every attribute of a message after its family header (types above
/// tb.size()-1 are ignored). Later duplicates win, as in the kernel.
template <std::size_t N>
inline void parse_attrs(const nlmsghdr& nlh, std::size_t header_len, std::array<const nlattr*, N>& tb) {
  tb.fill(nullptr);
  if (mnl_nlmsg_get_payload_len(&nlh) < header_len) return;
  const auto* attr = static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(&nlh, header_len));
  int left = static_cast<int>(mnl_nlmsg_get_payload_len(&nlh) - MNL_ALIGN(header_len));
  while (mnl_attr_ok(attr, left)) {
    auto t = mnl_attr_get_type(attr);
    if (t < N) tb[t] = attr;
    left -= static_cast<int>(MNL_ALIGN(attr->nla_len));
    attr = mnl_attr_next(attr);
  }
}
template <std::size_t N>
inline void parse_nested(const nlattr* nest, std::array<const nlattr*, N>& tb) {
  tb.fill(nullptr);
  if (!nest) return;
  const auto* attr = static_cast<const nlattr*>(mnl_attr_get_payload(nest));
  int left = static_cast<int>(mnl_attr_get_payload_len(nest));
  while (mnl_attr_ok(attr, left)) {
    auto t = mnl_attr_get_type(attr);
    if (t < N) tb[t] = attr;
    left -= static_cast<int>(MNL_ALIGN(attr->nla_len));
    attr = mnl_attr_next(attr);
  }
}
inline std::uint32_t attr_u32(const nlattr* a, std::uint32_t def = 0) {
  return a && mnl_attr_get_payload_len(a) >= 4 ? mnl_attr_get_u32(a) : def;
}
inline std::string attr_str(const nlattr* a) {
  if (!a) return {};
  const char* p = static_cast<const char*>(mnl_attr_get_payload(a));
  std::size_t n = mnl_attr_get_payload_len(a);
  return std::string(p, strnlen(p, n));
}
/// An address attribute of the given family, if its length is right.
inline bool attr_addr(const nlattr* a, ip_family f, ip_address& out) {
  std::size_t want = f == ip_family::v4 ? 4 : 16;
  if (!a || mnl_attr_get_payload_len(a) != want) return false;
  out = ip_address::from_bytes(f, mnl_attr_get_payload(a));
  return true;
}
inline std::optional<ip_family> family_of(unsigned char af) {
  if (af == AF_INET) return ip_family::v4;
  if (af == AF_INET6) return ip_family::v6;
  return std::nullopt;
}
}  // namespace detail

}  // namespace netlink
CNF_END_NAMESPACE
