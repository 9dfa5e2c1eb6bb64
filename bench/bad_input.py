#!/usr/bin/env python3
"""Sends a corpus of hostile and malformed HTTP/1 requests to several proxies
that stand in front of one recording backend, and prints, per request, each
proxy's status and how many requests the backend received because of it.

    python3 bench/bad_input.py BACKEND_CONTROL_PORT NAME=PORT [NAME=PORT ...]

Run by bench/bad_input.sh, which starts the backend, veer, nginx and HAProxy.
Exits 1 if veer forwarded something both peers refused, or stopped answering.
Every request goes to 127.0.0.1 and waits at most 3 s.
"""

import json
import socket
import sys
import time
import urllib.request

H = b"Host: localhost\r\n"


def chunked(body):
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


# (name, raw bytes). Each is sent alone on a fresh connection.
CASES = [
    ("plain GET (control)", b"GET /ok HTTP/1.1\r\n" + H + b"\r\n"),
    ("CL and TE both (CL.TE smuggling)", b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"),
    ("TE and CL both, TE first (TE.CL)", b"POST /a HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n"),
    ("duplicate Content-Length, different", b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 5\r\n\r\nabcde"),
    ("duplicate Content-Length, same", b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
    ("Content-Length list '3, 5'", b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: 3, 5\r\n\r\nabcde"),
    ("negative Content-Length", b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n"),
    ("Content-Length with plus sign", b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: +3\r\n\r\nabc"),
    ("Content-Length hex", b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: 0x3\r\n\r\nabc"),
    ("Content-Length overflow", b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999999\r\n\r\n"),
    ("Content-Length with space inside", b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: 1 0\r\n\r\n0123456789"),
    ("TE: chunked, chunked", b"POST /a HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked\r\n\r\n" + chunked(b"abc")),
    ("TE: gzip (not chunked last)", b"POST /a HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\nabc"),
    ("TE: xchunked", b"POST /a HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n" + chunked(b"abc")),
    ("TE with space before colon", b"POST /a HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n" + chunked(b"abc")),
    ("TE obs-folded", b"POST /a HTTP/1.1\r\n" + H + b"Transfer-Encoding:\r\n chunked\r\n\r\n" + chunked(b"abc")),
    ("TE on HTTP/1.0", b"POST /a HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(b"abc")),
    ("two TE headers", b"POST /a HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n" + chunked(b"abc")),
    ("invalid chunk size 'zz'", b"POST /a HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"),
    ("chunk size overflow", b"POST /a HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nabc\r\n0\r\n\r\n"),
    ("chunk size with bare LF", b"POST /a HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n"),
    ("chunk shorter than its size", b"POST /a HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nabc\r\n0\r\n\r\n"),
    ("chunk extension with bare CR", b"POST /a HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3;x=\ry\r\nabc\r\n0\r\n\r\n"),
    ("obs-fold in a header", b"GET /a HTTP/1.1\r\n" + H + b"X-Folded: one\r\n two\r\n\r\n"),
    ("bare CR in a header value", b"GET /a HTTP/1.1\r\n" + H + b"X-Bad: a\rb\r\n\r\n"),
    ("bare LF line endings", b"GET /a HTTP/1.1\n" + b"Host: localhost\n\n"),
    ("NUL in a header value", b"GET /a HTTP/1.1\r\n" + H + b"X-Nul: a\x00b\r\n\r\n"),
    ("control byte in a header value", b"GET /a HTTP/1.1\r\n" + H + b"X-Ctl: a\x01b\r\n\r\n"),
    ("NUL in the target", b"GET /a\x00b HTTP/1.1\r\n" + H + b"\r\n"),
    ("space in the target", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n"),
    ("header name with space", b"GET /a HTTP/1.1\r\n" + H + b"X Bad: v\r\n\r\n"),
    ("header without colon", b"GET /a HTTP/1.1\r\n" + H + b"NoColonHere\r\n\r\n"),
    ("empty header name", b"GET /a HTTP/1.1\r\n" + H + b": v\r\n\r\n"),
    ("missing Host on HTTP/1.1", b"GET /a HTTP/1.1\r\n\r\n"),
    ("two Host headers", b"GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ("Host with a path", b"GET /a HTTP/1.1\r\nHost: a/b\r\n\r\n"),
    ("absolute-form target", b"GET http://localhost/abs HTTP/1.1\r\n" + H + b"\r\n"),
    ("absolute-form target to another host", b"GET http://other.example/abs HTTP/1.1\r\n" + H + b"\r\n"),
    ("asterisk-form with GET", b"GET * HTTP/1.1\r\n" + H + b"\r\n"),
    ("CONNECT", b"CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n"),
    ("h2c upgrade", b"GET /a HTTP/1.1\r\n" + H + b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"),
    ("h2c upgrade smuggled via Connection only", b"GET /a HTTP/1.1\r\n" + H + b"Upgrade: h2c\r\n\r\n"),
    ("HTTP/2 preface on an HTTP/1 port, then garbage", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nnot-a-frame"),
    ("unknown HTTP version 1.2", b"GET /a HTTP/1.2\r\n" + H + b"\r\n"),
    ("HTTP/0.9 style request", b"GET /a\r\n\r\n"),
    ("lower-case method", b"get /a HTTP/1.1\r\n" + H + b"\r\n"),
    ("invalid method token", b"G(ET /a HTTP/1.1\r\n" + H + b"\r\n"),
    ("request line only spaces", b"   \r\n\r\n"),
    ("header line of 100 KB", b"GET /a HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 100_000 + b"\r\n\r\n"),
    ("target of 100 KB", b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n" + H + b"\r\n"),
    ("500 header fields", b"GET /a HTTP/1.1\r\n" + H + b"".join(b"X-%d: v\r\n" % i for i in range(500)) + b"\r\n"),
    ("pipelined second request after a bad one", b"GET /a HTTP/1.1\r\n" + H + b"Content-Length: x\r\n\r\nGET /b HTTP/1.1\r\n" + H + b"\r\n"),
    ("GET with a body", b"GET /a HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\nabc"),
    ("Expect: 100-continue, no body", b"POST /a HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\n"),
]


def status_of(answer):
    if not answer:
        return "none"
    line = answer.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return parts[1].decode()
    return "junk"


def send(port, raw):
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=3)
    except OSError:
        return "refused"
    answer = b""
    try:
        # No half-close: proxies may take it as the client leaving. Wait up
        # to 3 s for the first byte, then 0.3 s for each further piece.
        sock.sendall(raw)
        end = time.monotonic() + 3
        while time.monotonic() < end:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
            sock.settimeout(0.3)
    except OSError:
        pass
    finally:
        sock.close()
    return status_of(answer)


def backend_count(control_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{control_port}/count", timeout=3) as response:
        return int(response.read())


def main():
    control = int(sys.argv[1])
    proxies = [arg.split("=", 1) for arg in sys.argv[2:]]
    proxies = [(name, int(port)) for name, port in proxies]
    rows = []
    for case, raw in CASES:
        row = {"case": case}
        for name, port in proxies:
            before = backend_count(control)
            row[name] = send(port, raw)
            time.sleep(0.2)
            row[name + "_forwarded"] = backend_count(control) - before
        rows.append(row)
    names = [name for name, _ in proxies]
    header = "| # | request | " + " | ".join(f"{n} status (backend got)" for n in names) + " |"
    print(header)
    print("|" + "---|" * (2 + len(names)))
    problems = []
    for i, row in enumerate(rows, 1):
        cells = [f"{row[n]} ({row[n + '_forwarded']})" for n in names]
        print(f"| {i} | {row['case']} | " + " | ".join(cells) + " |")
        peers = [n for n in names if n != "veer"]
        refused_by_peers = all(not row[p].startswith("2") and row[p + "_forwarded"] == 0 for p in peers)
        if "veer" in names and refused_by_peers and row["veer_forwarded"] > 0:
            problems.append(f"veer forwarded '{row['case']}', which every peer refused")
        # (An HTTP/2 preface gets an HTTP/2 answer: "junk" to this HTTP/1 reader.)
        if "veer" in names and row["veer"] in ("refused", "none"):
            problems.append(f"veer gave no HTTP answer to '{row['case']}' ({row['veer']})")
    if "veer" in names and send(dict(proxies)["veer"], CASES[0][1]) != "200":
        problems.append("veer stopped answering after the corpus")
    print()
    print(json.dumps({"cases": len(rows), "problems": problems}))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
