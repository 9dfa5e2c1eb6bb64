#!/usr/bin/env python3
"""Clients for bench/soak.sh, all on 127.0.0.1 and bounded by DURATION.

    python3 bench/soak_clients.py polite PORT DURATION THREADS
        Keep-alive GETs and PUTs with a 2 KB body, each checked; prints
        {"ok": N, "failed": N, "failures": {...}} at the end.
    python3 bench/soak_clients.py hostile PORT DURATION
        One bad client at a time, over and over: malformed chunked bodies,
        abandoned uploads, an oversized header, a slowloris head, a client
        that leaves without reading its answer. Prints how many of each it sent.
"""

import http.client
import json
import socket
import sys
import threading
import time
from collections import Counter


def polite(port, duration, threads):
    ok = Counter()
    failed = Counter()
    lock = threading.Lock()
    end = time.monotonic() + duration
    body = b"p" * 2048

    def worker(index):
        conn = None
        i = 0
        while time.monotonic() < end:
            i += 1
            method = "PUT" if i % 4 == 0 else "GET"
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request(method, f"/soak/{index}/{i}", body=body if method == "PUT" else None)
                response = conn.getresponse()
                response.read()
                status = response.status
                if response.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as error:
                status = type(error).__name__
                if conn is not None:
                    conn.close()
                conn = None
            with lock:
                if status == 200:
                    ok[method] += 1
                else:
                    failed[f"{method} {status}"] += 1

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(json.dumps({"ok": sum(ok.values()), "failed": sum(failed.values()), "ok_by_method": ok, "failures": failed}))


def raw(port, data, linger=0.0, read=True):
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(data)
        time.sleep(linger)
        if read:
            sock.recv(4096)
        sock.close()
    except OSError:
        pass


def hostile(port, duration):
    sent = Counter()
    end = time.monotonic() + duration
    head = b"Host: x\r\n"
    while time.monotonic() < end:
        raw(port, b"POST /bad HTTP/1.1\r\n" + head + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n")
        sent["malformed_chunked"] += 1
        raw(port, b"POST /up HTTP/1.1\r\n" + head + b"Content-Length: 100000\r\n\r\n" + b"a" * 100, linger=0.05, read=False)
        sent["abandoned_upload"] += 1
        raw(port, b"GET / HTTP/1.1\r\n" + head + b"X-Big: " + b"a" * 100_000 + b"\r\n\r\n")
        sent["oversized_header"] += 1
        raw(port, b"GET /slow HTTP/1.1\r\n" + head, linger=0.5, read=False)
        sent["slowloris"] += 1
        raw(port, b"GET /gone HTTP/1.1\r\n" + head + b"\r\n", linger=0.0, read=False)
        sent["left_without_reading"] += 1
        time.sleep(0.2)
    print(json.dumps({"hostile_sent": sent}))


def main():
    mode, port, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    if mode == "polite":
        polite(port, duration, int(sys.argv[4]))
    else:
        hostile(port, duration)


if __name__ == "__main__":
    main()
