// The one translation unit of the kubernetes datastore that includes Asio and Beast.
#include "http.hpp"

#include <cnf/config.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <poll.h>

#include <atomic>
#include <mutex>
#include <optional>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace kubernetes::detail {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;
using boost::system::error_code;

constexpr std::size_t max_idle_connections = 16;
constexpr std::uint64_t max_body = 256ull << 20;   // one list page; pages keep it far smaller
constexpr std::uint64_t max_error_body = 1ull << 20;

bool is_ip_literal(const std::string& host) {
  error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

std::string host_header(const endpoint& ep) {
  std::string h = ep.host.find(':') != std::string::npos ? "[" + ep.host + "]" : ep.host;
  return h + ":" + ep.port;
}

std::string ms_text(std::chrono::milliseconds t) { return std::to_string(t.count()) + " ms"; }

/// A socket (plain or TLS) with its own small io_context, run by whichever thread uses it.
class connection {
 public:
  connection(const endpoint& ep, asio::ssl::context* ssl, std::chrono::milliseconds budget)
      : ep_(ep), ssl_(ssl), budget_(budget) {
    if (ep_.tls) tls_.emplace(ioc_, *ssl_);
    else plain_.emplace(ioc_);
  }

  bool is_open() const noexcept { return open_; }
  bool reusable() const noexcept { return open_ && reusable_; }

  /// True when an idle kept-alive connection still looks usable: no bytes pending (a
  /// peer that closed makes the socket readable).
  bool still_idle() {
    if (!open_ || buf_.size() != 0) return false;
    pollfd p{};
    p.fd = socket().native_handle();
    p.events = POLLIN;
    return ::poll(&p, 1, 0) == 0;
  }

  void interrupt() noexcept {
    interrupted_ = true;
    ioc_.stop();
  }

  result<void> connect(steady::time_point deadline) {
    tcp::resolver resolver(ioc_);
    tcp::resolver::results_type addrs;
    error_code ec;
    bool done = false;
    resolver.async_resolve(ep_.host, ep_.port, [&](error_code e, tcp::resolver::results_type r) {
      ec = e;
      addrs = std::move(r);
      done = true;
    });
    if (auto r = run(deadline, done, [&] { resolver.cancel(); }, "resolving the host name"); !r) return r;
    if (ec) return fail(errc::unavailable, "cannot resolve the host name: " + ec.message());

    done = false;
    lowest().async_connect(addrs, [&](error_code e, const tcp::endpoint&) {
      ec = e;
      done = true;
    });
    if (auto r = run(deadline, done, [&] { close_socket(); }, "connecting"); !r) return r;
    if (ec) return fail(errc::unavailable, "cannot connect: " + ec.message());
    socket().set_option(tcp::no_delay(true), ec);

    if (tls_) {
      SSL* ssl = tls_->native_handle();
      if (is_ip_literal(ep_.host)) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), ep_.host.c_str());
      } else {
        SSL_set_tlsext_host_name(ssl, ep_.host.c_str());
        SSL_set1_host(ssl, ep_.host.c_str());
      }
      done = false;
      tls_->async_handshake(asio::ssl::stream_base::client, [&](error_code e) {
        ec = e;
        done = true;
      });
      if (auto r = run(deadline, done, [&] { close_socket(); }, "in the TLS handshake"); !r) return r;
      if (ec) {
        long v = SSL_get_verify_result(ssl);
        if (v != X509_V_OK)
          return fail(errc::invalid, std::string("TLS handshake failed: certificate verify failed (") +
                                         X509_verify_cert_error_string(v) +
                                         "); the server's certificate does not match the configured "
                                         "certificate-authority or the server address");
        return fail(errc::unavailable, "TLS handshake failed: " + ec.message());
      }
    }
    open_ = true;
    reusable_ = true;
    return {};
  }

  struct exchange_result {
    result<http_response> r;
    bool stale = false;  ///< failed before any reply byte: a reused connection the peer had closed
  };

  exchange_result exchange(http::verb verb, const std::string& target, const std::string& body,
                           const std::string& authorization, std::string_view content_type,
                           steady::time_point deadline) {
    http::request<http::string_body> req{verb, target, 11};
    fill(req, authorization);
    if (!body.empty()) {
      req.set(http::field::content_type, content_type);
      req.body() = body;
    }
    req.prepare_payload();

    error_code ec;
    bool done = false;
    with_stream([&](auto& s) { http::async_write(s, req, [&](error_code e, std::size_t) { ec = e; done = true; }); });
    if (auto r = run(deadline, done, [&] { close_socket(); }, "sending the request"); !r) return {r.error(), false};
    if (ec) {
      close_socket();
      return {fail(errc::unavailable, "connection lost while sending the request: " + ec.message()), true};
    }

    http::response_parser<http::string_body> p;
    p.body_limit(max_body);
    done = false;
    with_stream([&](auto& s) { http::async_read(s, buf_, p, [&](error_code e, std::size_t) { ec = e; done = true; }); });
    if (auto r = run(deadline, done, [&] { close_socket(); }, "waiting for the reply"); !r) return {r.error(), false};
    if (ec) {
      bool stale = !p.got_some();
      close_socket();
      return {fail(errc::unavailable, "connection lost while reading the reply: " + ec.message()), stale};
    }
    if (!p.get().keep_alive()) reusable_ = false;
    http_response out;
    out.status = p.get().result_int();
    out.body = std::move(p.get().body());
    return {std::move(out), false};
  }

  // ---- streaming ----
  result<http_response> open_stream(const std::string& target, const std::string& authorization,
                                    steady::time_point deadline) {
    http::request<http::empty_body> req{http::verb::get, target, 11};
    fill(req, authorization);
    error_code ec;
    bool done = false;
    with_stream([&](auto& s) { http::async_write(s, req, [&](error_code e, std::size_t) { ec = e; done = true; }); });
    if (auto r = run(deadline, done, [&] { close_socket(); }, "sending the request"); !r) return r.error();
    if (ec) return fail(errc::unavailable, "connection lost while sending the request: " + ec.message());

    sp_.emplace();
    sp_->body_limit(boost::none);
    done = false;
    with_stream([&](auto& s) { http::async_read_header(s, buf_, *sp_, [&](error_code e, std::size_t) { ec = e; done = true; }); });
    if (auto r = run(deadline, done, [&] { close_socket(); }, "waiting for the reply"); !r) return r.error();
    if (ec) return fail(errc::unavailable, "connection lost while reading the reply: " + ec.message());

    http_response out;
    out.status = sp_->get().result_int();
    if (out.status != 200) {
      // Read the (small) error body as a whole.
      http::response_parser<http::string_body> whole{std::move(*sp_)};
      sp_.reset();
      whole.body_limit(max_error_body);
      if (!whole.is_done()) {
        done = false;
        with_stream([&](auto& s) { http::async_read(s, buf_, whole, [&](error_code e, std::size_t) { ec = e; done = true; }); });
        if (auto r = run(deadline, done, [&] { close_socket(); }, "reading the reply"); !r) return r.error();
      }
      out.body = std::move(whole.get().body());
      stream_done_ = true;
    }
    return out;
  }

  result<std::string> read_stream(std::chrono::milliseconds idle) {
    if (stream_done_ || !sp_) return std::string();
    auto deadline = steady::now() + idle;
    std::string out;
    char tmp[16384];
    for (;;) {
      sp_->get().body().data = tmp;
      sp_->get().body().size = sizeof tmp;
      error_code ec;
      bool done = false;
      with_stream([&](auto& s) { http::async_read_some(s, buf_, *sp_, [&](error_code e, std::size_t) { ec = e; done = true; }); });
      if (auto r = run(deadline, done, [&] { close_socket(); }, "waiting for watch events", idle); !r) return r.error();
      if (ec == http::error::need_buffer) ec = {};
      std::size_t got = sizeof tmp - sp_->get().body().size;
      out.append(tmp, got);
      if (ec) {
        close_socket();
        return fail(errc::unavailable, "the stream broke off: " + ec.message());
      }
      if (sp_->is_done()) {
        stream_done_ = true;
        return out;
      }
      if (!out.empty()) return out;
    }
  }

 private:
  template <class Req>
  void fill(Req& req, const std::string& authorization) {
    req.set(http::field::host, host_header(ep_));
    req.set(http::field::user_agent, "cnf-kubernetes/" CNF_VERSION_STRING);
    req.set(http::field::accept, "application/json");
    if (!authorization.empty()) req.set(http::field::authorization, authorization);
    req.keep_alive(true);
  }

  template <class F>
  void with_stream(F&& f) {
    if (tls_) f(*tls_);
    else f(*plain_);
  }

  beast::tcp_stream& lowest() { return tls_ ? beast::get_lowest_layer(*tls_) : *plain_; }
  tcp::socket& socket() { return lowest().socket(); }

  void close_socket() noexcept {
    error_code ec;
    socket().shutdown(tcp::socket::shutdown_both, ec);
    socket().close(ec);
    open_ = false;
    reusable_ = false;
  }

  cnf::error fail(errc code, const std::string& what) const {
    return cnf::error(code, "kubernetes API server " + ep_.url() + ": " + what);
  }

  /// Runs the loop until `done`, the deadline, or interrupt(). When the operation did not
  /// finish, `cancel` closes what it waits on and the aborted handler is drained.
  template <class Cancel>
  result<void> run(steady::time_point deadline, const bool& done, Cancel&& cancel, const char* phase,
                   std::optional<std::chrono::milliseconds> budget = std::nullopt) {
    ioc_.restart();
    if (!interrupted_) ioc_.run_until(deadline);
    if (done) return {};
    cancel();
    open_ = false;
    reusable_ = false;
    if (!interrupted_) {
      ioc_.restart();
      ioc_.run();  // the aborted operation completes with operation_aborted
    }
    if (interrupted_) return fail(errc::unavailable, "cancelled");
    return fail(errc::unavailable, std::string("no reply within ") + ms_text(budget.value_or(budget_)) + " (" + phase + ")");
  }

  endpoint ep_;
  asio::ssl::context* ssl_;
  std::chrono::milliseconds budget_;
  asio::io_context ioc_{1};
  std::optional<beast::tcp_stream> plain_;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls_;
  beast::flat_buffer buf_;
  std::optional<http::response_parser<http::buffer_body>> sp_;
  bool stream_done_ = false;
  bool open_ = false;
  bool reusable_ = false;
  std::atomic<bool> interrupted_{false};
};

