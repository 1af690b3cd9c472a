//! FHIR R4 `AuditEvents` following IHE Basic Audit Log Patterns (BALP).
//!
//! One request record becomes one RESTful-activity `AuditEvent`
//! (<https://profiles.ihe.net/ITI/BALP/content.html#3573-restful-activities>): type `rest`, subtype
//! the restful interaction, action C/R/U/D/E, outcome 0/4/8/12
//! (<http://hl7.org/fhir/R4/valueset-audit-event-outcome.html>), the client workload as the source
//! agent (DICOM 110153), the upstream as the destination agent (DICOM 110152), a user agent when a
//! token names one, fhirwall on its node as the observer, the patient entity (type 1 Person, role 1
//! Patient), the data entity (type 2 System Object, role 4 Domain Resource, or role 24 Query for a
//! search, with the query names only) and the `X-Request-Id` transaction entity. A request under
//! break-glass also yields a Security Alert (DICOM 110113 / 110127 "Emergency Override Started"),
//! as the FHIR break-glass example does (<http://hl7.org/fhir/R4/auditevent-example-breakglass-start.json.html>),
//! with purpose of use `BTG`.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{
    query::QueryRow,
    record::{Disposition, Fate, Record, rfc3339},
};

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const BALP_ENTITY: &str = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType";
const BALP_PROFILE: &str = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.";

/// A Bundle (type `collection`) of the `AuditEvents` for `rows`.
pub fn bundle(rows: &[QueryRow]) -> Value {
    let entries: Vec<Value> = rows
        .iter()
        .flat_map(audit_events)
        .map(|r| json!({ "resource": r }))
        .collect();
    json!({
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": rfc3339::format(&super::record::now()),
        "entry": entries,
    })
}

/// The `AuditEvents` for one row: the RESTful-activity event, plus a Security Alert when the
/// request was made under break-glass.
#[must_use]
pub fn audit_events(row: &QueryRow) -> Vec<Value> {
    let mut out = vec![audit_event(row)];
    if row.record.break_glass.is_some() {
        out.push(break_glass_alert(row));
    }
    out
}

/// The RESTful-activity `AuditEvent` for one row.
pub fn audit_event(row: &QueryRow) -> Value {
    let r = &row.record;
    let interaction = r.interaction.as_deref().map(restful_interaction);
    let mut event = json!({
        "resourceType": "AuditEvent",
        "id": event_id(row),
        "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "Restful Operation" },
        "action": interaction.map_or("E", action),
        "recorded": rfc3339::format(&r.time),
        "outcome": outcome(row),
        "outcomeDesc": outcome_desc(row),
        "agent": agents(r),
        "source": source(r),
        "entity": entities(r, interaction),
    });
    if let Some(code) = interaction {
        event["subtype"] = json!([{ "system": "http://hl7.org/fhir/restful-interaction", "code": code, "display": code }]);
        if let Some(profile) = profile(code, !r.patients.is_empty()) {
            event["meta"] = json!({ "profile": [profile] });
        }
    }
    if let Some(purpose) = purposes(r) {
        event["purposeOfEvent"] = purpose;
    }
    event
}

fn break_glass_alert(row: &QueryRow) -> Value {
    let r = &row.record;
    let justification = r
        .break_glass
        .as_ref()
        .map_or("", |b| b.justification_id.as_str());
    let mut entity = patient_entities(r);
    entity.push(json!({
        "what": { "identifier": { "value": justification } },
        "description": "break-glass justification",
    }));
    entity.push(transaction_entity(r));
    json!({
        "resourceType": "AuditEvent",
        "id": format!("{}-btg", event_id(row)),
        "type": { "system": DCM, "code": "110113", "display": "Security Alert" },
        "subtype": [{ "system": DCM, "code": "110127", "display": "Emergency Override Started" }],
        "action": "E",
        "recorded": rfc3339::format(&r.time),
        "outcome": outcome(row),
        "outcomeDesc": format!("break-glass access under justification {justification}"),
        "purposeOfEvent": [{ "coding": [{ "system": ACT_REASON, "code": "BTG", "display": "break the glass" }] }],
        "agent": agents(r),
        "source": source(r),
        "entity": entity,
    })
}

