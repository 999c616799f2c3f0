/* cnf-shim: the thin CNI plugin. It reads nothing: it sends its environment and stdin, as
 * they are, to `cnf agent` at a fixed address, the abstract Unix socket @cnf-agent
 * (agent_address.h), which each network namespace has its own of, so the agent it reaches
 * is its own node's. The agent runs the call and answers, or declines it (the config names
 * another profile than the agent's, or the agent cannot use its profile now). On a decline,
 * or with no agent, it runs `cnf` (installed next to it) with the same argv[0], environment
 * and config, so the two binaries give the same answers. It exists for start-up cost: a
 * runtime execs one plugin process per call.
 *
 * Why C, built against musl where the machine has it (CMakeLists.txt): glibc's start-up
 * asks the CPU for its features and caches with some 70 CPUID instructions, and in a
 * virtual machine each one traps to the hypervisor (5.6 us each on the reference machine:
 * 0.4 ms per process, most of a trivial glibc program's exec). A musl program starts
 * without them. The wire format (agent_client.hpp) needs no parser on this side: the
 * request is NUL-separated strings and the config's bytes, the reply one header line and
 * the bytes it announces.
 */
#define _GNU_SOURCE
#include <cnf/cni/agent_address.h>

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

extern char** environ;

static const char usage[] =
    "cnf-shim: a CNI plugin (CNI spec 1.1) that hands every call to `cnf agent`.\n"
    "A container runtime execs it with CNI_COMMAND and the other CNI_* variables set and the network\n"
    "config on stdin, like any CNI plugin; name it in the config's \"type\" (or \"ipam.type\").\n"
    "It reads neither the config nor a profile: it sends the call to the agent of its network\n"
    "namespace (the abstract Unix socket @" CNF_AGENT_ABSTRACT_NAME "), which runs it when the config names the\n"
    "agent's profile. With no agent there, or one that declines the call, it runs `cnf` from its own\n"
    "directory instead, which does the call itself: same results, same errors. An agent that stops\n"
    "after reading a call gets error 11 (try again later). Start the agent with\n"
    "`cnf agent --profile <profile>` in the node's network namespace.\n";

enum { max_input = 16 << 20 };

struct buf {
  char* p;
  size_t n, cap;
};

static void oom(void) {
  static const char m[] = "cnf-shim: out of memory\n";
  (void)!write(2, m, sizeof m - 1);
  _exit(1);
}

static void buf_add(struct buf* b, const char* s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + n + 1) cap *= 2;
    char* p = realloc(b->p, cap);
    if (!p) oom();
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = '\0';
}

/* Appends everything fd holds to b: 0, EFBIG past max_input, or the read's errno. */
static int read_all(int fd, struct buf* b) {
  char chunk[16384];
  for (;;) {
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n > 0) {
      if (b->n + (size_t)n > max_input) return EFBIG;
      buf_add(b, chunk, (size_t)n);
    } else if (n == 0) {
      return 0;
    } else if (errno != EINTR) {
      return errno;
    }
  }
}

/* Writes all of p to fd (send without SIGPIPE when it is a socket): 0, or -1. */
static int write_all(int fd, const char* p, size_t n, int sock) {
  for (size_t off = 0; off < n;) {
    ssize_t w = sock ? send(fd, p + off, n - off, MSG_NOSIGNAL) : write(fd, p + off, n - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    off += (size_t)w;
  }
  return 0;
}

/* Writes s to stdout as a JSON string (quotes included). */
static void put_json(const char* s) {
  putchar('"');
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') printf("\\%c", c);
    else if (c < 0x20) printf("\\u%04x", c);
    else putchar(c);
  }
  putchar('"');
}

/* Prints the spec's error object on stdout and the reason on stderr. The shim does not read
 * the config's cniVersion; an error object has the same members in every version. */
static void fail(int code, const char* msg, const char* details) {
  printf("{\"cniVersion\":\"1.1.0\",\"code\":%d,\"msg\":", code);
  put_json(msg);
  printf(",\"details\":");
  put_json(details);
  printf("}\n");
  fflush(stdout);
  fprintf(stderr, "cnf-shim: %s%s%s\n", msg, *details ? "; " : "", details);
  exit(1);
}

/* Runs `cnf` from this program's directory in its place: the same argv[0] (so that it
 * sees the same plugin name), environment and config (on a memfd as stdin). */
static void run_cnf(const char* argv0, const struct buf* input) {
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 8);
  if (n <= 0) fail(5, "cnf-shim: cannot find its own path", strerror(errno));
  self[n] = '\0';
  char* slash = strrchr(self, '/');
  if (!slash || (size_t)(slash + 1 - self) + 4 > sizeof self) fail(5, "cnf-shim: cannot find its own path", "");
  strcpy(slash + 1, "cnf");
  int fd = memfd_create("cnf-network-config", 0);
  if (fd < 0 || write_all(fd, input->p, input->n, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0 || dup2(fd, 0) != 0)
    fail(5, "cnf-shim: cannot pass the network config on to cnf", strerror(errno));
  if (fd != 0) close(fd);
  char* args[] = {(char*)argv0, NULL};
  execve(self, args, environ);
  char msg[4200];
  snprintf(msg, sizeof msg, "cnf-shim: cannot run %s (it is installed next to cnf-shim)", self);
  fail(5, msg, strerror(errno));
}

