"""Sends a table of FHIR requests with python-requests (the HTTP client fhirclient is built on)
and prints one JSON line per request: its name, status, content type, Content-Location and
body. The tests run it inside a cgroup that the fhirwall kernel programs redirect, so every
request goes through the sidecar without the client knowing.

usage: table_client.py BASE_URL CASES_JSON

Each case: {"name", "method", "url" (relative to BASE_URL, or absolute), "headers"?, "body"?}.
"url" may be "@<case>:<relation>": the Bundle link of that relation in an earlier case's
response, or "@<case>:location": its Content-Location, or "@<case>:output": the first output
file URL of an export manifest. "poll": true repeats a GET while it answers 202 (an export
status), up to 60 seconds.
"""

import json
import sys
import time

import requests


def resolve(url, answers, base):
    if not url.startswith("@"):
        return url if url.startswith("http") else base + url
    name, what = url[1:].rsplit(":", 1)
    answer = answers.get(name) or {}
    if what == "location":
        return answer.get("contentLocation") or ""
    try:
        body = json.loads(answer.get("body") or "{}")
    except ValueError:
        return ""
    if what == "output":
        outputs = body.get("output") or [{}]
        return outputs[0].get("url") or ""
    for link in body.get("link") or []:
        if link.get("relation") == what:
            return link.get("url") or ""
    return ""


def send(session, case, url):
    deadline = time.monotonic() + 60
    while True:
        r = session.request(
            case["method"],
            url,
            headers=case.get("headers") or {},
            data=(case.get("body") or "").encode() if case.get("body") is not None else None,
            timeout=30,
            allow_redirects=False,
        )
        if not (case.get("poll") and r.status_code == 202 and time.monotonic() < deadline):
            return r
        time.sleep(0.2)


def main():
    base, cases_file = sys.argv[1], sys.argv[2]
    with open(cases_file, encoding="utf-8") as f:
        cases = json.load(f)
    session = requests.Session()
    answers = {}
    for case in cases:
        url = resolve(case["url"], answers, base)
        if not url:
            line = {"name": case["name"], "status": 0, "body": "no such link"}
        else:
            try:
                r = send(session, case, url)
                line = {
                    "name": case["name"],
                    "status": r.status_code,
                    "contentType": r.headers.get("content-type"),
                    "contentLocation": r.headers.get("content-location"),
                    "body": r.text,
                }
            except requests.RequestException as e:
                # A response the sidecar cut off once begun, or a connection it closed.
                session = requests.Session()
                line = {"name": case["name"], "status": -1, "body": type(e).__name__}
        answers[case["name"]] = line
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
