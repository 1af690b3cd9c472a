//! Break-glass sessions: what they override, what they never override.

use super::*;

const BG: &str = "break-glass/emergency-department-read";
const FROM: &str = "2026-11-28T11:00:00Z";
const UNTIL: &str = "2026-11-28T15:00:00Z";

fn for_integration(name: &str) -> SessionTarget {
    SessionTarget::Integration(name.into())
}

#[test]
#[expect(clippy::too_many_lines, reason = "one table of cases")]
fn sessions_widen_reads_for_their_invokers_only() {
    let hie = "hie-document-query";
    check(&[
        case(
            "HIE reads a patient during a session",
            hie,
            "GET /Patient/pat-1",
        )
        .purpose("TREAT")
        .session(for_integration(hie), FROM, UNTIL)
        .allow(BG),
        case("HIE without a session", hie, "GET /Patient/pat-1")
            .purpose("TREAT")
            .deny(
                "integration/hie-document-query/scopes",
                "read needs permission `r` on Patient",
            ),
        case(
            "a session lifts the patient constraint",
            hie,
            "GET /DocumentReference?type=x",
        )
        .purpose("TREAT")
        .session(for_integration(hie), FROM, UNTIL)
        .allow(BG),
        case(
            "a session lifts the purpose",
            hie,
            "GET /DocumentReference?patient=pat-1",
        )
        .session(for_integration(hie), FROM, UNTIL)
        .allow(BG),
        case("a session grants no writes", hie, "POST /Observation")
            .purpose("TREAT")
            .json(resource("Observation", "pat-1"))
            .session(for_integration(hie), FROM, UNTIL)
            .deny(
                "integration/hie-document-query/scopes",
                "create needs permission `c`",
            ),
        case("after the session ended", hie, "GET /Patient/pat-1")
            .purpose("TREAT")
            .session(for_integration(hie), FROM, UNTIL)
            .at(UNTIL)
            .deny(
                "integration/hie-document-query/scopes",
                "needs permission `r` on Patient",
            ),
        case(
            "a session longer than the policy allows",
            hie,
            "GET /Patient/pat-1",
        )
        .purpose("TREAT")
        .session(for_integration(hie), FROM, "2026-11-28T16:00:00Z")
        .deny(
            "integration/hie-document-query/scopes",
            "needs permission `r`",
        ),
        case(
            "another integration's session",
            "patient-portal-backend",
            "GET /Patient/pat-9",
        )
        .header("X-Portal-Patient", "pat-1001")
        .session(for_integration(hie), FROM, UNTIL)
        .deny(
            "integration/patient-portal-backend/patient",
            "does not list",
        ),
        case(
            "the portal's own session",
            "patient-portal-backend",
            "GET /Patient/pat-9",
        )
        .header("X-Portal-Patient", "pat-1001")
        .session(for_integration("patient-portal-backend"), FROM, UNTIL)
        .allow(BG),
        case("not an invoker", "payer-claims-batch", "GET /Patient/pat-1")
            .session(for_integration("payer-claims-batch"), FROM, UNTIL)
            .deny(
                "integration/payer-claims-batch/scopes",
                "needs permission `r` on Patient",
            ),
        case("never another upstream", hie, "GET /Patient/pat-1")
            .purpose("TREAT")
            .upstream("billing-fhir")
            .session(for_integration(hie), FROM, UNTIL)
            .deny("integration/hie-document-query/upstreams", "billing-fhir"),
        case("never after expiry", hie, "GET /Patient/pat-1")
            .purpose("TREAT")
            .at("2027-07-01T00:00:00Z")
            .session(
                for_integration(hie),
                "2027-07-01T00:00:00Z",
                "2027-07-01T01:00:00Z",
            )
            .deny("integration/hie-document-query/expires", "expired"),
        case(
            "never for a revoked integration",
            "legacy-fax-export",
            "GET /Binary/b-1",
        )
        .session(for_integration("legacy-fax-export"), FROM, UNTIL)
        .deny("integration/legacy-fax-export/status", "revoked"),
    ]);
}

#[test]
fn sessions_for_users_cover_unregistered_workloads() {
    let user = SessionTarget::User("ed-oncall".into());
    check(&[
        case(
            "the on-call clinician's viewer",
            "hie-document-query",
            "GET /Observation?patient=pat-1",
        )
        .unregistered()
        .user("ed-oncall")
        .session(user.clone(), FROM, UNTIL)
        .allow(BG),
        case(
            "another user",
            "hie-document-query",
            "GET /Observation?patient=pat-1",
        )
        .unregistered()
        .user("mallory")
        .session(user.clone(), FROM, UNTIL)
        .deny("default/unregistered", "no registered integration"),
        case(
            "a write by the viewer",
            "hie-document-query",
            "DELETE /Observation/obs-1",
        )
        .unregistered()
        .user("ed-oncall")
        .session(user, FROM, UNTIL)
        .deny("default/unregistered", "no registered integration"),
    ]);
}

#[test]
fn break_glass_allows_are_marked() {
    let out = run(&case("marked", "hie-document-query", "GET /Patient/pat-1")
        .purpose("TREAT")
        .session(for_integration("hie-document-query"), FROM, UNTIL));
    assert_eq!((out.label, out.purpose), ("allow", Some(PurposeOfUse::BTG)));
}