/// Unique across nodes: seq plus a prefix of the chain hash. FHIR ids allow `[A-Za-z0-9\-\.]{1,64}`.
fn event_id(row: &QueryRow) -> String {
    format!("fw-{}-{}", row.seq, row.hash.get(..16).unwrap_or(&row.hash))
}

/// The R4 restful-interaction code for our interaction names
/// (<http://hl7.org/fhir/R4/codesystem-restful-interaction.html>).
fn restful_interaction(interaction: &str) -> &'static str {
    const CODES: [&str; 16] = [
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "history",
        "history-instance",
        "history-type",
        "history-system",
        "create",
        "search",
        "search-type",
        "search-system",
        "capabilities",
        "transaction",
        "batch",
    ];
    if interaction.starts_with('$') || interaction == "operation" {
        return "operation";
    }
    CODES
        .into_iter()
        .find(|c| *c == interaction)
        .unwrap_or("operation")
}

/// <http://hl7.org/fhir/R4/valueset-audit-event-action.html>; BALP records searches as E.
fn action(code: &str) -> &'static str {
    match code {
        "create" => "C",
        "read" | "vread" | "history" | "history-instance" | "history-type" | "history-system"
        | "capabilities" => "R",
        "update" | "patch" => "U",
        "delete" => "D",
        _ => "E",
    }
}

fn profile(code: &str, patient: bool) -> Option<String> {
    let kind = match code {
        "create" => "Create",
        "read" | "vread" => "Read",
        "update" | "patch" => "Update",
        "delete" => "Delete",
        "search" | "search-type" | "search-system" => "Query",
        _ => return None,
    };
    Some(format!(
        "{BALP_PROFILE}{}{kind}",
        if patient { "Patient" } else { "" }
    ))
}

/// 0 success, 4 minor failure (refused, client-side), 8 serious failure (server-side).
fn outcome(row: &QueryRow) -> &'static str {
    let r = &row.record;
    if !r.decision.forwarded() {
        return "4";
    }
    let status = row.completion.as_ref().and_then(|c| c.status).or(r.status);
    match (row.completion.as_ref().map(|c| c.outcome), status) {
        (Some(Fate::UpstreamFailure), _) => "8",
        (_, Some(s)) if s >= 500 => "8",
        (Some(Fate::ClientAborted | Fate::Withheld), _) | (_, Some(400..=499)) => "4",
        _ => "0",
    }
}

fn outcome_desc(row: &QueryRow) -> String {
    let r = &row.record;
    let mut desc = format!("fhirwall decision {}", r.decision.as_str());
    if let Some(rule) = &r.rule {
        let _ = write!(desc, " by rule {rule}");
    }
    if let Some(reason) = row
        .completion
        .as_ref()
        .and_then(|c| c.reason.as_ref())
        .or(r.reason.as_ref())
    {
        let _ = write!(desc, ": {reason}");
    }
    if let Some(e) = &r.exception {
        let _ = write!(desc, " (exception {e})");
    }
    desc
}

fn purposes(r: &Record) -> Option<Value> {
    let mut codes: Vec<&str> = r.purpose_of_use.iter().map(String::as_str).collect();
    if r.break_glass.is_some() {
        codes.push("BTG");
    }
    (!codes.is_empty()).then(|| {
        Value::Array(
            codes
                .into_iter()
                .map(|c| json!({ "coding": [{ "system": ACT_REASON, "code": c }] }))
                .collect(),
        )
    })
}

