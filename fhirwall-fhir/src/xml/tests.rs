use serde_json::{Value, json};

use super::{DEPTH_CAP, XmlError, XmlLimits, to_json};

const LIMITS: XmlLimits = XmlLimits {
    max_depth: 100,
    max_elements: 10_000,
};

fn read(xml: &str) -> Result<Value, XmlError> {
    to_json(xml.as_bytes(), &LIMITS)
}

/// `inner` inside a Patient root in the FHIR namespace.
fn patient(inner: &str) -> String {
    format!(r#"<Patient xmlns="http://hl7.org/fhir">{inner}</Patient>"#)
}

/// The byte offset of `needle` in `xml` (the element an error should point at).
fn at(xml: &str, needle: &str) -> usize {
    xml.find(needle)
        .unwrap_or_else(|| panic!("test input lacks {needle}"))
}

/// Shaped like the spec's patient-example.xml: narrative, contained resource, repeated
/// identifier, coding once, repeated given, an extension on a primitive.
const PATIENT: &str = r##"<?xml version="1.0" encoding="UTF-8"?>
<Patient xmlns="http://hl7.org/fhir">
  <id value="example"/>
  <!-- comments are ignored -->
  <text>
    <status value="generated"/>
    <div xmlns="http://www.w3.org/1999/xhtml"><p>Peter <b>James</b> Chalmers &amp; co &#169;</p><br/></div>
  </text>
  <contained>
    <Organization>
      <id value="org1"/>
      <name value="Good Health Clinic"/>
    </Organization>
  </contained>
  <identifier>
    <use value="usual"/>
    <type>
      <coding>
        <system value="http://terminology.hl7.org/CodeSystem/v2-0203"/>
        <code value="MR"/>
      </coding>
    </type>
    <system value="urn:oid:1.2.36.146.595.217.0.1"/>
    <value value="12345"/>
  </identifier>
  <identifier>
    <system value="urn:oid:0.1.2.3"/>
    <value value="67890"/>
  </identifier>
  <active value="true"/>
  <name>
    <use value="official"/>
    <family value="Chalmers"/>
    <given value="Peter"/>
    <given id="g2" value="James"/>
  </name>
  <gender value="male"/>
  <birthDate value="1974-12-25">
    <extension url="http://hl7.org/fhir/StructureDefinition/patient-birthTime">
      <valueDateTime value="1974-12-25T14:35:45-05:00"/>
    </extension>
  </birthDate>
  <managingOrganization>
    <reference value="#org1"/>
  </managingOrganization>
</Patient>
"##;

/// Shaped like the spec's observation-example-f001-glucose.xml.
const OBSERVATION: &str = r#"<Observation xmlns="http://hl7.org/fhir">
  <id value="f001"/>
  <status value="final"/>
  <code>
    <coding>
      <system value="http://loinc.org"/>
      <code value="15074-8"/>
      <display value="Glucose [Moles/volume] in Blood"/>
    </coding>
  </code>
  <subject>
    <reference value="Patient/f001"/>
    <display value="P. van de Heuvel"/>
  </subject>
  <effectivePeriod>
    <start value="2013-04-02T09:30:10+01:00"/>
  </effectivePeriod>
  <valueQuantity>
    <value value="6.3"/>
    <unit value="mmol/l"/>
    <system value="http://unitsofmeasure.org"/>
    <code value="mmol/L"/>
  </valueQuantity>
</Observation>"#;

const TRANSACTION: &str = r#"<Bundle xmlns="http://hl7.org/fhir">
  <type value="transaction"/>
  <entry>
    <fullUrl value="urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"/>
    <resource>
      <Patient>
        <active value="true"/>
      </Patient>
    </resource>
    <request>
      <method value="POST"/>
      <url value="Patient"/>
    </request>
  </entry>
  <entry>
    <resource>
      <Observation>
        <id value="o1"/>
        <status value="final"/>
        <subject>
          <reference value="urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"/>
        </subject>
      </Observation>
    </resource>
    <request>
      <method value="PUT"/>
      <url value="Observation/o1"/>
    </request>
  </entry>
</Bundle>"#;

#[test]
fn patient_maps_like_the_json_format() {
    let expected = json!({
        "resourceType": "Patient",
        "id": "example",
        "text": { "status": "generated", "div": "" },
        "contained": [
            { "resourceType": "Organization", "id": "org1", "name": "Good Health Clinic" }
        ],
        "identifier": [
            {
                "use": "usual",
                "type": { "coding": [
                    { "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR" }
                ] },
                "system": "urn:oid:1.2.36.146.595.217.0.1",
                "value": "12345"
            },
            { "system": "urn:oid:0.1.2.3", "value": "67890" }
        ],
        "active": "true",
        "name": {
            "use": "official",
            "family": "Chalmers",
            "given": ["Peter", "James"],
            "_given": [null, { "id": "g2" }]
        },
        "gender": "male",
        "birthDate": "1974-12-25",
        "_birthDate": { "extension": [{
            "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
            "valueDateTime": "1974-12-25T14:35:45-05:00"
        }] },
        "managingOrganization": { "reference": "#org1" }
    });
    assert_eq!(read(PATIENT), Ok(expected));
}

#[test]
fn observation_maps_like_the_json_format() {
    let expected = json!({
        "resourceType": "Observation",
        "id": "f001",
        "status": "final",
        "code": { "coding": [{
            "system": "http://loinc.org",
            "code": "15074-8",
            "display": "Glucose [Moles/volume] in Blood"
        }] },
        "subject": { "reference": "Patient/f001", "display": "P. van de Heuvel" },
        "effectivePeriod": { "start": "2013-04-02T09:30:10+01:00" },
        "valueQuantity": {
            "value": "6.3",
            "unit": "mmol/l",
            "system": "http://unitsofmeasure.org",
            "code": "mmol/L"
        }
    });
    assert_eq!(read(OBSERVATION), Ok(expected));
}

#[test]
fn transaction_bundle_entries_are_an_array() {
    let expected = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
                "resource": { "resourceType": "Patient", "active": "true" },
                "request": { "method": "POST", "url": "Patient" }
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": "o1",
                    "status": "final",
                    "subject": { "reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a" }
                },
                "request": { "method": "PUT", "url": "Observation/o1" }
            }
        ]
    });
    assert_eq!(read(TRANSACTION), Ok(expected));
}

