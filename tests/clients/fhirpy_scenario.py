"""The end-to-end scenario with fhirpy (pip), its synchronous client.

Run by tests/tests/clients.rs inside the test cgroup: it connects to the FHIR server's own
address (the kernel redirects it into the fhirwall sidecar) and trusts the agent's node CA
through REQUESTS_CA_BUNDLE. One JSON line per action on stdout.

usage: fhirpy_scenario.py BASE_URL
"""

import json
import sys

from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import ForbiddenError

from scenario_common import emit, lab


def main():
    client = SyncFHIRClient(sys.argv[1])

    patient = client.resource("Patient", name=[{"family": "E2E-fhirpy", "given": ["Py"]}])
    patient.save()
    pid = patient.id
    emit("create", ok=bool(pid), id=pid)

    read = client.reference("Patient", pid).to_resource()
    emit("read", ok=read["name"][0]["family"] == "E2E-fhirpy")

    read["birthDate"] = "1968-09-30"
    read.save()
    emit("update", ok=read["meta"]["versionId"] == "2")

    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": lab(pid, "2345-7", 101), "request": {"method": "POST", "url": "Observation"}},
            {"resource": lab(pid, "2524-7", 0.9), "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    response = client.execute("", method="post", data=bundle)
    statuses = [e["response"]["status"] for e in response.get("entry", [])]
    emit("transaction", ok=len(statuses) == 2 and all(s.startswith("201") for s in statuses))

    found = (
        client.resources("Observation")
        .search(subject=f"Patient/{pid}")
        .include("Observation", "subject", "Patient")
        .fetch_raw()
    )
    modes = [e["search"]["mode"] for e in found.get("entry", [])]
    emit("search", ok=modes.count("match") == 2 and modes.count("include") == 1, modes=modes)

    try:
        client.resources("Condition").search(subject=f"Patient/{pid}").fetch()
        emit("denied", ok=False, status=200)
    except ForbiddenError as denied:
        outcome = json.loads(denied.args[0])
        issue = outcome["issue"][0]
        emit("denied", ok=outcome["resourceType"] == "OperationOutcome", status=403,
             code=issue["code"], diagnostics=issue.get("diagnostics"))


if __name__ == "__main__":
    main()
