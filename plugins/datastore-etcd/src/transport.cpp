// The etcd client's HTTP transport: Boost.Beast over Asio (plain TCP or OpenSSL), with C++20
// coroutines. This is the only translation unit of the plugin that includes Asio and Beast
// (they are expensive to compile).
//
// Shape:
//  * no I/O thread: each calling thread has its own io_context and runs it for the length
//    of its call, so a request costs no hand-off between threads and concurrent callers
//    do not queue behind one another; a backstop a little longer than the timeout ends
//    the call even if a resolver misbehaves;
//  * per calling thread and endpoint, a few idle kept-alive connections; a request on a
//    pooled connection that dies before any reply byte (the server closed it while idle,
//    or restarted) is sent again on a fresh one;
//  * a watch stream is read synchronously by the watch's own thread once its headers are
//    in (the open itself has the deadline), so an event reaches the callback directly;
//  * endpoints are tried from the last one that worked; a request that may have reached
//    etcd is sent to another endpoint only when it is idempotent (a read);
//  * every socket operation carries the call's deadline (beast::tcp_stream expiry);
//  * with a username, a token from /v3/auth/authenticate is kept per endpoint (simple
//    tokens are local to one member) and fetched again when etcd says it is invalid.
#include "transport.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

CNF_BEGIN_NAMESPACE
namespace detail::etcd {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace json = boost::json;
using tcp = boost::asio::ip::tcp;
using clock = std::chrono::steady_clock;
using boost::system::error_code;

// ---- endpoint URLs ---------------------------------------------------------------------

result<endpoint> parse_endpoint(std::string_view url) {
  auto bad = [&](std::string why) { return error(errc::invalid, "endpoint '" + std::string(url) + "': " + why); };
  endpoint ep;
  ep.url = std::string(url);
  std::string_view rest;
  if (url.starts_with("http://")) {
    rest = url.substr(7);
  } else if (url.starts_with("https://")) {
    rest = url.substr(8);
    ep.tls = true;
  } else {
    return bad("expected a URL starting with http:// or https://");
  }
  if (auto slash = rest.find('/'); slash != std::string_view::npos) {
    if (rest.substr(slash) != "/") return bad("must not have a path (etcd's gateway lives at /v3/)");
    rest = rest.substr(0, slash);
  }
  if (rest.find_first_of("?#@") != std::string_view::npos) return bad("must be scheme://host[:port] only");
  std::string_view host, port;
  if (rest.starts_with("[")) {
    auto close = rest.find(']');
    if (close == std::string_view::npos) return bad("unterminated '[' in IPv6 address");
    host = rest.substr(1, close - 1);
    auto after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return bad("expected ':port' after ']'");
      port = after.substr(1);
    }
  } else {
    auto colon = rest.rfind(':');
    if (colon != std::string_view::npos) {
      host = rest.substr(0, colon);
      port = rest.substr(colon + 1);
      if (host.find(':') != std::string_view::npos) return bad("an IPv6 address must be written in brackets");
    } else {
      host = rest;
    }
  }
  if (host.empty()) return bad("has no host");
  if (port.empty()) {
    ep.port = "2379";
  } else {
    unsigned v = 0;
    auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
    if (ec != std::errc{} || p != port.data() + port.size() || v == 0 || v > 65535)
      return bad("port '" + std::string(port) + "' is not a number between 1 and 65535");
    ep.port = std::string(port);
  }
  ep.host = std::string(host);
  return ep;
}

namespace {

constexpr std::uint64_t max_reply_body = 512ull << 20;   // a range page; etcd itself caps requests
constexpr std::size_t max_stream_line = 64u << 20;       // one watch message

std::string ms_text(std::chrono::milliseconds t) { return std::to_string(t.count()) + " ms"; }

bool is_ip_literal(const std::string& host) {
  error_code ec;
  net::ip::make_address(host, ec);
  return !ec;
}

// One HTTP connection to one endpoint.
struct connection {
  std::size_t ep = 0;
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls;
  beast::flat_buffer buffer;

