/* Where `cnf agent` serves CNI calls, and the first bytes of every call: shared by cnf-shim
 * (C, examples/cnf-shim/main.c) and the agent and its C++ client (agent_client.hpp,
 * examples/cnf/agent/agent_listen.hpp), so the two sides cannot drift apart.
 *
 * The address is a name in the abstract Unix socket namespace (a sun_path starting with a
 * NUL byte), which Linux keeps per network namespace: every node namespace (each `cnf lab`
 * node, a real node's host namespace) has its own agent at the same name, and a plugin the
 * runtime execs in that namespace reaches that node's agent without reading anything. An
 * abstract name has no file permissions; the agent checks each caller's uid (SO_PEERCRED).
 * The name disappears with the process that bound it, so a killed agent leaves nothing stale.
 */
#ifndef CNF_AGENT_ADDRESS_H
#define CNF_AGENT_ADDRESS_H

/* The abstract name, without its leading NUL ("@cnf-agent" in ss(8)'s notation). */
#define CNF_AGENT_ABSTRACT_NAME "cnf-agent"

/* The request's first line: the wire format's name and version (agent_client.hpp). */
#define CNF_AGENT_WIRE_MAGIC "cnf-agent/2\n"

#endif
