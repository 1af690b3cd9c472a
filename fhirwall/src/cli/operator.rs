//! `fhirwall revoke`, `fhirwall reinstate` and `fhirwall break-glass`: operator commands sent to
//! the running agent over its admin socket (root only).

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::admin::AdminClient;

const DEFAULT_SOCKET: &str = "/run/fhirwall/admin.sock";

#[derive(Args)]
pub struct RevokeArgs {
    /// The integration to revoke.
    pub name: String,
    /// Why (kept with the revocation).
    #[arg(long, default_value = "")]
    pub reason: String,
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Args)]
pub struct ReinstateArgs {
    pub name: String,
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Subcommand)]
pub enum BreakGlassCommand {
    /// Open an emergency-access session under a BreakGlass policy.
    Start {
        /// The BreakGlass policy.
        #[arg(long)]
        policy: String,
        /// The integration the session covers (or --user).
        #[arg(long, conflicts_with = "user", required_unless_present = "user")]
        integration: Option<String>,
        /// The workload user the session covers.
        #[arg(long)]
        user: Option<String>,
        /// Why (incident or ticket), at least the policy's minimum length.
        #[arg(long)]
        justification: String,
        /// How long, e.g. 30m or 2h; at most the policy's maximum.
        #[arg(long)]
        duration: String,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Close the sessions of an integration or user.
    Stop {
        #[arg(long, conflicts_with = "user", required_unless_present = "user")]
        integration: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// The open sessions.
    List {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
}

pub fn revoke(args: &RevokeArgs) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/integrations/{}/revoke", args.name);
    let answer = call(
        &args.socket,
        Some((&path, json!({ "reason": args.reason }))),
        None,
    )?;
    println!(
        "revoked {} at {}",
        args.name,
        answer["at"].as_str().unwrap_or("now")
    );
    Ok(ExitCode::SUCCESS)
}

pub fn reinstate(args: &ReinstateArgs) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/integrations/{}/reinstate", args.name);
    call(&args.socket, Some((&path, json!({}))), None)?;
    println!("reinstated {}", args.name);
    Ok(ExitCode::SUCCESS)
}

pub fn break_glass(command: &BreakGlassCommand) -> anyhow::Result<ExitCode> {
    match command {
        BreakGlassCommand::Start {
            policy,
            integration,
            user,
            justification,
            duration,
            socket,
        } => {
            let body = json!({ "policy": policy, "integration": integration, "user": user,
                               "justification": justification, "duration": duration });
            let session = call(socket, Some(("/v1/break-glass", strip_nulls(body))), None)?;
            println!(
                "break-glass session open until {}",
                session["until"].as_str().unwrap_or("?")
            );
        }
        BreakGlassCommand::Stop {
            integration,
            user,
            socket,
        } => {
            let body = strip_nulls(json!({ "integration": integration, "user": user }));
            let answer = call(socket, Some(("/v1/break-glass/stop", body)), None)?;
            println!("closed {} session(s)", answer["closed"]);
        }
        BreakGlassCommand::List { socket } => {
            let sessions = call(socket, None, Some("/v1/break-glass"))?;
            println!("{}", serde_json::to_string_pretty(&sessions)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One request to the agent: a POST with a JSON body, or a GET.
fn call(
    socket: &std::path::Path,
    post: Option<(&str, Value)>,
    get: Option<&str>,
) -> anyhow::Result<Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = AdminClient::new(socket);
    let answer = runtime.block_on(async {
        match (post, get) {
            (Some((path, body)), _) => client.post(path, &body).await,
            (None, Some(path)) => client.get(path).await,
            (None, None) => client.get("/v1/health").await,
        }
    })?;
    Ok(answer)
}

fn strip_nulls(mut value: Value) -> Value {
    if let Value::Object(map) = &mut value {
        map.retain(|_, v| !v.is_null());
    }
    value
}