fn agents(r: &Record) -> Vec<Value> {
    let w = &r.workload;
    let exe = w.exe.as_deref().unwrap_or(&w.comm);
    let user = w.user.clone().unwrap_or_else(|| w.uid.to_string());
    let mut client = json!({
        "type": { "coding": [{ "system": DCM, "code": "110153", "display": "Source Role ID" }] },
        "who": { "display": format!("{exe} (pid {}, user {user})", w.tgid) },
        "name": r.integration.as_deref().unwrap_or("(unattributed)"),
        "requestor": r.on_behalf_of.is_none(),
    });
    if let Some(sha) = &w.exe_sha256 {
        client["who"]["identifier"] = json!({ "system": "urn:fhirwall:exe-sha256", "value": sha });
    }
    if let Some(addr) = &r.client_addr {
        client["network"] = json!({ "address": addr, "type": "2" });
    }
    let policies: Vec<&String> = r.rule.iter().chain(&r.exception).collect();
    if !policies.is_empty() {
        client["policy"] = json!(policies);
    }
    let server = json!({
        "type": { "coding": [{ "system": DCM, "code": "110152", "display": "Destination Role ID" }] },
        "who": { "display": r.upstream.as_deref().unwrap_or("(unknown upstream)") },
        "requestor": false,
    });
    let mut out = vec![client, server];
    if let Some(user) = &r.on_behalf_of {
        out.push(json!({
            "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP", "display": "information recipient" }] },
            "who": { "identifier": { "value": user } },
            "requestor": true,
        }));
    }
    out
}

fn source(r: &Record) -> Value {
    json!({
        "site": r.node,
        "observer": { "display": format!("fhirwall on {}", r.node) },
        "type": [{ "system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server" }],
    })
}

fn entities(r: &Record, interaction: Option<&str>) -> Vec<Value> {
    let mut out = patient_entities(r);
    let search = interaction.is_some_and(|i| i.starts_with("search"));
    let data_role = if search {
        ("24", "Query")
    } else {
        ("4", "Domain Resource")
    };
    let what = match (&r.resource_type, &r.resource_id) {
        (Some(t), Some(id)) => json!({ "reference": format!("{t}/{id}") }),
        (Some(t), None) => json!({ "display": t }),
        _ => json!({ "display": r.path }),
    };
    let mut data = json!({
        "what": what,
        "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object" },
        "role": { "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": data_role.0, "display": data_role.1 },
    });
    if search {
        // The path carries parameter names only; values never reach the store.
        data["query"] = json!(base64(r.path.as_bytes()));
    }
    if r.decision != Disposition::KernelRefused {
        out.push(data);
    }
    out.push(transaction_entity(r));
    out
}

fn patient_entities(r: &Record) -> Vec<Value> {
    r.patients
        .iter()
        .map(|p| {
            json!({
                "what": { "reference": p },
                "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person" },
                "role": { "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient" },
            })
        })
        .collect()
}

fn transaction_entity(r: &Record) -> Value {
    json!({
        "what": { "identifier": { "value": r.correlation_id } },
        "type": { "system": BALP_ENTITY, "code": "XrequestId", "display": "transport specific unique identifier where http X-Request-Id is used" },
    })
}

/// Standard base64 with padding (RFC 4648 section 4), for `entity.query`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, want) in cases {
            assert_eq!(base64(input.as_bytes()), want, "{input:?}");
        }
    }

    #[test]
    fn interactions_map_to_codes_and_actions() {
        let cases = [
            ("read", "read", "R"),
            ("vread", "vread", "R"),
            ("search-type", "search-type", "E"),
            ("create", "create", "C"),
            ("update", "update", "U"),
            ("patch", "patch", "U"),
            ("delete", "delete", "D"),
            ("$everything", "operation", "E"),
            ("history-instance", "history-instance", "R"),
            ("nonsense", "operation", "E"),
        ];
        for (interaction, code, act) in cases {
            assert_eq!(restful_interaction(interaction), code, "{interaction}");
            assert_eq!(
                action(restful_interaction(interaction)),
                act,
                "{interaction}"
            );
        }
    }
}
