// The benchmark's peer: synchronous Beast calls on one socket, no extras.
#include "plain_client.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <atomic>
#include <stdexcept>
#include <thread>

namespace bench {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace json = boost::json;
using tcp = boost::asio::ip::tcp;

std::string base64(const std::string& in) {
  static constexpr char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    unsigned v = (unsigned char)in[i] << 16 | (unsigned char)in[i + 1] << 8 | (unsigned char)in[i + 2];
    out += {tbl[v >> 18 & 63], tbl[v >> 12 & 63], tbl[v >> 6 & 63], tbl[v & 63]};
  }
  if (i + 1 == in.size()) {
    unsigned v = (unsigned char)in[i] << 16;
    out += {tbl[v >> 18 & 63], tbl[v >> 12 & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    unsigned v = (unsigned char)in[i] << 16 | (unsigned char)in[i + 1] << 8;
    out += {tbl[v >> 18 & 63], tbl[v >> 12 & 63], tbl[v >> 6 & 63], '='};
  }
  return out;
}

namespace {
std::int64_t to_i64(const json::value* v) {
  if (!v) return 0;
  if (v->is_string()) return std::stoll(std::string(v->get_string()));
  if (v->is_int64()) return v->get_int64();
  return 0;
}
tcp::endpoint where(const std::string& host, int port) { return {net::ip::make_address(host), static_cast<unsigned short>(port)}; }
}  // namespace

struct plain_client::impl {
  net::io_context ioc;
  tcp::socket sock{ioc};
  beast::flat_buffer buf;
  std::string host;
};

plain_client::plain_client(const std::string& host, int port) : p_(std::make_unique<impl>()) {
  p_->sock.connect(where(host, port));
  p_->sock.set_option(tcp::no_delay(true));
  p_->host = host + ":" + std::to_string(port);
}
plain_client::~plain_client() = default;

std::string plain_client::post(const std::string& path, const std::string& body) {
  http::request<http::string_body> req{http::verb::post, path, 11};
  req.set(http::field::host, p_->host);
  req.set(http::field::content_type, "application/json");
  req.keep_alive(true);
  req.body() = body;
  req.prepare_payload();
  http::write(p_->sock, req);
  http::response<http::string_body> res;
  http::read(p_->sock, p_->buf, res);
  if (res.result_int() != 200) throw std::runtime_error("HTTP " + std::to_string(res.result_int()) + ": " + res.body());
  return std::move(res.body());
}

std::int64_t plain_client::cas(const std::string& key, const std::string& value, std::int64_t revision) {
  auto k = base64(key);
  std::string body = R"({"compare":[{"key":")" + k + R"(","target":"MOD","result":"EQUAL","mod_revision":")" + std::to_string(revision) +
                     R"("}],"success":[{"request_put":{"key":")" + k + R"(","value":")" + base64(value) +
                     R"("}}],"failure":[{"request_range":{"key":")" + k + R"("}}]})";
  auto v = json::parse(post("/v3/kv/txn", body));
  auto& o = v.as_object();
  auto* ok = o.if_contains("succeeded");
  if (!ok || !ok->as_bool()) return 0;
  return to_i64(o.at("header").as_object().if_contains("revision"));
}

std::int64_t plain_client::put(const std::string& key, const std::string& value) {
  auto v = json::parse(post("/v3/kv/put", R"({"key":")" + base64(key) + R"(","value":")" + base64(value) + R"("})"));
  return to_i64(v.as_object().at("header").as_object().if_contains("revision"));
}

struct plain_watch::impl {
  net::io_context ioc;
  tcp::socket sock{ioc};
  std::atomic<bool> stop{false};
  std::thread t;
};

plain_watch::plain_watch(const std::string& host, int port, const std::string& key, const std::string& range_end,
                         std::int64_t start_revision, std::function<void(std::int64_t)> on_event)
    : p_(std::make_unique<impl>()) {
  p_->sock.connect(where(host, port));
  p_->sock.set_option(tcp::no_delay(true));
  http::request<http::string_body> req{http::verb::post, "/v3/watch", 11};
  req.set(http::field::host, host + ":" + std::to_string(port));
  req.set(http::field::content_type, "application/json");
  req.body() = R"({"create_request":{"key":")" + base64(key) + R"(","range_end":")" + base64(range_end) + R"(","start_revision":")" +
               std::to_string(start_revision) + R"(","prev_kv":true,"progress_notify":true}})";  // as cnf asks
  req.prepare_payload();
  http::write(p_->sock, req);
  p_->t = std::thread([p = p_.get(), on_event = std::move(on_event)] {
    beast::flat_buffer buf;
    http::response_parser<http::buffer_body> parser;
    parser.body_limit(boost::none);
    beast::error_code ec;
    http::read_header(p->sock, buf, parser, ec);
    if (ec) return;
    std::string pending;
    char chunk[16384];
    while (!p->stop) {
      parser.get().body().data = chunk;
      parser.get().body().size = sizeof chunk;
      http::read_some(p->sock, buf, parser, ec);
      if (ec == http::error::need_buffer) ec = {};
      pending.append(chunk, sizeof chunk - parser.get().body().size);
      for (std::size_t nl; (nl = pending.find('\n')) != std::string::npos;) {
        auto line = pending.substr(0, nl);
        pending.erase(0, nl + 1);
        auto v = json::parse(line, ec);
        if (ec) return;
        auto* res = v.as_object().if_contains("result");
        if (!res) continue;
        if (auto* evs = res->as_object().if_contains("events"))
          for (auto& e : evs->as_array()) on_event(to_i64(e.as_object().at("kv").as_object().if_contains("mod_revision")));
      }
      if (ec || parser.is_done()) return;
    }
  });
}

plain_watch::~plain_watch() {
  p_->stop = true;
  beast::error_code ec;
  p_->sock.shutdown(tcp::socket::shutdown_both, ec);
  p_->t.join();
}

}  // namespace bench
