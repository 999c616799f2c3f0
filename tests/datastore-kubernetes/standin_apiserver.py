#!/usr/bin/env python3
# STAND-IN — THIS IS NOT A KUBERNETES API SERVER.
#
# No kube-apiserver can run on the machines cnf is tested on, so the kubernetes datastore
# tests talk to this small stand-in instead. It implements only the behaviour the
# `kubernetes` datastore plugin relies on, modelled on the real API server's documented
# behaviour:
#   - custom resources under /apis/<group>/<version>/[namespaces/<ns>/]<plural>[/<name>],
#     for the CRDs read from examples/crds/*.yaml (plural, kind, scope);
#   - one global resourceVersion counter; POST (409 AlreadyExists), GET (404 NotFound),
#     PUT with metadata.resourceVersion (409 Conflict; 422 when missing; a PUT that changes
#     nothing keeps the resourceVersion and makes no event), DELETE with
#     preconditions.resourceVersion (409 Conflict); DNS-1123 names and label syntax (422);
#   - list with limit/continue; a continue token reads the state at the first page's
#     resourceVersion, rebuilt from the bounded event history (410 Expired once that
#     history is gone);
#   - watch=1: a chunked stream of newline-delimited JSON events from resourceVersion,
#     BOOKMARK events when asked for, timeoutSeconds, and 410 for a resourceVersion older
#     than the bounded history (as an ERROR event, or as HTTP 410 in "gone-mode http");
#   - "Authorization: Bearer <token>" (or a verified client certificate), 401 otherwise;
#   - TLS with a certificate given on the command line;
#   - read-only core /api/v1 nodes from a fixture file;
#   - four of Kubernetes' own types served like custom resources (read-write, watchable):
#     networking.k8s.io/v1 networkpolicies (namespaced), core v1 namespaces (seeded from
#     the fixture file's namespaces), core v1 serviceaccounts (namespaced) and core v1 pods
#     (namespaced, seeded from the fixture file's pods; tests create and relabel them with
#     POST and PUT, as the kubelet and `kubectl label` would);
#   - strict field validation (fieldValidation=Strict) of the top-level fields of those four:
#     an unknown one (a "spec" on a ServiceAccount) is 400 BadRequest, where a real server
#     in its default mode drops it with a warning (the stand-in makes the loss visible).
# It does not validate specs against the CRD schemas, has no admission, finalizers,
# field/label selectors, server-side apply, PATCH or multiple API versions.
#
# Test control: commands on stdin, one per line, each answered by one line on stdout:
#   drop-watches | bookmark | garbage | watches | rv | compact | gone-mode http|event
#   history <n> | put-raw <json {"plural","namespace","object"}> | quit
#   freeze-watches: live streams stay open but get no more events (a stalled proxy), until
#   drop-watches cuts them; with compact in between, their resume revision is gone (410).
# The first line on stdout is "port <n>". The server exits when stdin closes.
import argparse
import base64
import collections
import glob
import hmac
import json
import os
import re
import select
import socket
import ssl
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


class Gone(Exception):
    pass


def status(code, reason, message, details=None):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "details": details or {}, "code": code}


def label_problem(labels):
    if labels is None:
        return None
    if not isinstance(labels, dict):
        return "metadata.labels: must be an object"
    for k, v in labels.items():
        prefix, _, name = k.rpartition("/")
        if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
            return "metadata.labels: Invalid value: %r: prefix part must be a DNS-1123 subdomain" % k
        if len(name) > 63 or not LABEL_NAME.match(name):
            return "metadata.labels: Invalid value: %r: name part must consist of alphanumeric characters, '-', '_' or '.'" % k
        if not isinstance(v, str) or len(v) > 63 or (v and not LABEL_NAME.match(v)):
            return "metadata.labels: Invalid value: %r: a valid label value must be 63 characters or less" % (v,)
    return None


