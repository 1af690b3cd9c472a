"""The end-to-end scenario with the SMART on FHIR Python client (fhirclient, pip).

Run by tests/tests/clients.rs inside the test cgroup: it connects to the FHIR server's own
address (the kernel redirects it into the fhirwall sidecar) and trusts the agent's node CA
through REQUESTS_CA_BUNDLE. One JSON line per action on stdout.

usage: fhirclient_scenario.py BASE_URL
"""

import sys

from fhirclient import server as fhir_server
from fhirclient.models.bundle import Bundle
from fhirclient.models.condition import Condition
from fhirclient.models.fhirdate import FHIRDate
from fhirclient.models.observation import Observation
from fhirclient.models.operationoutcome import OperationOutcome
from fhirclient.models.patient import Patient

from scenario_common import emit, lab


def main():
    server = fhir_server.FHIRServer(None, base_uri=sys.argv[1])

    patient = Patient({"name": [{"family": "E2E-fhirclient", "given": ["Py"]}]})
    created = patient.create(server)
    pid = created["id"]
    emit("create", ok=bool(pid), id=pid)

    read = Patient.read(pid, server)
    emit("read", ok=read.name[0].family == "E2E-fhirclient")

    read.birthDate = FHIRDate("1971-04-12")
    updated = read.update(server)
    emit("update", ok=updated["meta"]["versionId"] == "2")

    bundle = Bundle({
        "type": "transaction",
        "entry": [
            {"resource": lab(pid, "2345-7", 95), "request": {"method": "POST", "url": "Observation"}},
            {"resource": lab(pid, "2524-7", 1.2), "request": {"method": "POST", "url": "Observation"}},
        ],
    })
    response = bundle.create(server)
    statuses = [e["response"]["status"] for e in response.get("entry", [])]
    emit("transaction", ok=len(statuses) == 2 and all(s.startswith("201") for s in statuses))

    # fhirclient's include() writes _include=Observation:subject (no target type).
    search = Observation.where(struct={"subject": f"Patient/{pid}"}).include("subject")
    found = search.perform(server)
    modes = [e.search.mode for e in found.entry or []]
    emit("search", ok=modes.count("match") == 2 and modes.count("include") == 1, modes=modes)

    try:
        Condition.where(struct={"subject": f"Patient/{pid}"}).perform(server)
        emit("denied", ok=False, status=200)
    except fhir_server.FHIRPermissionDeniedException as denied:
        outcome = OperationOutcome(denied.response.json())
        issue = outcome.issue[0]
        emit("denied", ok=True, status=denied.response.status_code,
             code=issue.code, diagnostics=issue.diagnostics)


if __name__ == "__main__":
    main()
