// libFuzzer target over the BGP decoder: any bytes, as one message and as a stream into a
// session. Properties: no crash, no sanitizer report, and every message that decodes
// encodes to bytes that decode again (with both AS number sizes).
#include <cnf/bgp/message.hpp>
#include <cnf/bgp/session.hpp>

#include <cstdlib>

namespace bgp = cnf::bgp;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::span<const std::uint8_t> in(data, size);
  for (bool four : {true, false}) {
    bgp::codec_options o{four};
    auto d = bgp::decode(in, o);
    if (auto* m = std::get_if<bgp::message>(&d)) {
      auto again = bgp::encode(*m, o);
      if (again.size() <= bgp::max_message_size && std::holds_alternative<bgp::decode_error>(bgp::decode(again, o))) std::abort();
    } else {
      auto& e = std::get<bgp::decode_error>(d);
      if (e.field.empty() || e.code == 0) std::abort();  // every error names its field and a NOTIFICATION
      (void)e.to_string();
    }
  }
  // The same bytes as a stream on an established-looking connection.
  bgp::session_config c;
  c.local_as = 64512;
  c.peer_as = 0;  // any
  c.router_id = 1;
  bgp::session s(c);
  s.start();
  s.tcp_connected();
  s.received(in);
  (void)s.take();
  return 0;
}
