// cnf/asio.hpp — the event loop's Boost.Asio io_context, for hosts that use Asio themselves.
//
// The only cnf header that includes Asio. Handlers a host starts on this io_context run on
// the loop's thread, interleaved with what parts post through cnf::executor.
#pragma once
#include <cnf/event_loop.hpp>

#include <boost/asio/io_context.hpp>

CNF_BEGIN_NAMESPACE

/// The io_context behind loop (alive as long as loop).
boost::asio::io_context& io_context_of(event_loop& loop);

CNF_END_NAMESPACE
