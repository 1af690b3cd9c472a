//! The operator commands that change enforcement: revoke and reinstate an integration, open and
//! close break-glass sessions. The admin runtime only parses them; the control loop, which owns
//! the policy and the kernel maps, carries them out and answers.

use fhirwall_policy::SessionTarget;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;

use super::{
    AdminState,
    server::{Request, Response},
};

/// A change an operator asked for, with who asked.
#[derive(Debug)]
pub enum Command {
    Revoke {
        integration: String,
        reason: String,
        by: String,
    },
    Reinstate {
        integration: String,
        by: String,
    },
    Revocations,
    BreakGlassStart {
        policy: String,
        target: SessionTarget,
        justification: String,
        duration: jiff::SignedDuration,
        by: String,
    },
    BreakGlassStop {
        target: SessionTarget,
        by: String,
    },
    BreakGlassList,
}

/// A command and where its answer goes.
pub struct Envelope {
    pub command: Command,
    pub reply: oneshot::Sender<Result<serde_json::Value, String>>,
}

pub(super) async fn route(state: &AdminState, who: &str, request: &Request) -> Response {
    let command = match parse(who, request) {
        Ok(Some(command)) => command,
        Ok(None) => return Response::text(404, "not found\n"),
        Err(message) => return Response::json(400, &json!({ "error": message })),
    };
    let Some(commands) = &state.commands else {
        return Response::json(
            503,
            &json!({ "error": "the agent is not accepting operator commands" }),
        );
    };
    let (reply, answer) = oneshot::channel();
    if commands.send(Envelope { command, reply }).await.is_err() {
        return Response::json(503, &json!({ "error": "the agent is stopping" }));
    }
    match answer.await {
        Ok(Ok(value)) => Response::json(200, &value),
        Ok(Err(message)) => Response::json(409, &json!({ "error": message })),
        Err(_) => Response::json(503, &json!({ "error": "the agent is stopping" })),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    policy: String,
    #[serde(default)]
    integration: Option<String>,
    #[serde(default)]
    user: Option<String>,
    justification: String,
    /// A span such as `30m` or `2h`.
    duration: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StopBody {
    #[serde(default)]
    integration: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

/// `Ok(None)`: no such endpoint.
fn parse(who: &str, request: &Request) -> Result<Option<Command>, String> {
    let by = who.to_owned();
    let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
    let command = match (request.method.as_str(), segments.as_slice()) {
        ("POST", ["v1", "integrations", name, "revoke"]) => {
            let body: RevokeBody = body(request)?;
            Command::Revoke {
                integration: (*name).to_owned(),
                reason: body.reason,
                by,
            }
        }
        ("POST", ["v1", "integrations", name, "reinstate"]) => Command::Reinstate {
            integration: (*name).to_owned(),
            by,
        },
        ("GET", ["v1", "revocations"]) => Command::Revocations,
        ("GET", ["v1", "break-glass"]) => Command::BreakGlassList,
        ("POST", ["v1", "break-glass"]) => {
            let body: StartBody = body(request)?;
            let duration: jiff::SignedDuration = body
                .duration
                .parse::<jiff::Span>()
                .ok()
                .and_then(|span| jiff::SignedDuration::try_from(span).ok())
                .ok_or_else(|| {
                    format!("`{}` is not a duration such as 30m or 2h", body.duration)
                })?;
            let target = target(body.integration, body.user)?;
            Command::BreakGlassStart {
                policy: body.policy,
                target,
                justification: body.justification,
                duration,
                by,
            }
        }
        ("POST", ["v1", "break-glass", "stop"]) => {
            let body: StopBody = body(request)?;
            Command::BreakGlassStop {
                target: target(body.integration, body.user)?,
                by,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(command))
}

fn body<T: serde::de::DeserializeOwned>(request: &Request) -> Result<T, String> {
    let bytes: &[u8] = if request.body.is_empty() {
        b"{}"
    } else {
        &request.body
    };
    serde_json::from_slice(bytes).map_err(|e| format!("invalid request body: {e}"))
}

fn target(integration: Option<String>, user: Option<String>) -> Result<SessionTarget, String> {
    match (integration, user) {
        (Some(i), None) => Ok(SessionTarget::Integration(i)),
        (None, Some(u)) => Ok(SessionTarget::User(u)),
        _ => Err("name exactly one of `integration` and `user`".into()),
    }
}
