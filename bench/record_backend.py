#!/usr/bin/env python3
"""A backend for bench/bad_input.sh that records what reaches it: it counts
request lines (so a smuggled second request counts twice) on every byte
stream it is sent, answers each complete head with 200, and reports the count
at GET /count on the control port. Listens on 127.0.0.1 only.

    python3 bench/record_backend.py PORT CONTROL_PORT
"""

import http.server
import re
import socket
import socketserver
import sys
import threading

REQUEST_LINE = re.compile(rb"(?m)^[A-Za-z]+ \S+ HTTP/\d\.\d\r?$")
count = 0
lock = threading.Lock()


class Recorder(socketserver.BaseRequestHandler):
    def handle(self):
        global count
        self.request.settimeout(5)
        seen = b""
        counted = 0
        answered = 0
        while True:
            try:
                data = self.request.recv(65536)
            except OSError:
                break
            if not data:
                break
            seen += data
            lines = len(REQUEST_LINE.findall(seen))
            if lines > counted:
                with lock:
                    count += lines - counted
                counted = lines
            heads = seen.count(b"\r\n\r\n")
            while answered < heads:
                answered += 1
                try:
                    self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                except OSError:
                    return


class Control(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = str(count).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Threaded(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    port, control = int(sys.argv[1]), int(sys.argv[2])
    recorder = Threaded(("127.0.0.1", port), Recorder)
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    http.server.ThreadingHTTPServer(("127.0.0.1", control), Control).serve_forever()


if __name__ == "__main__":
    main()
