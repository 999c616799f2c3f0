// The peer for the etcd benchmark: a plain, synchronous Boost.Beast HTTP/1.1 client doing
// the same etcd v3 gateway requests as cnf's client (txn with a compare on mod_revision;
// the watch stream), with nothing else: no pool, no failover, no timeouts, no resource
// encoding beyond what the request needs. Implemented in plain_client.cpp (the only Beast
// translation unit of the benchmark).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace bench {

class plain_client {
 public:
  plain_client(const std::string& host, int port);  // connects (one kept-alive connection)
  ~plain_client();
  plain_client(const plain_client&) = delete;
  plain_client& operator=(const plain_client&) = delete;

  /// POST path with body; returns the reply body (throws on I/O errors or non-200).
  std::string post(const std::string& path, const std::string& body);

  /// Puts `value` at `key` if its mod_revision is still `revision`; returns the new
  /// revision, or 0 when the compare failed.
  std::int64_t cas(const std::string& key, const std::string& value, std::int64_t revision);

  /// Unconditional put; returns the revision.
  std::int64_t put(const std::string& key, const std::string& value);

 private:
  struct impl;
  std::unique_ptr<impl> p_;
};

/// A watch stream on [key, range_end) from start_revision on its own connection and
/// thread; calls on_event(mod_revision) for every event. Stops when destroyed.
class plain_watch {
 public:
  plain_watch(const std::string& host, int port, const std::string& key, const std::string& range_end, std::int64_t start_revision,
              std::function<void(std::int64_t)> on_event);
  ~plain_watch();
  plain_watch(const plain_watch&) = delete;
  plain_watch& operator=(const plain_watch&) = delete;

 private:
  struct impl;
  std::unique_ptr<impl> p_;
};

std::string base64(const std::string& s);

}  // namespace bench
