//! Every URL form of <http://hl7.org/fhir/R4/http.html> (summary table and sections),
//! compartment searches (<http://hl7.org/fhir/R4/search.html#compartments>), operations
//! (<http://hl7.org/fhir/R4/operations.html>), and the path normalization rules.

use super::{FORM, check_rows, config, run, summary};

const JSON: &[(&str, &str)] = &[("Content-Type", "application/fhir+json")];
const TRANSACTION: &str = r#"{"resourceType":"Bundle","type":"transaction","entry":[]}"#;
const BATCH: &str = r#"{"resourceType":"Bundle","type":"batch"}"#;

/// (method, target, headers, body, expected summary)
type Row = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    Option<&'static str>,
    &'static str,
);

#[rustfmt::skip]
const ROWS: &[Row] = &[
    // capabilities
    ("GET", "/fhir/R4/metadata", &[], None, "capabilities"),
    ("GET", "/fhir/R4/metadata?mode=terminology", &[], None, "capabilities"),
    ("HEAD", "/fhir/R4/metadata", &[], None, "capabilities"),
    ("POST", "/fhir/R4/metadata", &[], None, "err:MethodNotAllowed { method: Post, shape: Metadata }"),
    // read / vread
    ("GET", "/fhir/R4/Patient/123", &[], None, "read Patient id=123"),
    ("HEAD", "/fhir/R4/Patient/123", &[], None, "read Patient id=123"),
    ("GET", "/fhir/R4/Patient/123?_format=application/fhir+json", &[], None, "read Patient id=123"),
    ("GET", "/fhir/R4/Observation/a.b-C9", &[], None, "read Observation id=a.b-C9"),
    ("GET", "/fhir/R4/Patient/123/_history/2", &[], None, "vread Patient id=123 vid=2"),
    ("HEAD", "/fhir/R4/Patient/123/_history/2", &[], None, "vread Patient id=123 vid=2"),
    // update / patch / delete, plain and conditional
    ("PUT", "/fhir/R4/Patient/123", &[], None, "update Patient id=123"),
    ("PUT", "/fhir/R4/Patient?identifier=http://x.org|1", &[], None, "update Patient cond(1)"),
    ("PUT", "/fhir/R4/Patient", &[], None, "err:MissingConditionalCriteria { method: Put }"),
    ("PUT", "/fhir/R4/Patient?_format=json", &[], None, "err:MissingConditionalCriteria { method: Put }"),
    ("PATCH", "/fhir/R4/Patient/123", &[], None, "patch Patient id=123"),
    ("PATCH", "/fhir/R4/Patient?identifier=x&active=true", &[], None, "patch Patient cond(2)"),
    ("PATCH", "/fhir/R4/Patient", &[], None, "err:MissingConditionalCriteria { method: Patch }"),
    ("DELETE", "/fhir/R4/Patient/123", &[], None, "delete Patient id=123"),
    ("DELETE", "/fhir/R4/Observation?subject=Patient/1", &[], None, "delete Observation cond(1)"),
    ("DELETE", "/fhir/R4/Patient", &[], None, "err:MissingConditionalCriteria { method: Delete }"),
    ("DELETE", "/fhir/R4", &[], None, "err:MethodNotAllowed { method: Delete, shape: Base }"),
    ("PUT", "/fhir/R4", &[], None, "err:MethodNotAllowed { method: Put, shape: Base }"),
    ("PATCH", "/fhir/R4", &[], None, "err:MethodNotAllowed { method: Patch, shape: Base }"),
    ("DELETE", "/fhir/R4/Patient/1/_history/2", &[], None, "err:MethodNotAllowed { method: Delete, shape: History }"),
    ("PUT", "/fhir/R4/Patient/1/_history/2", &[], None, "err:MethodNotAllowed { method: Put, shape: History }"),
    ("DELETE", "/fhir/R4/Patient/1/_history", &[], None, "err:MethodNotAllowed { method: Delete, shape: History }"),
    // create
    ("POST", "/fhir/R4/Patient", &[], None, "create Patient"),
    ("POST", "/fhir/R4/Patient", &[("If-None-Exist", "identifier=http://x.org|1")], None, "create Patient cond(1)"),
    ("POST", "/fhir/R4/Patient", &[("If-None-Exist", "?identifier=a&birthdate=2000")], None, "create Patient cond(2)"),
    ("POST", "/fhir/R4/Patient", &[("If-None-Exist", "")], None, "err:MissingConditionalCriteria { method: Post }"),
    ("POST", "/fhir/R4/Patient/123", &[], None, "err:MethodNotAllowed { method: Post, shape: Instance }"),
    // search
    ("GET", "/fhir/R4/Patient", &[], None, "search-type Patient"),
    ("GET", "/fhir/R4/Patient?name=peter", &[], None, "search-type Patient"),
    ("HEAD", "/fhir/R4/Patient?name=peter", &[], None, "search-type Patient"),
    ("POST", "/fhir/R4/Patient/_search", FORM, Some("name=peter"), "search-type Patient"),
    ("GET", "/fhir/R4/Patient/_search", &[], None, "err:MethodNotAllowed { method: Get, shape: TypeSearch }"),
    ("GET", "/fhir/R4", &[], None, "search-system"),
    ("GET", "/fhir/R4?_type=Patient,Observation", &[], None, "search-system"),
    ("POST", "/fhir/R4/_search", FORM, Some("_type=Patient"), "search-system"),
    ("GET", "/fhir/R4/_search", &[], None, "err:MethodNotAllowed { method: Get, shape: SystemSearch }"),
    // history
    ("GET", "/fhir/R4/Patient/123/_history", &[], None, "history-instance Patient id=123"),
    ("GET", "/fhir/R4/Patient/_history", &[], None, "history-type Patient"),
    ("GET", "/fhir/R4/_history", &[], None, "history-system"),
    ("GET", "/fhir/R4/_history?_since=2020-01-01T00:00:00Z&_count=10", &[], None, "history-system"),
    ("POST", "/fhir/R4/_history", &[], None, "err:MethodNotAllowed { method: Post, shape: History }"),
    ("POST", "/fhir/R4/Patient/_history", &[], None, "err:MethodNotAllowed { method: Post, shape: History }"),
    // batch / transaction
    ("POST", "/fhir/R4", JSON, Some(TRANSACTION), "transaction"),
    ("POST", "/fhir/R4", JSON, Some(BATCH), "batch"),
    ("POST", "/fhir/R4/", JSON, Some(TRANSACTION), "transaction"),
    // operations
    ("GET", "/fhir/R4/$export", &[], None, "operation op=$export@System"),
    ("POST", "/fhir/R4/$process-message", JSON, Some(r#"{"resourceType":"Bundle","type":"message"}"#), "operation op=$process-message@System"),
    ("GET", "/fhir/R4/Patient/$export", &[], None, "operation Patient op=$export@Type"),
    ("GET", "/fhir/R4/Group/g1/$export", &[], None, "operation Group id=g1 op=$export@Instance"),
    ("GET", "/fhir/R4/Patient/123/$everything", &[], None, "operation Patient id=123 op=$everything@Instance"),
    ("HEAD", "/fhir/R4/Patient/123/$everything", &[], None, "operation Patient id=123 op=$everything@Instance"),
    ("POST", "/fhir/R4/Patient/$match", JSON, Some(r#"{"resourceType":"Parameters"}"#), "operation Patient op=$match@Type"),
    ("POST", "/fhir/R4/Observation/$validate", &[], None, "operation Observation op=$validate@Type"),
    ("POST", "/fhir/R4/Patient/1/$validate", &[], None, "operation Patient id=1 op=$validate@Instance"),
    ("GET", "/fhir/R4/ValueSet/$expand?url=http://acme.org/vs", &[], None, "operation ValueSet op=$expand@Type"),
    ("GET", "/fhir/R4/CodeSystem/$lookup?system=http://loinc.org&code=1963-8", &[], None, "operation CodeSystem op=$lookup@Type"),
    ("POST", "/fhir/R4/Patient/1/_history/2/$meta-add", &[], None, "operation Patient id=1 vid=2 op=$meta-add@Instance"),
    ("GET", "/fhir/R4/Patient/1/$meta", &[], None, "operation Patient id=1 op=$meta@Instance"),
    ("DELETE", "/fhir/R4/$export", &[], None, "err:MethodNotAllowed { method: Delete, shape: Operation }"),
    ("PUT", "/fhir/R4/Patient/1/$everything", &[], None, "err:MethodNotAllowed { method: Put, shape: Operation }"),
    ("GET", "/fhir/R4/Patient/$", &[], None, "err:InvalidOperationName"),
    ("GET", "/fhir/R4/$export/Patient", &[], None, "err:UnknownPath"),
    // compartments
    ("GET", "/fhir/R4/Patient/123/Observation", &[], None, "search-type Observation comp=Patient/123"),
    ("GET", "/fhir/R4/Patient/123/*", &[], None, "search-system comp=Patient/123"),
    ("GET", "/fhir/R4/Patient/123/Observation?code=http://loinc.org|1234-5", &[], None, "search-type Observation comp=Patient/123"),
    ("POST", "/fhir/R4/Patient/123/Observation/_search", FORM, Some("code=1"), "search-type Observation comp=Patient/123"),
    ("POST", "/fhir/R4/Patient/123/_search", FORM, Some("_type=Observation"), "search-system comp=Patient/123"),
    ("GET", "/fhir/R4/Encounter/e1/Observation", &[], None, "search-type Observation comp=Encounter/e1"),
    ("GET", "/fhir/R4/Practitioner/p1/Patient", &[], None, "search-type Patient comp=Practitioner/p1"),
    ("GET", "/fhir/R4/RelatedPerson/r1/Patient", &[], None, "search-type Patient comp=RelatedPerson/r1"),
    ("GET", "/fhir/R4/Device/d1/Observation", &[], None, "search-type Observation comp=Device/d1"),
    ("GET", "/fhir/R4/Patient/123/MedicationRequest", &[], None, "search-type MedicationRequest comp=Patient/123"),
    ("GET", "/fhir/R4/Observation/o1/Patient", &[], None, "err:NotACompartment { resource_type: Observation }"),
    ("GET", "/fhir/R4/Patient/123/ValueSet", &[], None, "err:NotInCompartment { compartment: Patient, resource_type: ValueSet }"),
    ("GET", "/fhir/R4/Patient/123/observation", &[], None, "err:UnknownResourceType { segment: 5 }"),
    ("POST", "/fhir/R4/Patient/123/Observation", &[], None, "err:MethodNotAllowed { method: Post, shape: Compartment }"),
    ("GET", "/fhir/R4/Patient/123/Observation/1", &[], None, "err:UnknownPath"),
    ("GET", "/fhir/R4/Patient/bad_id/Observation", &[], None, "err:InvalidId { kind: Compartment }"),
    // resource types are case-sensitive and checked against the R4 list
    ("GET", "/fhir/R4/patient/123", &[], None, "err:UnknownResourceType { segment: 3 }"),
    ("GET", "/fhir/R4/PATIENT", &[], None, "err:UnknownResourceType { segment: 3 }"),
    ("GET", "/fhir/R4/Patients", &[], None, "err:UnknownResourceType { segment: 3 }"),
    ("GET", "/fhir/R4/DomainResource/1", &[], None, "err:UnknownResourceType { segment: 3 }"),
    ("GET", "/fhir/R4/MedicationUsage/1", &[], None, "err:UnknownResourceType { segment: 3 }"),
    ("GET", "/fhir/R4/DeviceUseStatement/1", &[], None, "read DeviceUseStatement id=1"),
    ("GET", "/fhir/R4/_search", &[], None, "err:MethodNotAllowed { method: Get, shape: SystemSearch }"),
    // ids
    ("GET", "/fhir/R4/Patient/bad_id", &[], None, "err:InvalidId { kind: Id }"),
    ("GET", "/fhir/R4/Patient/1234567890123456789012345678901234567890123456789012345678901234", &[], None, "read Patient id=1234567890123456789012345678901234567890123456789012345678901234"),
    ("GET", "/fhir/R4/Patient/12345678901234567890123456789012345678901234567890123456789012345", &[], None, "err:InvalidId { kind: Id }"),
    ("GET", "/fhir/R4/Patient/1/_history/bad~v", &[], None, "err:InvalidId { kind: Version }"),
    ("GET", "/fhir/R4/Patient/1/_foo", &[], None, "err:UnknownPath"),
    ("GET", "/fhir/R4/Patient/1/_history/2/extra", &[], None, "err:UnknownPath"),
    ("GET", "/fhir/R4/metadata/Patient", &[], None, "err:UnknownPath"),
    // methods
    ("OPTIONS", "/fhir/R4/metadata", &[], None, "err:UnsupportedMethod"),
    ("get", "/fhir/R4/metadata", &[], None, "err:UnsupportedMethod"),
    ("TRACE", "/fhir/R4/Patient/1", &[], None, "err:UnsupportedMethod"),
    // target forms
    ("GET", "https://fhir.example/fhir/R4/Patient/1", &[], None, "read Patient id=1"),
    ("GET", "HTTPS://FHIR.EXAMPLE:443/fhir/R4/Patient/1", &[], None, "read Patient id=1"),
    ("GET", "http://fhir.example:8080/fhir/R4/metadata", &[], None, "capabilities"),
    ("GET", "ftp://fhir.example/fhir/R4/Patient", &[], None, "err:Target { problem: Scheme }"),
    ("GET", "https://user@fhir.example/fhir/R4/Patient", &[], None, "err:Target { problem: Userinfo }"),
    ("GET", "https:///fhir/R4/Patient", &[], None, "err:Target { problem: Authority }"),
    ("GET", "*", &[], None, "err:Target { problem: NotOriginOrAbsolute }"),
    ("GET", "fhir.example:443", &[], None, "err:Target { problem: NotOriginOrAbsolute }"),
    ("GET", "", &[], None, "err:Target { problem: Empty }"),
    ("GET", "/fhir/R4/Patient/1#x", &[], None, "err:Target { problem: Fragment }"),
    ("GET", "/fhir/R4/Patient?name=a#b", &[], None, "err:Target { problem: Fragment }"),
    ("GET", "/fhir/R4/Patient/1 x", &[], None, "err:Target { problem: Character }"),
    ("GET", "/fhir/R4/Patient/\u{e9}", &[], None, "err:Target { problem: Character }"),
    // base path
    ("GET", "/fhir/r4/Patient/1", &[], None, "err:OutsideBase"),
    ("GET", "/fhir/R4x/Patient", &[], None, "err:OutsideBase"),
    ("GET", "/fhir", &[], None, "err:OutsideBase"),
    ("GET", "/Patient/1", &[], None, "err:OutsideBase"),
    ("GET", "/", &[], None, "err:OutsideBase"),
    // path normalization
    ("GET", "/fhir/R4/Patient/", &[], None, "err:Path { segment: 4, problem: TrailingSlash }"),
    ("GET", "/fhir/R4/Patient/1/", &[], None, "err:Path { segment: 5, problem: TrailingSlash }"),
    ("GET", "/fhir/R4//Patient", &[], None, "err:Path { segment: 3, problem: Empty }"),
    ("GET", "//fhir/R4/Patient", &[], None, "err:Path { segment: 1, problem: Empty }"),
    ("GET", "/fhir/R4/Patient//1", &[], None, "err:Path { segment: 4, problem: Empty }"),
    ("GET", "/fhir/R4/Patient%2F1", &[], None, "err:Path { segment: 3, problem: EncodedDelimiter }"),
    ("GET", "/fhir/R4/Patient%2f1", &[], None, "err:Path { segment: 3, problem: EncodedDelimiter }"),
    ("GET", "/fhir/R4/Patient/%2e%2e/Observation", &[], None, "err:Path { segment: 4, problem: EncodedDelimiter }"),
    ("GET", "/fhir/R4/Patient/1%2E2", &[], None, "err:Path { segment: 4, problem: EncodedDelimiter }"),
    ("GET", "/fhir/R4/Patient/../Observation", &[], None, "err:Path { segment: 4, problem: Dot }"),
    ("GET", "/fhir/R4/./Patient", &[], None, "err:Path { segment: 3, problem: Dot }"),
    ("GET", "/fhir/R4/Patient/1/..", &[], None, "err:Path { segment: 5, problem: Dot }"),
    ("GET", "/fhir/R4/Patient/1;x", &[], None, "err:Path { segment: 4, problem: Params }"),
    ("GET", "/fhir/R4/Patient;v=1/1", &[], None, "err:Path { segment: 3, problem: Params }"),
    ("GET", "/fhir/R4/Patient%252F1", &[], None, "err:Path { segment: 3, problem: EncodedDelimiter }"),
    ("GET", "/fhir/R4/Patient/1%00", &[], None, "err:Path { segment: 4, problem: EncodedDelimiter }"),
    ("GET", "/fhir/R4/Patient/1%5C2", &[], None, "err:Path { segment: 4, problem: EncodedDelimiter }"),
    ("GET", "/fhir/R4/%24export", &[], None, "err:Path { segment: 3, problem: EncodedDelimiter }"),
    ("GET", "/fhir/R4/Patient/%31", &[], None, "read Patient id=1"),
    ("GET", "/fhir/R4/Pati%65nt/1", &[], None, "read Patient id=1"),
    ("GET", "/fhir/R4/Patient/%zz", &[], None, "err:Path { segment: 4, problem: BadPercent }"),
    ("GET", "/fhir/R4/Patient/1%2", &[], None, "err:Path { segment: 4, problem: BadPercent }"),
    ("GET", "/fhir/R4/Patient/1\\2", &[], None, "err:Path { segment: 4, problem: Character }"),
    ("GET", "/fhir/R4/Patient/1,2", &[], None, "err:Path { segment: 4, problem: Character }"),
    ("GET", "/fhir/R4/Patient/1@x", &[], None, "err:Path { segment: 4, problem: Character }"),
];

#[test]
fn http_url_forms() {
    let config = config();
    let failures: Vec<String> = ROWS
        .iter()
        .filter_map(|&(method, target, headers, body, want)| {
            let got = summary(&run(&config, method, target, headers, body));
            (got != want).then(|| format!("{method} {target}\n   want {want}\n    got {got}"))
        })
        .collect();
    check_rows(&failures, ROWS.len());
    assert!(
        ROWS.len() >= 140,
        "the table covers the R4 summary table and the path rules"
    );
}

#[test]
fn base_path_root_and_nested() {
    let root = super::ClassifyConfig::new("/").expect("root base is valid");
    assert_eq!(
        summary(&run(&root, "GET", "/Patient/1", &[], None)),
        "read Patient id=1"
    );
    assert_eq!(summary(&run(&root, "GET", "/", &[], None)), "search-system");
    assert_eq!(
        summary(&run(&root, "GET", "/metadata", &[], None)),
        "capabilities"
    );
    assert_eq!(
        summary(&run(&root, "GET", "https://h/Patient", &[], None)),
        "search-type Patient"
    );
    let deep = super::ClassifyConfig::new("/a/b/c").expect("nested base is valid");
    assert_eq!(
        summary(&run(&deep, "GET", "/a/b/c/Patient", &[], None)),
        "search-type Patient"
    );
    assert_eq!(
        summary(&run(&deep, "GET", "/a/b/Patient", &[], None)),
        "err:OutsideBase"
    );
    assert_eq!(
        summary(&run(&deep, "GET", "/a/b/c/d/Patient", &[], None)),
        "err:UnknownResourceType { segment: 4 }"
    );
    assert_eq!(deep.base_path(), "/a/b/c");
}

#[test]
fn invalid_base_paths_are_refused() {
    for base in [
        "",
        "fhir",
        "/fhir/",
        "/fhir//R4",
        "/fhir/../R4",
        "/fhir?x",
        "/fhir#x",
        "/fh%69r",
        "/$op",
        "/fhir;x",
    ] {
        assert_eq!(
            super::ClassifyConfig::new(base).err(),
            Some(super::ClassifyError::InvalidBasePath {}),
            "base {base:?}"
        );
    }
}
