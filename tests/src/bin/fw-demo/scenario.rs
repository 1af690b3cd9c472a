//! The demo's workloads: four processes on one EHR host that all send the host's ONE shared
//! credential to the same FHIR server, and what each of them must see.
//!
//! | workload | process | integration | does |
//! |---|---|---|---|
//! | lab interface | /opt/mirth-connect/mcserver, user mirth, mirth-connect.service | lab-results-interface | writes lab Observations (allowed), reads problems (denied) |
//! | claims job | /opt/claims-batch/bin/claims-reconcile, user claimsbatch | payer-claims-batch | reads Claims for payment (allowed), for treatment (denied), with patients (denied) |
//! | reporting script | python3.11, user qualityrpt, quality-report.service | quality-reporting | encounters/problems (allowed), $export and broad searches (denied) |
//! | ad-hoc curl | /usr/bin/curl as root, no unit | none | denied: unregistered |

use std::{
    fs,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context as _, bail};
use fhirwall_tests::{
    confined,
    synthetic::{LAB_CATEGORY_SYSTEM, MRN_SYSTEM},
};
use serde_json::{Value, json};

/// The host's old shared interface credential (policies/lab-results-interface.yaml accepts its
/// fingerprint, sha256:bbe78a6a...): every workload below sends it.
pub const SHARED_CREDENTIAL: &str = "Basic ZWhyLWludGVyZmFjZTpsZWdhY3k=";

/// How a workload is started.
pub enum Program {
    /// `fw-demo-client` installed at the integration's executable path, with this script.
    Client(Value),
    /// The quality-reporting Python script, run by this interpreter.
    Python(PathBuf),
    /// curl with these (step name, target) requests, in one process.
    Curl(Vec<(&'static str, &'static str)>),
}

/// One workload of the scenario and what it must see.
pub struct Workload {
    pub label: &'static str,
    /// The integration it must be attributed to (`None`: unregistered).
    pub integration: Option<&'static str>,
    pub exe: PathBuf,
    pub user: Option<&'static str>,
    /// Its cgroup under the demo cgroup: a systemd unit name where the selector names one.
    pub cgroup: &'static str,
    pub unit: Option<&'static str>,
    pub program: Program,
    /// Step name -> HTTP status it must get (0: the connection is refused).
    pub expect: Vec<(&'static str, u16)>,
}

/// What a workload did: its pid and one JSON line per request.
pub struct Ran {
    pub pid: u32,
    pub steps: Vec<Value>,
}

pub const MIRTH: &str = "/opt/mirth-connect/mcserver";
pub const CLAIMS: &str = "/opt/claims-batch/bin/claims-reconcile";

/// The four workloads. `kernel_enforcement`: the unregistered process is refused at connect().
pub fn workloads(python: &Path, script: &Path, kernel_enforcement: bool) -> Vec<Workload> {
    let refused = if kernel_enforcement { 0 } else { 403 };
    vec![
        Workload {
            label: "lab interface",
            integration: Some("lab-results-interface"),
            exe: MIRTH.into(),
            user: Some("mirth"),
            cgroup: "mirth-connect.service",
            unit: Some("mirth-connect.service"),
            program: Program::Client(lab_script()),
            expect: vec![
                ("look up the patient by MRN", 200),
                ("post a glucose result", 201),
                ("post a lactate result", 201),
                ("read back the lab results", 200),
                ("read the patient's problem list", 403),
            ],
        },
        Workload {
            label: "claims job",
            integration: Some("payer-claims-batch"),
            exe: CLAIMS.into(),
            user: Some("claimsbatch"),
            cgroup: "claims-reconcile.service",
            unit: Some("claims-reconcile.service"),
            program: Program::Client(claims_script()),
            expect: vec![
                ("claims for payment (HPAYMT)", 200),
                ("the same claims for treatment (TREAT)", 403),
                ("claims with their patients (_include)", 403),
            ],
        },
        Workload {
            label: "reporting script",
            integration: Some("quality-reporting"),
            exe: python.to_owned(),
            user: Some("qualityrpt"),
            cgroup: "quality-report.service",
            unit: Some("quality-report.service"),
            program: Program::Python(script.to_owned()),
            expect: vec![
                ("finished encounters", 200),
                ("active problems", 200),
                ("bulk export of everything", 403),
                ("every patient", 403),
                ("every observation", 403),
            ],
        },
        Workload {
            label: "ad-hoc curl",
            integration: None,
            exe: "/usr/bin/curl".into(),
            user: None,
            cgroup: "adhoc-shell",
            unit: None,
            program: Program::Curl(vec![
                ("every patient", "/Patient?_count=1000"),
                ("every claim", "/Claim"),
            ]),
            expect: vec![("every patient", refused), ("every claim", refused)],
        },
    ]
}

fn lab_script() -> Value {
    let auth = json!({ "Authorization": SHARED_CREDENTIAL });
    let lab_search = format!("{LAB_CATEGORY_SYSTEM}|laboratory");
    json!([
        {"name": "look up the patient by MRN", "method": "GET",
         "target": format!("/Patient?identifier={MRN_SYSTEM}|MRN100003"),
         "headers": auth, "save": {"patient": "/entry/0/resource/id"}},
        {"name": "post a glucose result", "method": "POST", "target": "/Observation",
         "headers": auth, "body": lab_result("2345-7", "Glucose [Mass/volume] in Serum or Plasma", 141.0, "mg/dL")},
        {"name": "post a lactate result", "method": "POST", "target": "/Observation",
         "headers": auth, "body": lab_result("2524-7", "Lactate [Moles/volume] in Serum or Plasma", 3.4, "mmol/L")},
        {"name": "read back the lab results", "method": "GET",
         "target": format!("/Observation?patient=Patient/{{patient}}&category={lab_search}"),
         "headers": auth},
        {"name": "read the patient's problem list", "method": "GET",
         "target": "/Condition?patient=Patient/{patient}", "headers": auth},
    ])
}

fn lab_result(code: &str, display: &str, value: f64, unit: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": LAB_CATEGORY_SYSTEM, "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
        "subject": {"reference": "Patient/{patient}"},
        "effectiveDateTime": "2026-11-28T07:45:00Z",
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
    })
}