  beast::tcp_stream& lowest() { return tls ? beast::get_lowest_layer(*tls) : *plain; }
  void close() noexcept {
    error_code ec;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
    lowest().socket().close(ec);
  }
};

// gRPC status codes that etcd's gateway puts in its error bodies.
enum grpc_code : int {
  g_canceled = 1, g_unknown = 2, g_invalid_argument = 3, g_deadline = 4, g_not_found = 5, g_already_exists = 6,
  g_permission_denied = 7, g_resource_exhausted = 8, g_failed_precondition = 9, g_aborted = 10, g_out_of_range = 11,
  g_unimplemented = 12, g_internal = 13, g_unavailable = 14, g_data_loss = 15, g_unauthenticated = 16,
};

struct gateway_error {
  int code = -1;        // gRPC code, -1 when the body is not a gateway error
  std::string message;  // etcd's text
};

gateway_error parse_gateway_error(unsigned status, const std::string& body) {
  gateway_error g;
  error_code ec;
  auto v = json::parse(body, ec);
  if (!ec && v.is_object()) {
    auto& o = v.get_object();
    if (auto* c = o.if_contains("code"); c && c->is_int64()) g.code = static_cast<int>(c->get_int64());
    for (auto field : {"message", "error"}) {
      if (auto* m = o.if_contains(field); m && m->is_string() && g.message.empty()) g.message = std::string(m->get_string());
    }
  }
  if (g.message.empty()) {
    std::string excerpt = body.substr(0, 200);
    while (!excerpt.empty() && (excerpt.back() == '\n' || excerpt.back() == '\r')) excerpt.pop_back();
    g.message = "HTTP " + std::to_string(status) + (excerpt.empty() ? "" : ": " + excerpt);
  }
  return g;
}

errc map_grpc(int code, unsigned status) {
  switch (code) {
    case g_invalid_argument: return errc::invalid;
    case g_not_found: return errc::not_found;
    case g_already_exists: return errc::already_exists;
    case g_permission_denied: return errc::invalid;
    case g_failed_precondition: return errc::invalid;
    case g_out_of_range: return errc::conflict;  // compacted or future revision
    case g_unimplemented: return errc::unsupported;
    case g_unauthenticated: return errc::invalid;
    case g_canceled: case g_unknown: case g_deadline: case g_resource_exhausted: case g_aborted:
    case g_internal: case g_unavailable: case g_data_loss: return errc::unavailable;
    default: break;
  }
  if (status >= 500) return errc::unavailable;
  return errc::invalid;  // e.g. 404: this is not etcd's v3 gateway
}

// The result of one HTTP exchange on one connection.
struct exchange_result {
  error_code ec;
  bool wrote = false;     // the whole request left
  bool got_some = false;  // some reply byte arrived
  unsigned status = 0;
  std::string body;
  bool keep_alive = false;
};

// A watch stream after its headers: read synchronously by the thread that consumes it
// (the watch's thread), so an event costs no hand-off between threads. close() may come
// from any thread: it shuts the socket down, which ends a blocked read.
class stream_state final : public line_stream {
 public:
  stream_state(std::unique_ptr<connection> c, std::unique_ptr<http::response_parser<http::buffer_body>> p, std::string ep)
      : conn_(std::move(c)), parser_(std::move(p)), endpoint_(std::move(ep)), fd_(conn_->lowest().socket().native_handle()) {}

  ~stream_state() override { conn_->close(); }

  result<std::string> next() override {
    for (;;) {
      if (closed_) return error(errc::unavailable, "etcd " + endpoint_ + ": watch stream closed");
      if (auto nl = partial_.find('\n', scanned_); nl != std::string::npos) {
        std::string line = partial_.substr(0, nl);
        partial_.erase(0, nl + 1);
        scanned_ = 0;
        if (line.empty() || line == "\r") continue;
        return line;
      }
      scanned_ = partial_.size();
      if (end_) {
        if (!partial_.empty()) {  // a last message without its newline
          std::string line = std::move(partial_);
          partial_.clear();
          scanned_ = 0;
          return line;
        }
        return *end_;
      }
      if (partial_.size() > max_stream_line) {
        end_ = error(errc::unavailable, "etcd " + endpoint_ + ": a watch message exceeds " + std::to_string(max_stream_line) + " bytes");
        partial_.clear();
        continue;
      }
      read_more();
    }
  }

