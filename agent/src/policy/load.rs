//! Reading a policy directory: strict parsing, then cross-document checks. Every problem found
//! is reported with its file and line; nothing is half-loaded.

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{
    Policy,
    model::{Integration, IntegrationStatus, TlsMode, Upstream},
};

/// One thing wrong with the policy, where it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: PathBuf,
    pub line: u64,
    /// The field at fault, when one is.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read policy directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}", render(problems))]
    Invalid { problems: Vec<Problem> },
}

fn render(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    format!(
        "{} problem(s) in the policy:\n{}",
        problems.len(),
        lines.join("\n")
    )
}

/// A parsed document and where it came from.
struct Located<T> {
    value: T,
    file: PathBuf,
    /// Line of the document's first line.
    line: u64,
    /// The document's text, padded so line numbers are the file's.
    text: String,
}

impl<T> Located<T> {
    fn problem(&self, field: Option<&str>, message: String) -> Problem {
        let line = field
            .and_then(|f| field_line(&self.text, f))
            .unwrap_or(self.line);
        Problem {
            file: self.file.clone(),
            line,
            field: field.map(str::to_owned),
            message,
        }
    }
}

#[derive(Default)]
struct Documents {
    upstreams: Vec<Located<Upstream>>,
    integrations: Vec<Located<Integration>>,
    problems: Vec<Problem>,
}

