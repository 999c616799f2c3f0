// HTTP(S) client used by the kubernetes datastore. Internal: the only translation unit
// that includes Asio and Beast is http.cpp, so this header stays light.
//
// Each connection owns a small io_context that the calling thread runs until its one
// operation completes or the deadline passes, so requests are synchronous for callers,
// every step (resolve, connect, TLS handshake, write, read) is bounded, and no background
// thread is needed. Idle connections are kept alive in a pool.
#pragma once
#include <cnf/error.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

CNF_BEGIN_NAMESPACE
namespace kubernetes::detail {

struct endpoint {
  bool tls = true;
  std::string host;  ///< no brackets around IPv6 addresses
  std::string port;
  std::string url() const;  ///< "https://host:port"
};

/// Parses "https://host[:port]" or "http://host[:port]" (an optional path "/" is allowed).
result<endpoint> parse_url(std::string_view url);

struct tls_material {
  std::string ca_pem;       ///< trusted CAs; empty = the system's default paths
  std::string cert_pem;     ///< client certificate (optional)
  std::string key_pem;      ///< client key (with cert_pem)
  std::string ca_source;    ///< where ca_pem came from, for messages
  std::string cert_source;
  std::string key_source;
};

struct http_response {
  unsigned status = 0;
  std::string body;
};

/// One streaming response (a watch) on a dedicated connection. open() and read() run on
/// one thread; interrupt() may be called from any thread and makes them return promptly.
class http_stream {
 public:
  virtual ~http_stream() = default;
  /// Sends GET `target` and reads the response header. For a status other than 200 the
  /// whole (bounded) body is read and returned; for 200 the body is left for read().
  virtual result<http_response> open(const std::string& target, const std::string& authorization,
                                     std::chrono::milliseconds timeout) = 0;
  /// The next piece of the body; an empty string once the body has ended cleanly.
  /// errc::unavailable when nothing arrives within `idle`, or the stream broke.
  virtual result<std::string> read(std::chrono::milliseconds idle) = 0;
  virtual void interrupt() noexcept = 0;
};

class http_client {
 public:
  /// Prepares the TLS context (errc::invalid for unusable PEM data, naming its source).
  static result<http_client> make(endpoint ep, const tls_material& tls, std::chrono::milliseconds timeout);

  /// One request on a pooled kept-alive connection, bounded by the timeout.
  /// Transport failures are errc::unavailable naming the endpoint; a certificate that
  /// does not verify is errc::invalid ("certificate verify failed").
  result<http_response> request(std::string_view method, const std::string& target, const std::string& body,
                                const std::string& authorization, std::string_view content_type = "application/json") const;

  std::unique_ptr<http_stream> stream() const;
  const endpoint& where() const;

  struct impl;

 private:
  explicit http_client(std::shared_ptr<impl> p) : p_(std::move(p)) {}
  std::shared_ptr<impl> p_;
};

}  // namespace kubernetes::detail
CNF_END_NAMESPACE