#[test]
fn parameters_map_like_the_json_format() {
    let cases = [
        (
            "one parameter with a value",
            r#"<Parameters xmlns="http://hl7.org/fhir">
                 <parameter><name value="patient"/><valueString value="Patient/123"/></parameter>
               </Parameters>"#,
            json!({
                "resourceType": "Parameters",
                "parameter": [{ "name": "patient", "valueString": "Patient/123" }]
            }),
        ),
        (
            "parts and a resource",
            r#"<Parameters xmlns="http://hl7.org/fhir">
                 <parameter>
                   <name value="operation"/>
                   <part><name value="type"/><valueCode value="add"/></part>
                 </parameter>
                 <parameter>
                   <name value="resource"/>
                   <resource><Patient><id value="p1"/></Patient></resource>
                 </parameter>
               </Parameters>"#,
            json!({
                "resourceType": "Parameters",
                "parameter": [
                    { "name": "operation", "part": [{ "name": "type", "valueCode": "add" }] },
                    { "name": "resource", "resource": { "resourceType": "Patient", "id": "p1" } }
                ]
            }),
        ),
    ];
    for (name, xml, expected) in cases {
        assert_eq!(read(xml), Ok(expected), "{name}");
    }
}

#[test]
fn accepted_forms() {
    let cases = [
        (
            "prefixed FHIR namespace, BOM-less, declaration without encoding",
            r#"<?xml version="1.0"?><f:Patient xmlns:f="http://hl7.org/fhir"><f:id value="a"/></f:Patient>"#.to_owned(),
            json!({ "resourceType": "Patient", "id": "a" }),
        ),
        (
            "references and whitespace normalization in attribute values",
            patient(r#"<name><text value="A &amp; B&#x2F;C&#10;D&#9;E"/><family value="x
y"/></name>"#),
            json!({ "resourceType": "Patient", "name": { "text": "A & B/C\nD\tE", "family": "x y" } }),
        ),
        (
            "siblings of one name apart from each other are one array",
            patient(r#"<name><given value="a"/><family value="f"/><given value="b"/></name>"#),
            json!({ "resourceType": "Patient", "name": { "given": ["a", "b"], "family": "f" } }),
        ),
        (
            "a primitive without value among valued siblings",
            patient(
                r#"<name><given value="a"/><given><extension url="u"><valueCode value="x"/></extension></given></name>"#,
            ),
            json!({ "resourceType": "Patient", "name": {
                "given": ["a", null],
                "_given": [null, { "extension": [{ "url": "u", "valueCode": "x" }] }]
            } }),
        ),
        (
            "element id and modifierExtension on a complex element",
            patient(
                r#"<contact id="c1"><modifierExtension url="m"><valueBoolean value="true"/></modifierExtension></contact>"#,
            ),
            json!({ "resourceType": "Patient", "contact": {
                "id": "c1",
                "modifierExtension": [{ "url": "m", "valueBoolean": "true" }]
            } }),
        ),
        (
            "an entry's response outcome is a resource",
            r#"<Bundle xmlns="http://hl7.org/fhir"><type value="batch-response"/><entry><response>
                 <status value="400"/>
                 <outcome><OperationOutcome><issue><severity value="error"/></issue></OperationOutcome></outcome>
               </response></entry></Bundle>"#.to_owned(),
            json!({ "resourceType": "Bundle", "type": "batch-response", "entry": [{ "response": {
                "status": "400",
                "outcome": { "resourceType": "OperationOutcome", "issue": { "severity": "error" } }
            } }] }),
        ),
        (
            "ExampleScenario.instance.resourceType",
            r#"<ExampleScenario xmlns="http://hl7.org/fhir"><instance><resourceId value="r"/><resourceType value="Patient"/></instance></ExampleScenario>"#.to_owned(),
            json!({ "resourceType": "ExampleScenario", "instance": { "resourceId": "r", "resourceType": "Patient" } }),
        ),
        (
            "BOM, comments and whitespace around the root, empty resource",
            "\u{FEFF}<!-- before -->\n<Patient xmlns=\"http://hl7.org/fhir\"/>\n<!-- after -->\n".to_owned(),
            json!({ "resourceType": "Patient" }),
        ),
        (
            "empty narrative div; other namespaces, references and CDATA inside one",
            patient(concat!(
                r#"<text><status value="empty"/><div xmlns="http://www.w3.org/1999/xhtml"/></text>"#,
                r#"<contained><Basic><text><status value="generated"/>"#,
                r#"<div xmlns="http://www.w3.org/1999/xhtml"><svg xmlns="http://www.w3.org/2000/svg">"#,
                r#"<x:a xmlns:x="urn:x" x:b="1"/></svg>&lt;&#65;&#x42;<![CDATA[<i>]]></div>"#,
                r#"</text></Basic></contained>"#,
            )),
            json!({
                "resourceType": "Patient",
                "text": { "status": "empty", "div": "" },
                "contained": [
                    { "resourceType": "Basic", "text": { "status": "generated", "div": "" } }
                ]
            }),
        ),
        (
            "an element with only an id",
            patient(r#"<maritalStatus id="m"/>"#),
            json!({ "resourceType": "Patient", "maritalStatus": { "id": "m" } }),
        ),
        (
            "xsi declared but unused, single-quoted values",
            r#"<Patient xmlns="http://hl7.org/fhir" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><id value='a'/></Patient>"#.to_owned(),
            json!({ "resourceType": "Patient", "id": "a" }),
        ),
    ];
    for (name, xml, expected) in cases {
        assert_eq!(read(&xml), Ok(expected), "{name}");
    }
}

/// A refused body: its name, the XML, where the error must point (the first occurrence of the
/// needle), and the error given that position.
type Refusal = (&'static str, String, &'static str, fn(usize) -> XmlError);

fn narrative(inner: &str) -> String {
    patient(&format!(
        r#"<text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml">{inner}</div></text>"#
    ))
}

/// Document-level XML: DTDs, declarations, processing instructions, roots, text, malformed
/// markup.
#[expect(clippy::too_many_lines, reason = "a table of cases reads best whole")]
fn document_refusals() -> Vec<Refusal> {
    vec![
        (
            "XXE through a DOCTYPE entity",
            concat!(
                r#"<?xml version="1.0"?><!DOCTYPE Patient [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>"#,
                r#"<Patient xmlns="http://hl7.org/fhir"><id value="&xxe;"/></Patient>"#
            )
            .to_owned(),
            "<!DOCTYPE",
            |position| XmlError::Doctype { position },
        ),
        (
            "text smuggled into a primitive",
            patient(r#"<subject><reference value="Patient/A">Patient/B</reference></subject>"#),
            "Patient/B",
            |position| XmlError::Text { position },
        ),
        (
            "character reference as element content",
            patient(r#"<active value="true">&#32;</active>"#),
            "&#32;",
            |position| XmlError::Text { position },
        ),
        (
            "CDATA",
            patient("<subject><reference><![CDATA[Patient/B]]></reference></subject>"),
            "<![CDATA[",
            |position| XmlError::Cdata { position },
        ),
        (
            "declared encoding other than UTF-8",
            format!(r#"<?xml version="1.0" encoding="ISO-8859-1"?>{}"#, patient("")),
            "",
            |_| XmlError::Encoding {},
        ),
        (
            "XML 1.1",
            format!(r#"<?xml version="1.1"?>{}"#, patient("")),
            "<?xml",
            |position| XmlError::Declaration { position },
        ),
        (
            "declaration without version",
            format!(r#"<?xml encoding="UTF-8"?>{}"#, patient("")),
            "<?xml",
            |position| XmlError::Declaration { position },
        ),
        (
            "declaration not at the start",
            format!(r#" <?xml version="1.0"?>{}"#, patient("")),
            "<?xml",
            |position| XmlError::Declaration { position },
        ),
        (
            "processing instruction",
            format!(r#"<?xml-stylesheet href="a"?>{}"#, patient("")),
            "<?xml-stylesheet",
            |position| XmlError::ProcessingInstruction { position },
        ),
        (
            "two roots",
            format!("{}<Patient xmlns='http://hl7.org/fhir'/>", patient("")),
            "<Patient xmlns='",
            |position| XmlError::AfterRoot { position },
        ),
        (
            "text after the root",
            format!("{}Patient/B", patient("")),
            "Patient/B",
            |position| XmlError::AfterRoot { position },
        ),
        (
            "text before the root",
            format!("x{}", patient("")),
            "x",
            |position| XmlError::Text { position },
        ),
        ("no root", "<!-- nothing -->".to_owned(), "", |_| XmlError::NoRoot {}),
        ("empty body", String::new(), "", |_| XmlError::NoRoot {}),
        (
            "unknown entity in a value",
            patient(r#"<gender value="&male;"/>"#),
            "<gender",
            |position| XmlError::Entity { position },
        ),
        (
            "bare ampersand in a value",
            patient(r#"<gender value="a&b"/>"#),
            "<gender",
            |position| XmlError::Entity { position },
        ),
        (
            "less-than in a value",
            patient(r#"<gender value="a<b"/>"#),
            "<gender",
            |position| XmlError::Syntax { position },
        ),
        (
            "control character through a reference",
            patient(r#"<gender value="a&#1;"/>"#),
            "<gender",
            |position| XmlError::Character { position },
        ),
        (
            "control character in the text",
            patient("<gender value=\"a\u{1}\"/>"),
            "\u{1}",
            |position| XmlError::Character { position },
        ),
        (
            "truncated document",
            r#"<Patient xmlns="http://hl7.org/fhir"><gender value="male"/>"#.to_owned(),
            "",
            |_| XmlError::Syntax { position: 59 },
        ),
        (
            "mismatched end tag",
            patient(r#"<name><given value="a"/></family>"#),
            "</family>",
            |position| XmlError::Syntax { position },
        ),
        (
            "double hyphen in a comment",
            patient("<!-- a -- b -->"),
            "-- b",
            |position| XmlError::Syntax { position },
        ),
    ]
}

/// Namespaces, attributes and the narrative.
#[expect(clippy::too_many_lines, reason = "a table of cases reads best whole")]
fn namespace_and_attribute_refusals() -> Vec<Refusal> {
    vec![
        (
            "element in another namespace",
            patient(r#"<subject><x:reference xmlns:x="urn:evil" value="Patient/B"/></subject>"#),
            "<x:reference",
            |position| XmlError::Namespace { position },
        ),
        (
            "root without a namespace",
            r#"<Patient><id value="a"/></Patient>"#.to_owned(),
            "<Patient",
            |position| XmlError::Namespace { position },
        ),
        (
            "child that undeclares the default namespace",
            patient(r#"<subject xmlns=""><reference value="Patient/B"/></subject>"#),
            "<subject",
            |position| XmlError::Namespace { position },
        ),
        (
            "undeclared prefix",
            patient(r#"<f:subject><f:reference value="Patient/B"/></f:subject>"#),
            "<f:subject",
            |position| XmlError::Namespace { position },
        ),
        (
            "attribute injection: value twice",
            patient(r#"<subject><reference value="Patient/A" value="Patient/B"/></subject>"#),
            "<reference",
            |position| XmlError::RepeatedAttribute { position },
        ),
        (
            "namespace declared twice",
            r#"<Patient xmlns="urn:evil" xmlns="http://hl7.org/fhir"/>"#.to_owned(),
            "<Patient",
            |position| XmlError::RepeatedAttribute { position },
        ),
        (
            "padded value",
            patient(r#"<subject><reference value=" Patient/A"/></subject>"#),
            "<reference",
            |position| XmlError::PaddedValue { position },
        ),
        (
            "padding through a character reference",
            patient(r#"<subject><reference value="Patient/A&#xA0;"/></subject>"#),
            "<reference",
            |position| XmlError::PaddedValue { position },
        ),
        (
            "schemaLocation",
            r#"<Patient xmlns="http://hl7.org/fhir" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="http://hl7.org/fhir a.xsd"/>"#.to_owned(),
            "<Patient",
            |position| XmlError::Attribute { position },
        ),
        (
            "value in the FHIR namespace through a prefix",
            r#"<f:Patient xmlns:f="http://hl7.org/fhir"><f:id f:value="a"/></f:Patient>"#.to_owned(),
            "<f:id",
            |position| XmlError::Attribute { position },
        ),
        (
            "id attribute on a resource",
            r#"<Patient xmlns="http://hl7.org/fhir" id="a"/>"#.to_owned(),
            "<Patient",
            |position| XmlError::Attribute { position },
        ),
        (
            "url on a non-extension",
            patient(r#"<gender url="u" value="male"/>"#),
            "<gender",
            |position| XmlError::Attribute { position },
        ),
        (
            "value on an extension",
            patient(r#"<extension url="u" value="x"/>"#),
            "<extension",
            |position| XmlError::Attribute { position },
        ),
        (
            "xml:lang on a FHIR element",
            patient(r#"<gender xml:lang="en" value="male"/>"#),
            "<gender",
            |position| XmlError::Attribute { position },
        ),
        (
            "FHIR-namespace div",
            patient(r#"<text><div value="x"/></text>"#),
            "<div",
            |position| XmlError::Namespace { position },
        ),
        (
            "XHTML element other than div",
            patient(r#"<text><p xmlns="http://www.w3.org/1999/xhtml">x</p></text>"#),
            "<p",
            |position| XmlError::Namespace { position },
        ),
        (
            "XHTML div as the root",
            r#"<div xmlns="http://www.w3.org/1999/xhtml"/>"#.to_owned(),
            "<div",
            |position| XmlError::Namespace { position },
        ),
        (
            "undeclared prefix in the narrative",
            narrative("<x:p>a</x:p>"),
            "<x:p",
            |position| XmlError::Namespace { position },
        ),
        (
            "character reference to NUL in the narrative",
            narrative("a&#0;b"),
            "&#0;",
            |position| XmlError::Entity { position },
        ),
        (
            "HTML entity in the narrative",
            narrative("a&nbsp;b"),
            "&nbsp;",
            |position| XmlError::Entity { position },
        ),
        (
            "CDATA end in narrative text",
            narrative("a ]]> b"),
            "a ]]>",
            |position| XmlError::Syntax { position },
        ),
        (
            "repeated attribute in the narrative",
            narrative(r#"<a href="x" href="y">a</a>"#),
            "<a ",
            |position| XmlError::RepeatedAttribute { position },
        ),
        (
            "processing instruction in the narrative",
            narrative("<?php x?>"),
            "<?php",
            |position| XmlError::ProcessingInstruction { position },
        ),
    ]
}

/// Element names and the FHIR shapes the JSON form cannot carry faithfully.
#[expect(clippy::too_many_lines, reason = "a table of cases reads best whole")]
fn shape_refusals() -> Vec<Refusal> {
    vec![
        (
            "empty element",
            patient("<gender/>"),
            "<gender",
            |position| XmlError::EmptyElement { position },
        ),
        (
            "empty element written with an end tag",
            patient("<gender></gender>"),
            "<gender",
            |position| XmlError::EmptyElement { position },
        ),
        (
            "empty value",
            patient(r#"<gender value=""/>"#),
            "<gender",
            |position| XmlError::EmptyValue { position },
        ),
        (
            "unknown root",
            r#"<Patients xmlns="http://hl7.org/fhir"/>"#.to_owned(),
            "<Patients",
            |position| XmlError::ResourceType { position },
        ),
        (
            "lowercase root",
            r#"<patient xmlns="http://hl7.org/fhir"/>"#.to_owned(),
            "<patient",
            |position| XmlError::ResourceType { position },
        ),
        (
            "abstract type as a resource",
            r#"<DomainResource xmlns="http://hl7.org/fhir"/>"#.to_owned(),
            "<DomainResource",
            |position| XmlError::ResourceType { position },
        ),
        (
            "unknown resource in a container",
            patient(r#"<contained><Patients><id value="a"/></Patients></contained>"#),
            "<Patients",
            |position| XmlError::ResourceType { position },
        ),
        (
            "element name that is no FHIR name",
            patient(r#"<given_name value="a"/>"#),
            "<given_name",
            |position| XmlError::Name { position },
        ),
        (
            "primitive with a non-extension child",
            patient(r#"<gender value="male"><coding><code value="x"/></coding></gender>"#),
            "<coding",
            |position| XmlError::Primitive { position },
        ),
        (
            "primitive and complex siblings of one name",
            patient(r#"<name><given value="a"/><given><family value="b"/></given></name>"#),
            "<given><family",
            |position| XmlError::Primitive { position },
        ),
        (
            "resource outside a container",
            patient(r#"<subject><Patient><id value="a"/></Patient></subject>"#),
            "<Patient>",
            |position| XmlError::Container { position },
        ),
        (
            "resource with siblings",
            patient(r#"<contained><Patient><id value="a"/></Patient><id value="b"/></contained>"#),
            "<Patient>",
            |position| XmlError::Container { position },
        ),
        (
            "resource directly in a resource",
            patient(r#"<Observation><status value="final"/></Observation>"#),
            "<Observation",
            |position| XmlError::Container { position },
        ),
        (
            "contained without a resource",
            patient(r#"<contained><id value="a"/></contained>"#),
            "<contained",
            |position| XmlError::Container { position },
        ),
        (
            "resourceType forged in an entry resource",
            r#"<Bundle xmlns="http://hl7.org/fhir"><entry><resource><resourceType value="Patient"/></resource></entry></Bundle>"#.to_owned(),
            "<resourceType",
            |position| XmlError::ReservedName { position },
        ),
        (
            "resourceType element in a resource",
            patient(r#"<resourceType value="Observation"/>"#),
            "<resourceType",
            |position| XmlError::ReservedName { position },
        ),
        (
            "id element in a datatype",
            patient(r#"<subject><id value="a"/></subject>"#),
            "<id",
            |position| XmlError::ReservedName { position },
        ),
        (
            "url element in an extension",
            patient(r#"<extension url="a"><url value="b"/></extension>"#),
            "<url",
            |position| XmlError::ReservedName { position },
        ),
    ]
}

fn limit_refusals() -> Vec<Refusal> {
    vec![
        (
            "depth bomb",
            patient(&format!(
                "{}{}",
                r#"<extension url="u">"#.repeat(10_000),
                "</extension>".repeat(10_000)
            )),
            "",
            |_| XmlError::TooDeep { max: 100 },
        ),
        (
            "depth bomb inside the narrative",
            narrative(&format!(
                "{}{}",
                "<b>".repeat(10_000),
                "</b>".repeat(10_000)
            )),
            "",
            |_| XmlError::TooDeep { max: 100 },
        ),
        (
            "element bomb",
            patient(&r#"<given value="a"/>"#.repeat(20_000)),
            "",
            |_| XmlError::TooManyElements { max: 10_000 },
        ),
        (
            "element bomb inside the narrative",
            narrative(&"<br/>".repeat(20_000)),
            "",
            |_| XmlError::TooManyElements { max: 10_000 },
        ),
    ]
}

fn all_refusals() -> impl Iterator<Item = Refusal> {
    [
        document_refusals(),
        namespace_and_attribute_refusals(),
        shape_refusals(),
        limit_refusals(),
    ]
    .into_iter()
    .flatten()
}

fn check_refusals(cases: Vec<Refusal>) {
    for (name, xml, needle, error) in cases {
        assert_eq!(read(&xml), Err(error(at(&xml, needle))), "{name}");
    }
}

#[test]
fn document_refusals_get_their_error() {
    check_refusals(document_refusals());
}

#[test]
fn namespace_and_attribute_refusals_get_their_error() {
    check_refusals(namespace_and_attribute_refusals());
}

#[test]
fn shape_refusals_get_their_error() {
    check_refusals(shape_refusals());
}

#[test]
fn limit_refusals_get_their_error() {
    check_refusals(limit_refusals());
}

#[test]
fn byte_level_refusals() {
    let invalid = patient(r#"<gender value="X"/>"#);
    let invalid_at = at(&invalid, "X\"");
    let mut invalid = invalid.into_bytes();
    invalid[invalid_at] = 0xFF;
    let cases: [(&str, Vec<u8>, Result<Value, XmlError>); 4] = [
        (
            "invalid UTF-8",
            invalid,
            Err(XmlError::Utf8 {
                position: invalid_at,
            }),
        ),
        (
            "UTF-16 with its BOM",
            [0xFF, 0xFE, b'<', 0].to_vec(),
            Err(XmlError::Utf8 { position: 0 }),
        ),
        (
            "positions count the BOM",
            [b"\xEF\xBB\xBFx".as_slice(), patient("").as_bytes()].concat(),
            Err(XmlError::Text { position: 3 }),
        ),
        (
            "a BOM is fine",
            [b"\xEF\xBB\xBF".as_slice(), patient("").as_bytes()].concat(),
            Ok(json!({ "resourceType": "Patient" })),
        ),
    ];
    for (name, bytes, expected) in cases {
        assert_eq!(to_json(&bytes, &LIMITS), expected, "{name}");
    }
}

#[test]
fn json_depth_is_held_to_the_limit() {
    // XML depth 4 (Bundle/entry/request/method), JSON depth 3 (object, array, object): the
    // primitive leaf adds no JSON level, the always-array `entry` adds one.
    let xml = r#"<Bundle xmlns="http://hl7.org/fhir"><entry><request><method value="GET"/></request></entry></Bundle>"#;
    let limits = |max_depth| XmlLimits {
        max_depth,
        max_elements: 100,
    };
    assert!(to_json(xml.as_bytes(), &limits(4)).is_ok());
    assert_eq!(
        to_json(xml.as_bytes(), &limits(3)),
        Err(XmlError::TooDeep { max: 3 })
    );
    assert_eq!(
        to_json(xml.as_bytes(), &limits(2)),
        Err(XmlError::TooDeep { max: 2 })
    );
    // A caller's limit above the cap counts as the cap.
    let bomb = patient(&format!(
        "{}{}",
        r#"<extension url="u">"#.repeat(200),
        "</extension>".repeat(200)
    ));
    let uncapped = XmlLimits {
        max_depth: usize::MAX,
        max_elements: 10_000,
    };
    assert_eq!(
        to_json(bomb.as_bytes(), &uncapped),
        Err(XmlError::TooDeep { max: DEPTH_CAP })
    );
}

#[test]
fn limits_count_elements_exactly() {
    let xml = patient(r#"<gender value="male"/>"#);
    let limits = |max_elements| XmlLimits {
        max_depth: 100,
        max_elements,
    };
    assert!(to_json(xml.as_bytes(), &limits(2)).is_ok());
    assert_eq!(
        to_json(xml.as_bytes(), &limits(1)),
        Err(XmlError::TooManyElements { max: 1 })
    );
}

#[test]
fn errors_quote_nothing_from_the_input() {
    let secret = "SECRETNAME";
    for (name, xml, _, _) in all_refusals() {
        let xml = xml.replace("Patient/B", secret);
        if let Err(e) = read(&xml) {
            assert!(!e.to_string().contains(secret), "{name}: {e}");
        }
    }
}

#[test]
fn every_truncation_is_refused_without_panicking() {
    for document in [PATIENT, OBSERVATION, TRANSACTION] {
        let root_end = document.trim_end().len();
        for len in 0..document.len() {
            let result = to_json(&document.as_bytes()[..len], &LIMITS);
            assert_eq!(result.is_ok(), len >= root_end, "prefix of {len} bytes");
        }
    }
}

#[test]
fn single_byte_mutations_never_panic() {
    let document = PATIENT.as_bytes();
    for index in 0..document.len() {
        for byte in [b'<', b'>', b'"', b'&', b'/', b':', b' ', b'x', 0xFF] {
            let mut mutated = document.to_vec();
            mutated[index] = byte;
            let _ = to_json(&mutated, &LIMITS);
        }
    }
}
