//! Decisions over the example policies in `policies/`, loaded as of a fixed time (the
//! exception there expires 2027-03-31; these tests never read the clock). Each table row is an
//! HTTP request as an integration sends it: classified with the upstream's classifier config,
//! then decided. A request the classifier refuses is a deny (`default/unclassifiable`), as the
//! proxy treats it.

mod break_glass;
mod lab;
mod model;
mod others;
mod payer;
mod portal;

use std::sync::OnceLock;

use fhirwall_fhir::{HttpRequest, classify};

use super::*;
use crate::{BreakGlassSession, RateLimiter, RateOutcome, exception::SessionTarget};

/// "Today" for the example policies.
pub(super) const NOW: &str = "2026-11-28T12:00:00Z";
pub(super) const UPSTREAM: &str = "ehr-fhir";

pub(super) const LAB_CATEGORY: &str =
    "http://terminology.hl7.org/CodeSystem/observation-category|laboratory";
/// The old shared interface credential the lab integration still accepts.
pub(super) const LAB_AUTH: &str = "Basic ZWhyLWludGVyZmFjZTpsZWdhY3k=";

pub(super) fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        Policy::load_at(&dir, ts(NOW)).unwrap_or_else(|e| panic!("policies/: {e}"))
    })
}

pub(super) fn ts(s: &str) -> jiff::Timestamp {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// One row: a request and what must come of it.
#[derive(Clone, Debug)]
pub(super) struct Case {
    what: &'static str,
    integration: Option<&'static str>,
    request: String,
    headers: Vec<(&'static str, String)>,
    body: Option<String>,
    upstream: &'static str,
    now: &'static str,
    user: Option<&'static str>,
    session: Option<BreakGlassSession>,
    expect: Expect,
}

#[derive(Clone, Debug)]
pub(super) enum Expect {
    Unset,
    /// `allow` with this rule.
    Allow(String),
    /// `deny` / `would-deny` with this rule and these words in the reason.
    Deny(String, &'static str),
    WouldDeny(String, &'static str),
}

pub(super) fn case(
    what: &'static str,
    integration: &'static str,
    request: impl Into<String>,
) -> Case {
    Case {
        what,
        integration: Some(integration),
        request: request.into(),
        headers: Vec::new(),
        body: None,
        upstream: UPSTREAM,
        now: NOW,
        user: None,
        session: None,
        expect: Expect::Unset,
    }
}

impl Case {
    pub(super) fn unregistered(mut self) -> Case {
        self.integration = None;
        self
    }

    pub(super) fn header(mut self, name: &'static str, value: impl Into<String>) -> Case {
        self.headers.push((name, value.into()));
        self
    }

    pub(super) fn purpose(self, code: &'static str) -> Case {
        self.header("X-Purpose-Of-Use", code)
    }

    /// A JSON body (Content-Type application/fhir+json).
    pub(super) fn json(mut self, body: impl Into<String>) -> Case {
        self.body = Some(body.into());
        self.header("Content-Type", "application/fhir+json")
    }

    /// A JSON Patch body (Content-Type application/json-patch+json).
    pub(super) fn json_patch(mut self, body: impl Into<String>) -> Case {
        self.body = Some(body.into());
        self.header("Content-Type", "application/json-patch+json")
    }

    /// A form body (POST _search).
    pub(super) fn form(mut self, body: impl Into<String>) -> Case {
        self.body = Some(body.into());
        self.header("Content-Type", "application/x-www-form-urlencoded")
    }

    pub(super) fn upstream(mut self, upstream: &'static str) -> Case {
        self.upstream = upstream;
        self
    }

    pub(super) fn at(mut self, now: &'static str) -> Case {
        self.now = now;
        self
    }

    pub(super) fn user(mut self, user: &'static str) -> Case {
        self.user = Some(user);
        self
    }

    /// An open break-glass session under `emergency-department-read`.
    pub(super) fn session(mut self, target: SessionTarget, from: &str, until: &str) -> Case {
        self.session = Some(BreakGlassSession {
            policy: "emergency-department-read".into(),
            target,
            opened_by: "charge-nurse".into(),
            justification: "Unconscious trauma patient, outside records needed".into(),
            started: ts(from),
            until: ts(until),
        });
        self
    }

    pub(super) fn allow(mut self, rule: impl Into<String>) -> Case {
        self.expect = Expect::Allow(rule.into());
        self
    }

    pub(super) fn deny(mut self, rule: impl Into<String>, words: &'static str) -> Case {
        self.expect = Expect::Deny(rule.into(), words);
        self
    }

    pub(super) fn would_deny(mut self, rule: impl Into<String>, words: &'static str) -> Case {
        self.expect = Expect::WouldDeny(rule.into(), words);
        self
    }

    /// Refused by the classifier (the proxy denies it before policy).
    pub(super) fn unclassifiable(self, words: &'static str) -> Case {
        self.deny("default/unclassifiable", words)
    }
}

/// What came of a case: label, rule, reason.
#[derive(Debug)]
pub(super) struct Outcome {
    pub label: &'static str,
    pub rule: String,
    pub reason: String,
    pub purpose: Option<PurposeOfUse>,
    /// The reason's word for metrics (`Reason::slug`).
    pub slug: Option<&'static str>,
}

pub(super) fn run(case: &Case) -> Outcome {
    let policy = policy();
    let integration = case.integration.map(|name| {
        policy
            .integration(name)
            .unwrap_or_else(|| panic!("{}: no integration {name}", case.what))
    });
    let (method, target) = case
        .request
        .split_once(' ')
        .unwrap_or_else(|| panic!("{}: request is METHOD TARGET", case.what));
    let mut headers: Vec<(&str, &[u8])> = vec![("Host", b"127.0.0.2:8443")];
    headers.extend(case.headers.iter().map(|(n, v)| (*n, v.as_bytes())));
    let config = policy
        .classify_config(UPSTREAM)
        .unwrap_or_else(|| panic!("{}: no upstream", case.what));
    let http = HttpRequest {
        method,
        target,
        headers: &headers,
        body: case.body.as_deref().map(str::as_bytes),
    };
    let fhir = match classify(&http, config) {
        Ok(fhir) => fhir,
        Err(e) => {
            return Outcome {
                label: "deny",
                rule: Rule::Unclassifiable.to_string(),
                reason: e.to_string(),
                purpose: None,
                slug: None,
            };
        }
    };
    let mut subject =
        Subject::from_headers(policy, integration, case.upstream, &headers, ts(case.now));
    subject.user = case.user;
    subject.break_glass = case.session.as_ref();
    let decision = decide(policy, &subject, &fhir);
    replays_the_same(case, policy, &subject, &fhir, &decision);
    Outcome {
        label: decision.label(),
        rule: decision.rule().to_string(),
        reason: decision
            .reason()
            .map(ToString::to_string)
            .unwrap_or_default(),
        purpose: match decision {
            Decision::Allow { purpose, .. } => purpose,
            _ => None,
        },
        slug: decision.reason().map(Reason::slug),
    }
}

/// The request and its subject as the audit store keeps them for `fhirwall policy replay`
/// (through their JSON, as stored) are decided exactly like the request itself: every row of
/// every table checks it. Break-glass sessions are operator acts, not replayed.
fn replays_the_same(
    case: &Case,
    policy: &Policy,
    subject: &Subject<'_>,
    fhir: &fhirwall_fhir::FhirRequest,
    decision: &Decision<'_>,
) {
    if subject.break_glass.is_some() {
        return;
    }
    let stored = serde_json::to_string(&crate::ReplayInput::of(subject, fhir))
        .unwrap_or_else(|e| panic!("{}: {e}", case.what));
    let input: crate::ReplayInput =
        serde_json::from_str(&stored).unwrap_or_else(|e| panic!("{}: {e}: {stored}", case.what));
    let credential = match subject.credential {
        Presented::Credential(f) => Some(f.to_string()),
        Presented::Absent | Presented::Repeated => None,
    };
    let recorded = crate::RecordedSubject {
        integration: subject.integration.map_or("", |i| i.name.as_str()),
        upstream: subject.upstream,
        credential: credential.as_deref(),
        time: subject.now,
    };
    let again = input.decide(policy, &recorded);
    let original = (
        matches!(decision, Decision::Allow { .. }),
        decision.rule().to_string(),
        decision.reason().map(ToString::to_string),
    );
    assert_eq!(
        (again.allowed, again.rule, again.reason),
        original,
        "{}: replayed from {stored}",
        case.what
    );
}

/// The metrics word a refusal must carry, from the rule that decided it (`None`: any of the
/// integration's status words).
fn slug_for_rule(rule: &str) -> Option<&'static str> {
    let part = rule.rsplit('/').next().unwrap_or_default();
    let part = part.split('[').next().unwrap_or_default();
    Some(match part {
        "unregistered" => "unregistered",
        "expires" => "expired",
        "upstreams" => "upstream",
        "credentials" => "credential",
        "tenants" => "tenant",
        "purposes_of_use" => "purpose",
        "patient" => "patient",
        "operations" => "operation",
        "continuation" => "continuation",
        "status" => return None,
        _ => "scope",
    })
}

/// A refusal's metrics word agrees with the rule that decided it.
fn slug_agrees(out: &Outcome) -> bool {
    match (out.slug, out.rule.as_str()) {
        (None, "default/unclassifiable") => true,
        (None, _) => out.label == "allow",
        (Some(slug), rule) => {
            slug_for_rule(rule).map_or(matches!(slug, "revoked" | "suspended"), |want| slug == want)
        }
    }
}

/// Runs a table; every row must come out as it says.
pub(super) fn check(table: &[Case]) {
    let mut failures = Vec::new();
    for case in table {
        let out = run(case);
        let ok = slug_agrees(&out)
            && match &case.expect {
                Expect::Unset => false,
                Expect::Allow(rule) => out.label == "allow" && out.rule == *rule,
                Expect::Deny(rule, words) => {
                    out.label == "deny" && out.rule == *rule && out.reason.contains(words)
                }
                Expect::WouldDeny(rule, words) => {
                    out.label == "would-deny" && out.rule == *rule && out.reason.contains(words)
                }
            };
        if !ok {
            failures.push(format!(
                "{} ({}): expected {:?}, got {} {} \"{}\" ({:?})",
                case.what, case.request, case.expect, out.label, out.rule, out.reason, out.slug
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A JSON body of one resource type with a subject reference.
pub(super) fn resource(resource_type: &str, patient: &str) -> String {
    format!(
        r#"{{"resourceType":"{resource_type}","status":"final","code":{{"text":"x"}},"subject":{{"reference":"Patient/{patient}"}}}}"#
    )
}

/// A batch or transaction Bundle of (method, url, resource) entries.
pub(super) fn bundle(kind: &str, entries: &[(&str, &str, Option<String>)]) -> String {
    let entries: Vec<String> = entries
        .iter()
        .map(|(method, url, resource)| {
            let resource = resource
                .as_ref()
                .map(|r| format!(r#""resource":{r},"#))
                .unwrap_or_default();
            format!(r#"{{{resource}"request":{{"method":"{method}","url":"{url}"}}}}"#)
        })
        .collect();
    format!(
        r#"{{"resourceType":"Bundle","type":"{kind}","entry":[{}]}}"#,
        entries.join(",")
    )
}

#[test]
fn the_example_policies_load() {
    let p = policy();
    assert_eq!(p.upstreams.len(), 1);
    assert_eq!(p.integrations.len(), 8);
    assert_eq!(p.exceptions.len(), 1);
    assert_eq!(p.break_glass.len(), 1);
    for (i, a) in p.integrations.iter().enumerate() {
        for b in &p.integrations[i + 1..] {
            assert!(
                !a.workload.may_overlap(&b.workload),
                "{} and {}",
                a.name,
                b.name
            );
        }
    }
}

#[test]
fn allow_carries_the_purpose_in_force() {
    let stated = run(&case(
        "stated",
        "quality-reporting",
        "GET /Encounter?date=ge2026-10-01",
    )
    .purpose("HOPERAT"));
    assert_eq!(stated.purpose, Some(PurposeOfUse::HOPERAT));
    let default = run(&case(
        "default",
        "quality-reporting",
        "GET /Encounter?date=ge2026-10-01",
    ));
    assert_eq!(default.purpose, Some(PurposeOfUse::HQUALIMP));
    let capabilities = run(&case("metadata", "quality-reporting", "GET /metadata"));
    assert_eq!((capabilities.label, capabilities.purpose), ("allow", None));
}

#[test]
fn the_rate_limiter_follows_the_policy_across_reloads() {
    use std::time::{Duration, Instant};
    let p = policy();
    let t0 = Instant::now();
    let limiter = RateLimiter::new(p, t0);
    // research-cohort-extract: 5 per second, burst 5.
    for _ in 0..5 {
        assert_eq!(
            limiter.check("research-cohort-extract", t0),
            RateOutcome::Pass
        );
    }
    assert!(matches!(
        limiter.check("research-cohort-extract", t0),
        RateOutcome::Limited { .. }
    ));
    let reloaded = limiter.updated(p, t0);
    assert!(
        matches!(
            reloaded.check("research-cohort-extract", t0),
            RateOutcome::Limited { .. }
        ),
        "a reload keeps the level"
    );
    assert_eq!(
        reloaded.check("research-cohort-extract", t0 + Duration::from_millis(200)),
        RateOutcome::Pass
    );
    assert_eq!(limiter.check("no-such-integration", t0), RateOutcome::Pass);
}

#[test]
fn reasons_never_carry_patient_ids_or_search_values() {
    let secret = "pat-SECRET-4711";
    let probes = [
        case(
            "other patient",
            "patient-portal-backend",
            format!("GET /Patient/{secret}"),
        )
        .header("X-Portal-Patient", "pat-1001"),
        case(
            "search value",
            "lab-results-interface",
            format!("GET /Observation?patient={secret}"),
        )
        .header("Authorization", LAB_AUTH),
        case(
            "unclassifiable id",
            "lab-results-interface",
            format!("GET /Observation/{secret}$"),
        )
        .header("Authorization", LAB_AUTH),
        case(
            "tenant",
            "payer-claims-batch",
            format!("GET /Claim?patient={secret}"),
        )
        .purpose("TREAT"),
    ];
    for probe in &probes {
        let out = run(probe);
        assert_eq!(out.label, "deny", "{}", probe.what);
        assert!(
            !out.reason.contains(secret),
            "{}: {}",
            probe.what,
            out.reason
        );
    }
}

#[test]
fn tenants_come_from_the_classifier_and_must_be_listed() {
    let upstream = "kind: Upstream\nname: cloud\naddresses: [\"fhir.cloud.test:443\"]\n\
                    base_path: /fhir\ntenant:\n  mode: path-segment\n---\n\
                    kind: Upstream\nname: local\naddresses: [\"fhir.local.test:443\"]\n";
    let integration = "kind: Integration\nname: lab\nowner: o\npurpose: p\n\
                       data_classes: [x]\nexpected_resources: [Observation]\nstatus: active\n\
                       workload:\n  uid: 1\nupstreams: [cloud, local]\ntenants: [north, south]\n\
                       scopes: [system/Observation.rs]\npurposes_of_use: [TREAT]\n\
                       default_purpose: TREAT\npatient:\n  mode: any\n";
    let policy = Policy::from_sources(
        [
            (std::path::Path::new("u.yaml"), upstream),
            (std::path::Path::new("i.yaml"), integration),
        ],
        ts(NOW),
    )
    .expect("valid");
    let decide_target = |upstream: &str, target: &str| {
        let config = policy.classify_config(upstream).expect("config");
        let http = HttpRequest {
            method: "GET",
            target,
            headers: &[],
            body: None,
        };
        let fhir = classify(&http, config).expect("classifies");
        let subject =
            Subject::from_headers(&policy, policy.integration("lab"), upstream, &[], ts(NOW));
        let d = decide(&policy, &subject, &fhir);
        (
            d.label(),
            d.rule().to_string(),
            d.reason().map(ToString::to_string),
        )
    };
    assert_eq!(
        decide_target("cloud", "/fhir/north/Observation?code=x"),
        ("allow", "integration/lab/scope[0]".into(), None)
    );
    assert_eq!(
        decide_target("local", "/Observation?code=x"),
        ("allow", "integration/lab/scope[0]".into(), None),
        "the upstream without tenants needs none"
    );
    let (label, rule, reason) = decide_target("cloud", "/fhir/east/Observation?code=x");
    assert_eq!((label, rule.as_str()), ("deny", "integration/lab/tenants"));
    assert!(
        reason.is_some_and(
            |r| r.contains("not one the integration may address") && !r.contains("east")
        )
    );
}
