"""The demo's "reporting script": the quality-reporting job (run by a systemd unit as the
qualityrpt user with the system Python). It does its registered work (encounters and problems
for quality measures), then, like a script that grew beyond its approval, tries to pull
everything: a system-level $export and a broad search of every patient and observation.

It knows nothing of fhirwall: it connects to the FHIR server's own address with the host's
shared credential and only trusts the node CA (given by --ca). Standard library only.

One JSON line per request on stdout: name, status, resource type, entry count and, for an
OperationOutcome, its diagnostics.
"""

import argparse
import json
import os
import ssl
import sys
import urllib.error
import urllib.request

STEPS = [
    ("finished encounters", "/Encounter?status=finished&_count=50"),
    ("active problems", "/Condition?clinical-status=active&_count=50"),
    ("bulk export of everything", "/$export"),
    ("every patient", "/Patient?_count=1000"),
    ("every observation", "/Observation?_count=1000"),
]


def request(base, context, auth, name, target):
    req = urllib.request.Request(
        base + target,
        headers={"Authorization": auth, "Accept": "application/fhir+json"},
    )
    try:
        with urllib.request.urlopen(req, context=context, timeout=60) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    try:
        resource = json.loads(body)
    except ValueError:
        resource = {}
    line = {
        "name": name,
        "method": "GET",
        "target": target,
        "status": status,
        "resourceType": resource.get("resourceType"),
        "entries": len(resource.get("entry", [])) if "entry" in resource else None,
        "diagnostics": None,
    }
    if resource.get("resourceType") == "OperationOutcome":
        line["diagnostics"] = (resource.get("issue") or [{}])[0].get("diagnostics")
    return line


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--ca", required=True)
    args = parser.parse_args()
    context = ssl.create_default_context(cafile=args.ca)
    auth = os.environ["FHIR_AUTHORIZATION"]
    for name, target in STEPS:
        try:
            line = request(args.base.rstrip("/"), context, auth, name, target)
        except Exception as error:  # the demo reports it; it does not stop the run
            line = {"name": name, "error": repr(error)}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    sys.exit(main())
