# A tiny HTTP server for one kprov run: the seed node serves its verified, unpacked bundle to the other
# nodes of the cluster (docs/bundle.md, "Distribution between nodes").
#
# Runs on the NODE, not on the control machine: plain python3 (3.6+), standard library only, no kprov
# import. kprov sends this file's text inline (python3 -c) and keeps the process in the foreground of
# one of its SSH sessions, so it ends with that session (kprov killed, Ctrl-C, timeout) at the latest.
#
#   python3 serve.py ROOT BIND PORT TOKEN IDLE_S DEADLINE_S PEER...
#
# GET/HEAD /TOKEN/f/<path>  a file of ROOT listed in ROOT/manifest.json (or manifest.json), with Range
# GET /TOKEN/done/<peer>    <peer> has verified its copy (or gives up and falls back): one fewer to wait for
# GET /TOKEN/ping           200 once the server listens
# It stops when every PEER said done, after IDLE_S without a request in flight, or after DEADLINE_S,
# and prints one summary line on stdout.
import json
import os
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn

RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class State:
    def __init__(self, root, token, peers):
        self.root, self.token, self.peers = root, token, set(peers)
        with open(os.path.join(root, "manifest.json"), "rb") as fh:
            files = [f["path"] for f in json.loads(fh.read().decode())["files"]]
        self.allowed = set(files) | {"manifest.json"}
        self.done = set()
        self.lock = threading.Lock()
        self.active = 0
        self.last = time.monotonic()
        self.sent = 0
        self.requests = 0

    def enter(self):
        with self.lock:
            self.active += 1
            self.requests += 1
            self.last = time.monotonic()

    def leave(self, sent):
        with self.lock:
            self.active -= 1
            self.sent += sent
            self.last = time.monotonic()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kprov-bundle"

    def log_message(self, *args):  # quiet: the summary line says what happened
        pass

    def _reply(self, code, body=b""):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        st = self.server.state
        st.enter()
        sent = 0
        try:
            prefix = "/" + st.token + "/"
            if not self.path.startswith(prefix):
                return self._reply(404)
            rest = self.path[len(prefix) :]
            if rest == "ping":
                return self._reply(200, b"ok\n")
            if rest.startswith("done/"):
                with st.lock:
                    st.done.add(rest[len("done/") :])
                return self._reply(200, b"ok\n")
            if not rest.startswith("f/") or rest[2:] not in st.allowed:
                return self._reply(404)
            sent = self._send_file(os.path.join(st.root, rest[2:]))
        except (OSError, ValueError):
            self.close_connection = True
        finally:
            st.leave(sent)

    def _send_file(self, path):
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            start, end = 0, size - 1
            m = RANGE.match(self.headers.get("Range", "") or "")
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                else:  # bytes=-N: the last N bytes
                    start = max(0, size - int(m.group(2)))
                if start >= size or start > end:
                    self.send_response(416)
                    self.send_header("Content-Range", "bytes */%d" % size)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return 0
                self.send_response(206)
                self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
            else:
                self.send_response(200)
            count = end - start + 1 if size else 0
            self.send_header("Content-Length", str(count))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if self.command == "HEAD" or not count:
                return 0
            self.wfile.flush()
            return self.connection.sendfile(fh, start, count)


class Server(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main(argv):
    root, bind, port, token, idle, deadline = argv[:6]
    peers = [p for p in argv[6:] if p]
    state = State(root, token, peers)
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    Server.address_family = family
    server = Server((bind, int(port)), Handler)
    server.state = state
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2})
    thread.daemon = True
    thread.start()
    started = time.monotonic()
    why = "deadline"
    while time.monotonic() - started < float(deadline):
        time.sleep(0.2)
        with state.lock:
            if state.peers and state.peers <= state.done and not state.active:
                why = "every node has its copy"
                break
            if not state.active and time.monotonic() - state.last > float(idle):
                why = "idle for %ss" % idle
                break
    server.shutdown()
    server.server_close()
    missing = sorted(state.peers - state.done)
    print(
        "served %d bytes in %d requests on %s:%s to %d of %d nodes; stopped: %s%s"
        % (
            state.sent,
            state.requests,
            bind,
            server.server_address[1],
            len(state.peers & state.done),
            len(state.peers),
            why,
            (" (no word from %s)" % ", ".join(missing)) if missing else "",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