  void close() noexcept override {
    std::lock_guard lk(mu_);
    if (closed_.exchange(true)) return;
    ::shutdown(fd_, SHUT_RDWR);  // the reader's blocked read returns; the fd is closed by the owner
  }

  const std::string& endpoint() const noexcept override { return endpoint_; }

 private:
  void read_more() {
    char buf[16384];
    parser_->get().body().data = buf;
    parser_->get().body().size = sizeof buf;
    error_code ec;
    if (conn_->tls) http::read_some(*conn_->tls, conn_->buffer, *parser_, ec);
    else http::read_some(*conn_->plain, conn_->buffer, *parser_, ec);
    if (ec == http::error::need_buffer) ec = {};
    partial_.append(buf, sizeof buf - parser_->get().body().size);
    if (ec) end_ = error(errc::unavailable, "etcd " + endpoint_ + ": watch stream " + (closed_ ? std::string("closed") : "broken: " + ec.message()));
    else if (parser_->is_done()) end_ = error(errc::unavailable, "etcd " + endpoint_ + ": the server ended the watch stream");
  }

  std::unique_ptr<connection> conn_;
  std::unique_ptr<http::response_parser<http::buffer_body>> parser_;
  std::string endpoint_;
  int fd_;
  std::mutex mu_;
  std::atomic<bool> closed_{false};
  // Reader thread only:
  std::string partial_;
  std::size_t scanned_ = 0;
  std::optional<error> end_;
};

// What one endpoint did with one request.
struct outcome {
  std::optional<reply> ok;
  std::unique_ptr<stream_state> stream;  // for streaming requests
  error err;
  bool next_endpoint = false;  // worth trying the next endpoint
};

// What a calling thread owns: its io_context (run by that thread during its calls only)
// and its idle connections per endpoint.
struct caller_state {
  net::io_context ioc{1};
  std::vector<std::vector<std::unique_ptr<connection>>> idle;
};

class transport_impl final : public transport {
 public:
  explicit transport_impl(transport_options o) : opts_(std::move(o)), tokens_(opts_.endpoints.size()) {}

  ~transport_impl() override {
    // No call is running (nobody holds the transport any more): every caller's pool can go.
    std::lock_guard lk(callers_mu_);
    for (auto& [id, cs] : callers_)
      for (auto& q : cs->idle)
        for (auto& c : q) c->close();
    callers_.clear();
  }

  result<void> init() {
    bool any_tls = std::any_of(opts_.endpoints.begin(), opts_.endpoints.end(), [](auto& e) { return e.tls; });
    if (any_tls) {
      ssl_.emplace(ssl::context::tls_client);
      ssl_->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                        ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
      ssl_->set_verify_mode(ssl::verify_peer);
      error_code ec;
      if (!opts_.ca_file.empty()) {
        ssl_->load_verify_file(opts_.ca_file, ec);
        if (ec) return error(errc::invalid, "ca_file '" + opts_.ca_file + "': cannot load a PEM CA certificate: " + ec.message());
      } else {
        ssl_->set_default_verify_paths(ec);
        if (ec) return error(errc::invalid, "cannot load the system's CA certificates: " + ec.message());
      }
      if (!opts_.cert_file.empty()) {
        ssl_->use_certificate_chain_file(opts_.cert_file, ec);
        if (ec) return error(errc::invalid, "cert_file '" + opts_.cert_file + "': cannot load a PEM certificate: " + ec.message());
        ssl_->use_private_key_file(opts_.key_file, ssl::context::pem, ec);
        if (ec) return error(errc::invalid, "key_file '" + opts_.key_file + "': cannot load a PEM private key: " + ec.message());
        if (SSL_CTX_check_private_key(ssl_->native_handle()) != 1)
          return error(errc::invalid, "key_file '" + opts_.key_file + "' does not match cert_file '" + opts_.cert_file + "'");
      }
    }
    return {};
  }