class stream_impl final : public http_stream {
 public:
  explicit stream_impl(std::shared_ptr<http_client::impl> owner, const endpoint& ep, asio::ssl::context* ssl,
                       std::chrono::milliseconds budget)
      : owner_(std::move(owner)), c_(ep, ssl, budget) {}

  result<http_response> open(const std::string& target, const std::string& authorization,
                             std::chrono::milliseconds timeout) override {
    auto deadline = steady::now() + timeout;
    if (auto r = c_.connect(deadline); !r) return r.error();
    return c_.open_stream(target, authorization, deadline);
  }
  result<std::string> read(std::chrono::milliseconds idle) override { return c_.read_stream(idle); }
  void interrupt() noexcept override { c_.interrupt(); }

 private:
  std::shared_ptr<http_client::impl> owner_;  // keeps the TLS context alive
  connection c_;
};

}  // namespace

struct http_client::impl {
  endpoint ep;
  std::chrono::milliseconds timeout{};
  std::unique_ptr<asio::ssl::context> ssl;
  std::mutex m;
  std::vector<std::unique_ptr<connection>> idle;

  std::unique_ptr<connection> take() {
    {
      std::lock_guard lk(m);
      while (!idle.empty()) {
        auto c = std::move(idle.back());
        idle.pop_back();
        if (c->still_idle()) return c;
      }
    }
    return std::make_unique<connection>(ep, ssl.get(), timeout);
  }
  void give(std::unique_ptr<connection> c) {
    if (!c->reusable()) return;
    std::lock_guard lk(m);
    if (idle.size() < max_idle_connections) idle.push_back(std::move(c));
  }
};