def load_crds(directory):
    """Reads group, version, kind, plural and scope from the CRD manifests (a few regexes;
    the manifests are ours and regular)."""
    crds = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.yaml"))):
        text = open(path).read()
        if "kind: CustomResourceDefinition" not in text:
            continue
        # spec.group and spec.scope are indented by 2, spec.names.* by 4, versions[].name is "  - name:".
        get = lambda indent, key: re.search(r"^ {%d}%s:\s*(\S+)\s*$" % (indent, key), text, re.M).group(1)
        versions = re.findall(r"^  - name:\s*(\S+)\s*$", text, re.M)
        crds[get(4, "plural")] = {"group": get(2, "group"), "kind": get(4, "kind"), "scope": get(2, "scope"),
                                  "versions": versions}
    return crds


def event_line(etype, obj):
    return json.dumps({"type": etype, "object": obj}).encode() + b"\n"


class Watcher:
    """One live watch stream: what it selects and the lines waiting to be sent."""

    def __init__(self, ctx, ns, bookmarks):
        self.plural, self.ns, self.bookmarks = ctx["plural"], ns, bookmarks
        self.kind, self.api_version = ctx["crd"]["kind"], ctx["api_version"]
        self.queue = []
        self.drop = False

    def matches(self, plural, ns):
        return plural == self.plural and (self.ns is None or ns == self.ns)


