// The HTTP side of the etcd client: connections, TLS, failover, auth, timeouts.
// Private to the plugin. Implemented in transport.cpp, the only file that includes
// Asio and Beast.
#pragma once
#include <cnf/error.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

CNF_BEGIN_NAMESPACE
namespace detail::etcd {

/// One parsed endpoint URL.
struct endpoint {
  std::string url;   ///< as configured, for messages
  bool tls = false;
  std::string host;  ///< without brackets for IPv6
  std::string port;  ///< decimal
};

/// Parses http(s)://host[:port][/]; the error says what is wrong with the URL.
result<endpoint> parse_endpoint(std::string_view url);

struct transport_options {
  std::vector<endpoint> endpoints;
  std::string ca_file, cert_file, key_file;
  std::string username, password;
  std::chrono::milliseconds timeout{5000};
  std::size_t max_idle_per_endpoint = 4;  ///< per calling thread
};

/// A successful (HTTP 200) reply and the endpoint that gave it.
struct reply {
  std::string body;
  std::string endpoint;
};

/// A streaming reply (the watch), split into lines. next() belongs to one thread (it reads
/// the socket itself); close() may be called from any thread.
class line_stream {
 public:
  virtual ~line_stream() = default;
  /// Blocks for the next line. An error when the stream ended or failed (names the endpoint).
  virtual result<std::string> next() = 0;
  /// Ends the stream; next() then returns an error. Safe from any thread, idempotent.
  virtual void close() noexcept = 0;
  virtual const std::string& endpoint() const noexcept = 0;
};

class transport {
 public:
  virtual ~transport() = default;

  /// Loads TLS material; no network traffic yet.
  static result<std::shared_ptr<transport>> create(transport_options o);

  /// POSTs a JSON body to `path` (e.g. "/v3/kv/range") and waits for the reply, within the
  /// timeout. Fails over to the next endpoint when one cannot be reached; a request that
  /// may have reached etcd is repeated elsewhere only when `idempotent`. etcd's own errors
  /// come back with a mapped errc and etcd's message, naming the endpoint.
  virtual result<reply> post(std::string_view path, std::string body, bool idempotent) = 0;

  /// Opens a streaming POST (the watch) within the timeout; then reads without a deadline.
  virtual result<std::unique_ptr<line_stream>> stream(std::string_view path, std::string body) = 0;

  /// The endpoint that answered last (or the first one).
  virtual std::string current_endpoint() const = 0;
  virtual std::chrono::milliseconds timeout() const noexcept = 0;
};

}  // namespace detail::etcd
CNF_END_NAMESPACE