pub(super) fn load_dir(dir: &Path, now: jiff::Timestamp) -> Result<Policy, LoadError> {
    let entries = fs::read_dir(dir).map_err(|source| LoadError::Dir {
        path: dir.to_owned(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut docs = Documents::default();
    for file in files {
        match fs::read_to_string(&file) {
            Ok(text) => parse_file(&file, &text, &mut docs),
            Err(e) => docs.problems.push(Problem {
                file,
                line: 0,
                field: None,
                message: format!("unreadable: {e}"),
            }),
        }
    }
    check(&mut docs, now);
    if docs.problems.is_empty() {
        Ok(Policy {
            upstreams: docs.upstreams.into_iter().map(|d| d.value).collect(),
            integrations: docs.integrations.into_iter().map(|d| d.value).collect(),
        })
    } else {
        Err(LoadError::Invalid {
            problems: docs.problems,
        })
    }
}

#[derive(Deserialize)]
struct Header {
    kind: Option<String>,
}

/// Parses the `---`-separated documents of one file.
fn parse_file(file: &Path, text: &str, docs: &mut Documents) {
    for (line, doc) in split_documents(text) {
        let problem = |line: u64, field: Option<&str>, message: String| Problem {
            file: file.to_owned(),
            line,
            field: field.map(str::to_owned),
            message,
        };
        let kind = match serde_saphyr::from_str::<Header>(&doc) {
            Ok(Header { kind: Some(kind) }) => kind,
            Ok(Header { kind: None }) => {
                docs.problems.push(problem(
                    line,
                    Some("kind"),
                    "missing: say Upstream or Integration".into(),
                ));
                continue;
            }
            Err(e) => {
                docs.problems.push(yaml_problem(file, line, &e));
                continue;
            }
        };
        match kind.as_str() {
            "Upstream" => parse_as(file, line, doc, &mut docs.upstreams, &mut docs.problems),
            "Integration" => parse_as(file, line, doc, &mut docs.integrations, &mut docs.problems),
            other => docs.problems.push(problem(
                line,
                Some("kind"),
                format!("unknown kind `{other}`"),
            )),
        }
    }
}

/// The documents of a YAML stream with the line each starts on, each padded with empty lines so
/// that parser errors carry the file's line numbers.
fn split_documents(text: &str) -> Vec<(u64, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1u64;
    for (i, line) in text.lines().enumerate() {
        let number = i as u64 + 1;
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") || trimmed == "..." {
            push_document(&mut docs, start, &mut current);
            start = number + 1;
            current = "\n".repeat(i + 1);
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    push_document(&mut docs, start, &mut current);
    docs
}

fn push_document(docs: &mut Vec<(u64, String)>, start: u64, text: &mut String) {
    let has_content = text.lines().any(|l| {
        let l = l.trim();
        !l.is_empty() && !l.starts_with('#')
    });
    if has_content {
        docs.push((start, std::mem::take(text)));
    }
}

/// Parses one document as `T`, a struct that also carries `kind`.
fn parse_as<T: DeserializeOwned>(
    file: &Path,
    line: u64,
    text: String,
    out: &mut Vec<Located<T>>,
    problems: &mut Vec<Problem>,
) {
    // `kind` was read already; blank its line (keeping line numbers) rather than `flatten` the
    // model, which would lose positions and the unknown-field check.
    let stripped: String = text
        .lines()
        .map(|l| if l.starts_with("kind:") { "" } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    match serde_saphyr::from_str::<T>(&stripped) {
        Ok(value) => out.push(Located {
            value,
            file: file.to_owned(),
            line,
            text,
        }),
        Err(e) => problems.push(yaml_problem(file, line, &e)),
    }
}

fn yaml_problem(file: &Path, doc_line: u64, e: &serde_saphyr::Error) -> Problem {
    let line = e.location().map_or(doc_line, |l| l.line());
    let message = e.without_snippet().to_string();
    Problem {
        file: file.to_owned(),
        line,
        field: None,
        message,
    }
}

/// The line of a top-level `field:` key in a document, for pointing at cross-document problems.
fn field_line(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .position(|l| {
            l.strip_prefix(field)
                .is_some_and(|rest| rest.starts_with(':'))
        })
        .map(|i| i as u64 + 1)
}

fn check(docs: &mut Documents, now: jiff::Timestamp) {
    let mut problems = std::mem::take(&mut docs.problems);
    for (i, u) in docs.upstreams.iter().enumerate() {
        check_name(
            u,
            &u.value.name,
            "upstream",
            docs.upstreams[..i].iter().map(|o| &o.value.name),
            &mut problems,
        );
        check_upstream(u, &mut problems);
    }
    for (i, d) in docs.integrations.iter().enumerate() {
        let earlier = &docs.integrations[..i];
        check_name(
            d,
            &d.value.name,
            "integration",
            earlier.iter().map(|o| &o.value.name),
            &mut problems,
        );
        check_integration(d, &docs.upstreams, now, &mut problems);
        for other in earlier
            .iter()
            .filter(|o| o.value.workload.may_overlap(&d.value.workload))
        {
            problems.push(d.problem(
                Some("workload"),
                format!(
                    "selector may overlap integration `{}` ({}:{}): give both a field that tells them apart",
                    other.value.name,
                    other.file.display(),
                    other.line
                ),
            ));
        }
    }
    docs.problems = problems;
}

fn check_name<'a, T>(
    doc: &Located<T>,
    name: &str,
    what: &str,
    mut earlier: impl Iterator<Item = &'a String>,
    problems: &mut Vec<Problem>,
) {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if !valid {
        problems.push(doc.problem(
            Some("name"),
            format!("`{name}`: use 1-63 lowercase letters, digits and -"),
        ));
    }
    if earlier.any(|n| n == name) {
        problems.push(doc.problem(Some("name"), format!("duplicate {what} name `{name}`")));
    }
}

fn check_upstream(doc: &Located<Upstream>, problems: &mut Vec<Problem>) {
    let u = &doc.value;
    if u.addresses.is_empty() {
        problems.push(doc.problem(
            Some("addresses"),
            "at least one host:port is required".into(),
        ));
    }
    let base = &u.base_path;
    let base_ok = base.starts_with('/')
        && (base == "/" || !base.ends_with('/'))
        && !base.split('/').any(|s| s == "." || s == "..")
        && !base.contains(['?', '#', '%', ';', ' ']);
    if !base_ok {
        problems.push(doc.problem(
            Some("base_path"),
            format!(
                "`{base}` must be an absolute path without a trailing /, dot segments, ?, #, % or ;"
            ),
        ));
    }
    if u.tls.mode == TlsMode::Plain && (u.tls.ca_file.is_some() || u.tls.server_name.is_some()) {
        problems.push(doc.problem(
            Some("tls"),
            "ca_file and server_name mean nothing with mode: plain".into(),
        ));
    }
    if let Some(ca) = &u.tls.ca_file
        && let Err(e) = fs::metadata(ca)
    {
        problems.push(doc.problem(Some("tls"), format!("ca_file {}: {e}", ca.display())));
    }
}

fn check_integration(
    doc: &Located<Integration>,
    upstreams: &[Located<Upstream>],
    now: jiff::Timestamp,
    problems: &mut Vec<Problem>,
) {
    let i = &doc.value;
    for (field, value) in [("owner", &i.owner), ("purpose", &i.purpose)] {
        if value.trim().is_empty() {
            problems.push(doc.problem(
                Some(field),
                "must say who / what for: an empty value is not accepted".into(),
            ));
        }
    }
    if i.data_classes.is_empty() {
        problems.push(doc.problem(
            Some("data_classes"),
            "list at least one class of data".into(),
        ));
    }
    if i.expected_resources.is_empty() {
        problems.push(doc.problem(
            Some("expected_resources"),
            "list at least one FHIR resource type".into(),
        ));
    }
    if i.workload.is_empty() {
        problems.push(doc.problem(
            Some("workload"),
            "an empty selector would match every process".into(),
        ));
    }
    if i.upstreams.is_empty() {
        problems.push(doc.problem(Some("upstreams"), "name at least one upstream".into()));
    }
    for name in i
        .upstreams
        .iter()
        .filter(|n| !upstreams.iter().any(|u| &u.value.name == *n))
    {
        problems.push(doc.problem(Some("upstreams"), format!("unknown upstream `{name}`")));
    }
    if let Some(expires) = i.expires
        && i.status == IntegrationStatus::Active
        && expires <= now
    {
        problems.push(doc.problem(
            Some("expires"),
            format!("expired at {expires}: renew it, or set status: revoked to keep the record"),
        ));
    }
}

#[cfg(test)]
mod tests;
