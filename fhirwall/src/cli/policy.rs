//! `fhirwall policy check DIR` and `fhirwall policy explain DIR ...`.

mod explain;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};
use fhirwall_policy::{LoadError, Policy};

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy directory: exit 0 when valid, 1 with every problem as file:line.
    Check { dir: PathBuf },
    /// Classify one request as an integration would send it and show the decision.
    ///
    /// Exit status: 0 when the request would be forwarded (allow, or would-deny in observe
    /// mode), 1 when it would be denied (by policy, or because it cannot be classified),
    /// 2 when the policy is invalid or the arguments are wrong.
    Explain(ExplainArgs),
    /// Decide every recorded request again under a candidate policy directory and report what
    /// would change: allowed requests it would deny, denied ones it would allow, by
    /// integration and rule, with counts and example correlation ids.
    ///
    /// Exit status: 0 when no allowed request would be denied, 1 when some would, 2 on errors.
    Replay(ReplayArgs),
    /// The narrowest version of an integration that would have allowed what it really did in
    /// the window: the scopes with only the letters used (granular where every search carried
    /// one of a few codes), the operations invoked, the purposes stated, `compartment` when
    /// every request was confined, a rate limit from the peak. Checked by replaying the window
    /// under it. Prints a policy document with its evidence in comments and how it differs.
    Suggest(SuggestArgs),
}

#[derive(Args)]
pub struct SuggestArgs {
    /// The integration.
    #[arg(long)]
    pub integration: String,
    /// The policy directory in force.
    #[arg(long, default_value = "/etc/fhirwall/policies")]
    pub policies: PathBuf,
    #[command(flatten)]
    pub db: crate::cli::audit::DbArg,
    /// The window of evidence, e.g. `30d`.
    #[arg(long, value_parser = parse_since, default_value = "30d")]
    pub since: jiff::Timestamp,
}

#[derive(Args)]
pub struct ReplayArgs {
    /// The candidate policy directory.
    pub dir: PathBuf,
    #[command(flatten)]
    pub db: crate::cli::audit::DbArg,
    /// Only the last SPAN of the trail, e.g. `7d`, `12h`.
    #[arg(long, value_parser = parse_since)]
    pub since: Option<jiff::Timestamp>,
    /// Only this integration's requests.
    #[arg(long)]
    pub integration: Option<String>,
    /// Example requests shown per group.
    #[arg(long, default_value_t = 3)]
    pub examples: usize,
    /// Print a JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_since(s: &str) -> Result<jiff::Timestamp, String> {
    crate::audit::since(s, jiff::Timestamp::now())
}

#[derive(Args)]
pub struct ExplainArgs {
    /// Policy directory.
    pub dir: PathBuf,
    /// The integration sending the request.
    #[arg(long)]
    pub integration: String,
    /// "METHOD TARGET", e.g. "GET /Observation?patient=123". A target without a leading / is
    /// taken relative to the upstream's base path.
    #[arg(long)]
    pub request: String,
    /// File holding the request body (a Bundle, a resource, a patch, a form-encoded _search).
    /// Without a Content-Type header it is taken as FHIR JSON (`{`), FHIR XML (`<`), a JSON
    /// Patch (`[`) or a form.
    #[arg(long)]
    pub body: Option<PathBuf>,
    /// A request header, "Name: value"; repeat for several.
    #[arg(long = "header", value_name = "K:V")]
    pub headers: Vec<String>,
    /// Purpose of use to state (sets the policy's purpose header).
    #[arg(long)]
    pub purpose: Option<String>,
    /// The upstream the request is sent to; the integration's first one by default.
    #[arg(long)]
    pub upstream: Option<String>,
    /// A response body (FHIR JSON, or NDJSON for an export file) to run through the check the
    /// response would get: what it would have withheld, and why. Counts and types only.
    #[arg(long, value_name = "FILE")]
    pub response: Option<PathBuf>,
    /// Decide as of this time (RFC 3339); now by default. The policy itself is validated as of
    /// now, as the agent would load it.
    #[arg(long)]
    pub at: Option<jiff::Timestamp>,
    /// Print a JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: &PolicyCommand) -> anyhow::Result<ExitCode> {
    match command {
        PolicyCommand::Check { dir } => check(dir),
        PolicyCommand::Explain(args) => explain::run(args),
        PolicyCommand::Replay(args) => replay(args),
        PolicyCommand::Suggest(args) => suggest(args),
    }
}

fn suggest(args: &SuggestArgs) -> anyhow::Result<ExitCode> {
    let Some(policy) = load_reporting(&args.policies)? else {
        return Ok(ExitCode::from(2));
    };
    let Some(in_force) = policy.integration(&args.integration) else {
        anyhow::bail!(
            "{} has no integration `{}`",
            args.policies.display(),
            args.integration
        );
    };
    let conn = crate::audit::open_read_only(&args.db.db)?;
    let scan = crate::audit::Scan {
        since: Some(args.since),
        integration: Some(&args.integration),
    };
    let suggestion =
        crate::least_privilege::suggest::suggest(&policy, &args.integration, |each| {
            crate::audit::scan_requests(&conn, &scan, |_, record| each(&record)).map(drop)
        })?;
    let Some(suggestion) = suggestion else {
        eprintln!(
            "no allowed request of {} recorded since {}: nothing to suggest from",
            args.integration, args.since
        );
        return Ok(ExitCode::FAILURE);
    };
    let window = format!("since {}", args.since.strftime("%Y-%m-%dT%H:%M:%SZ"));
    print!("{}", suggestion.yaml(in_force, &window));
    Ok(ExitCode::SUCCESS)
}

/// Loads a policy directory; an invalid one has every problem printed (file:line) and gives
/// `None`.
pub(super) fn load_reporting(dir: &std::path::Path) -> Result<Option<Policy>, LoadError> {
    match Policy::load(dir) {
        Ok(policy) => Ok(Some(policy)),
        Err(LoadError::Invalid { problems }) => {
            for problem in &problems {
                eprintln!("{problem}");
            }
            eprintln!("{}: {} problem(s)", dir.display(), problems.len());
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn replay(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let Some(policy) = load_reporting(&args.dir)? else {
        return Ok(ExitCode::from(2));
    };
    let conn = crate::audit::open_read_only(&args.db.db)?;
    let mut replay = crate::least_privilege::replay::Replay::new(&policy, args.examples);
    let scan = crate::audit::Scan {
        since: args.since,
        integration: args.integration.as_deref(),
    };
    crate::audit::scan_requests(&conn, &scan, |_, record| replay.record(&record))?;
    let report = replay.finish();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(if report.breaks_anything() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn check(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    match load_reporting(dir)? {
        Some(policy) => {
            for (integration, exe) in crate::attribution::unverifiable_exes(&policy) {
                eprintln!(
                    "warning: integration {integration}: no process on this host can match \
                     `exe: {exe}` (the path is missing, goes through a symlink, or is not \
                     installed by root alone): its processes will be unregistered; install it \
                     root-owned at its real path, or select it by sha256"
                );
            }
            println!(
                "{}: ok ({} upstreams, {} integrations, {} exceptions, {} break-glass policies)",
                dir.display(),
                policy.upstreams.len(),
                policy.integrations.len(),
                policy.exceptions.len(),
                policy.break_glass.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        None => Ok(ExitCode::FAILURE),
    }
}
