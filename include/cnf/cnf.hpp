// cnf/cnf.hpp — everything a part or a plugin needs: the five part concepts, their
// type-erased wrappers, settings and the plugin descriptor. Hosts that load plugins
// also include <cnf/loader.hpp> and <cnf/profile.hpp>.
#pragma once
#include <cnf/config.hpp>
#include <cnf/datastore.hpp>
#include <cnf/encap.hpp>
#include <cnf/error.hpp>
#include <cnf/executor.hpp>
#include <cnf/ipam.hpp>
#include <cnf/log.hpp>
#include <cnf/net.hpp>
#include <cnf/node.hpp>
#include <cnf/plugin.hpp>
#include <cnf/policy.hpp>
#include <cnf/routing.hpp>
#include <cnf/settings.hpp>
