//! Reading a policy directory: strict parsing, then cross-document checks. Every problem found
//! is reported with its file, line and field; nothing is half-loaded.
//!
//! The parsing half is pure ([`parse_sources`]: file names and texts in, a policy or problems
//! out), so it can be fuzzed and tested without a file system; [`load_dir`] adds reading the
//! directory and checking that referenced CA files exist.

mod check;
mod lines;

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use self::lines::{field_at, field_line};
use super::{
    Policy, Settings,
    exception::{BreakGlass, Exception},
    integration::Integration,
    model::Upstream,
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
    /// The document's text; its line 1 is the file's line `line`.
    text: String,
}

impl<T> Located<T> {
    /// A problem with `field` (a path like `scopes[2]` or `credentials.inject`), placed on the
    /// field's line when it can be found.
    fn problem(&self, field: &str, message: String) -> Problem {
        let line =
            field_line(&self.text, field).map_or(self.line, |r| (self.line + r).saturating_sub(1));
        Problem {
            file: self.file.clone(),
            line,
            field: Some(field.to_owned()),
            message,
        }
    }
}

#[derive(Default)]
struct Documents {
    upstreams: Vec<Located<Upstream>>,
    integrations: Vec<Located<Integration>>,
    exceptions: Vec<Located<Exception>>,
    break_glass: Vec<Located<BreakGlass>>,
    settings: Vec<Located<Settings>>,
    problems: Vec<Problem>,
}

/// Reads every `*.yaml` / `*.yml` file of `dir` (sorted by name), parses them and checks that
/// the CA files upstreams name exist.
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
    let mut sources = Vec::new();
    let mut unreadable = Vec::new();
    for file in files {
        match fs::read_to_string(&file) {
            Ok(text) => sources.push((file, text)),
            Err(e) => unreadable.push(Problem {
                file,
                line: 0,
                field: None,
                message: format!("unreadable: {e}"),
            }),
        }
    }
    let mut docs = Documents {
        problems: unreadable,
        ..Documents::default()
    };
    for (file, text) in &sources {
        parse_file(file, text, &mut docs);
    }
    check::all(&mut docs, now);
    check::files(&mut docs);
    finish(docs)
}

/// Parses and checks policy files given as (name, text): no file system.
pub(super) fn parse_sources<'s>(
    sources: impl IntoIterator<Item = (&'s Path, &'s str)>,
    now: jiff::Timestamp,
) -> Result<Policy, LoadError> {
    let mut docs = Documents::default();
    for (file, text) in sources {
        parse_file(file, text, &mut docs);
    }
    check::all(&mut docs, now);
    finish(docs)
}

