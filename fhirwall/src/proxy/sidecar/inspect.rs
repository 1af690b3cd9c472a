//! The sidecar's response inspector: the FHIR response check (`fhirwall_fhir::response`) of one
//! forwarded request, behind the HTTP engine's [`ResponseInspector`].

use bytes::BytesMut;
use fhirwall_fhir::{
    IssueType,
    response::{
        BodyFormat, CheckMode, Progress, Refusal, Report, ResponseCheck, ResponseRules, Violation,
    },
};
use fhirwall_http::{ExchangeId, Inspected, LocalResponse, ResponseHead, ResponseInspector};

use super::super::operation_outcome;

/// What a forwarded request's answer is expected to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A FHIR resource (a Bundle included).
    Resource,
    /// A bulk export's status: its manifest once done.
    ExportStatus,
    /// A bulk export file.
    ExportFile,
}

/// The check a forwarded request's response gets, decided with the request.
pub struct PendingCheck {
    pub rules: ResponseRules,
    pub expect: Expect,
    /// A `$export` kick-off: its `Content-Location` is bound to the integration.
    pub kickoff: bool,
    /// Whom the URLs the response issues (paging links, export files) are bound to.
    pub issued: Option<super::plan::Issued>,
}

/// Checks one response body.
#[derive(Debug)]
pub struct ResponseGuard {
    id: ExchangeId,
    mode: CheckMode,
    /// `None` when the body cannot be read ([`Self::unreadable`] says why in checked modes).
    check: Option<ResponseCheck>,
    unreadable: bool,
    status: u16,
    refusal: Option<Refusal>,
    /// Whether any body byte arrived: an empty body carries nothing to check.
    fed: bool,
}

impl ResponseGuard {
    /// The guard for a response with this head, or why its body cannot be read.
    #[must_use]
    pub fn new(id: ExchangeId, rules: ResponseRules, expect: Expect, head: &ResponseHead) -> Self {
        let mode = rules.mode;
        let format = body_format(head, expect);
        Self {
            id,
            mode,
            unreadable: format.is_none(),
            check: format.map(|f| ResponseCheck::new(rules, f)),
            status: head.status(),
            refusal: None,
            fed: false,
        }
    }

    /// The mode the check ran in.
    #[must_use]
    pub fn mode(&self) -> CheckMode {
        self.mode
    }

    /// What the response carried, once the body went through.
    #[must_use]
    pub fn report(&self) -> Report {
        let mut report = self
            .check
            .as_ref()
            .map(ResponseCheck::report)
            .unwrap_or_default();
        if self.unreadable {
            report.unread = true;
            if self.mode != CheckMode::Record {
                report.violation.get_or_insert(Violation::Format);
            }
        }
        report
    }

    /// The refusal, when the response was refused (replaced, or cut off once begun).
    #[must_use]
    pub fn refusal(&self) -> Option<&Refusal> {
        self.refusal.as_ref()
    }

    fn outcome(&mut self, progress: Result<Progress, Refusal>) -> Result<Inspected, LocalResponse> {
        match progress {
            Ok(Progress::Holding) => Ok(Inspected::Hold),
            Ok(Progress::Streaming) => Ok(Inspected::Release),
            Err(refusal) => {
                let answer = self.answer(refusal.violation);
                self.refusal = Some(refusal);
                Err(answer)
            }
        }
    }

    /// What the workload gets instead: a 403 saying what could not be seen, or, for an error
    /// the server sent in a form the check cannot read, a 502.
    fn answer(&self, violation: Violation) -> LocalResponse {
        let text = format!("{violation}; nothing of the response was released");
        if violation == Violation::Format && self.status >= 300 {
            return operation_outcome::answer(502, IssueType::Exception, &text, self.id);
        }
        operation_outcome::forbidden(&text, self.id)
    }

    fn unreadable(&mut self) -> Result<Inspected, LocalResponse> {
        if self.mode == CheckMode::Record {
            return Ok(Inspected::Release);
        }
        let refusal = Refusal {
            violation: Violation::Format,
            released: false,
        };
        self.outcome(Err(refusal))
    }
}

impl ResponseInspector for ResponseGuard {
    fn observes(&self) -> bool {
        self.mode == CheckMode::Record
    }

    fn data(&mut self, data: &[u8], out: &mut BytesMut) -> Result<Inspected, LocalResponse> {
        self.fed |= !data.is_empty();
        let Some(check) = &mut self.check else {
            return self.unreadable();
        };
        let progress = check.feed(data, out);
        self.outcome(progress)
    }

    fn end(&mut self, out: &mut BytesMut) -> Result<Inspected, LocalResponse> {
        if !self.fed {
            // An empty body (a 202 kick-off, a 201 with Prefer: return=minimal).
            return Ok(Inspected::Release);
        }
        let Some(check) = &mut self.check else {
            return self.unreadable();
        };
        let progress = check.finish(out);
        self.outcome(progress)
    }
}

/// How the body is to be read, from its Content-Type and what the request expects; `None` when
/// the check cannot read it (another format, or an encoding: the request's `Accept-Encoding`
/// was not forwarded, so a server that compresses anyway is not read).
fn body_format(head: &ResponseHead, expect: Expect) -> Option<BodyFormat> {
    if head
        .headers
        .get("content-encoding")
        .is_some_and(|e| !e.trim_ascii().eq_ignore_ascii_case(b"identity"))
    {
        return None;
    }
    let content_type = head.headers.get("content-type").map(|v| {
        let essence = v.split(|&b| b == b';').next().unwrap_or_default();
        essence.trim_ascii().to_ascii_lowercase()
    });
    let ok = (200..300).contains(&head.status());
    match content_type.as_deref() {
        Some(b"application/fhir+json" | b"application/json" | b"application/json+fhir") => {
            // A status still in progress answers 202, with a FHIR resource if anything.
            Some(if head.status() == 200 && expect == Expect::ExportStatus {
                BodyFormat::ExportManifest
            } else {
                BodyFormat::Json
            })
        }
        Some(b"application/fhir+ndjson" | b"application/ndjson" | b"application/x-ndjson") => {
            Some(BodyFormat::Ndjson)
        }
        None if ok && expect == Expect::ExportFile => Some(BodyFormat::Ndjson),
        _ => None,
    }
}