  std::chrono::milliseconds timeout() const noexcept override { return opts_.timeout; }

  std::string current_endpoint() const override { return opts_.endpoints[preferred_.load() % opts_.endpoints.size()].url; }

  result<reply> post(std::string_view path, std::string body, bool idempotent) override {
    auto deadline = clock::now() + opts_.timeout;
    auto& cs = caller();
    auto o = drive(cs, run(cs, std::string(path), std::move(body), idempotent, false, deadline), deadline);
    if (!o.ok) return std::move(o.err);
    return std::move(*o.ok);
  }

  result<std::unique_ptr<line_stream>> stream(std::string_view path, std::string body) override {
    auto deadline = clock::now() + opts_.timeout;
    auto& cs = caller();
    auto o = drive(cs, run(cs, std::string(path), std::move(body), true, true, deadline), deadline);
    if (!o.stream) return std::move(o.err);
    return std::unique_ptr<line_stream>(std::move(o.stream));
  }

 private:
  caller_state& caller() {
    std::lock_guard lk(callers_mu_);
    auto& cs = callers_[std::this_thread::get_id()];
    if (!cs) {
      cs = std::make_unique<caller_state>();
      cs->idle.resize(opts_.endpoints.size());
    }
    return *cs;
  }

  // Runs one call's coroutine on the calling thread's io_context until it finishes. The
  // socket deadlines end it in time; the backstop covers anything they could miss (a
  // resolver that hangs): the call then fails, and what is left runs on this thread's
  // next call, writing into a result nobody reads any more.
  outcome drive(caller_state& cs, net::awaitable<outcome> op, clock::time_point deadline) {
    auto slot = std::make_shared<std::optional<outcome>>();
    net::co_spawn(cs.ioc, std::move(op), [slot](std::exception_ptr e, outcome o) {
      if (e) {
        o = outcome{};
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& x) {
          o.err = error(errc::internal, std::string("etcd: unexpected failure: ") + x.what());
        } catch (...) {
          o.err = error(errc::internal, "etcd: unexpected failure");
        }
      }
      *slot = std::move(o);
    });
    const auto backstop = deadline + std::chrono::seconds(2);
    cs.ioc.restart();
    while (!*slot && clock::now() < backstop) {
      try {
        cs.ioc.run_one_until(backstop);
      } catch (...) {
        // A handler threw; the coroutine's own failure reaches the slot.
      }
    }
    if (!*slot) {
      outcome o;
      o.err = error(errc::unavailable, "etcd " + current_endpoint() + ": no reply within " + ms_text(opts_.timeout) + " (timeout_ms)");
      return o;
    }
    return std::move(**slot);
  }

  std::string token_for(std::size_t i) {
    std::lock_guard lk(tokens_mu_);
    return tokens_[i];
  }
  void set_token(std::size_t i, std::string t) {
    std::lock_guard lk(tokens_mu_);
    tokens_[i] = std::move(t);
  }

  error ep_error(std::size_t i, errc c, const std::string& what) const {
    return error(c, "etcd " + opts_.endpoints[i].url + ": " + what);
  }

  std::string io_text(const error_code& ec, std::size_t ep = SIZE_MAX) const {
    if (ec == beast::error::timeout) return "no reply in time (timeout_ms = " + std::to_string(opts_.timeout.count()) + ")";
    std::string m = ec.message();
    if (m.find("alert bad certificate") != std::string::npos || m.find("certificate required") != std::string::npos ||
        m.find("alert unknown ca") != std::string::npos)
      m += "; the server did not accept our client certificate (cert_file '" + opts_.cert_file + "')";
    else if (ep < opts_.endpoints.size() && !opts_.endpoints[ep].tls &&
             (ec == http::error::end_of_stream || ec == net::error::eof || ec == net::error::connection_reset))
      m += " (the server closed the connection without an HTTP reply; does it want https://?)";
    return m;
  }

