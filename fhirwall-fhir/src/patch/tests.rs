//! Table tests: what each format's operations change and write, the hostile patches a
//! patient-bound client could send, every refusal, and that no input panics or is quoted.
//!
//! Tables are one row per line (`rustfmt::skip`). Objects with several keys list them in
//! alphabetical order, so first-seen order is the same whether or not serde_json keeps
//! insertion order (its `preserve_order` feature).

use serde_json::{Map, Value, json};

use super::{
    Change,
    ChangeKind::{self, Remove, Reorder, Set, SetUnknown},
    Element, FhirPathProblem, OperationProblem as P, PartName, PatchError, PatchFormat,
    PointerMember, read,
};

/// Stands for [`Element::Whole`] in the tables.
const WHOLE: &str = "<whole>";

/// A document from JSON text; test tables only.
fn doc(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("test JSON {text}: {error}"))
}

/// An object built by moving `members` in. `json!` would serialize an interpolated `Value` again,
/// recursively, which the deep-nesting test cannot afford.
fn object(members: Vec<(&str, Value)>) -> Value {
    Value::Object(
        members
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect::<Map<String, Value>>(),
    )
}

/// A FHIRPath Patch part `{"name": name, key: value}`.
fn part(name: &str, key: &str, value: Value) -> Value {
    object(vec![("name", Value::from(name)), (key, value)])
}

/// The `type` part.
fn t(code: &str) -> Value {
    part("type", "valueCode", json!(code))
}

/// The `path` part.
fn p(path: &str) -> Value {
    part("path", "valueString", json!(path))
}

/// The `name` part.
fn n(name: &str) -> Value {
    part("name", "valueString", json!(name))
}

/// The `value` part with `key` (a `value[x]`) holding the JSON `text`.
fn v(key: &str, text: &str) -> Value {
    part("value", key, doc(text))
}

/// An integer part (`index`, `source`, `destination`).
fn int(name: &str, value: Value) -> Value {
    part(name, "valueInteger", value)
}

fn operation(parts: Vec<Value>) -> Value {
    object(vec![
        ("name", json!("operation")),
        ("part", Value::Array(parts)),
    ])
}

/// A FHIRPath Patch with one operation made of `parts`.
fn fp(parts: Vec<Value>) -> Value {
    object(vec![
        ("parameter", Value::Array(vec![operation(parts)])),
        ("resourceType", json!("Parameters")),
    ])
}

fn op(index: usize, problem: P) -> PatchError {
    PatchError::Operation { index, problem }
}

fn bad_path(problem: FhirPathProblem) -> PatchError {
    op(0, P::UnreadablePath { problem })
}

type Case = (
    &'static str,
    Value,
    &'static [(&'static str, ChangeKind)],
    &'static [&'static str],
);

fn check(format: PatchFormat, cases: Vec<Case>) {
    for (name, patch, changes, references) in cases {
        let expected: Vec<Change> = changes
            .iter()
            .map(|&(element, kind)| Change {
                element: if element == WHOLE {
                    Element::Whole
                } else {
                    Element::Named(element.to_owned())
                },
                kind,
            })
            .collect();
        let effect = read(format, &patch, "Observation")
            .unwrap_or_else(|error| panic!("{name}: unexpected error: {error}"));
        assert_eq!(effect.changes, expected, "{name}: changes");
        assert_eq!(effect.references, references, "{name}: references");
    }
}

fn check_errors(format: PatchFormat, cases: Vec<(&str, Value, PatchError)>) {
    for (name, patch, expected) in cases {
        assert_eq!(read(format, &patch, "Observation"), Err(expected), "{name}");
    }
}

