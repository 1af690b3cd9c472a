"""A client cycling random TLS server names (SNI) at the sidecar, as a hostile local process
could: COUNT handshakes, each for a name never asked before. Prints JSON: how many handshakes
completed, how many were refused, and how long it all took.

usage: sni_flood.py IP PORT CA_FILE COUNT
"""

import json
import socket
import ssl
import sys
import time

ip, port, ca, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
ctx = ssl.create_default_context(cafile=ca)
done = refused = 0
start = time.monotonic()
for i in range(count):
    try:
        with socket.create_connection((ip, port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=f"flood-{i}.example") as tls:
                done += 1
    except (ssl.SSLError, OSError):
        refused += 1
print(json.dumps({"done": done, "refused": refused, "seconds": time.monotonic() - start}))