  // All endpoints, starting from the one that worked last.
  net::awaitable<outcome> run(caller_state& cs, std::string path, std::string body, bool idempotent, bool streaming, clock::time_point deadline) {
    const std::size_t n = opts_.endpoints.size();
    const std::size_t start = preferred_.load() % n;
    std::vector<error> failures;
    for (std::size_t k = 0; k < n; ++k) {
      std::size_t i = (start + k) % n;
      auto now = clock::now();
      if (now >= deadline) {
        if (failures.empty()) failures.push_back(ep_error(i, errc::unavailable, "no reply within " + ms_text(opts_.timeout) + " (timeout_ms)"));
        break;
      }
      // Leave time for the endpoints not tried yet: a black-holed first endpoint must not eat the whole budget.
      auto connect_deadline = now + (deadline - now) / static_cast<long>(n - k);
      // A read may be repeated elsewhere, so it gets only its share too (a hung member that
      // accepts connections but never answers must not eat the whole budget either).
      // (No temporaries inside co_await expressions: g++ 12 mis-destroys some of them.)
      const auto attempt_deadline = idempotent ? connect_deadline : deadline;
      auto o = co_await attempt(cs, i, path, body, idempotent, streaming, connect_deadline, attempt_deadline);
      if (o.ok || o.stream) {
        preferred_.store(i);
        co_return o;
      }
      if (!o.next_endpoint) co_return o;
      failures.push_back(std::move(o.err));
    }
    outcome o;
    if (failures.size() == 1) {
      o.err = std::move(failures.front());
      co_return o;
    }
    bool all_invalid = std::all_of(failures.begin(), failures.end(), [](auto& e) { return e.code == errc::invalid; });
    std::string msg = "etcd: none of the " + std::to_string(n) + " endpoints answered: ";
    for (std::size_t k = 0; k < failures.size(); ++k) msg += (k ? "; " : "") + failures[k].message;
    o.err = error(all_invalid ? errc::invalid : errc::unavailable, std::move(msg));
    co_return o;
  }

  static std::unique_ptr<connection> take_idle(caller_state& cs, std::size_t i) {
    if (cs.idle[i].empty()) return nullptr;
    auto c = std::move(cs.idle[i].back());
    cs.idle[i].pop_back();
    return c;
  }
  void give_back(caller_state& cs, std::unique_ptr<connection> c) {
    auto& q = cs.idle[c->ep];
    if (q.size() < opts_.max_idle_per_endpoint) q.push_back(std::move(c));
    else c->close();
  }
  static void drop_idle(caller_state& cs, std::size_t i) {
    for (auto& c : cs.idle[i]) c->close();
    cs.idle[i].clear();
  }

