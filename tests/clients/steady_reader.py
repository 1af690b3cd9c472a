"""A legacy workload that keeps reading: one kept-alive HTTPS connection (reopened only when the
other side closes it), a GET every INTERVAL seconds for DURATION seconds, always with the same
static Authorization header. Prints one JSON line per request: its status, and the
OperationOutcome's text when there is one.

Run by tests/tests/broker.rs inside the test cgroup (the kernel redirects its connection into
the fhirwall sidecar; it trusts the node CA).

usage: steady_reader.py HOST:PORT PATH CA_FILE DURATION INTERVAL AUTHORIZATION
"""

import http.client
import json
import ssl
import sys
import time

address, path, ca_file, duration, interval, authorization = sys.argv[1:7]
host, port = address.rsplit(":", 1)
context = ssl.create_default_context(cafile=ca_file)
deadline = time.monotonic() + float(duration)
connection = None

while True:
    if connection is None:
        connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=30)
    try:
        connection.request("GET", path, headers={"Authorization": authorization, "Accept": "application/fhir+json"})
        response = connection.getresponse()
        body = response.read()
        line = {"status": response.status}
        if response.status >= 400:
            try:
                line["outcome"] = json.loads(body)["issue"][0].get("diagnostics", "")
            except (ValueError, KeyError, IndexError):
                line["outcome"] = None
        if response.getheader("Connection", "").lower() == "close":
            connection.close()
            connection = None
    except (OSError, http.client.HTTPException) as e:
        line = {"status": 0, "error": type(e).__name__}
        connection.close()
        connection = None
    print(json.dumps(line), flush=True)
    if time.monotonic() + float(interval) > deadline:
        break
    time.sleep(float(interval))