enum answer { absent, declined, answered, lost };

/* A decimal number of at most 9 digits at *s, which ends with `stop`; moves *s past stop. */
static int number(const char** s, const char* end, char stop, long* v) {
  const char* p = *s;
  long acc = 0;
  while (p < end && *p >= '0' && *p <= '9' && p - *s < 9) acc = acc * 10 + (*p++ - '0');
  if (p == *s || p >= end || *p != stop) return 0;
  *s = p + 1;
  *v = acc;
  return 1;
}

/* The agent's reply: "exit <status> <length>\n<stdout>" or "declined <length>\n<why>",
 * the whole of it (a reply cut short by a dying agent is not one). */
static enum answer read_reply(const struct buf* r, long* status, const char** out, size_t* out_n) {
  const char* s = r->p;
  const char* end = r->p + r->n;
  long len = 0;
  enum answer a;
  if (r->n > 5 && memcmp(s, "exit ", 5) == 0) {
    s += 5;
    if (!number(&s, end, ' ', status) || *status > 255) return lost;
    a = answered;
  } else if (r->n > 9 && memcmp(s, "declined ", 9) == 0) {
    s += 9;
    a = declined;
  } else {
    return lost;
  }
  if (!number(&s, end, '\n', &len) || end - s != len) return lost;
  *out = s;
  *out_n = (size_t)len;
  return a;
}

/* Sends the call to the agent: absent when none listens or it went away before reading
 * all of the call (it runs a call only after reading all of it), else its reply in rep. */
static enum answer ask_agent(const char* self, const struct buf* input, struct buf* rep) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absent;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path + 1, CNF_AGENT_ABSTRACT_NAME, sizeof CNF_AGENT_ABSTRACT_NAME - 1);
  const socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + sizeof CNF_AGENT_ABSTRACT_NAME);
  if (connect(fd, (struct sockaddr*)&sa, len) != 0) {
    close(fd);
    return absent;
  }
  /* The request: the magic line, argv[0]'s name, each environment string, an empty
   * string, all NUL-terminated; then the config to the end. An empty environment string
   * would end the list early and carries nothing: it is left out. */
  struct buf rq = {0};
  buf_add(&rq, CNF_AGENT_WIRE_MAGIC, sizeof CNF_AGENT_WIRE_MAGIC - 1);
  buf_add(&rq, self, strlen(self) + 1);
  for (char** e = environ; *e; ++e)
    if (**e) buf_add(&rq, *e, strlen(*e) + 1);
  buf_add(&rq, "", 1);
  buf_add(&rq, input->p, input->n);
  int sent = write_all(fd, rq.p, rq.n, 1);
  free(rq.p);
  if (sent != 0) {
    close(fd);
    return absent;
  }
  shutdown(fd, SHUT_WR);
  int err = read_all(fd, rep);
  close(fd);
  /* Reset with nothing answered: the agent closed the connection with some of the call
   * unread (it refused the caller, or stopped while the call waited): it did nothing. */
  if (err == ECONNRESET && rep->n == 0) return absent;
  return lost; /* read_reply says what it is */
}

/* The call's buffers live until exit (static: still reachable, for leak checkers). */
static struct buf input, reply;

int main(int argc, char** argv) {
  if (argc > 1) {
    int help = strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0;
    (void)!write(help ? 1 : 2, usage, sizeof usage - 1);
    return help ? 0 : 2;
  }
  const char* argv0 = argv[0] ? argv[0] : "cnf-shim";
  const char* self = strrchr(argv0, '/');
  self = self ? self + 1 : argv0;

  int err = read_all(0, &input);
  if (err != 0) fail(5, "stdin: cannot read the network config", strerror(err));
  if (!input.p) buf_add(&input, "", 0);

  /* VERSION and anything unexpected go to cnf, which answers them. */
  const char* command = getenv("CNI_COMMAND");
  command = command ? command : "";
  if (strcmp(command, "ADD") && strcmp(command, "DEL") && strcmp(command, "CHECK") && strcmp(command, "STATUS") &&
      strcmp(command, "GC"))
    run_cnf(argv0, &input);

  if (ask_agent(self, &input, &reply) == absent) run_cnf(argv0, &input);
  long status = 0;
  const char* out = NULL;
  size_t out_n = 0;
  switch (read_reply(&reply, &status, &out, &out_n)) {
    case answered:
      if (write_all(1, out, out_n, 0) != 0) return 1;
      return (int)status;
    case declined: break; /* the agent logs why */
    case absent:
    case lost:
      fail(11,
           reply.n == 0 ? "the agent at @" CNF_AGENT_ABSTRACT_NAME
                          " closed the connection without an answer; what it did is unknown: try the call again"
                        : "the agent at @" CNF_AGENT_ABSTRACT_NAME
                          " answered something that is not a reply; what it did is unknown: try the call again",
           "");
  }
  run_cnf(argv0, &input);
  return 1; /* not reached: run_cnf execs or fails */
}
