//! One small HTTP/1.1 request per connection, answered and closed.

use std::{io, path::Path, sync::Arc, time::Duration};

use serde::Serialize;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::{TcpListener, UnixListener},
};

use super::AdminState;

/// Requests larger than this are refused: the admin API takes no bodies of note.
const MAX_REQUEST: usize = 16 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the operator API on a Unix socket only root can open.
pub async fn serve_unix(path: &Path, state: Arc<AdminState>) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    // A stale socket from a previous run would make bind fail.
    let _ = tokio::fs::remove_file(path).await;
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    loop {
        let (stream, _) = listener.accept().await?;
        let state = Arc::clone(&state);
        tokio::spawn(async move { handle(stream, &state, Surface::Operator).await });
    }
}

/// Serves `/metrics` and `/healthz` on TCP.
pub async fn serve_metrics(listener: TcpListener, state: Arc<AdminState>) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let state = Arc::clone(&state);
        tokio::spawn(async move { handle(stream, &state, Surface::Metrics).await });
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Surface {
    Operator,
    Metrics,
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    state: &AdminState,
    surface: Surface,
) {
    let response = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some((method, target)))) => route(state, surface, &method, &target).await,
        Ok(Ok(None)) => Response::text(400, "malformed request\n"),
        Ok(Err(_)) | Err(_) => return,
    };
    let _ = stream.write_all(&response.encode()).await;
    let _ = stream.shutdown().await;
}

pub(super) async fn route(
    state: &AdminState,
    surface: Surface,
    method: &str,
    target: &str,
) -> Response {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match (surface, method, path) {
        // Patient references: the root-only socket, never the metrics listener.
        (Surface::Operator, "GET", p) if p.starts_with("/v1/audit/") => {
            state.audit_queries.answer(p, query).await
        }
        (_, "GET", "/healthz" | "/v1/health") => Response::json(200, &state.health()),
        (Surface::Metrics, "GET", "/metrics") => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4",
            body: state.metrics_text().into_bytes(),
        },
        (Surface::Operator, "GET", "/v1/workloads") => Response::json(200, &state.live.snapshot()),
        (Surface::Operator, "GET", "/v1/kernel") => Response::json(200, &state.kernel()),
        (_, "GET", _) => Response::text(404, "not found\n"),
        _ => Response::text(405, "method not allowed\n"),
    }
}

/// Reads the request head; returns (method, target) or `None` when it is not HTTP.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Option<(String, String)>> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let method = request.method.unwrap_or_default().to_owned();
                let target = request.path.unwrap_or_default();
                // A fragment is never sent (RFC 9112 section 3.2); drop one if a client does.
                let target = target.split('#').next().unwrap_or_default().to_owned();
                return Ok(Some((method, target)));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST => {}
            _ => return Ok(None),
        }
    }
}

pub(super) struct Response {
    pub(super) status: u16,
    pub(super) content_type: &'static str,
    pub(super) body: Vec<u8>,
}

impl Response {
    pub(super) fn bytes(status: u16, content_type: &'static str, body: Vec<u8>) -> Self {
        Self {
            status,
            content_type,
            body,
        }
    }

    fn json<T: Serialize>(status: u16, value: &T) -> Self {
        match serde_json::to_vec_pretty(value) {
            Ok(body) => Self {
                status,
                content_type: "application/json",
                body,
            },
            Err(e) => Self::text(500, &format!("{e}\n")),
        }
    }

    pub(super) fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            content_type: "text/plain",
            body: body.as_bytes().to_vec(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            503 => "Service Unavailable",
            _ => "Internal Server Error",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}