result<http_client> http_client::make(endpoint ep, const tls_material& tls, std::chrono::milliseconds timeout) {
  auto p = std::make_shared<impl>();
  p->ep = std::move(ep);
  p->timeout = timeout;
  if (p->ep.tls) {
    p->ssl = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
    auto& ctx = *p->ssl;
    error_code ec;
    ctx.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                        asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1,
                    ec);
    ctx.set_verify_mode(asio::ssl::verify_peer);
    if (tls.ca_pem.empty()) {
      ctx.set_default_verify_paths(ec);
      if (ec) return error(errc::invalid, "cannot load the system's CA certificates: " + ec.message());
    } else {
      ctx.add_certificate_authority(asio::buffer(tls.ca_pem), ec);
      if (ec)
        return error(errc::invalid, "certificate-authority (" + tls.ca_source + "): not a usable PEM certificate: " + ec.message());
    }
    if (!tls.cert_pem.empty() || !tls.key_pem.empty()) {
      if (tls.cert_pem.empty() || tls.key_pem.empty())
        return error(errc::invalid, "client certificate (" + tls.cert_source + "): a client certificate needs both the certificate and its key");
      ctx.use_certificate_chain(asio::buffer(tls.cert_pem), ec);
      if (ec) return error(errc::invalid, "client-certificate (" + tls.cert_source + "): not a usable PEM certificate: " + ec.message());
      ctx.use_private_key(asio::buffer(tls.key_pem), asio::ssl::context::pem, ec);
      if (ec && ec.category() == asio::error::get_ssl_category() &&
          ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == X509_R_KEY_VALUES_MISMATCH)
        return error(errc::invalid, "client-key (" + tls.key_source + ") does not belong to the client-certificate (" +
                                        tls.cert_source + ")");
      if (ec) return error(errc::invalid, "client-key (" + tls.key_source + "): not a usable PEM private key: " + ec.message());
      if (SSL_CTX_check_private_key(ctx.native_handle()) != 1)
        return error(errc::invalid, "client-key (" + tls.key_source + ") does not belong to the client-certificate (" +
                                        tls.cert_source + ")");
    }
  }
  return http_client(std::move(p));
}

result<http_response> http_client::request(std::string_view method, const std::string& target, const std::string& body,
                                           const std::string& authorization, std::string_view content_type) const {
  http::verb verb = http::string_to_verb(method);
  if (verb == http::verb::unknown) return error(errc::internal, "unknown HTTP method " + std::string(method));
  auto deadline = steady::now() + p_->timeout;
  for (int attempt = 0;; ++attempt) {
    auto c = p_->take();
    bool reused = c->is_open();
    if (!reused) {
      if (auto r = c->connect(deadline); !r) return r.error();
    }
    auto x = c->exchange(verb, target, body, authorization, content_type, deadline);
    if (x.r) {
      p_->give(std::move(c));
      return std::move(x.r);
    }
    // A kept-alive connection the server closed meanwhile: GET is safe to send again.
    if (reused && x.stale && verb == http::verb::get && attempt == 0) continue;
    return std::move(x.r);
  }
}

std::unique_ptr<http_stream> http_client::stream() const {
  return std::make_unique<stream_impl>(p_, p_->ep, p_->ssl.get(), p_->timeout);
}

const endpoint& http_client::where() const { return p_->ep; }

}  // namespace kubernetes::detail
CNF_END_NAMESPACE
