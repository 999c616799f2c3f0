// The eBPF datapath of the ipip part: the program pair from ipip_tc.bpf.c (compiled by clang
// at build time and embedded here), loaded with libbpf and attached to tc clsact. Nothing is
// pinned: the programs stay attached only through the tc filters, which detach() removes.
#include <cnf/plugins/ipip.hpp>

#include "ipip_tc_object.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <arpa/inet.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

CNF_BEGIN_NAMESPACE
namespace ipip {

namespace {
error bpf_error(int err, const std::string& what) {
  if (err < 0) err = -err;
  return error(err == EPERM || err == EACCES ? errc::unsupported : errc::io,
               "ipip (eBPF): " + what + ": " + std::strerror(err));
}
// libbpf's own chatter (debug, info) stays quiet; its warnings go to stderr as usual.
int quiet_print(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (level != LIBBPF_WARN) return 0;
  return std::vfprintf(stderr, fmt, args);
}
}  // namespace

struct bpf_datapath::object {
  bpf_object* obj = nullptr;
  int egress_fd = -1, ingress_fd = -1, blocks_fd = -1, peers_fd = -1, self_fd = -1;
  ~object() {
    if (obj) bpf_object__close(obj);
  }
};

bpf_datapath::bpf_datapath() = default;
bpf_datapath::~bpf_datapath() { (void)detach(); }

lpm_key lpm_key_of(const ip_prefix& block) {
  auto c = block.canonical();
  lpm_key k{c.length(), 0};
  std::memcpy(&k.addr, c.address().data(), 4);
  return k;
}

std::uint32_t be32_of(const ip_address& a) {
  std::uint32_t v = 0;
  std::memcpy(&v, a.data(), 4);
  return v;
}

result<void> bpf_datapath::attach(int ifindex, const ip_address& self) {
  if (ifindex_) return error(errc::invalid, "ipip (eBPF): already attached to interface #" + std::to_string(ifindex_));
  if (!self.is_v4()) return error(errc::invalid, "ipip (eBPF): this node's address " + self.to_string() + " is not IPv4");
  libbpf_set_print(quiet_print);
  auto o = std::make_unique<object>();
  bpf_object_open_opts opts{};
  opts.sz = sizeof opts;
  opts.object_name = "cnf_ipip";
  o->obj = bpf_object__open_mem(detail::ipip_tc_object, sizeof detail::ipip_tc_object, &opts);
  if (!o->obj) return bpf_error(errno, "open the embedded tc program");
  if (int r = bpf_object__load(o->obj); r) {
    bpf_object__close(o->obj);
    o->obj = nullptr;
    return bpf_error(r, "load the tc program (needs BPF and CAP_BPF/CAP_NET_ADMIN)");
  }
  auto prog_fd = [&](const char* name) {
    auto* p = bpf_object__find_program_by_name(o->obj, name);
    return p ? bpf_program__fd(p) : -1;
  };
  o->egress_fd = prog_fd("ipip_egress");
  o->ingress_fd = prog_fd("ipip_ingress");
  o->blocks_fd = bpf_object__find_map_fd_by_name(o->obj, "ipip_blocks");
  o->peers_fd = bpf_object__find_map_fd_by_name(o->obj, "ipip_peers");
  o->self_fd = bpf_object__find_map_fd_by_name(o->obj, "ipip_self");
  if (o->egress_fd < 0 || o->ingress_fd < 0 || o->blocks_fd < 0 || o->peers_fd < 0 || o->self_fd < 0)
    return error(errc::internal, "ipip (eBPF): the embedded object lacks a program or map");
  obj_ = std::move(o);
  if (auto r = set_self(self); !r) {
    obj_.reset();
    return r;
  }

  bpf_tc_hook hook{};
  hook.sz = sizeof hook;
  hook.ifindex = ifindex;
  hook.attach_point = BPF_TC_INGRESS;  // the clsact qdisc (both directions)
  int r = bpf_tc_hook_create(&hook);
  if (r && r != -EEXIST) {
    obj_.reset();
    return bpf_error(r, "create the clsact qdisc on interface #" + std::to_string(ifindex));
  }
  made_qdisc_ = r == 0;
  ifindex_ = ifindex;
  for (auto [point, fd] : {std::pair{BPF_TC_EGRESS, obj_->egress_fd}, std::pair{BPF_TC_INGRESS, obj_->ingress_fd}}) {
    hook.attach_point = point;
    bpf_tc_opts o{};
    o.sz = sizeof o;
    o.prog_fd = fd;
    o.handle = filter_handle;
    o.priority = filter_priority;
    o.flags = BPF_TC_F_REPLACE;  // a filter left by an agent that was killed is taken over
    if (int a = bpf_tc_attach(&hook, &o); a) {
      auto e = bpf_error(a, std::string("attach to tc ") + (point == BPF_TC_EGRESS ? "egress" : "ingress") + " of interface #" +
                                std::to_string(ifindex));
      (void)detach();  // nothing left half-made
      return e;
    }
  }
  return {};
}

result<void> bpf_datapath::set_self(const ip_address& self) {
  if (!obj_) return error(errc::invalid, "ipip (eBPF): not loaded");
  std::uint32_t key = 0, v = be32_of(self);
  if (bpf_map_update_elem(obj_->self_fd, &key, &v, BPF_ANY)) return bpf_error(errno, "set this node's address");
  return {};
}

result<void> bpf_datapath::set_block(const ip_prefix& block, const ip_address& node) {
  if (!obj_) return error(errc::invalid, "ipip (eBPF): not loaded");
  auto k = lpm_key_of(block);
  std::uint32_t v = be32_of(node);
  if (bpf_map_update_elem(obj_->blocks_fd, &k, &v, BPF_ANY)) return bpf_error(errno, "map " + block.to_string() + " to " + node.to_string());
  return {};
}

result<void> bpf_datapath::del_block(const ip_prefix& block) {
  if (!obj_) return {};
  auto k = lpm_key_of(block);
  if (bpf_map_delete_elem(obj_->blocks_fd, &k) && errno != ENOENT) return bpf_error(errno, "unmap " + block.to_string());
  return {};
}

result<void> bpf_datapath::set_peer(const ip_address& node) {
  if (!obj_) return error(errc::invalid, "ipip (eBPF): not loaded");
  std::uint32_t k = be32_of(node), v = 1;
  if (bpf_map_update_elem(obj_->peers_fd, &k, &v, BPF_ANY)) return bpf_error(errno, "add peer " + node.to_string());
  return {};
}

result<void> bpf_datapath::del_peer(const ip_address& node) {
  if (!obj_) return {};
  std::uint32_t k = be32_of(node);
  if (bpf_map_delete_elem(obj_->peers_fd, &k) && errno != ENOENT) return bpf_error(errno, "remove peer " + node.to_string());
  return {};
}

result<int> bpf_datapath::sweep(int ifindex) {
  int removed = 0;
  for (auto point : {BPF_TC_EGRESS, BPF_TC_INGRESS}) {
    bpf_tc_hook hook{};
    hook.sz = sizeof hook;
    hook.ifindex = ifindex;
    hook.attach_point = point;
    bpf_tc_opts o{};
    o.sz = sizeof o;
    o.handle = filter_handle;
    o.priority = filter_priority;
    if (int r = bpf_tc_query(&hook, &o); r) {
      if (r == -ENOENT || r == -ENODEV || r == -EINVAL) continue;  // no filter there (or no clsact)
      return bpf_error(r, "query tc on interface #" + std::to_string(ifindex));
    }
    // Ours only: the program's name says so.
    const int fd = bpf_prog_get_fd_by_id(o.prog_id);
    if (fd < 0) continue;  // gone meanwhile
    bpf_prog_info info{};
    std::uint32_t len = sizeof info;
    const bool ours = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && std::strncmp(info.name, "ipip_", 5) == 0;
    ::close(fd);
    if (!ours) continue;
    bpf_tc_opts d{};
    d.sz = sizeof d;
    d.handle = filter_handle;
    d.priority = filter_priority;
    if (int r = bpf_tc_detach(&hook, &d); r && r != -ENOENT) return bpf_error(r, "detach a leftover filter from interface #" + std::to_string(ifindex));
    ++removed;
  }
  return removed;
}

result<void> bpf_datapath::detach() {
  std::optional<error> first;
  if (ifindex_) {
    bpf_tc_hook hook{};
    hook.sz = sizeof hook;
    hook.ifindex = ifindex_;
    for (auto point : {BPF_TC_EGRESS, BPF_TC_INGRESS}) {
      hook.attach_point = point;
      bpf_tc_opts o{};
      o.sz = sizeof o;
      o.handle = filter_handle;
      o.priority = filter_priority;
      if (int r = bpf_tc_detach(&hook, &o); r && r != -ENOENT && r != -ENODEV && !first) first = bpf_error(r, "detach from tc");
    }
    if (made_qdisc_) {
      // The clsact qdisc goes when this datapath made it (one that was there stays).
      hook.attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS);
      if (int r = bpf_tc_hook_destroy(&hook); r && r != -ENOENT && r != -ENODEV && r != -EINVAL && !first)
        first = bpf_error(r, "remove the clsact qdisc");
    }
    ifindex_ = 0;
    made_qdisc_ = false;
  }
  obj_.reset();
  if (first) return *first;
  return {};
}

}  // namespace ipip
CNF_END_NAMESPACE
