/* cnf-shim: the thin CNI plugin. It hands each call to `cnf agent` (the profile's
 * [cni] agent_socket) and does nothing else; when no agent serves the call it runs `cnf`
 * (installed next to it) with the same environment and config, so the two binaries give
 * the same answers. It exists for start-up cost: a runtime execs one plugin process per
 * call.
 *
 * Why C, built against musl where the machine has it (CMakeLists.txt): glibc's start-up
 * asks the CPU for its features and caches with some 70 CPUID instructions, and in a
 * virtual machine each one traps to the hypervisor (5.6 us each on the reference
 * machine: 0.4 ms per process, most of a trivial glibc program's exec). A musl program
 * starts without them. Debian's C++ runtime and libraries (libstdc++, Boost.JSON, toml++)
 * exist only for glibc, so this program reads the few things it needs by itself: from
 * the network config (JSON) "cniVersion", "type", "profile", "ipam.type" and
 * "ipam.profile"; from the profile (TOML) only `agent_socket` in a plain `[cni]` table;
 * and the agent's reply. Whenever anything is unusual (a config it cannot read, a profile
 * written in a TOML form it does not follow, no agent) it does not guess: it runs `cnf`,
 * which reads everything with the libraries, does or forwards the call, and reports what
 * is wrong. The wire format is cni_call.hpp's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
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
    "It reads the profile the config names (\"profile\", for IPAM \"ipam.profile\"; else $CNF_PROFILE,\n"
    "else /etc/cnf/profile.toml) for [cni] agent_socket and sends the call there. With no agent\n"
    "there (or one serving another profile, or a config or profile it does not follow) it runs `cnf`\n"
    "from its own directory instead, which does the call itself: same results, same errors. An agent\n"
    "that stops after reading a call gets error 11 (try again later). Start the agent with\n"
    "`cnf agent --profile <profile>`.\n";

enum { max_input = 16 << 20, max_depth = 64 };

/* ---- growable byte buffer ------------------------------------------------------------ */

struct buf {
  char* p;
  size_t n, cap;
};

static void oom(void) {
  static const char m[] = "cnf-shim: out of memory\n";
  (void)!write(2, m, sizeof m - 1);
  _exit(1);
}

static void buf_reserve(struct buf* b, size_t more) {
  if (b->n + more + 1 <= b->cap) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->n + more + 1) cap *= 2;
  char* p = realloc(b->p, cap);
  if (!p) oom();
  b->p = p;
  b->cap = cap;
}
static void buf_add(struct buf* b, const char* s, size_t n) {
  buf_reserve(b, n);
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = '\0';
}
static void buf_str(struct buf* b, const char* s) { buf_add(b, s, strlen(s)); }
static void buf_chr(struct buf* b, char c) { buf_add(b, &c, 1); }

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

/* Writes all of p to fd: 0, or -1 (errno says why). */
static int write_all(int fd, const char* p, size_t n) {
  for (size_t off = 0; off < n;) {
    ssize_t w = write(fd, p + off, n - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    off += (size_t)w;
  }
  return 0;
}

/* Appends s as a JSON string (quotes included). Bytes >= 0x80 go through as they are. */
static void buf_json(struct buf* b, const char* s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  buf_chr(b, '"');
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      buf_chr(b, '\\');
      buf_chr(b, (char)c);
    } else if (c == '\n') {
      buf_add(b, "\\n", 2);
    } else if (c == '\t') {
      buf_add(b, "\\t", 2);
    } else if (c == '\r') {
      buf_add(b, "\\r", 2);
    } else if (c < 0x20) {
      char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      buf_add(b, e, 6);
    } else {
      buf_chr(b, (char)c);
    }
  }
  buf_chr(b, '"');
}

/* ---- a JSON reader for the few members this program needs ---------------------------- */
/* RFC 8259, strictly: anything it does not accept makes the caller give up (then cnf,
 * which reads the config with Boost.JSON, answers instead). */

struct json {
  const char* s;
  const char* end;
  int depth;
};

static void ws(struct json* j) {
  while (j->s < j->end && (*j->s == ' ' || *j->s == '\t' || *j->s == '\n' || *j->s == '\r')) j->s++;
}

static int hex4(const char* s, unsigned* out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = s[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return 0;
  }
  *out = v;
  return 1;
}

