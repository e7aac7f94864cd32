#!/usr/bin/env python3
"""A stand-in for a web service: answers every request with its instance name.

It listens on 127.0.0.1:$PORT (BIND changes the address) and answers `ENVHARNESS_INSTANCE`
(which envharness sets) and a newline. On SIGTERM (or SIGINT) it keeps answering for
STOP_GRACE seconds (default 0.5) and then exits: a request that arrives after the signal is
logged as late on stderr, since under `envharness --drain` the load balancer should have
stopped sending any well before. With REQUEST_LOG set, each request (but health's, to
/health) appends a line `REQ MONOTONIC` to that file, and the signal `TERM MONOTONIC`
(CLOCK_MONOTONIC, in seconds), for the tests and benchmarks.
"""

import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = os.environ.get("ENVHARNESS_INSTANCE", "web").encode() + b"\n"
LOG = os.environ.get("REQUEST_LOG")
GRACE = float(os.environ.get("STOP_GRACE", "0.5"))
log_fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if LOG else None
stopping = threading.Event()


def note(word):
    if log_fd is not None:
        # One write of one line to an O_APPEND file: lines from threads never interleave.
        os.write(log_fd, f"{word} {time.clock_gettime(time.CLOCK_MONOTONIC):.6f}\n".encode())


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/health":
            note("REQ")
            if stopping.is_set():
                print(f"server: late request for {self.path} after SIGTERM", file=sys.stderr)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(NAME)))
        self.end_headers()
        self.wfile.write(NAME)

    def log_message(self, format, *args):
        pass


class Server(ThreadingHTTPServer):
    request_queue_size = 256
    daemon_threads = True


address = (os.environ.get("BIND", "127.0.0.1"), int(os.environ.get("PORT", "8080")))
server = Server(address, Handler)


def on_term(signum, frame):
    note("TERM")
    stopping.set()
    # shutdown() waits for serve_forever, which runs in this (the main) thread: call it from
    # another one, after the grace.
    threading.Timer(GRACE, server.shutdown).start()


signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGINT, on_term)
port = server.server_address[1]
print(f"server: {NAME.decode().strip()} listening on port {port}", file=sys.stderr)
server.serve_forever(poll_interval=0.1)
