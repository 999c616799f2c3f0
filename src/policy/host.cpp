#include <cnf/policy/host.hpp>

#include <boost/json.hpp>

#include <utility>

CNF_BEGIN_NAMESPACE
namespace netpol {

policy_host::policy_host(executor& ex, any_policy plugin, options o, logger* log)
    : ex_(ex), plugin_(std::move(plugin)), opt_(std::move(o)), log_(log ? log : &default_logger()), calc_(opt_.node) {}

policy_host::~policy_host() {
  *alive_ = false;
  if (refresh_timer_) ex_.cancel(refresh_timer_);
  if (worker_.joinable()) worker_.join();  // its report finds alive_ false and does nothing
}

std::vector<std::string> policy_host::kinds() {
  return {"WorkloadEndpoint", "NetworkPolicy", "GlobalNetworkPolicy", "KubernetesNetworkPolicy", "NetworkSet", "GlobalNetworkSet",
          "Namespace", "ServiceAccount", "Pod"};
}

result<std::vector<named_port>> workload_endpoint_ports(const resource& r) {
  std::vector<named_port> out;
  boost::system::error_code ec;
  auto v = boost::json::parse(r.spec, ec);
  if (ec || !v.is_object()) return out;
  const auto* ports = v.get_object().if_contains("ports");
  if (!ports || !ports->is_array()) return out;
  const std::string what = "WorkloadEndpoint/" + r.ns + "/" + r.name + ": spec.ports[";
  std::size_t i = 0;
  for (auto& p : ports->get_array()) {
    const std::string f = what + std::to_string(i++) + "]";
    if (!p.is_object()) return cnf::error(errc::invalid, f + ": expected an object");
    named_port np;
    const auto& o = p.get_object();
    if (auto* n = o.if_contains("name"); n && n->is_string()) np.name = std::string(n->get_string());
    if (auto* pr = o.if_contains("protocol"); pr && pr->is_string()) {
      auto x = parse_protocol(pr->get_string());
      if (!x) return cnf::error(errc::invalid, f + ".protocol: " + x.error().message);
      np.protocol = *x;
    }
    auto* port = o.if_contains("port");
    if (!port || !(port->is_int64() || port->is_uint64()) || port->to_number<std::int64_t>() < 1 || port->to_number<std::int64_t>() > 65535)
      return cnf::error(errc::invalid, f + ".port: expected a port number 1..65535");
    np.port = static_cast<std::uint16_t>(port->to_number<std::int64_t>());
    if (!np.name.empty()) out.push_back(std::move(np));
  }
  return out;
}

result<std::string> pod_service_account(const resource& r) {
  boost::system::error_code ec;
  auto v = boost::json::parse(r.spec.empty() ? std::string_view("{}") : std::string_view(r.spec), ec);
  const std::string what = "Pod/" + r.ns + "/" + r.name;
  if (ec || !v.is_object()) return cnf::error(errc::invalid, what + ": spec: expected a JSON object");
  auto* sa = v.get_object().if_contains("serviceAccountName");
  if (!sa || sa->is_null()) return std::string();
  if (!sa->is_string()) return cnf::error(errc::invalid, what + ": spec.serviceAccountName: expected a string");
  return std::string(sa->get_string());
}

result<void> policy_host::on_update(const sync_update& u) {
  const auto& r = u.object;
  const bool gone = u.kind == sync_update::type::deleted;
  result<void> res;
  if (r.kind == "WorkloadEndpoint") {
    if (gone) {
      calc_.remove_endpoint(r.ns + "/" + r.name);
    } else {
      auto w = model::parse_workload_endpoint(r);
      if (!w) return w.error();
      auto ports = workload_endpoint_ports(r);
      if (!ports) return ports.error();
      calc_.upsert_endpoint(*w, *ports);
    }
  } else if (r.kind == "NetworkPolicy" || r.kind == "GlobalNetworkPolicy") {
    if (gone) {
      calc_.remove_policy(r.kind + "/" + (r.kind == "NetworkPolicy" ? r.ns : "") + "/" + r.name);
    } else {
      auto p = parse_calico_policy(r);
      if (!p) return p.error();
      calc_.upsert_policy(*p);
    }
  } else if (r.kind == "KubernetesNetworkPolicy") {
    if (gone) {
      calc_.remove_policy("NetworkPolicy/" + r.ns + "/knp.default." + r.name);
    } else {
      auto k = r;
      k.kind = "NetworkPolicy";
      auto p = parse_k8s_network_policy(k);
      if (!p) return p.error();
      calc_.upsert_policy(*p);
    }
  } else if (r.kind == "NetworkSet" || r.kind == "GlobalNetworkSet") {
    if (gone) {
      calc_.remove_network_set((r.kind == "NetworkSet" ? "NetworkSet/" + r.ns + "/" : std::string("GlobalNetworkSet/")) + r.name);
    } else {
      auto n = parse_network_set(r);
      if (!n) return n.error();
      calc_.upsert_network_set(*n);
    }
  } else if (r.kind == "Namespace") {
    if (gone) calc_.remove_namespace(r.name);
    else calc_.upsert_namespace(r.name, r.labels);
  } else if (r.kind == "Pod") {
    if (gone) {
      calc_.remove_pod(r.ns, r.name);
    } else {
      auto sa = pod_service_account(r);
      if (!sa) return sa.error();
      calc_.upsert_pod(r.ns, r.name, r.labels, *sa);
    }
  } else if (r.kind == "ServiceAccount") {
    if (gone) calc_.remove_service_account(r.ns, r.name);
    else calc_.upsert_service_account(r.ns, r.name, r.labels);
  } else {
    return {};
  }
  schedule();
  return res;
}

void policy_host::set_in_sync(bool in_sync) {
  const bool first = in_sync && !in_sync_;
  in_sync_ = in_sync;
  if (first) {
    schedule();
    arm_refresh();
  }
}

void policy_host::arm_refresh() {
  if (opt_.refresh_interval.count() <= 0 || refresh_timer_) return;
  refresh_timer_ = ex_.post_after(opt_.refresh_interval, [this, alive = alive_] {
    if (!*alive) return;
    refresh_timer_ = 0;
    if (in_sync_ && !scheduled_ && !drift_running_) {
      if (opt_.drift_off_loop) {
        start_drift_check();
        return;  // armed again when it reports back
      }
      (void)check_drift();
    }
    arm_refresh();
  });
}

void policy_host::start_drift_check() {
  if (worker_.joinable()) worker_.join();  // the previous one has reported back: it is done
  drift_running_ = true;
  worker_ = std::thread([this, alive = alive_] {
    result<policy_drift> r = [&] {
      std::lock_guard<std::mutex> hold(plugin_mutex_);
      return plugin_.check_drift();
    }();
    ex_.post([this, alive, r = std::move(r)]() mutable {
      if (!*alive) return;
      drift_running_ = false;
      (void)record_drift(std::move(r));
      if (std::exchange(flush_after_drift_, false)) schedule();
      arm_refresh();
    });
  });
}

result<policy_status> policy_host::plugin_status() {
  std::lock_guard<std::mutex> hold(plugin_mutex_);
  return plugin_.status();
}

result<policy_drift> policy_host::check_drift() {
  result<policy_drift> r = [&] {
    std::lock_guard<std::mutex> hold(plugin_mutex_);
    return plugin_.check_drift();
  }();
  return record_drift(std::move(r));
}

result<policy_drift> policy_host::record_drift(result<policy_drift> r) {
  ++drift_checks_;
  if (!r) {
    ++drift_failures_;
    log_->error("policy: drift check: " + r.error().message);
    return r;
  }
  for (auto& x : r->repaired) log_->warn("policy: drift repaired: " + x.object + " (" + x.detail + ")");
  drift_repairs_ += r->repaired.size();
  return r;
}

void policy_host::schedule() {
  if (!in_sync_ || scheduled_) return;
  scheduled_ = true;
  ex_.post([this, alive = alive_] {
    if (!*alive) return;
    scheduled_ = false;
    if (drift_running_) {  // the worker holds the plugin: flush when it reports back, not blocking the loop
      flush_after_drift_ = true;
      return;
    }
    if (auto r = flush(); !r) {
      log_->error("policy: " + r.error().message + " (retrying in 1 s)");
      ex_.post_after(std::chrono::milliseconds(1000), [this, alive] {
        if (*alive) schedule();
      });
    }
  });
}

result<void> policy_host::flush() {
  std::lock_guard<std::mutex> hold(plugin_mutex_);
  auto r = calc_.flush(plugin_);
  ++flushes_;
  if (!r) ++failures_;
  return r;
}

}  // namespace netpol
CNF_END_NAMESPACE