#[test]
#[rustfmt::skip]
fn json_patch_ops() {
    check(PatchFormat::JsonPatch, vec![
        ("add", doc(r#"[{"op": "add", "path": "/note/-", "value": {"text": "x"}}]"#), &[("note", Set)], &[]),
        ("replace /subject with patient B", doc(r#"[{"op": "replace", "path": "/subject", "value": {"reference": "Patient/B"}}]"#),
            &[("subject", Set)], &["Patient/B"]),
        ("replace /subject/reference: the text is a reference", doc(r#"[{"op": "replace", "path": "/subject/reference", "value": "Patient/B"}]"#),
            &[("subject", Set)], &["Patient/B"]),
        ("text elsewhere is not a reference", doc(r#"[{"op": "replace", "path": "/subject/display", "value": "Patient/B"}]"#),
            &[("subject", Set)], &[]),
        ("remove", doc(r#"[{"op": "remove", "path": "/performer/0"}]"#), &[("performer", Remove)], &[]),
        ("move /subject -> /note/0 removes subject", doc(r#"[{"from": "/subject", "op": "move", "path": "/note/0"}]"#),
            &[("subject", Remove), ("note", SetUnknown)], &[]),
        ("copy /performer/0 -> /subject: subject unknown", doc(r#"[{"from": "/performer/0", "op": "copy", "path": "/subject"}]"#),
            &[("subject", SetUnknown)], &[]),
        ("test changes nothing", doc(r#"[{"op": "test", "path": "/subject/reference", "value": "Patient/A"}]"#), &[], &[]),
        ("empty document", doc("[]"), &[], &[]),
        ("null value", doc(r#"[{"op": "replace", "path": "/subject/reference", "value": null}]"#), &[("subject", Set)], &[]),
    ]);
}

#[test]
#[rustfmt::skip]
fn json_patch_pointers() {
    check(PatchFormat::JsonPatch, vec![
        ("~1 is /", doc(r#"[{"op": "remove", "path": "/~1x"}]"#), &[("/x", Remove)], &[]),
        ("~0 is ~", doc(r#"[{"op": "remove", "path": "/~0x"}]"#), &[("~x", Remove)], &[]),
        ("~01 is ~1, not /", doc(r#"[{"op": "remove", "path": "/a~01"}]"#), &[("a~1", Remove)], &[]),
        ("remove \"\"", doc(r#"[{"op": "remove", "path": ""}]"#), &[(WHOLE, Remove)], &[]),
        ("replace \"\"", doc(r#"[{"op": "replace", "path": "", "value": {"resourceType": "Observation", "subject": {"reference": "Patient/B"}}}]"#),
            &[(WHOLE, Set)], &["Patient/B"]),
        ("/ is the empty key", doc(r#"[{"op": "remove", "path": "/"}]"#), &[("", Remove)], &[]),
        ("_birthDate is birthDate", doc(r#"[{"op": "add", "path": "/_birthDate", "value": {"extension": []}}]"#), &[("birthDate", Set)], &[]),
        ("reference deeper in the pointer", doc(r#"[{"op": "add", "path": "/contained/0/subject/reference", "value": "Patient/C"}]"#),
            &[("contained", Set)], &["Patient/C"]),
    ]);
}

#[test]
#[rustfmt::skip]
fn json_patch_references() {
    check(PatchFormat::JsonPatch, vec![
        ("anywhere in a value, in document order",
            doc(r#"[{"op": "add", "path": "/contained/-", "value": {"performer": [{"reference": "Practitioner/1"}, {"display": "x"}],
                "resourceType": "Observation", "subject": {"extension": [{"valueReference": {"reference": "Patient/C"}}], "reference": "Patient/D"}}}]"#),
            &[("contained", Set)], &["Practitioner/1", "Patient/C", "Patient/D"]),
        ("deduplicated, first-seen order",
            doc(r#"[{"op": "replace", "path": "/subject/reference", "value": "Patient/B"},
                    {"op": "add", "path": "/performer/-", "value": {"reference": "Practitioner/1"}},
                    {"op": "add", "path": "/focus/-", "value": {"reference": "Patient/B"}}]"#),
            &[("subject", Set), ("performer", Set), ("focus", Set)], &["Patient/B", "Practitioner/1"]),
        ("a Reference under `reference` (Consent.provision.data)",
            doc(r#"[{"op": "add", "path": "/provision/data/-", "value": {"meaning": "instance", "reference": {"reference": "Patient/E"}}}]"#),
            &[("provision", Set)], &["Patient/E"]),
        ("text in a list under `reference`", doc(r#"[{"op": "add", "path": "/subject", "value": {"reference": ["Patient/F"]}}]"#),
            &[("subject", Set)], &["Patient/F"]),
    ]);
}

#[test]
#[rustfmt::skip]
fn json_patch_refusals() {
    let pointer = |member| op(0, P::BadPointer { member });
    check_errors(PatchFormat::JsonPatch, vec![
        ("object", doc(r#"{"op": "remove", "path": "/a"}"#), PatchError::NotAnArray {}),
        ("text", doc(r#""[]""#), PatchError::NotAnArray {}),
        ("operation not an object", doc("[1]"), op(0, P::NotAnObject)),
        ("no op", doc(r#"[{"path": "/a"}]"#), op(0, P::MissingOp)),
        ("unknown op", doc(r#"[{"op": "merge", "path": "/a"}]"#), op(0, P::UnknownOp)),
        ("op case", doc(r#"[{"op": "Add", "path": "/a", "value": 1}]"#), op(0, P::UnknownOp)),
        ("op not text", doc(r#"[{"op": 1, "path": "/a"}]"#), op(0, P::UnknownOp)),
        ("no path", doc(r#"[{"op": "remove"}]"#), op(0, P::MissingPath)),
        ("path not text", doc(r#"[{"op": "remove", "path": 1}]"#), pointer(PointerMember::Path)),
        ("path without /", doc(r#"[{"op": "remove", "path": "subject"}]"#), pointer(PointerMember::Path)),
        ("~2", doc(r#"[{"op": "remove", "path": "/~2x"}]"#), pointer(PointerMember::Path)),
        ("trailing ~", doc(r#"[{"op": "remove", "path": "/a~"}]"#), pointer(PointerMember::Path)),
        ("bad escape in a later token", doc(r#"[{"op": "remove", "path": "/a/b/~x"}]"#), pointer(PointerMember::Path)),
        ("test pointer checked", doc(r#"[{"op": "test", "path": "/~", "value": 1}]"#), pointer(PointerMember::Path)),
        ("move without from", doc(r#"[{"op": "move", "path": "/a"}]"#), op(0, P::MissingFrom)),
        ("copy without from", doc(r#"[{"op": "copy", "path": "/a"}]"#), op(0, P::MissingFrom)),
        ("bad from", doc(r#"[{"from": "/~3", "op": "copy", "path": "/a"}]"#), pointer(PointerMember::From)),
        ("from not text", doc(r#"[{"from": null, "op": "move", "path": "/a"}]"#), pointer(PointerMember::From)),
        ("add without value", doc(r#"[{"op": "add", "path": "/a"}]"#), op(0, P::MissingValue)),
        ("test without value", doc(r#"[{"op": "test", "path": "/a"}]"#), op(0, P::MissingValue)),
        ("remove with value", doc(r#"[{"op": "remove", "path": "/a", "value": 1}]"#), op(0, P::ExtraMember)),
        ("add with from", doc(r#"[{"from": "/b", "op": "add", "path": "/a", "value": 1}]"#), op(0, P::ExtraMember)),
        ("unknown member", doc(r#"[{"op": "replace", "path": "/a", "value": 1, "x": 1}]"#), op(0, P::ExtraMember)),
        ("reference number", doc(r#"[{"op": "replace", "path": "/subject/reference", "value": 5}]"#), op(0, P::ReferenceNotText)),
        ("reference boolean", doc(r#"[{"op": "add", "path": "/subject", "value": {"reference": true}}]"#), op(0, P::ReferenceNotText)),
        ("second operation", doc(r#"[{"op": "remove", "path": "/a"}, {"op": "remove"}]"#), op(1, P::MissingPath)),
    ]);
}

#[test]
#[rustfmt::skip]
fn merge_patch_keys() {
    check(PatchFormat::MergePatch, vec![
        ("object sets subject", doc(r#"{"subject": {"reference": "Patient/B"}}"#), &[("subject", Set)], &["Patient/B"]),
        ("null removes", doc(r#"{"subject": null}"#), &[("subject", Remove)], &[]),
        ("_birthDate sets birthDate", doc(r#"{"_birthDate": {"extension": []}}"#), &[("birthDate", Set)], &[]),
        ("_birthDate null removes birthDate", doc(r#"{"_birthDate": null}"#), &[("birthDate", Remove)], &[]),
        ("resourceType is a change", doc(r#"{"birthDate": "2000-01-01", "resourceType": "Patient"}"#),
            &[("birthDate", Set), ("resourceType", Set)], &[]),
        ("array replaces the whole", doc(r#"[{"reference": "Patient/B"}]"#), &[(WHOLE, Set)], &["Patient/B"]),
        ("text replaces the whole", doc(r#""x""#), &[(WHOLE, Set)], &[]),
        ("null replaces the whole", doc("null"), &[(WHOLE, Set)], &[]),
        ("empty object", doc("{}"), &[], &[]),
        ("top-level reference key", doc(r#"{"reference": "Patient/B"}"#), &[("reference", Set)], &["Patient/B"]),
        ("lone underscore kept", doc(r#"{"_": 1}"#), &[("_", Set)], &[]),
        ("references deep inside",
            doc(r#"{"contained": [{"resourceType": "Observation", "subject": {"reference": "Patient/C"}}],
                   "performer": [{"reference": "Practitioner/1"}, {"reference": "Patient/C"}]}"#),
            &[("contained", Set), ("performer", Set)], &["Patient/C", "Practitioner/1"]),
        ("nested null is a partial change", doc(r#"{"subject": {"reference": null}}"#), &[("subject", Set)], &[]),
    ]);
    check_errors(PatchFormat::MergePatch, vec![
        ("reference number", doc(r#"{"subject": {"reference": 5}}"#), PatchError::MergeReferenceNotText {}),
    ]);
}

#[test]
#[rustfmt::skip]
fn fhirpath_patch_types() {
    check(PatchFormat::FhirPathPatch, vec![
        ("replace subject with a valueReference",
            fp(vec![t("replace"), p("Observation.subject"), v("valueReference", r#"{"reference": "Patient/B"}"#)]),
            &[("subject", Set)], &["Patient/B"]),
        ("replace subject.reference with a valueString",
            fp(vec![t("replace"), p("Observation.subject.reference"), v("valueString", r#""Patient/B""#)]),
            &[("subject", Set)], &["Patient/B"]),
        ("text elsewhere is not a reference",
            fp(vec![t("replace"), p("Observation.subject.display"), v("valueString", r#""Patient/B""#)]),
            &[("subject", Set)], &[]),
        ("add to the resource: the name is the element",
            fp(vec![t("add"), p("Observation"), n("subject"), v("valueReference", r#"{"reference": "Patient/B"}"#)]),
            &[("subject", Set)], &["Patient/B"]),
        ("add named reference writes a reference",
            fp(vec![t("add"), p("Observation.subject"), n("reference"), v("valueString", r#""Patient/B""#)]),
            &[("subject", Set)], &["Patient/B"]),
        ("add a choice by its base name",
            fp(vec![t("add"), p("Observation"), n("value[x]"), v("valueQuantity", r#"{"value": 1}"#)]),
            &[("value", Set)], &[]),
        ("insert",
            fp(vec![t("insert"), p("Observation.performer"), int("index", json!(0)), v("valueReference", r#"{"reference": "Practitioner/1"}"#)]),
            &[("performer", Set)], &["Practitioner/1"]),
        ("delete through where() with quotes and parentheses",
            fp(vec![t("delete"), p(r"Observation.performer.where(display = 'a)b\'c(' and (`x)` = 1))")]),
            &[("performer", Remove)], &[]),
        ("move reorders",
            fp(vec![t("move"), p("Observation.performer"), int("destination", json!(0)), int("source", json!(1))]),
            &[("performer", Reorder)], &[]),
    ]);
}

#[test]
#[rustfmt::skip]
fn fhirpath_patch_paths_and_values() {
    check(PatchFormat::FhirPathPatch, vec![
        ("indexes and functions after the first step",
            fp(vec![t("replace"), p("Observation.code.coding[0].where(system='x').first().code"), v("valueCode", r#""y""#)]),
            &[("code", Set)], &[]),
        ("reference after an index, ofType() and single()",
            fp(vec![t("replace"), p("Observation.performer[1].ofType(Reference).single().reference"), v("valueString", r#""Practitioner/2""#)]),
            &[("performer", Set)], &["Practitioner/2"]),
        ("_birthDate is birthDate", fp(vec![t("delete"), p("Observation._birthDate")]), &[("birthDate", Remove)], &[]),
        ("nested parts with references deep inside",
            fp(vec![t("add"), p("Observation"), n("subject"), doc(r#"{"name": "value", "part": [
                {"name": "display", "valueString": "Patient/X"},
                {"name": "extension", "part": [{"name": "url", "valueUri": "http://example.org"},
                    {"name": "value[x]", "valueReference": {"reference": "Patient/C"}}]},
                {"name": "reference", "valueString": "Patient/B"}]}"#)]),
            &[("subject", Set)], &["Patient/C", "Patient/B"]),
        ("nested part list given as one object",
            fp(vec![t("replace"), p("Observation.subject"), doc(r#"{"name": "value", "part": {"name": "reference", "valueString": "Patient/B"}}"#)]),
            &[("subject", Set)], &["Patient/B"]),
        ("integers as digits (from XML)",
            fp(vec![t("insert"), p("Observation.note"), int("index", json!("10")), v("valueAnnotation", r#"{"text": "x"}"#)]),
            &[("note", Set)], &[]),
        ("one parameter as an object; id and meta",
            object(vec![("id", json!("p")), ("meta", json!({})), ("parameter", operation(vec![t("delete"), p("Observation.note")])),
                ("resourceType", json!("Parameters"))]),
            &[("note", Remove)], &[]),
        ("no operations", doc(r#"{"parameter": [], "resourceType": "Parameters"}"#), &[], &[]),
        ("operations in order",
            object(vec![("parameter", json!([operation(vec![t("delete"), p("Observation.note")]),
                operation(vec![p("Observation.subject.reference"), t("replace"), v("valueString", r#""Patient/B""#)])])),
                ("resourceType", json!("Parameters"))]),
            &[("note", Remove), ("subject", Set)], &["Patient/B"]),
    ]);
}

#[test]
#[rustfmt::skip]
fn fhirpath_patch_refuses_documents() {
    check_errors(PatchFormat::FhirPathPatch, vec![
        ("not Parameters", doc(r#"{"resourceType": "Observation"}"#), PatchError::NotParameters {}),
        ("no resourceType", doc(r#"{"parameter": []}"#), PatchError::NotParameters {}),
        ("array", doc("[]"), PatchError::NotParameters {}),
        ("implicitRules", doc(r#"{"implicitRules": "x", "parameter": [], "resourceType": "Parameters"}"#), PatchError::ParametersMember {}),
        ("no parameter", doc(r#"{"resourceType": "Parameters"}"#), PatchError::ParameterList {}),
        ("parameter text", doc(r#"{"parameter": "x", "resourceType": "Parameters"}"#), PatchError::ParameterList {}),
        ("parameter not an object", doc(r#"{"parameter": [1], "resourceType": "Parameters"}"#), op(0, P::NotAnObject)),
        ("not named operation", doc(r#"{"parameter": [{"name": "op", "part": []}], "resourceType": "Parameters"}"#), op(0, P::NotNamedOperation)),
        ("parameter member", doc(r#"{"parameter": [{"name": "operation", "part": [], "valueString": "x"}], "resourceType": "Parameters"}"#),
            op(0, P::ParameterMember)),
        ("no part list", doc(r#"{"parameter": [{"name": "operation"}], "resourceType": "Parameters"}"#), op(0, P::PartList)),
        ("second parameter", object(vec![("parameter", json!([operation(vec![t("delete"), p("Observation.note")]), {"name": "x"}])),
            ("resourceType", json!("Parameters"))]), op(1, P::NotNamedOperation)),
    ]);
}

#[test]
#[rustfmt::skip]
fn fhirpath_patch_refuses_parts() {
    let missing = |part| op(0, P::MissingPart { part });
    let not_allowed = |part| op(0, P::PartNotAllowed { part });
    let value = || v("valueCode", r#""final""#);
    check_errors(PatchFormat::FhirPathPatch, vec![
        ("part without name", fp(vec![json!({"valueCode": "delete"})]), op(0, P::UnnamedPart)),
        ("part not an object", fp(vec![json!("type")]), op(0, P::UnnamedPart)),
        ("unknown part", fp(vec![t("replace"), p("Observation.status"), value(), part("when", "valueString", json!("now"))]), op(0, P::UnknownPart)),
        ("duplicate path", fp(vec![t("replace"), p("Observation.status"), value(), p("Observation.subject")]),
            op(0, P::DuplicatePart { part: PartName::Path })),
        ("duplicate type", fp(vec![t("delete"), t("delete"), p("Observation.note")]), op(0, P::DuplicatePart { part: PartName::Type })),
        ("no type", fp(vec![p("Observation.note")]), missing(PartName::Type)),
        ("no path", fp(vec![t("delete")]), missing(PartName::Path)),
        ("replace without value", fp(vec![t("replace"), p("Observation.status")]), missing(PartName::Value)),
        ("add without name", fp(vec![t("add"), p("Observation"), value()]), missing(PartName::Name)),
        ("add without value", fp(vec![t("add"), p("Observation"), n("status")]), missing(PartName::Value)),
        ("insert without index", fp(vec![t("insert"), p("Observation.note"), value()]), missing(PartName::Index)),
        ("move without source", fp(vec![t("move"), p("Observation.note"), int("destination", json!(0))]), missing(PartName::Source)),
        ("move without destination", fp(vec![t("move"), p("Observation.note"), int("source", json!(0))]), missing(PartName::Destination)),
        ("move with index", fp(vec![t("move"), p("Observation.note"), int("index", json!(0))]), not_allowed(PartName::Index)),
        ("delete with value", fp(vec![t("delete"), p("Observation.note"), value()]), not_allowed(PartName::Value)),
        ("replace with name", fp(vec![t("replace"), p("Observation.status"), value(), n("status")]), not_allowed(PartName::Name)),
        ("insert with source", fp(vec![t("insert"), p("Observation.note"), value(), int("index", json!(0)), int("source", json!(0))]),
            not_allowed(PartName::Source)),
        ("unknown type", fp(vec![t("patch"), p("Observation.note")]), op(0, P::UnknownType)),
        ("type case", fp(vec![t("Delete"), p("Observation.note")]), op(0, P::UnknownType)),
        ("type as valueString", fp(vec![part("type", "valueString", json!("delete")), p("Observation.note")]),
            op(0, P::PartValue { part: PartName::Type })),
        ("path as valueCode", fp(vec![t("delete"), part("path", "valueCode", json!("Observation.note"))]),
            op(0, P::PartValue { part: PartName::Path })),
        ("path with a second value", fp(vec![t("delete"), doc(r#"{"name": "path", "valueCode": "x", "valueString": "Observation.note"}"#)]),
            op(0, P::PartValue { part: PartName::Path })),
        ("name not text", fp(vec![t("add"), p("Observation"), part("name", "valueString", json!(1)), value()]),
            op(0, P::PartValue { part: PartName::Name })),
        ("add bad name", fp(vec![t("add"), p("Observation"), n("subject.reference"), v("valueString", r#""Patient/B""#)]), op(0, P::BadName)),
    ]);
}

#[test]
#[rustfmt::skip]
fn fhirpath_patch_refuses_values() {
    let insert = |index: Value| fp(vec![t("insert"), p("Observation.note"), int("index", index), v("valueAnnotation", r#"{"text": "x"}"#)]);
    let replace = |value: &str| fp(vec![t("replace"), p("Observation.subject"), doc(value)]);
    let index = || op(0, P::PartValue { part: PartName::Index });
    check_errors(PatchFormat::FhirPathPatch, vec![
        ("negative index", insert(json!(-1)), index()),
        ("fractional index", insert(json!(1.5)), index()),
        ("index over 32 bits", insert(json!(2_147_483_648_u64)), index()),
        ("leading zero", insert(json!("01")), index()),
        ("signed digits", insert(json!("+1")), index()),
        ("empty digits", insert(json!("")), index()),
        ("boolean index", insert(json!(true)), index()),
        ("index as valueString", fp(vec![t("insert"), p("Observation.note"), part("index", "valueString", json!("0")),
            v("valueAnnotation", r#"{"text": "x"}"#)]), index()),
        ("value[x] and part", replace(r#"{"name": "value", "part": [], "valueString": "x"}"#), op(0, P::ValueShape)),
        ("two value[x]", replace(r#"{"name": "value", "valueReference": {}, "valueString": "x"}"#), op(0, P::ValueShape)),
        ("no value", replace(r#"{"name": "value"}"#), op(0, P::ValueShape)),
        ("extra member", replace(r#"{"id": "1", "name": "value", "valueString": "x"}"#), op(0, P::ValueShape)),
        ("lower-case type", replace(r#"{"name": "value", "valuestring": "x"}"#), op(0, P::ValueShape)),
        ("odd type suffix", replace(r#"{"name": "value", "valueRef-erence": {}}"#), op(0, P::ValueShape)),
        ("value[x] list", replace(r#"{"name": "value", "valueReference": [{"reference": "Patient/B"}]}"#), op(0, P::ValueShape)),
        ("value[x] null", replace(r#"{"name": "value", "valueReference": null}"#), op(0, P::ValueShape)),
        ("resource value", replace(r#"{"name": "value", "resource": {}}"#), op(0, P::ValueShape)),
        ("part list text", replace(r#"{"name": "value", "part": "x"}"#), op(0, P::ValueShape)),
        ("nested part without name", replace(r#"{"name": "value", "part": [{"valueString": "Patient/B"}]}"#), op(0, P::UnnamedPart)),
        ("nested bad name", replace(r#"{"name": "value", "part": [{"name": "a.reference", "valueString": "Patient/B"}]}"#), op(0, P::BadName)),
        ("deep bad shape", replace(r#"{"name": "value", "part": [{"name": "a", "part": [{"name": "b"}]}]}"#), op(0, P::ValueShape)),
        ("reference number", fp(vec![t("replace"), p("Observation.subject.reference"), v("valueInteger", "5")]), op(0, P::ReferenceNotText)),
    ]);
}

#[test]
#[rustfmt::skip]
fn fhirpath_patch_refuses_paths() {
    let delete = |path: &str| fp(vec![t("delete"), p(path)]);
    check_errors(PatchFormat::FhirPathPatch, vec![
        ("another type", delete("Patient.subject"), op(0, P::PathNotOfType)),
        ("no type", delete("subject"), op(0, P::PathNotOfType)),
        ("longer type name", delete("Observationx.subject"), op(0, P::PathNotOfType)),
        ("empty", delete(""), op(0, P::PathNotOfType)),
        ("parenthesized", delete("(Observation.subject)"), op(0, P::PathNotOfType)),
        ("delete the type", delete("Observation"), op(0, P::PathIsType)),
        ("replace the type", fp(vec![t("replace"), p("Observation"), v("valueString", r#""x""#)]), op(0, P::PathIsType)),
        ("insert at the type", fp(vec![t("insert"), p("Observation"), int("index", json!(0)), v("valueString", r#""x""#)]), op(0, P::PathIsType)),
        ("move the type", fp(vec![t("move"), p("Observation"), int("destination", json!(0)), int("source", json!(1))]), op(0, P::PathIsType)),
        ("where() first", delete("Observation.where(true).subject"), bad_path(FhirPathProblem::FirstStepFunction)),
        ("descendants()", delete("Observation.descendants()"), bad_path(FhirPathProblem::FirstStepFunction)),
        ("children()", delete("Observation.children().subject"), bad_path(FhirPathProblem::FirstStepFunction)),
        ("resolve()", delete("Observation.subject.resolve()"), bad_path(FhirPathProblem::UnknownFunction)),
        ("select()", delete("Observation.subject.select(%resource.performer)"), bad_path(FhirPathProblem::UnknownFunction)),
        ("first(1)", delete("Observation.performer.first(1)"), bad_path(FhirPathProblem::Arguments)),
        ("where( )", delete("Observation.performer.where( )"), bad_path(FhirPathProblem::Arguments)),
        ("open paren", delete("Observation.performer.where(true"), bad_path(FhirPathProblem::Unbalanced)),
        ("open quote", delete("Observation.performer.where(display = 'a)"), bad_path(FhirPathProblem::Unbalanced)),
        ("open backtick", delete("Observation.performer.where(`a) = 1"), bad_path(FhirPathProblem::Unbalanced)),
        ("escape at end", delete(r"Observation.performer.where('\"), bad_path(FhirPathProblem::Unbalanced)),
        ("block comment", delete("Observation.performer.where(/* ) */ true)"), bad_path(FhirPathProblem::Comment)),
        ("line comment", delete("Observation.performer.where(true // )\n)"), bad_path(FhirPathProblem::Comment)),
        ("double quote", delete(r#"Observation.performer.where(display = "x")"#), bad_path(FhirPathProblem::Comment)),
        ("control character", delete("Observation.performer.where(true\u{0})"), bad_path(FhirPathProblem::Character)),
        ("non-ASCII in arguments", delete("Observation.performer.where(d\u{fc} = 1)"), bad_path(FhirPathProblem::Character)),
        ("union", delete("Observation.subject|Observation.performer"), bad_path(FhirPathProblem::Character)),
        ("space", delete("Observation.subject | Observation.performer"), bad_path(FhirPathProblem::Character)),
        ("index on the type", delete("Observation[0].subject"), bad_path(FhirPathProblem::Character)),
        ("non-ASCII", delete("Observation.s\u{fc}bject"), bad_path(FhirPathProblem::Character)),
        ("delimited identifier", delete("Observation.`subject`"), bad_path(FhirPathProblem::EmptyStep)),
        ("trailing dot", delete("Observation.subject."), bad_path(FhirPathProblem::EmptyStep)),
        ("double dot", delete("Observation..subject"), bad_path(FhirPathProblem::EmptyStep)),
        ("space after dot", delete("Observation. subject"), bad_path(FhirPathProblem::EmptyStep)),
        ("letter index", delete("Observation.performer[a]"), bad_path(FhirPathProblem::BadIndex)),
        ("spaced index", delete("Observation.performer[ 0]"), bad_path(FhirPathProblem::BadIndex)),
        ("open index", delete("Observation.performer[0"), bad_path(FhirPathProblem::BadIndex)),
    ]);
}

#[test]
fn fhirpath_patch_needs_a_resource_type() {
    let patch = fp(vec![t("delete"), p(".subject")]);
    assert_eq!(
        read(PatchFormat::FhirPathPatch, &patch, ""),
        Err(op(0, P::PathNotOfType))
    );
}

#[test]
#[rustfmt::skip]
fn element_reaches() {
    let named = |name: &str| Element::Named(name.to_owned());
    for (element, name, expected) in [
        (named("subject"), "subject", true),
        (named("subject"), "subjectReference", true),
        (named("subject"), "subjects", false),
        (named("subject"), "subj", false),
        (named("value"), "valueQuantity", true),
        (named("policy"), "policyHolder", true),
        (named("policy"), "performer", false),
        (named(""), "subject", false),
        (Element::Whole, "subject", true),
    ] {
        assert_eq!(element.reaches(name), expected, "{element:?} {name}");
    }
}

#[test]
#[rustfmt::skip]
fn errors_never_quote_the_input() {
    let cases = [
        (PatchFormat::JsonPatch, doc(r#"[{"op": "SECRET", "path": "/a"}]"#)),
        (PatchFormat::JsonPatch, doc(r#"[{"op": "remove", "path": "/~9SECRET"}]"#)),
        (PatchFormat::JsonPatch, doc(r#"[{"SECRET": 1, "op": "remove", "path": "/a"}]"#)),
        (PatchFormat::JsonPatch, doc(r#"[{"op": "add", "path": "/SECRET/reference", "value": 1}]"#)),
        (PatchFormat::MergePatch, doc(r#"{"SECRET": {"reference": 1}}"#)),
        (PatchFormat::FhirPathPatch, doc(r#"{"SECRET": 1, "resourceType": "Parameters"}"#)),
        (PatchFormat::FhirPathPatch, fp(vec![t("SECRET"), p("Observation.a")])),
        (PatchFormat::FhirPathPatch, fp(vec![t("delete"), p("SECRET.a")])),
        (PatchFormat::FhirPathPatch, fp(vec![t("delete"), p("Observation.SECRET(")])),
        (PatchFormat::FhirPathPatch, fp(vec![t("delete"), part("SECRET", "valueString", json!("x"))])),
        (PatchFormat::FhirPathPatch, fp(vec![t("add"), p("Observation"), n("SECRET!"), v("valueString", r#""x""#)])),
    ];
    for (format, patch) in cases {
        let error = read(format, &patch, "Observation").expect_err("malformed on purpose");
        assert!(!error.to_string().contains("SECRET"), "{error}");
        assert!(!format!("{error:?}").contains("SECRET"), "{error:?}");
    }
}

#[test]
#[rustfmt::skip]
fn malformed_inputs_never_panic() {
    let inputs = [
        doc("null"), doc("0"), doc("-1.5"), doc("true"), doc(r#""x""#), doc("[]"), doc("{}"),
        doc(r#"[null, 1, "x", [], {}]"#),
        doc(r#"[{"op": null, "path": null, "from": null, "value": null}]"#),
        doc(r#"[{"op": "move", "path": [], "from": {}}]"#),
        doc(r#"{"resourceType": "Parameters", "parameter": [null, [], {"name": "operation", "part": [null, 1, {"name": 1}]}]}"#),
        doc(r#"{"resourceType": "Parameters", "parameter": {"name": "operation", "part": {"name": "type", "valueCode": "add"}}}"#),
        doc(r#"{"resourceType": 1, "parameter": 1}"#),
        fp(vec![t("add"), p("Observation.a(((("), n("[x]"), doc(r#"{"name": "value", "part": 1}"#)]),
        fp(vec![t("insert"), p("Observation.a['"), int("index", json!(u64::MAX)), doc(r#"{"name": "value", "part": [null]}"#)]),
        fp(vec![t("move"), p("Observation.a[99999999999999999999999]"), int("source", json!("99999999999999999999999")),
            int("destination", json!(1e300))]),
        fp(vec![t("delete"), p("Observation.a.where(')')).where(\u{1F600})")]),
    ];
    for input in &inputs {
        for format in [PatchFormat::JsonPatch, PatchFormat::MergePatch, PatchFormat::FhirPathPatch] {
            for resource_type in ["Observation", "", "(", "\u{1F600}"] {
                let _ = read(format, input, resource_type);
            }
        }
    }
}

/// Builds `depth` levels of `wrap` around `inner`, without recursion.
fn nest(depth: usize, inner: Value, wrap: impl Fn(Value) -> Value) -> Value {
    (0..depth).fold(inner, |value, _| wrap(value))
}

/// Drops a deeply nested value level by level: serde_json's own drop recurses, and would
/// overflow the test thread's stack where `read` does not.
fn dismantle(value: Value) {
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::Array(items) => stack.extend(items),
            Value::Object(members) => stack.extend(members.into_iter().map(|(_, child)| child)),
            _ => {}
        }
    }
}

/// 100 000 levels on a test thread's stack: any recursion per level in `read` would overflow.
#[test]
fn deep_nesting_never_overflows() {
    const DEPTH: usize = 100_000;
    let deep = nest(DEPTH, json!("Patient/Z"), |value| {
        Value::Array(vec![object(vec![("reference", value)])])
    });
    let json_patch = Value::Array(vec![object(vec![
        ("op", json!("add")),
        ("path", json!("/contained/-")),
        ("value", deep),
    ])]);
    let effect = read(PatchFormat::JsonPatch, &json_patch, "Observation");
    assert_eq!(
        effect.map(|e| e.references),
        Ok(vec!["Patient/Z".to_owned()])
    );
    dismantle(json_patch);

    let merge = nest(DEPTH, json!(null), |value| object(vec![("a", value)]));
    assert!(read(PatchFormat::MergePatch, &merge, "Observation").is_ok());
    dismantle(merge);

    let parts = nest(
        DEPTH,
        part("reference", "valueString", json!("Patient/Z")),
        |value| {
            object(vec![
                ("name", json!("extension")),
                ("part", Value::Array(vec![value])),
            ])
        },
    );
    let value = object(vec![
        ("name", json!("value")),
        ("part", Value::Array(vec![parts])),
    ]);
    let patch = fp(vec![t("replace"), p("Observation.subject"), value]);
    let effect = read(PatchFormat::FhirPathPatch, &patch, "Observation");
    assert_eq!(
        effect.map(|e| e.references),
        Ok(vec!["Patient/Z".to_owned()])
    );
    dismantle(patch);
}