  // One endpoint: a connection (pooled or new), a token if needed, the request.
  net::awaitable<outcome> attempt(caller_state& cs, std::size_t i, const std::string& path, const std::string& body, bool idempotent, bool streaming,
                                  clock::time_point connect_deadline, clock::time_point deadline) {
    const bool auth = !opts_.username.empty();
    bool reauthed = false;
    outcome o;
    for (int round = 0; round < 4; ++round) {
      auto c = streaming ? nullptr : take_idle(cs, i);
      const bool reused = c != nullptr;
      if (!c) {
        const auto until = std::min(connect_deadline, deadline);
        auto made = co_await connect(i, until);
        if (!made) {
          o.err = std::move(made).error();
          o.next_endpoint = true;
          co_return o;
        }
        c = std::move(*made);
      }
      if (auth && token_for(i).empty()) {
        auto t = co_await authenticate(*c, deadline);
        if (t.stale && reused) { drop_idle(cs, i); continue; }
        if (!t.err.message.empty()) {
          o.err = std::move(t.err);
          o.next_endpoint = t.transient;
          co_return o;
        }
        set_token(i, std::move(t.token));
      }

      if (streaming) {
        auto s = co_await open_stream(std::move(c), path, body, deadline);
        if (s.retry_auth && !reauthed) { reauthed = true; set_token(i, {}); continue; }
        co_return std::move(s.out);
      }

      const std::string token = auth ? token_for(i) : std::string();
      auto x = co_await exchange(*c, path, body, token, deadline);
      if (x.ec) {
        c->close();
        if (reused && !x.got_some && x.ec != beast::error::timeout) { drop_idle(cs, i); continue; }  // stale pooled connection
        o.err = ep_error(i, errc::unavailable,
                         (x.wrote && !idempotent ? "the request may or may not have been applied: " : std::string()) + io_text(x.ec, i));
        o.next_endpoint = !x.wrote || idempotent;
        co_return o;
      }
      if (x.keep_alive) give_back(cs, std::move(c));
      else c->close();
      if (x.status == 200) {
        o.ok = reply{std::move(x.body), opts_.endpoints[i].url};
        co_return o;
      }
      auto g = parse_gateway_error(x.status, x.body);
      if (g.code == g_unauthenticated && auth && !reauthed) {
        reauthed = true;
        set_token(i, {});
        continue;
      }
      o.err = ep_error(i, map_grpc(g.code, x.status), g.message);
      o.next_endpoint = (g.code == g_unavailable) && idempotent;
      co_return o;
    }
    o.err = ep_error(i, errc::unavailable, "the connection kept failing");
    o.next_endpoint = true;
    co_return o;
  }

