//! Search syntax of <http://hl7.org/fhir/R4/search.html>: modifiers, prefixes, escaping, chains,
//! reverse chains, composites, includes, result and paging parameters, form-encoded POST.

use super::{FORM, Headers, check_rows, config, render_query, run};
use crate::comparator_prefix;

/// (method, target, form body, expected rendering or `err:...`)
type Row = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static [&'static str],
);

#[rustfmt::skip]
const ROWS: &[Row] = &[
    ("GET", "/fhir/R4/Patient?name=peter", None, &[r#"name=["peter"]"#]),
    ("GET", "/fhir/R4/Patient?name:exact=Peter", None, &[r#"name:exact=["Peter"]"#]),
    ("GET", "/fhir/R4/Patient?name:contains=eve", None, &[r#"name:contains=["eve"]"#]),
    ("GET", "/fhir/R4/Patient?given=eve,peter", None, &[r#"given=["eve", "peter"]"#]),
    ("GET", r"/fhir/R4/Patient?given=a\,b", None, &[r#"given=["a,b"]"#]),
    ("GET", r"/fhir/R4/Patient?given=a\,b,c", None, &[r#"given=["a,b", "c"]"#]),
    ("GET", r"/fhir/R4/Patient?given=a\\,b", None, &[r#"given=["a\\\\", "b"]"#]),
    ("GET", "/fhir/R4/Observation?value-quantity=5.4|http://unitsofmeasure.org|mg", None, &[r#"value-quantity=["5.4|http://unitsofmeasure.org|mg"]"#]),
    ("GET", r"/fhir/R4/Observation?value-string=a\|b\$c", None, &[r#"value-string=["a\\|b\\$c"]"#]),
    ("GET", "/fhir/R4/Patient?birthdate=ge2013-01-14&birthdate=le2014", None, &[r#"birthdate=["ge2013-01-14"]"#, r#"birthdate=["le2014"]"#]),
    ("GET", "/fhir/R4/Observation?date=gt2013-01-14T10:00", None, &[r#"date=["gt2013-01-14T10:00"]"#]),
    ("GET", "/fhir/R4/RiskAssessment?probability=gt0.8", None, &[r#"probability=["gt0.8"]"#]),
    ("GET", "/fhir/R4/Observation?value-quantity=ap5.4|http://unitsofmeasure.org|mg", None, &[r#"value-quantity=["ap5.4|http://unitsofmeasure.org|mg"]"#]),
    ("GET", "/fhir/R4/Patient?gender:missing=true", None, &[r#"gender:missing=["true"]"#]),
    ("GET", "/fhir/R4/Patient?gender:not=male", None, &[r#"gender:not=["male"]"#]),
    ("GET", "/fhir/R4/Condition?code:above=http://snomed.info/sct|3738000", None, &[r#"code:above=["http://snomed.info/sct|3738000"]"#]),
    ("GET", "/fhir/R4/Observation?code:below=http://loinc.org|1234", None, &[r#"code:below=["http://loinc.org|1234"]"#]),
    ("GET", "/fhir/R4/Condition?code:in=http%3A%2F%2Fsnomed.info%2Fsct%3Ffhir_vs%3Disa%2F126851005", None, &[r#"code:in=["http://snomed.info/sct?fhir_vs=isa/126851005"]"#]),
    ("GET", "/fhir/R4/Condition?code:not-in=http://acme.org/vs", None, &[r#"code:not-in=["http://acme.org/vs"]"#]),
    ("GET", "/fhir/R4/Observation?code:text=headache", None, &[r#"code:text=["headache"]"#]),
    ("GET", "/fhir/R4/Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|446053", None, &[r#"identifier:of-type=["http://terminology.hl7.org/CodeSystem/v2-0203|MR|446053"]"#]),
    ("GET", "/fhir/R4/Observation?subject:identifier=http://acme.org/fhir/identifier/mrn|123456", None, &[r#"subject:identifier=["http://acme.org/fhir/identifier/mrn|123456"]"#]),
    ("GET", "/fhir/R4/Observation?subject=Patient/23", None, &[r#"subject=["Patient/23"]"#]),
    ("GET", "/fhir/R4/Observation?subject:Patient=23", None, &[r#"subject:Patient=["23"]"#]),
    ("GET", "/fhir/R4/Observation?subject=http://acme.org/fhir/Patient/123", None, &[r#"subject=["http://acme.org/fhir/Patient/123"]"#]),
    // chains
    ("GET", "/fhir/R4/DiagnosticReport?subject.name=peter", None, &[r#"subject.name=["peter"]"#]),
    ("GET", "/fhir/R4/DiagnosticReport?subject:Patient.name=peter", None, &[r#"subject:Patient.name=["peter"]"#]),
    ("GET", "/fhir/R4/Patient?general-practitioner.name=Joe&general-practitioner.address-state=MN", None, &[r#"general-practitioner.name=["Joe"]"#, r#"general-practitioner.address-state=["MN"]"#]),
    ("GET", "/fhir/R4/DiagnosticReport?subject:Patient.general-practitioner:Practitioner.name:exact=Joe", None, &[r#"subject:Patient.general-practitioner:Practitioner.name:exact=["Joe"]"#]),
    ("GET", "/fhir/R4/Observation?patient.identifier=http://x|1", None, &[r#"patient.identifier=["http://x|1"]"#]),
    // reverse chains
    ("GET", "/fhir/R4/Patient?_has:Observation:patient:code=1234-5", None, &[r#"<Observation.patient>code=["1234-5"]"#]),
    ("GET", "/fhir/R4/Patient?_has:Observation:patient:_has:AuditEvent:entity:agent=MyUserId", None, &[r#"<Observation.patient><AuditEvent.entity>agent=["MyUserId"]"#]),
    ("GET", "/fhir/R4/Encounter?_has:Observation:encounter:code:text=pain", None, &[r#"<Observation.encounter>code:text=["pain"]"#]),
    ("GET", "/fhir/R4/Patient?_has:Observation:subject:subject:Patient.name=x", None, &[r#"<Observation.subject>subject:Patient.name=["x"]"#]),
    // composites
    ("GET", "/fhir/R4/Observation?code-value-quantity=http://loinc.org|12345-6$gt150", None, &[r#"code-value-quantity=["http://loinc.org|12345-6$gt150"]"#]),
    ("GET", "/fhir/R4/Group?characteristic-value=gender$mixed", None, &[r#"characteristic-value=["gender$mixed"]"#]),
    ("GET", "/fhir/R4/DiagnosticReport?result.code-value-quantity=http://loinc.org|2823-3$gt5.4|http://unitsofmeasure.org|mmol/L", None, &[r#"result.code-value-quantity=["http://loinc.org|2823-3$gt5.4|http://unitsofmeasure.org|mmol/L"]"#]),
    ("GET", "/fhir/R4/Observation?component-code-value-quantity=http://loinc.org|8480-6$lt60", None, &[r#"component-code-value-quantity=["http://loinc.org|8480-6$lt60"]"#]),
    ("GET", "/fhir/R4/Observation?code-value-concept=http://loinc.org|1$http://snomed.info/sct|2,http://loinc.org|3$x", None, &[r#"code-value-concept=["http://loinc.org|1$http://snomed.info/sct|2", "http://loinc.org|3$x"]"#]),
    // includes
    ("GET", "/fhir/R4/MedicationRequest?_include=MedicationRequest:patient&_include=MedicationRequest:medication", None, &["inc=MedicationRequest:patient", "inc=MedicationRequest:medication"]),
    ("GET", "/fhir/R4/MedicationRequest?_revinclude=Provenance:target", None, &["rev=Provenance:target"]),
    ("GET", "/fhir/R4/MedicationRequest?_include=MedicationRequest:patient&_include:iterate=Patient:general-practitioner", None, &["inc=MedicationRequest:patient", "inc:iterate=Patient:general-practitioner"]),
    ("GET", "/fhir/R4/MedicationDispense?_include=MedicationDispense:prescription&_include:iterate=MedicationRequest:performer&_include:iterate=MedicationRequest:medication", None, &["inc=MedicationDispense:prescription", "inc:iterate=MedicationRequest:performer", "inc:iterate=MedicationRequest:medication"]),
    ("GET", "/fhir/R4/Observation?_include=Observation:subject:Patient", None, &["inc=Observation:subject:Patient"]),
    ("GET", "/fhir/R4/Patient?_include=*", None, &["inc=*:*"]),
    ("GET", "/fhir/R4/Patient?_revinclude=Observation:*", None, &["rev=Observation:*"]),
    ("GET", "/fhir/R4/Encounter?_include:recurse=Encounter:part-of", None, &["inc:iterate=Encounter:part-of"]),
    ("GET", "/fhir/R4/Patient?_revinclude:iterate=Provenance:target&_include=Patient:organization,Patient:link", None, &["rev:iterate=Provenance:target", "inc=Patient:organization", "inc=Patient:link"]),
    // _type and result parameters
    ("GET", "/fhir/R4?_type=Observation,Condition&_lastUpdated=gt2020", None, &[r#"_lastUpdated=["gt2020"]"#, r#"_type=["Observation", "Condition"]"#]),
    ("GET", "/fhir/R4/Patient?_summary=count", None, &["_summary=Count"]),
    ("GET", "/fhir/R4/Patient?_summary=text", None, &["_summary=Text"]),
    ("GET", "/fhir/R4/Patient?_elements=identifier,active,link", None, &[r#"_elements=["identifier", "active", "link"]"#]),
    ("GET", "/fhir/R4/Patient?_count=50&_sort=-birthdate,name", None, &["_count=50", "sort=-birthdate", "sort=+name"]),
    ("GET", "/fhir/R4/Patient?_total=accurate", None, &["_total=Accurate"]),
    ("GET", "/fhir/R4/Observation?_sort=status,-date,category", None, &["sort=+status", "sort=-date", "sort=+category"]),
    ("GET", "/fhir/R4/Patient?_id=23", None, &[r#"_id=["23"]"#]),
    ("GET", "/fhir/R4/Patient?_lastUpdated=gt2010-10-01", None, &[r#"_lastUpdated=["gt2010-10-01"]"#]),
    ("GET", "/fhir/R4/Condition?_tag=http://acme.org/codes|needs-review", None, &[r#"_tag=["http://acme.org/codes|needs-review"]"#]),
    ("GET", "/fhir/R4/Patient?_profile=http://acme.org/StructureDefinition/p", None, &[r#"_profile=["http://acme.org/StructureDefinition/p"]"#]),
    ("GET", "/fhir/R4/Observation?_security=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R", None, &[r#"_security=["http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R"]"#]),
    ("GET", "/fhir/R4/Condition?_text=diabetes&_content=cancer", None, &[r#"_text=["diabetes"]"#, r#"_content=["cancer"]"#]),
    ("GET", "/fhir/R4/Patient?_list=$current-allergies", None, &[r#"_list=["$current-allergies"]"#]),
    ("GET", "/fhir/R4/Patient?_query=current-high-risk&ward=2", None, &[r#"_query=["current-high-risk"]"#, r#"ward=["2"]"#]),
    ("GET", "/fhir/R4/Patient?_filter=name+eq+x", None, &[r#"_filter=["name eq x"]"#]),
    ("GET", "/fhir/R4/Patient?name=peter&_format=json&_pretty=true", None, &[r#"name=["peter"]"#, "control:_format=json", "control:_pretty=true"]),
    ("GET", "/fhir/R4/Patient?_contained=true&_containedType=container", None, &["control:_contained=true", "control:_containedType=container"]),
    ("GET", "/fhir/R4?_getpages=abc&_getpagesoffset=20&_count=20", None, &["_count=20", "paging:_getpages=abc", "paging:_getpagesoffset=20"]),
    ("GET", "/fhir/R4/Patient/_history?_since=2020-01-01&_at=2021", None, &[r#"_since=["2020-01-01"]"#, r#"_at=["2021"]"#]),
    // decoding
    ("GET", "/fhir/R4/Patient?name=%E6%B8%85", None, &["name=[\"\u{6e05}\"]"]),
    ("GET", "/fhir/R4/Patient?name=a+b", None, &[r#"name=["a b"]"#]),
    ("GET", "/fhir/R4/Patient?name=a%2Bb", None, &[r#"name=["a+b"]"#]),
    ("GET", "/fhir/R4/Patient?na%6De=x", None, &[r#"name=["x"]"#]),
    ("GET", "/fhir/R4/Patient?name", None, &[r#"name=[""]"#]),
    ("GET", "/fhir/R4/Patient?name=a&&given=b&", None, &[r#"name=["a"]"#, r#"given=["b"]"#]),
    ("GET", "/fhir/R4/Patient?active=true&active=false", None, &[r#"active=["true"]"#, r#"active=["false"]"#]),
    ("GET", "/fhir/R4/Patient?name=a=b", None, &[r#"name=["a=b"]"#]),
    ("GET", "/fhir/R4/Patient?", None, &[]),
    // operations take URL parameters too
    ("GET", "/fhir/R4/$export?_type=Patient,Observation&_since=2020-01-01T00:00:00Z", None, &[r#"_since=["2020-01-01T00:00:00Z"]"#, r#"_type=["Patient", "Observation"]"#]),
    ("GET", "/fhir/R4/Patient/1/$everything?start=2020&end=2021&_count=10", None, &[r#"start=["2020"]"#, r#"end=["2021"]"#, "_count=10"]),
    // POST _search: URL and form body are merged, URL first
    ("POST", "/fhir/R4/Observation/_search?code=x", Some("subject=Patient%2F1&_count=10"), &[r#"code=["x"]"#, r#"subject=["Patient/1"]"#, "_count=10"]),
    ("POST", "/fhir/R4/Patient/_search", Some("name=a+b&_include=Patient:organization"), &[r#"name=["a b"]"#, "inc=Patient:organization"]),
    ("POST", "/fhir/R4/_search", Some("_type=Patient&_has:Observation:patient:code=x"), &[r#"<Observation.patient>code=["x"]"#, r#"_type=["Patient"]"#]),
    ("POST", "/fhir/R4/Patient/_search", Some(""), &[]),
    // errors
    ("GET", "/fhir/R4/Patient?name:exactly=x", None, &["err:Query { source_kind: Url, position: 1, problem: UnknownModifier }"]),
    ("GET", "/fhir/R4/Patient?name:=x", None, &["err:Query { source_kind: Url, position: 1, problem: UnknownModifier }"]),
    ("GET", "/fhir/R4/Observation?subject:patient.name=x", None, &["err:Query { source_kind: Url, position: 1, problem: UnknownResourceType }"]),
    ("GET", "/fhir/R4/Observation?subject:Patients=x", None, &["err:Query { source_kind: Url, position: 1, problem: UnknownResourceType }"]),
    ("GET", "/fhir/R4/Observation?subject:exact.name=x", None, &["err:Query { source_kind: Url, position: 1, problem: ChainModifier }"]),
    ("GET", "/fhir/R4/Patient?_has:Observation=x", None, &["err:Query { source_kind: Url, position: 1, problem: InvalidHas }"]),
    ("GET", "/fhir/R4/Patient?_has:Observation:patient=x", None, &["err:Query { source_kind: Url, position: 1, problem: InvalidHas }"]),
    ("GET", "/fhir/R4/Patient?_has:Observation:patient:_has=x", None, &["err:Query { source_kind: Url, position: 1, problem: InvalidHas }"]),
    ("GET", "/fhir/R4/Patient?_has:observation:patient:code=x", None, &["err:Query { source_kind: Url, position: 1, problem: UnknownResourceType }"]),
    ("GET", "/fhir/R4/Patient?_include=Observation", None, &["err:Query { source_kind: Url, position: 1, problem: InvalidInclude }"]),
    ("GET", "/fhir/R4/Patient?_include=observation:subject", None, &["err:Query { source_kind: Url, position: 1, problem: UnknownResourceType }"]),
    ("GET", "/fhir/R4/Patient?_include=Observation:subject:patient", None, &["err:Query { source_kind: Url, position: 1, problem: UnknownResourceType }"]),
    ("GET", "/fhir/R4/Patient?_include=A:b:C:d", None, &["err:Query { source_kind: Url, position: 1, problem: InvalidInclude }"]),
    ("GET", "/fhir/R4/Patient?_include:foo=Observation:subject", None, &["err:Query { source_kind: Url, position: 1, problem: UnknownModifier }"]),
    ("GET", "/fhir/R4?_type=patient", None, &["err:Query { source_kind: Url, position: 1, problem: UnknownResourceType }"]),
    ("GET", "/fhir/R4/Patient?name=x&_count=-1", None, &["err:Query { source_kind: Url, position: 2, problem: InvalidCount }"]),
    ("GET", "/fhir/R4/Patient?_count=abc", None, &["err:Query { source_kind: Url, position: 1, problem: InvalidCount }"]),
    ("GET", "/fhir/R4/Patient?_count=99999999999", None, &["err:Query { source_kind: Url, position: 1, problem: InvalidCount }"]),
    ("GET", "/fhir/R4/Patient?_count=+5", None, &["err:Query { source_kind: Url, position: 1, problem: InvalidCount }"]),
    ("GET", "/fhir/R4/Patient?_count=1&_count=2", None, &["err:Query { source_kind: Url, position: 2, problem: Repeated }"]),
    ("GET", "/fhir/R4/Patient?_summary=yes", None, &["err:Query { source_kind: Url, position: 1, problem: InvalidValue }"]),
    ("GET", "/fhir/R4/Patient?_summary=true&_summary=false", None, &["err:Query { source_kind: Url, position: 2, problem: Repeated }"]),
    ("GET", "/fhir/R4/Patient?_total=all", None, &["err:Query { source_kind: Url, position: 1, problem: InvalidValue }"]),
    ("GET", "/fhir/R4/Patient?name=%ZZ", None, &["err:Query { source_kind: Url, position: 1, problem: BadPercent }"]),
    ("GET", "/fhir/R4/Patient?name=%4", None, &["err:Query { source_kind: Url, position: 1, problem: BadPercent }"]),
    ("GET", "/fhir/R4/Patient?name=%FF", None, &["err:Query { source_kind: Url, position: 1, problem: InvalidUtf8 }"]),
    ("GET", "/fhir/R4/Patient?name=%C3%28", None, &["err:Query { source_kind: Url, position: 1, problem: InvalidUtf8 }"]),
    ("GET", "/fhir/R4/Patient?=x", None, &["err:Query { source_kind: Url, position: 1, problem: EmptyName }"]),
    ("GET", "/fhir/R4/Patient?na$me=x", None, &["err:Query { source_kind: Url, position: 1, problem: InvalidName }"]),
    ("GET", "/fhir/R4/Patient?name%00=x", None, &["err:Query { source_kind: Url, position: 1, problem: InvalidName }"]),
    ("GET", "/fhir/R4/Patient?_count:exact=1", None, &["err:Query { source_kind: Url, position: 1, problem: ModifierNotAllowed }"]),
    ("GET", "/fhir/R4/Patient?_format:x=json", None, &["err:Query { source_kind: Url, position: 1, problem: ModifierNotAllowed }"]),
    ("GET", "/fhir/R4/Patient?a..b=x", None, &["err:Query { source_kind: Url, position: 1, problem: EmptyName }"]),
    ("GET", "/fhir/R4/Patient?_sort=na%20me", None, &["err:Query { source_kind: Url, position: 1, problem: InvalidName }"]),
    ("POST", "/fhir/R4/Patient/_search?name=a", Some("given=%FF"), &["err:Query { source_kind: Form, position: 2, problem: InvalidUtf8 }"]),
];

#[test]
fn search_syntax() {
    let config = config();
    let failures: Vec<String> = ROWS
        .iter()
        .filter_map(|&(method, target, body, want)| {
            let headers = if body.is_some() { FORM } else { &[] };
            let got = match run(&config, method, target, headers, body) {
                Ok(r) => render_query(&r.query),
                Err(e) => vec![format!("err:{e:?}")],
            };
            (got != want).then(|| format!("{method} {target}\n   want {want:?}\n    got {got:?}"))
        })
        .collect();
    check_rows(&failures, ROWS.len());
    assert!(ROWS.len() >= 100, "the table covers search.html");
}

#[test]
fn post_search_needs_a_form_body() {
    let config = config();
    let json = &[("Content-Type", "application/fhir+json")][..];
    let cases: [(Headers, Option<&str>, &str); 5] = [
        (FORM, None, "BodyRequired { need: FormSearch }"),
        (
            &[],
            Some("name=x"),
            "UnsupportedContentType { need: FormSearch, expected: \"application/x-www-form-urlencoded\" }",
        ),
        (
            json,
            Some("{}"),
            "UnsupportedContentType { need: FormSearch, expected: \"application/x-www-form-urlencoded\" }",
        ),
        (
            &[(
                "Content-Type",
                "application/x-www-form-urlencoded; charset=latin1",
            )],
            Some("name=x"),
            "UnsupportedContentType { need: FormSearch, expected: \"application/x-www-form-urlencoded\" }",
        ),
        (
            &[(
                "Content-Type",
                "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
            )],
            Some("name=x"),
            "ok",
        ),
    ];
    for (headers, body, want) in cases {
        let got = match run(&config, "POST", "/fhir/R4/Patient/_search", headers, body) {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("{e:?}"),
        };
        assert_eq!(got, want, "headers {headers:?} body {body:?}");
    }
}

#[test]
fn comparator_prefixes() {
    assert_eq!(
        comparator_prefix("ge2013-01-14"),
        Some(("ge", "2013-01-14"))
    );
    assert_eq!(comparator_prefix("lt-5"), Some(("lt", "-5")));
    assert_eq!(
        comparator_prefix("ap5.4|http://unitsofmeasure.org|mg"),
        Some(("ap", "5.4|http://unitsofmeasure.org|mg"))
    );
    assert_eq!(comparator_prefix("2013-01-14"), None);
    assert_eq!(comparator_prefix("needle"), None);
    assert_eq!(comparator_prefix("xx5"), None);
    assert_eq!(comparator_prefix("e"), None);
    assert_eq!(comparator_prefix("\u{e9}x"), None);
}

#[test]
fn too_many_parameters_are_too_costly() {
    let mut config = config();
    config.max_params = 3;
    let err = run(
        &config,
        "GET",
        "/fhir/R4/Patient?a=1&b=2&c=3&d=4",
        &[],
        None,
    )
    .expect_err("4 > 3");
    assert_eq!(err, crate::ClassifyError::TooManyParams { max: 3 });
    assert_eq!(err.issue_type().code(), "too-costly");
    // URL and form body count together.
    let form = Some("c=3&d=4");
    let err = run(
        &config,
        "POST",
        "/fhir/R4/Patient/_search?a=1&b=2",
        FORM,
        form,
    )
    .expect_err("4 > 3");
    assert_eq!(err, crate::ClassifyError::TooManyParams { max: 3 });
    assert!(run(&config, "GET", "/fhir/R4/Patient?a=1&b=2&c=3", &[], None).is_ok());
}