fn claims_script() -> Value {
    let with =
        |purpose: &str| json!({ "Authorization": SHARED_CREDENTIAL, "X-Purpose-Of-Use": purpose });
    json!([
        {"name": "claims for payment (HPAYMT)", "method": "GET",
         "target": "/Claim?use=claim&_count=50", "headers": with("HPAYMT")},
        {"name": "the same claims for treatment (TREAT)", "method": "GET",
         "target": "/Claim?use=claim&_count=50", "headers": with("TREAT")},
        {"name": "claims with their patients (_include)", "method": "GET",
         "target": "/Claim?use=claim&_include=Claim:patient:Patient", "headers": with("HPAYMT")},
    ])
}

/// Where the workloads find what they need: the node CA they trust, their scripts.
pub struct Share {
    pub dir: PathBuf,
    pub node_ca: PathBuf,
    pub client: PathBuf,
    pub base_url: String,
}

/// Runs one workload to completion in `cgroup_dir`.
pub fn run(workload: &Workload, cgroup_dir: &Path, share: &Share) -> anyhow::Result<Ran> {
    let mut cmd = confined::command(cgroup_dir, workload.user, &workload.exe)?;
    match &workload.program {
        Program::Client(script) => {
            let file = share.dir.join(format!("{}.json", workload.cgroup));
            fs::write(&file, script.to_string())?;
            cmd.args(["--base", &share.base_url])
                .arg("--ca")
                .arg(&share.node_ca)
                .stdin(fs::File::open(&file)?);
        }
        Program::Python(script) => {
            cmd.arg(script)
                .args(["--base", &share.base_url])
                .arg("--ca")
                .arg(&share.node_ca)
                .env("FHIR_AUTHORIZATION", SHARED_CREDENTIAL);
        }
        Program::Curl(requests) => {
            cmd.args(["--silent", "--max-time", "30", "--cacert"])
                .arg(&share.node_ca)
                .args(["-H", &format!("Authorization: {SHARED_CREDENTIAL}")])
                .args(["-w", "%{http_code}\\n"]);
            for (i, (_, target)) in requests.iter().enumerate() {
                cmd.arg("-o")
                    .arg(share.dir.join(format!("curl-{i}.json")))
                    .arg(format!("{}{target}", share.base_url));
            }
        }
    }
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting the {}", workload.label))?;
    let pid = child.id();
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let steps = match &workload.program {
        Program::Curl(requests) => curl_steps(requests, &stdout, share),
        _ => stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
    };
    if steps.is_empty() {
        bail!(
            "the {} printed nothing ({}): {}",
            workload.label,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(Ran { pid, steps })
}

/// curl printed one status per request (000: no connection); the bodies are in files.
fn curl_steps(requests: &[(&str, &str)], stdout: &str, share: &Share) -> Vec<Value> {
    let statuses: Vec<u16> = stdout
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    requests
        .iter()
        .enumerate()
        .map(|(i, (name, target))| {
            let body: Value = fs::read(share.dir.join(format!("curl-{i}.json")))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null);
            let diagnostics = (body["resourceType"] == "OperationOutcome")
                .then(|| body["issue"][0]["diagnostics"].clone());
            json!({
                "name": name, "method": "GET", "target": target,
                "status": statuses.get(i).copied().unwrap_or(0),
                "resourceType": body["resourceType"], "diagnostics": diagnostics,
            })
        })
        .collect()
}