  net::awaitable<result<std::unique_ptr<connection>>> connect(std::size_t i, clock::time_point deadline) {
    const auto& ep = opts_.endpoints[i];
    auto ex = co_await net::this_coro::executor;
    auto c = std::make_unique<connection>();
    c->ep = i;
    if (ep.tls) c->tls.emplace(ex, *ssl_);
    else c->plain.emplace(ex);
    error_code ec;
    std::vector<tcp::endpoint> addrs;
    auto ip = net::ip::make_address(ep.host, ec);
    unsigned short port = static_cast<unsigned short>(std::stoul(ep.port));
    if (!ec) {
      addrs.emplace_back(ip, port);
    } else {
      ec = {};
      tcp::resolver resolver(ex);
      auto res = co_await resolver.async_resolve(ep.host, ep.port, net::redirect_error(net::use_awaitable, ec));
      if (ec) co_return ep_error(i, errc::unavailable, "cannot resolve host '" + ep.host + "': " + ec.message());
      for (auto& e : res) addrs.push_back(e.endpoint());
    }
    if (clock::now() >= deadline) co_return ep_error(i, errc::unavailable, "no connection within " + ms_text(opts_.timeout) + " (timeout_ms)");
    c->lowest().expires_at(deadline);
    co_await c->lowest().async_connect(addrs, net::redirect_error(net::use_awaitable, ec));
    if (ec) {
      if (ec == beast::error::timeout) co_return ep_error(i, errc::unavailable, "no connection within the time left of " + ms_text(opts_.timeout) + " (timeout_ms)");
      co_return ep_error(i, errc::unavailable, "cannot connect: " + ec.message());
    }
    c->lowest().socket().set_option(tcp::no_delay(true), ec);
    if (ep.tls) {
      // OpenSSL checks the name itself (DNS SAN, or IP SAN for an address), so a mismatch
      // is reported as such ("hostname mismatch", "IP address mismatch").
      SSL* h = c->tls->native_handle();
      X509_VERIFY_PARAM* param = SSL_get0_param(h);
      if (is_ip_literal(ep.host)) {
        X509_VERIFY_PARAM_set1_ip_asc(param, ep.host.c_str());
      } else {
        SSL_set_tlsext_host_name(h, ep.host.c_str());
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        X509_VERIFY_PARAM_set1_host(param, ep.host.c_str(), 0);
      }
      c->tls->set_verify_mode(ssl::verify_peer);
      co_await c->tls->async_handshake(ssl::stream_base::client, net::redirect_error(net::use_awaitable, ec));
      if (ec) {
        if (ec == beast::error::timeout) co_return ep_error(i, errc::unavailable, "TLS handshake: " + io_text(ec));
        long v = SSL_get_verify_result(c->tls->native_handle());
        std::string what = "TLS handshake failed: " + ec.message();
        if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH)
          what += " (" + std::string(X509_verify_cert_error_string(v)) + ": the server's certificate does not name '" + ep.host + "')";
        else if (v != X509_V_OK)
          what += " (" + std::string(X509_verify_cert_error_string(v)) + "; ca_file: '" + (opts_.ca_file.empty() ? "system store" : opts_.ca_file) + "')";
        // A certificate that does not verify is a configuration problem, not a passing one.
        bool verify = v != X509_V_OK || ec.message().find("certificate") != std::string::npos;
        co_return ep_error(i, verify ? errc::invalid : errc::unavailable, what);
      }
    }
    co_return std::move(c);
  }

  template <class Stream>
  net::awaitable<void> exchange_on(Stream& s, connection& c, http::request<http::string_body>& req, exchange_result& x) {
    co_await http::async_write(s, req, net::redirect_error(net::use_awaitable, x.ec));
    if (x.ec) co_return;
    x.wrote = true;
    http::response_parser<http::string_body> p;
    p.body_limit(max_reply_body);
    co_await http::async_read(s, c.buffer, p, net::redirect_error(net::use_awaitable, x.ec));
    x.got_some = p.got_some();
    if (x.ec) co_return;
    auto res = p.release();
    x.status = res.result_int();
    x.keep_alive = res.keep_alive();
    x.body = std::move(res.body());
  }

  http::request<http::string_body> make_request(const connection& c, std::string_view path, const std::string& body, const std::string& token) const {
    const auto& ep = opts_.endpoints[c.ep];
    http::request<http::string_body> req{http::verb::post, path, 11};
    req.set(http::field::host, ep.host.find(':') != std::string::npos ? "[" + ep.host + "]:" + ep.port : ep.host + ":" + ep.port);
    req.set(http::field::content_type, "application/json");
    if (!token.empty()) req.set(http::field::authorization, token);
    req.keep_alive(true);
    req.body() = body;
    req.prepare_payload();
    return req;
  }

  net::awaitable<exchange_result> exchange(connection& c, std::string_view path, const std::string& body, const std::string& token,
                                           clock::time_point deadline) {
    exchange_result x;
    auto req = make_request(c, path, body, token);
    c.lowest().expires_at(deadline);
    if (c.tls) co_await exchange_on(*c.tls, c, req, x);
    else co_await exchange_on(*c.plain, c, req, x);
    co_return x;
  }

  struct auth_result {
    std::string token;
    error err{errc::ok, {}};
    bool transient = false;
    bool stale = false;  // pooled connection was dead before any reply
  };

  net::awaitable<auth_result> authenticate(connection& c, clock::time_point deadline) {
    auth_result a;
    json::object req{{"name", opts_.username}, {"password", opts_.password}};
    const std::string path = "/v3/auth/authenticate", body = json::serialize(req), no_token;
    auto x = co_await exchange(c, path, body, no_token, deadline);
    const auto i = c.ep;
    if (x.ec) {
      if (!x.got_some && x.ec != beast::error::timeout) a.stale = true;
      a.err = ep_error(i, errc::unavailable, "authentication as user '" + opts_.username + "': " + io_text(x.ec, i));
      a.transient = true;
      co_return a;
    }
    if (x.status == 200) {
      error_code ec;
      auto v = json::parse(x.body, ec);
      if (!ec && v.is_object()) {
        if (auto* t = v.get_object().if_contains("token"); t && t->is_string()) {
          a.token = std::string(t->get_string());
          co_return a;
        }
      }
      a.err = ep_error(i, errc::unavailable, "authentication reply has no token: " + x.body.substr(0, 200));
      a.transient = true;
      co_return a;
    }
    auto g = parse_gateway_error(x.status, x.body);
    if (g.message.find("authentication is not enabled") != std::string::npos) {
      a.err = ep_error(i, errc::invalid, "username '" + opts_.username + "' is set but authentication is not enabled on this etcd (" + g.message + ")");
      co_return a;
    }
    bool transient = map_grpc(g.code, x.status) == errc::unavailable;
    a.err = ep_error(i, transient ? errc::unavailable : errc::invalid,
                     "authentication as user '" + opts_.username + "' failed: " + g.message + (transient ? "" : "; check username and password"));
    a.transient = transient;
    co_return a;
  }

  struct open_result {
    outcome out;
    bool retry_auth = false;
  };

  template <class Stream>
  net::awaitable<void> open_on(Stream& s, connection& c, http::request<http::string_body>& req, http::response_parser<http::buffer_body>& p,
                               exchange_result& x) {
    co_await http::async_write(s, req, net::redirect_error(net::use_awaitable, x.ec));
    if (x.ec) co_return;
    x.wrote = true;
    co_await http::async_read_header(s, c.buffer, p, net::redirect_error(net::use_awaitable, x.ec));
    x.got_some = p.got_some();
    if (x.ec) co_return;
    x.status = p.get().result_int();
    if (x.status == 200) co_return;
    // An error: read the (small) body for etcd's message.
    http::response_parser<http::string_body> full(std::move(p));
    full.body_limit(1 << 20);
    co_await http::async_read(s, c.buffer, full, net::redirect_error(net::use_awaitable, x.ec));
    x.body = std::move(full.get().body());
    x.ec = {};
  }

  net::awaitable<open_result> open_stream(std::unique_ptr<connection> c, const std::string& path, const std::string& body, clock::time_point deadline) {
    open_result r;
    const auto i = c->ep;
    auto req = make_request(*c, path, body, opts_.username.empty() ? std::string() : token_for(i));
    auto p = std::make_unique<http::response_parser<http::buffer_body>>();
    p->body_limit(boost::none);
    exchange_result x;
    c->lowest().expires_at(deadline);
    if (c->tls) co_await open_on(*c->tls, *c, req, *p, x);
    else co_await open_on(*c->plain, *c, req, *p, x);
    if (x.ec) {
      c->close();
      r.out.err = ep_error(i, errc::unavailable, "watch: " + io_text(x.ec, i));
      r.out.next_endpoint = true;
      co_return r;
    }
    if (x.status != 200) {
      c->close();
      auto g = parse_gateway_error(x.status, x.body);
      if (g.code == g_unauthenticated && !opts_.username.empty()) r.retry_auth = true;
      r.out.err = ep_error(i, map_grpc(g.code, x.status), "watch: " + g.message);
      r.out.next_endpoint = g.code == g_unavailable;
      co_return r;
    }
    // A long-lived stream: no deadline, but TCP keepalive notices a peer that vanished.
    c->lowest().expires_never();
    auto& sock = c->lowest().socket();
    error_code ec;
    sock.set_option(net::socket_base::keep_alive(true), ec);
    int idle = 10, intvl = 5, cnt = 3;
    ::setsockopt(sock.native_handle(), IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    ::setsockopt(sock.native_handle(), IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    ::setsockopt(sock.native_handle(), IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
    r.out.stream = std::make_unique<stream_state>(std::move(c), std::move(p), opts_.endpoints[i].url);
    co_return r;
  }

  transport_options opts_;
  std::optional<ssl::context> ssl_;
  std::atomic<std::size_t> preferred_{0};
  std::mutex callers_mu_;
  std::map<std::thread::id, std::unique_ptr<caller_state>> callers_;
  std::mutex tokens_mu_;
  std::vector<std::string> tokens_;  // per endpoint
};

}  // namespace

result<std::shared_ptr<transport>> transport::create(transport_options o) {
  if (o.endpoints.empty()) return error(errc::invalid, "endpoints: at least one etcd endpoint is needed");
  auto t = std::make_shared<transport_impl>(std::move(o));
  if (auto r = t->init(); !r) return r.error();
  return std::shared_ptr<transport>(std::move(t));
}

}  // namespace detail::etcd
CNF_END_NAMESPACE