static void utf8(struct buf* b, unsigned cp) {
  char e[4];
  size_t n;
  if (cp < 0x80) {
    e[0] = (char)cp, n = 1;
  } else if (cp < 0x800) {
    e[0] = (char)(0xC0 | (cp >> 6)), e[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
  } else if (cp < 0x10000) {
    e[0] = (char)(0xE0 | (cp >> 12)), e[1] = (char)(0x80 | ((cp >> 6) & 0x3F)), e[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
  } else {
    e[0] = (char)(0xF0 | (cp >> 18)), e[1] = (char)(0x80 | ((cp >> 12) & 0x3F)), e[2] = (char)(0x80 | ((cp >> 6) & 0x3F)),
    e[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
  }
  buf_add(b, e, n);
}

/* A string at j->s (at its opening quote); decoded into out (reset first) when out is set. */
static int json_string(struct json* j, struct buf* out) {
  if (j->s >= j->end || *j->s != '"') return 0;
  j->s++;
  if (out) {
    out->n = 0;
    buf_reserve(out, 0);
    out->p[0] = '\0';
  }
  while (j->s < j->end) {
    unsigned char c = (unsigned char)*j->s++;
    if (c == '"') return 1;
    if (c < 0x20) return 0;
    if (c != '\\') {
      if (out) buf_chr(out, (char)c);
      continue;
    }
    if (j->s >= j->end) return 0;
    char e = *j->s++;
    char lit = 0;
    switch (e) {
      case '"': lit = '"'; break;
      case '\\': lit = '\\'; break;
      case '/': lit = '/'; break;
      case 'b': lit = '\b'; break;
      case 'f': lit = '\f'; break;
      case 'n': lit = '\n'; break;
      case 'r': lit = '\r'; break;
      case 't': lit = '\t'; break;
      case 'u': {
        unsigned cp, lo;
        if (j->end - j->s < 4 || !hex4(j->s, &cp)) return 0;
        j->s += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          if (j->end - j->s < 6 || j->s[0] != '\\' || j->s[1] != 'u' || !hex4(j->s + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
            return 0;
          j->s += 6;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          return 0;
        }
        if (out) utf8(out, cp);
        continue;
      }
      default: return 0;
    }
    if (out) buf_chr(out, lit);
  }
  return 0;
}

/* A number; its value in *v when it is an integer that fits (else *fits = 0). */
static int json_number(struct json* j, long long* v, int* fits) {
  const char* s = j->s;
  int neg = 0;
  unsigned long long acc = 0;
  *fits = 1;
  if (s < j->end && *s == '-') neg = 1, s++;
  if (s >= j->end || *s < '0' || *s > '9') return 0;
  if (*s == '0') {
    s++;
  } else {
    while (s < j->end && *s >= '0' && *s <= '9') {
      if (acc > (unsigned long long)INT64_MAX / 10) *fits = 0;
      acc = acc * 10 + (unsigned)(*s++ - '0');
    }
  }
  if (acc > (unsigned long long)INT64_MAX) *fits = 0;
  if (s < j->end && *s == '.') {
    *fits = 0;
    s++;
    if (s >= j->end || *s < '0' || *s > '9') return 0;
    while (s < j->end && *s >= '0' && *s <= '9') s++;
  }
  if (s < j->end && (*s == 'e' || *s == 'E')) {
    *fits = 0;
    s++;
    if (s < j->end && (*s == '+' || *s == '-')) s++;
    if (s >= j->end || *s < '0' || *s > '9') return 0;
    while (s < j->end && *s >= '0' && *s <= '9') s++;
  }
  if (*fits) *v = neg ? -(long long)acc : (long long)acc;
  j->s = s;
  return 1;
}

static int json_skip(struct json* j);

static int json_literal(struct json* j, const char* w) {
  size_t n = strlen(w);
  if ((size_t)(j->end - j->s) < n || memcmp(j->s, w, n) != 0) return 0;
  j->s += n;
  return 1;
}

/* Opens an object or array at j->s: 1 when items follow, 0 when it is empty (then it is
 * read whole), -1 when there is none or it is nested too deep. */
static int json_open(struct json* j, char open, char close) {
  if (j->s >= j->end || *j->s != open || j->depth >= max_depth) return -1;
  j->s++;
  ws(j);
  if (j->s < j->end && *j->s == close) {
    j->s++;
    return 0;
  }
  j->depth++;
  return 1;
}

/* After an item: 1 when a ',' says another follows, 0 when `close` ends the container
 * (read, and the depth given back), -1 otherwise. */
static int json_next(struct json* j, char close) {
  ws(j);
  if (j->s < j->end && *j->s == ',') {
    j->s++;
    return 1;
  }
  if (j->s < j->end && *j->s == close) {
    j->s++;
    j->depth--;
    return 0;
  }
  return -1;
}

/* Walks the object at j->s; calls member(key, j, ctx) at each value, which reads or
 * skips it (returns 0 to give up). */
typedef int (*member_fn)(const struct buf* key, struct json* j, void* ctx);
static int json_object(struct json* j, member_fn member, void* ctx) {
  int more = json_open(j, '{', '}');
  struct buf key = {0};
  while (more == 1) {
    ws(j);
    if (!json_string(j, &key)) break;
    ws(j);
    if (j->s >= j->end || *j->s != ':') break;
    j->s++;
    ws(j);
    if (!(member ? member(&key, j, ctx) : json_skip(j))) break;
    more = json_next(j, '}');
  }
  free(key.p);
  return more == 0;
}

static int json_skip(struct json* j) {
  long long v;
  int fits, more;
  if (j->s >= j->end) return 0;
  switch (*j->s) {
    case '"': return json_string(j, NULL);
    case '{': return json_object(j, NULL, NULL);
    case '[':
      more = json_open(j, '[', ']');
      while (more == 1) {
        ws(j);
        if (!json_skip(j)) break;
        more = json_next(j, ']');
      }
      return more == 0;
    case 't': return json_literal(j, "true");
    case 'f': return json_literal(j, "false");
    case 'n': return json_literal(j, "null");
    default: return json_number(j, &v, &fits);
  }
}

/* A whole document that is one object. */
static int json_document(const char* s, size_t n, member_fn member, void* ctx) {
  struct json j = {s, s + n, 0};
  ws(&j);
  if (!json_object(&j, member, ctx)) return 0;
  ws(&j);
  return j.s == j.end;
}

static int key_is(const struct buf* k, const char* name) { return strlen(name) == k->n && memcmp(k->p, name, k->n) == 0; }

/* A string member, read once: a second one (a config that repeats a key) gives up, and
 * so does a NUL in it (\u0000), which a C string would cut short. */
static int take_string(struct json* j, struct buf* out, int* seen) {
  if (*seen) return 0;
  *seen = 1;
  if (j->s < j->end && *j->s == '"') return json_string(j, out) && !memchr(out->p, '\0', out->n);
  out->n = 0;  /* not a string: as if absent (cnf reports a wrong type) */
  return json_skip(j);
}

/* ---- the network config -------------------------------------------------------------- */

struct config {
  struct buf version, type, profile, ipam_type, ipam_profile;
  int seen[5];
};

static int ipam_member(const struct buf* k, struct json* j, void* ctx) {
  struct config* c = ctx;
  if (key_is(k, "type")) return take_string(j, &c->ipam_type, &c->seen[3]);
  if (key_is(k, "profile")) return take_string(j, &c->ipam_profile, &c->seen[4]);
  return json_skip(j);
}

static int config_member(const struct buf* k, struct json* j, void* ctx) {
  struct config* c = ctx;
  if (key_is(k, "cniVersion")) return take_string(j, &c->version, &c->seen[0]);
  if (key_is(k, "type")) return take_string(j, &c->type, &c->seen[1]);
  if (key_is(k, "profile")) return take_string(j, &c->profile, &c->seen[2]);
  if (key_is(k, "ipam") && j->s < j->end && *j->s == '{') return json_object(j, ipam_member, c);
  return json_skip(j);
}

/* ---- the profile: [cni] agent_socket -------------------------------------------------- */

static const char* skip_blank(const char* s, const char* e) {
  while (s < e && (*s == ' ' || *s == '\t')) s++;
  return s;
}

/* True when the rest of a line is blank or a comment. */
static int line_done(const char* s, const char* e) {
  s = skip_blank(s, e);
  return s == e || *s == '#';
}

/* The value of agent_socket in the profile's [cni] table, when the profile states it in
 * the plain form `agent_socket = "<path>"` (or '<path>') under a `[cni]` header; 0 when it
 * does not, when anything in the file could make a line-by-line reading wrong (a
 * multi-line string, a second agent_socket), or when the profile would be refused for it
 * (not an absolute path, too long). Then cnf reads the profile with toml++. */
static int profile_socket(const char* path, struct buf* out) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  struct buf text = {0};
  int err = read_all(fd, &text);
  close(fd);
  if (err != 0 || text.n == 0 || memchr(text.p, '\0', text.n) || strstr(text.p, "\"\"\"") || strstr(text.p, "'''")) {
    free(text.p);
    return 0;
  }
  int in_cni = 0, found = 0, ok = 1;
  const char* s = text.p;
  const char* end = text.p + text.n;
  while (s < end && ok) {
    const char* nl = memchr(s, '\n', (size_t)(end - s));
    const char* e = nl ? nl : end;
    if (e > s && e[-1] == '\r') e--;
    const char* p = skip_blank(s, e);
    if (p < e && *p == '[') {
      /* A table header: [cni] exactly (blanks allowed); any other is another table. */
      const char* q = skip_blank(p + 1, e);
      in_cni = 0;
      if (e - q >= 3 && memcmp(q, "cni", 3) == 0) {
        const char* t = skip_blank(q + 3, e);
        if (t < e && *t == ']' && line_done(t + 1, e)) in_cni = 1;
      }
    } else if (in_cni && (size_t)(e - p) >= 12 && memcmp(p, "agent_socket", 12) == 0) {
      const char* q = skip_blank(p + 12, e);
      if (q < e && *q == '=') {
        if (found) {
          ok = 0; /* a second one: invalid TOML, which cnf reports */
          break;
        }
        q = skip_blank(q + 1, e);
        if (q < e && *q == '\'') {
          const char* close = memchr(q + 1, '\'', (size_t)(e - q - 1));
          if (!close || !line_done(close + 1, e)) ok = 0;
          else {
            out->n = 0;
            buf_add(out, q + 1, (size_t)(close - q - 1));
            found = 1;
          }
        } else if (q < e && *q == '"') {
          struct json j = {q, e, 0};
          if (!json_string(&j, out) || memchr(out->p, '\0', out->n) || !line_done(j.s, e)) ok = 0;
          else found = 1;
        } else {
          ok = 0;
        }
      }
    }
    s = nl ? nl + 1 : end;
  }
  free(text.p);
  /* What the profile accepts (cnf::profile): an absolute path that fits a sockaddr_un. */
  struct sockaddr_un sa;
  return ok && found && out->n > 0 && out->p[0] == '/' && out->n < sizeof sa.sun_path;
}

/* ---- errors and running cnf ----------------------------------------------------------- */

static const char* cni_version = "";

/* Prints the spec's error object on stdout (as cnf does) and the reason on stderr. */
static void fail(int code, const char* msg, const char* details) {
  struct buf o = {0};
  buf_str(&o, "{\"cniVersion\":");
  const char* version = *cni_version ? cni_version : "1.1.0";
  buf_json(&o, version, strlen(version));
  char num[32];
  snprintf(num, sizeof num, ",\"code\":%d,\"msg\":", code);
  buf_str(&o, num);
  buf_json(&o, msg, strlen(msg));
  buf_str(&o, ",\"details\":");
  buf_json(&o, details, strlen(details));
  buf_str(&o, "}\n");
  (void)write_all(1, o.p, o.n);
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
  if (!slash || (size_t)(slash + 1 - self) + 4 > sizeof self) fail(5, "cnf-shim: cannot find its own path", self);
  strcpy(slash + 1, "cnf");
  int fd = memfd_create("cnf-network-config", 0);
  if (fd < 0 || write_all(fd, input->p, input->n) != 0 || lseek(fd, 0, SEEK_SET) != 0 || dup2(fd, 0) != 0)
    fail(5, "cnf-shim: cannot pass the network config on to cnf", strerror(errno));
  if (fd != 0) close(fd);
  char* args[] = {(char*)argv0, NULL};
  execve(self, args, environ);
  char msg[4200];
  snprintf(msg, sizeof msg, "cnf-shim: cannot run %s (it is installed next to cnf-shim)", self);
  fail(5, msg, strerror(errno));
}

/* ---- the agent ------------------------------------------------------------------------ */

enum answer { absent, declined, answered, lost };

struct reply {
  long long exit_status;
  struct buf out;
  int has_exit, has_out, has_declined;
};

static int reply_member(const struct buf* k, struct json* j, void* ctx) {
  struct reply* r = ctx;
  if (key_is(k, "exit")) {
    int fits = 0;
    if (j->s < j->end && (*j->s == '-' || (*j->s >= '0' && *j->s <= '9'))) {
      if (!json_number(j, &r->exit_status, &fits)) return 0;
      r->has_exit = fits;
      return 1;
    }
    return json_skip(j);
  }
  if (key_is(k, "stdout") && j->s < j->end && *j->s == '"') {
    r->has_out = 1;
    return json_string(j, &r->out);
  }
  if (key_is(k, "declined") && j->s < j->end && *j->s == '"') {
    r->has_declined = 1;
    return json_string(j, NULL); /* why: cnf, which runs next, asks and logs it */
  }
  return json_skip(j);
}

/* Sends the call to the agent at sock; the answer's kind, with its text in r->out
 * (answered) or why not in why. */
static enum answer ask_agent(const char* sock, const char* self, const struct buf* input, struct reply* r, struct buf* why) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absent;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, sock, strlen(sock));  /* it fits: profile_socket */
  if (connect(fd, (struct sockaddr*)&sa, sizeof sa) != 0) {
    close(fd);
    return absent;
  }
  struct buf rq = {0};
  buf_str(&rq, "{\"cnf_agent\":1,\"self\":");
  buf_json(&rq, self, strlen(self));
  buf_str(&rq, ",\"env\":[");
  for (char** e = environ; *e; ++e) {
    if (e != environ) buf_chr(&rq, ',');
    buf_json(&rq, *e, strlen(*e));
  }
  buf_str(&rq, "],\"stdin\":");
  buf_json(&rq, input->p, input->n);
  buf_chr(&rq, '}');
  for (size_t off = 0; off < rq.n;) {
    ssize_t w = send(fd, rq.p + off, rq.n - off, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) { /* it went away before reading all of the call: it did nothing */
      close(fd);
      free(rq.p);
      return absent;
    }
    off += (size_t)w;
  }
  free(rq.p);
  shutdown(fd, SHUT_WR);
  struct buf text = {0};
  int err = read_all(fd, &text);
  close(fd);
  if (err == ECONNRESET && text.n == 0) {
    /* Reset with nothing answered: the agent closed the connection with some of the
     * call unread (stopped while the call waited in its queue): it did nothing. */
    free(text.p);
    return absent;
  }
  int doc = text.n > 0 && json_document(text.p, text.n, reply_member, r);
  enum answer a;
  if (doc && r->has_declined) {
    a = declined;
  } else if (doc && r->has_exit && r->has_out) {
    a = answered;
  } else {
    buf_str(why, "the agent at ");
    buf_str(why, sock);
    buf_str(why, text.n == 0 ? " closed the connection without an answer" : " answered something that is not a reply");
    a = lost;
  }
  free(text.p);
  return a;
}

/* The call's buffers live until exit (static: still reachable, for leak checkers). */
static struct buf input, sock, why;
static struct config cfg;
static struct reply rep;

int main(int argc, char** argv) {
  if (argc > 1) {
    int help = strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0;
    (void)!write(help ? 1 : 2, usage, sizeof usage - 1);
    return help ? 0 : 2;
  }
  const char* argv0 = argv[0] ? argv[0] : "cnf-shim";
  const char* self = strrchr(argv0, '/');
  self = self ? self + 1 : argv0;

  buf_reserve(&input, 0);
  int err = read_all(0, &input);
  if (err != 0) fail(5, "stdin: cannot read the network config", strerror(err));

  const char* command = getenv("CNI_COMMAND");
  command = command ? command : "";
  /* VERSION and anything unexpected go to cnf, which answers them. */
  if (strcmp(command, "ADD") && strcmp(command, "DEL") && strcmp(command, "CHECK") && strcmp(command, "STATUS") &&
      strcmp(command, "GC"))
    run_cnf(argv0, &input);

  struct config* c = &cfg;
  if (!json_document(input.p, input.n, config_member, c)) run_cnf(argv0, &input);
  if (c->version.n) cni_version = c->version.p;
  const char* profile = c->profile.n ? c->profile.p : "";
  /* Named in another plugin's ipam.type, it is that plugin's IPAM: "ipam.profile" first. */
  int is_ipam = c->ipam_type.n && strcmp(c->ipam_type.p, self) == 0 && !(c->type.n && strcmp(c->type.p, self) == 0);
  if (is_ipam && c->ipam_profile.n) profile = c->ipam_profile.p;
  if (!*profile) {
    const char* e = getenv("CNF_PROFILE");
    profile = e && *e ? e : "/etc/cnf/profile.toml";
  }
  if (!profile_socket(profile, &sock)) run_cnf(argv0, &input);

  struct reply* r = &rep;
  switch (ask_agent(sock.p, self, &input, r, &why)) {
    case answered:
      if (write_all(1, r->out.p, r->out.n) != 0) return 1;
      return (int)r->exit_status;
    case lost:
      buf_str(&why, "; what it did is unknown: try the call again");
      fail(11, why.p, "");
      break;
    case declined:
    case absent: break;
  }
  run_cnf(argv0, &input);
  return 1; /* not reached: run_cnf execs or fails */
}