fn finish(docs: Documents) -> Result<Policy, LoadError> {
    if !docs.problems.is_empty() {
        return Err(LoadError::Invalid {
            problems: docs.problems,
        });
    }
    let upstreams: Vec<Upstream> = docs.upstreams.into_iter().map(|d| d.value).collect();
    // Base paths and tenant headers were checked, so building the configs cannot fail; an
    // upstream whose config fails anyway is reported rather than skipped.
    let mut classify = Vec::with_capacity(upstreams.len());
    for u in &upstreams {
        match u.classify_config() {
            Ok(config) => classify.push(config),
            Err(e) => {
                return Err(LoadError::Invalid {
                    problems: vec![Problem {
                        file: PathBuf::new(),
                        line: 0,
                        field: Some("base_path".into()),
                        message: format!("upstream `{}`: {e}", u.name),
                    }],
                });
            }
        }
    }
    let settings: super::Settings = docs
        .settings
        .into_iter()
        .next()
        .map(|d| d.value)
        .unwrap_or_default();
    let integrations: Vec<super::Integration> =
        docs.integrations.into_iter().map(|d| d.value).collect();
    // The headers the policy reads are forwarded too: the server may want them, and they were
    // read for the decision.
    let policy_headers: Vec<String> = std::iter::once(settings.purpose_header.as_str())
        .chain(
            integrations
                .iter()
                .filter_map(|i| i.patient_header().map(super::HeaderName::as_str)),
        )
        .map(str::to_ascii_lowercase)
        .collect();
    for config in &mut classify {
        config.extra_headers.extend(policy_headers.iter().cloned());
    }
    Ok(Policy {
        settings,
        upstreams,
        integrations,
        exceptions: docs.exceptions.into_iter().map(|d| d.value).collect(),
        break_glass: docs.break_glass.into_iter().map(|d| d.value).collect(),
        classify,
    })
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
        let kind = match serde_saphyr::from_str_with_options::<Header>(&doc, yaml_options()) {
            Ok(Header { kind: Some(kind) }) => kind,
            Ok(Header { kind: None }) => {
                docs.problems.push(problem(
                    line,
                    Some("kind"),
                    "missing: say Upstream, Integration, Exception, BreakGlass or Settings".into(),
                ));
                continue;
            }
            Err(e) => {
                docs.problems.push(yaml_problem(file, line, &doc, &e));
                continue;
            }
        };
        match kind.as_str() {
            "Upstream" => parse_as(file, line, doc, &mut docs.upstreams, &mut docs.problems),
            "Integration" => parse_as(file, line, doc, &mut docs.integrations, &mut docs.problems),
            "Exception" => parse_as(file, line, doc, &mut docs.exceptions, &mut docs.problems),
            "BreakGlass" => parse_as(file, line, doc, &mut docs.break_glass, &mut docs.problems),
            "Settings" => parse_as(file, line, doc, &mut docs.settings, &mut docs.problems),
            other => docs.problems.push(problem(
                line,
                Some("kind"),
                format!("unknown kind `{other}`"),
            )),
        }
    }
}

/// The documents of a YAML stream with the line each starts on. Documents are parsed alone
/// and their line numbers shifted by `start - 1`; padding each with empty lines instead would
/// cost quadratic time on a file of many `---`.
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
    let text = std::mem::take(text);
    if has_content {
        docs.push((start, text));
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
    match serde_saphyr::from_str_with_options::<T>(&stripped, yaml_options()) {
        Ok(value) => out.push(Located {
            value,
            file: file.to_owned(),
            line,
            text,
        }),
        Err(e) => problems.push(yaml_problem(file, line, &text, &e)),
    }
}

/// How policy YAML is parsed: an alias may replay at most `MAX_ALIAS_EVENTS` events per
/// document. The parser's default (a million) let a 269-byte alias bomb cost 0.3 s per
/// document in a release build (found by the `policy_load` fuzz target): a file of such
/// documents stalled every load and reload. No policy needs more than a few aliases.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_ALIAS_EVENTS,
        },
    }
}

/// Events aliases may replay in one policy document.
const MAX_ALIAS_EVENTS: usize = 10_000;

/// A parser error, on the file's line, with the field named from the keys enclosing it.
fn yaml_problem(file: &Path, doc_line: u64, text: &str, e: &serde_saphyr::Error) -> Problem {
    let relative = e.location().map(|l| l.line());
    let mut message = e.without_snippet().to_string();
    // The parser's position is relative to the document; the problem carries the file's.
    if let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    // `missing field `x``, `unknown field `x``, `duplicate field `x``: name that field.
    let named = message
        .split_once("field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(name, _)| name.to_owned());
    let enclosing = relative.and_then(|r| field_at(text, r));
    // A missing field has no line of its own (the parser points past the document); an
    // unknown one is best named with the keys around it.
    let field = if message.starts_with("missing") {
        named.or(enclosing)
    } else {
        enclosing.or(named)
    };
    Problem {
        file: file.to_owned(),
        line: relative.map_or(doc_line, |r| (doc_line + r).saturating_sub(1)),
        field,
        message,
    }
}

#[cfg(test)]
mod tests;