class Store:
    def __init__(self, history):
        self.cond = threading.Condition()
        self.rv = 1
        self.objects = {}                 # (plural, ns, name) -> object
        self.events = collections.deque()  # (rv, plural, ns, name, type, object, previous)
        self.history = history
        self.compacted = 0                # events with rv <= compacted are forgotten
        self.gone_mode = "event"
        self.watchers = set()             # live watch streams (Watcher)
        self.frozen = set()               # streams kept open that get no events (freeze-watches)

    # all below with self.cond held
    def next_rv(self):
        self.rv += 1
        return self.rv

    def record(self, rv, plural, ns, name, etype, obj, prev):
        self.events.append((rv, plural, ns, name, etype, obj, prev))
        while len(self.events) > self.history:
            self.compacted = self.events.popleft()[0]
        # Each live watch gets its events queued now, so a slow watch thread never misses one.
        for w in self.watchers:
            if w.matches(plural, ns):
                w.queue.append(event_line(etype, obj))
        self.cond.notify_all()

    def compact(self):
        self.events.clear()
        self.compacted = self.rv

    def state_at(self, rv):
        """The objects as they were at resourceVersion rv (Gone if history is too short)."""
        if rv < self.compacted:
            raise Gone()
        objs = dict(self.objects)
        for (erv, plural, ns, name, _t, _o, prev) in reversed(self.events):
            if erv <= rv:
                break
            if prev is None:
                objs.pop((plural, ns, name), None)
            else:
                objs[(plural, ns, name)] = prev
        return objs


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def finish_request(self, request, client_address):
        request.settimeout(60)
        if self.ssl_ctx is not None:
            try:
                request = self.ssl_ctx.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as e:
                if self.verbose:
                    sys.stderr.write("standin: TLS handshake with %s failed: %s\n" % (client_address, e))
                return
        try:
            self.RequestHandlerClass(request, client_address, self)
        finally:
            try:
                request.close()
            except OSError:
                pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cnf-standin-apiserver/1"
    # Headers and body go out in two writes: with Nagle's algorithm the body waits for the
    # client's delayed ACK (40 ms per request on a kept-alive connection).
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("standin: " + (fmt % args) + "\n")

    # ---- plumbing ----
    def send_json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def fail(self, code, reason, message, details=None):
        self.send_json(code, status(code, reason, message, details))

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(n) if n else b""
        if not data:
            return None
        return json.loads(data)

    def authorized(self):
        st = self.server
        if st.client_ca and isinstance(self.connection, ssl.SSLSocket) and self.connection.getpeercert():
            return True
        got = self.headers.get("Authorization", "")
        return hmac.compare_digest(got.encode(), ("Bearer " + st.token).encode())

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def dispatch(self, method):
        try:
            if not self.authorized():
                # Read and drop any body so the connection stays in step.
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                return self.fail(401, "Unauthorized", "Unauthorized")
            url = urlsplit(self.path)
            q = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            parts = [p for p in url.path.split("/") if p]
            if url.path == "/version":
                return self.send_json(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0-cnf-standin"})
            if parts[:3] in (["api", "v1", "serviceaccounts"], ["api", "v1", "pods"]) or (
                    len(parts) >= 5 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] in ("serviceaccounts", "pods")):
                return self.custom(method, "", "v1", parts[2:], q)
            if parts[:3] == ["api", "v1", "namespaces"] and (len(parts) <= 4 or method != "GET"):
                return self.custom(method, "", "v1", parts[2:], q)
            if parts[:2] == ["api", "v1"]:
                if method != "GET":
                    return self.fail(405, "MethodNotAllowed", "the stand-in serves core resources read-only")
                return self.core(parts[2:], q)
            if len(parts) >= 4 and parts[0] == "apis":
                return self.custom(method, parts[1], parts[2], parts[3:], q)
            return self.fail(404, "NotFound", "the server could not find the requested resource")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, socket.timeout):
            self.close_connection = True
        except json.JSONDecodeError as e:
            self.fail(400, "BadRequest", "the request body is not JSON: %s" % e)

    # ---- core (read-only fixtures) ----
    def core(self, rest, q):
        fx = self.server.fixtures
        if rest == ["nodes"]:
            return self.core_list("NodeList", fx.get("nodes", []), q)
        if len(rest) == 2 and rest[0] == "nodes":
            for n in fx.get("nodes", []):
                if n["metadata"]["name"] == rest[1]:
                    return self.send_json(200, n)
            return self.fail(404, "NotFound", 'nodes "%s" not found' % rest[1], {"name": rest[1], "kind": "nodes"})
        if rest == ["namespaces"]:
            return self.core_list("NamespaceList", fx.get("namespaces", []), q)
        return self.fail(404, "NotFound", "the server could not find the requested resource")

    def core_list(self, kind, items, q):
        if "watch" in q:
            return self.fail(405, "MethodNotAllowed", "the stand-in does not watch core resources")
        start = 0
        if q.get("continue"):
            start = json.loads(base64.b64decode(q["continue"]))["offset"]
        limit = int(q.get("limit") or 0)
        end = start + limit if limit else len(items)
        meta = {"resourceVersion": str(self.server.store.rv)}
        if end < len(items):
            meta["continue"] = base64.b64encode(json.dumps({"offset": end}).encode()).decode()
        self.send_json(200, {"kind": kind, "apiVersion": "v1", "metadata": meta, "items": items[start:end]})

    # ---- custom resources ----
    def custom(self, method, group, version, rest, q):
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            ns, rest = rest[1], rest[2:]
        if not rest or len(rest) > 2:
            return self.fail(404, "NotFound", "the server could not find the requested resource")
        plural = rest[0]
        name = rest[1] if len(rest) == 2 else None
        crd = self.server.builtins.get((group, plural)) or self.server.crds.get(plural)
        if crd is None or crd["group"] != group or version not in crd["versions"]:
            return self.fail(404, "NotFound", "the server could not find the requested resource (%s.%s/%s)" % (plural, group, version))
        namespaced = crd["scope"] == "Namespaced"
        if ns is not None and not namespaced:
            return self.fail(404, "NotFound", "%s.%s is cluster-scoped" % (plural, group))
        if namespaced and ns is None and (name is not None or method != "GET"):
            return self.fail(404, "NotFound", "%s.%s is namespaced: use /namespaces/<ns>/%s" % (plural, group, plural))
        for key in ("labelSelector", "fieldSelector"):
            if key in q:
                return self.fail(400, "BadRequest", "the stand-in does not support %s" % key)
        ctx = {"crd": crd, "plural": crd.get("key", plural), "group": group, "version": version, "ns": ns or "",
               "api_version": (group + "/" if group else "") + version}
        if method == "GET" and name is None and q.get("watch") in ("1", "true"):
            return self.watch(ctx, ns, q)
        if method == "GET" and name is None:
            return self.list(ctx, ns, q)
        if method == "GET":
            return self.get(ctx, name)
        if method == "POST" and name is None:
            return self.create(ctx, self.read_body())
        if method == "PUT" and name is not None:
            return self.replace(ctx, name, self.read_body())
        if method == "DELETE" and name is not None:
            return self.delete(ctx, name, self.read_body())
        return self.fail(405, "MethodNotAllowed", "%s is not supported here by the stand-in" % method)

    def not_found(self, ctx, name):
        return self.fail(404, "NotFound", '%s.%s "%s" not found' % (ctx["plural"], ctx["group"], name),
                         {"name": name, "group": ctx["group"], "kind": ctx["plural"]})

    def check_object(self, ctx, obj, name=None):
        if not isinstance(obj, dict):
            return (400, "BadRequest", "the body must be a JSON object")
        if obj.get("apiVersion") != ctx["api_version"] or obj.get("kind") != ctx["crd"]["kind"]:
            return (400, "BadRequest", "apiVersion/kind %s/%s do not match %s %s" % (
                obj.get("apiVersion"), obj.get("kind"), ctx["api_version"], ctx["crd"]["kind"]))
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            return (422, "Invalid", "metadata: Required value")
        n = meta.get("name", "")
        if not isinstance(n, str) or len(n) > 253 or not DNS1123_SUBDOMAIN.match(n):
            return (422, "Invalid", '%s.%s "%s" is invalid: metadata.name: Invalid value: "%s": a lowercase RFC 1123 '
                    "subdomain must consist of lower case alphanumeric characters, '-' or '.'" % (ctx["plural"], ctx["group"], n, n))
        if name is not None and n != name:
            return (400, "BadRequest", "the name of the object (%s) does not match the name on the URL (%s)" % (n, name))
        if meta.get("namespace", ctx["ns"]) != ctx["ns"]:
            return (400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request")
        p = label_problem(meta.get("labels"))
        if p:
            return (422, "Invalid", '%s.%s "%s" is invalid: %s' % (ctx["plural"], ctx["group"], n, p))
        if "spec" in obj and not isinstance(obj["spec"], dict):
            return (422, "Invalid", "spec: must be an object")
        known = ctx["crd"].get("fields")
        if known is not None:
            for k in obj:
                if k not in known:
                    return (400, "BadRequest", '%s in version "%s" cannot be handled as a %s: strict decoding error: '
                            'unknown field "%s"' % (ctx["crd"]["kind"], ctx["version"], ctx["crd"]["kind"], k))
        return None

    def get(self, ctx, name):
        st = self.server.store
        with st.cond:
            obj = st.objects.get((ctx["plural"], ctx["ns"], name))
        if obj is None:
            return self.not_found(ctx, name)
        self.send_json(200, obj)

    def create(self, ctx, obj):
        bad = self.check_object(ctx, obj)
        if bad:
            return self.fail(*bad)
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            return self.fail(400, "BadRequest", "resourceVersion should not be set on objects to be created")
        st = self.server.store
        key = (ctx["plural"], ctx["ns"], meta["name"])
        with st.cond:
            if key in st.objects:
                return self.fail(409, "AlreadyExists", '%s.%s "%s" already exists' % (ctx["plural"], ctx["group"], meta["name"]),
                                 {"name": meta["name"], "group": ctx["group"], "kind": ctx["plural"]})
            rv = st.next_rv()
            if ctx["ns"]:
                meta["namespace"] = ctx["ns"]
            meta["resourceVersion"] = str(rv)
            meta["uid"] = str(uuid.uuid4())
            meta["generation"] = 1
            meta["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            st.objects[key] = obj
            st.record(rv, ctx["plural"], ctx["ns"], meta["name"], "ADDED", obj, None)
        self.send_json(201, obj)

    def replace(self, ctx, name, obj):
        bad = self.check_object(ctx, obj, name)
        if bad:
            return self.fail(*bad)
        meta = obj["metadata"]
        st = self.server.store
        key = (ctx["plural"], ctx["ns"], name)
        with st.cond:
            old = st.objects.get(key)
            if old is None:
                return self.not_found(ctx, name)
            if not meta.get("resourceVersion"):
                return self.fail(422, "Invalid", '%s.%s "%s" is invalid: metadata.resourceVersion: Invalid value: 0x0: '
                                 "must be specified for an update" % (ctx["plural"], ctx["group"], name))
            if meta["resourceVersion"] != old["metadata"]["resourceVersion"]:
                return self.fail(409, "Conflict", 'Operation cannot be fulfilled on %s.%s "%s": the object has been modified; '
                                 "please apply your changes to the latest version and try again" % (ctx["plural"], ctx["group"], name),
                                 {"name": name, "group": ctx["group"], "kind": ctx["plural"]})
            om = old["metadata"]
            same = json.loads(json.dumps(obj))
            for k in ("uid", "creationTimestamp", "generation", "resourceVersion", "namespace"):
                if k in om:
                    same["metadata"][k] = om[k]
                else:
                    same["metadata"].pop(k, None)
            if same == old:
                # Like the API server: an update that changes nothing writes nothing (same
                # resourceVersion, no watch event).
                return self.send_json(200, old)
            rv = st.next_rv()
            for k in ("uid", "creationTimestamp"):
                meta[k] = om[k]
            meta["generation"] = om["generation"] + (1 if obj.get("spec") != old.get("spec") else 0)
            if ctx["ns"]:
                meta["namespace"] = ctx["ns"]
            meta["resourceVersion"] = str(rv)
            st.objects[key] = obj
            st.record(rv, ctx["plural"], ctx["ns"], name, "MODIFIED", obj, old)
        self.send_json(200, obj)

    def delete(self, ctx, name, opts):
        st = self.server.store
        key = (ctx["plural"], ctx["ns"], name)
        want = ((opts or {}).get("preconditions") or {}).get("resourceVersion")
        with st.cond:
            old = st.objects.get(key)
            if old is None:
                return self.not_found(ctx, name)
            if want and want != old["metadata"]["resourceVersion"]:
                return self.fail(409, "Conflict", 'Operation cannot be fulfilled on %s.%s "%s": Precondition failed: '
                                 "ResourceVersion: Precondition failed: ResourceVersion in precondition: %s, "
                                 "ResourceVersion in object meta: %s" % (ctx["plural"], ctx["group"], name, want,
                                                                         old["metadata"]["resourceVersion"]),
                                 {"name": name, "group": ctx["group"], "kind": ctx["plural"]})
            rv = st.next_rv()
            gone = json.loads(json.dumps(old))
            gone["metadata"]["resourceVersion"] = str(rv)
            del st.objects[key]
            st.record(rv, ctx["plural"], ctx["ns"], name, "DELETED", gone, old)
        self.send_json(200, gone)

    def matches(self, ctx, ns, key):
        return key[0] == ctx["plural"] and (ns is None or key[1] == ns)

    def list(self, ctx, ns, q):
        st = self.server.store
        limit = int(q.get("limit") or 0)
        with st.cond:
            if q.get("continue"):
                try:
                    tok = json.loads(base64.b64decode(q["continue"]))
                    snap, after = tok["rv"], tuple(tok["after"])
                except (ValueError, KeyError, TypeError):
                    return self.fail(400, "BadRequest", "invalid continue token")
                try:
                    objs = st.state_at(snap)
                except Gone:
                    return self.fail(410, "Expired", "The provided continue parameter is too old to display a consistent "
                                     "list result. You can start a new list without the continue parameter.")
            else:
                snap, after, objs = st.rv, None, st.objects
            keys = sorted(k for k in objs if self.matches(ctx, ns, k) and (after is None or (k[1], k[2]) > after))
            page = keys[:limit] if limit else keys
            items = [objs[k] for k in page]
        meta = {"resourceVersion": str(snap)}
        if limit and len(keys) > limit:
            last = page[-1]
            meta["continue"] = base64.b64encode(json.dumps({"rv": snap, "after": [last[1], last[2]]}).encode()).decode()
        self.send_json(200, {"apiVersion": ctx["api_version"], "kind": ctx["crd"]["kind"] + "List",
                             "metadata": meta, "items": items})

    # ---- watch ----
    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def client_gone(self):
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            return bool(r)  # a watch client sends nothing: readable means it closed
        except (OSError, ValueError):
            return True

    def watch(self, ctx, ns, q):
        st = self.server.store
        bookmarks = q.get("allowWatchBookmarks") in ("1", "true")
        deadline = time.monotonic() + float(q.get("timeoutSeconds") or 1800)
        rv_param = q.get("resourceVersion", "")
        w = Watcher(ctx, ns, bookmarks)
        with st.cond:
            if rv_param in ("", "0"):
                # No resourceVersion: the current state as ADDED events first.
                for k, obj in sorted(st.objects.items()):
                    if w.matches(k[0], k[1]):
                        w.queue.append(event_line("ADDED", obj))
                too_old = False
            else:
                try:
                    start = int(rv_param)
                except ValueError:
                    return self.fail(400, "BadRequest", "resourceVersion %r is not a number" % rv_param)
                too_old = start < st.compacted
                if not too_old:
                    for (erv, plural, ens, _name, etype, obj, _prev) in st.events:
                        if erv > start and w.matches(plural, ens):
                            w.queue.append(event_line(etype, obj))
            gone_mode = st.gone_mode
            gone_msg = "too old resource version: %s (%d)" % (rv_param, st.compacted + 1)
            if not too_old:
                st.watchers.add(w)
        if too_old and gone_mode == "http":
            return self.fail(410, "Expired", gone_msg)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        if too_old:
            self.chunk(event_line("ERROR", status(410, "Expired", gone_msg)))
            self.wfile.write(b"0\r\n\r\n")
            return
        try:
            self.stream(st, w, deadline)
        finally:
            with st.cond:
                st.watchers.discard(w)
                st.cond.notify_all()

    def stream(self, st, w, deadline):
        while True:
            with st.cond:
                while not w.queue and not w.drop and time.monotonic() < deadline:
                    st.cond.wait(min(0.2, max(0.0, deadline - time.monotonic())))
                    if self.client_gone():
                        return
                lines, w.queue = w.queue, []
                drop = w.drop
            for line in lines:
                self.chunk(line)
            if drop:
                # Cut the connection without ending the chunked body, like a dying proxy. What
                # was queued before (events, a bookmark asked for earlier) arrives first.
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if time.monotonic() >= deadline:
                self.wfile.write(b"0\r\n\r\n")
                return


def control(store, crds):
    """Reads test commands from stdin; exits the process when stdin closes."""
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        reply = "ok"
        with store.cond:
            if cmd == "drop-watches":
                for w in store.watchers | store.frozen:
                    w.drop = True
                store.frozen.clear()
                store.cond.notify_all()
            elif cmd == "freeze-watches":
                store.frozen |= store.watchers
                store.watchers.clear()
            elif cmd == "bookmark":
                for w in store.watchers:
                    if w.bookmarks:
                        w.queue.append(event_line("BOOKMARK", {"kind": w.kind, "apiVersion": w.api_version,
                                                              "metadata": {"resourceVersion": str(store.rv)}}))
            elif cmd == "garbage":
                for w in store.watchers:
                    w.queue.append(b"this is not JSON {\"type\": \n")
            elif cmd == "watches":
                reply = "ok %d" % len(store.watchers)
            elif cmd == "rv":
                reply = "ok %d" % store.rv
            elif cmd == "compact":
                store.compact()
            elif cmd == "gone-mode" and arg in ("http", "event"):
                store.gone_mode = arg
            elif cmd == "history":
                store.history = int(arg)
            elif cmd == "put-raw":
                req = json.loads(arg)
                obj, ns, plural = req["object"], req.get("namespace", ""), req["plural"]
                key = (plural, ns, obj["metadata"]["name"])
                rv = store.next_rv()
                obj["metadata"]["resourceVersion"] = str(rv)
                old = store.objects.get(key)
                store.objects[key] = obj
                store.record(rv, plural, ns, key[2], "MODIFIED" if old else "ADDED", obj, old)
                reply = "ok %d" % rv
            elif cmd == "quit":
                break
            else:
                reply = "error unknown command %r" % line.strip()
            store.cond.notify_all()
        sys.stdout.write(reply + "\n")
        sys.stdout.flush()
    os._exit(0)


def main():
    ap = argparse.ArgumentParser(description="STAND-IN Kubernetes API server for cnf's tests (not a real API server)")
    ap.add_argument("--crds", required=True, help="directory of CRD manifests")
    ap.add_argument("--token", required=True)
    ap.add_argument("--cert", help="server certificate (PEM); plain HTTP without it")
    ap.add_argument("--key", help="server key (PEM)")
    ap.add_argument("--client-ca", help="accept client certificates signed by this CA")
    ap.add_argument("--fixtures", help="JSON {nodes, namespaces, pods} for the core API")
    ap.add_argument("--history", type=int, default=1000, help="events kept for watch resume")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    srv = Server(("127.0.0.1", 0), Handler)
    srv.verbose = args.verbose
    srv.token = args.token
    srv.crds = load_crds(args.crds)
    if not srv.crds:
        sys.exit("standin: no CRD manifests in " + args.crds)
    srv.fixtures = json.load(open(args.fixtures)) if args.fixtures else {}
    srv.store = Store(args.history)
    # Kubernetes' own types the plugin writes, by (group, plural); "key" keeps them apart from
    # cnf's CRDs of the same plural in the store.
    srv.builtins = {
        ("networking.k8s.io", "networkpolicies"): {"group": "networking.k8s.io", "kind": "NetworkPolicy", "scope": "Namespaced",
                                                   "versions": ["v1"], "key": "networkpolicies.networking.k8s.io",
                                                   "fields": {"apiVersion", "kind", "metadata", "spec"}},
        ("", "namespaces"): {"group": "", "kind": "Namespace", "scope": "Cluster", "versions": ["v1"], "key": "namespaces",
                             "fields": {"apiVersion", "kind", "metadata", "spec", "status"}},
        ("", "serviceaccounts"): {"group": "", "kind": "ServiceAccount", "scope": "Namespaced", "versions": ["v1"], "key": "serviceaccounts",
                                  "fields": {"apiVersion", "kind", "metadata", "secrets", "imagePullSecrets", "automountServiceAccountToken"}},
        ("", "pods"): {"group": "", "kind": "Pod", "scope": "Namespaced", "versions": ["v1"], "key": "pods",
                       "fields": {"apiVersion", "kind", "metadata", "spec", "status"}},
    }
    for plural, kind in (("namespaces", "Namespace"), ("pods", "Pod")):
        for n in srv.fixtures.get(plural, []):
            obj = dict(n, apiVersion="v1", kind=kind)
            obj["metadata"] = dict(n["metadata"])
            obj["metadata"].setdefault("resourceVersion", "1")
            obj["metadata"].setdefault("uid", str(uuid.uuid4()))
            obj["metadata"].setdefault("generation", 1)
            obj["metadata"].setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
            srv.store.objects[(plural, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])] = obj
    srv.client_ca = args.client_ca
    srv.ssl_ctx = None
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        if args.client_ca:
            ctx.load_verify_locations(args.client_ca)
            ctx.verify_mode = ssl.CERT_OPTIONAL
        srv.ssl_ctx = ctx
    sys.stdout.write("port %d\n" % srv.server_address[1])
    sys.stdout.flush()
    threading.Thread(target=control, args=(srv.store, srv.crds), daemon=True).start()
    srv.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
