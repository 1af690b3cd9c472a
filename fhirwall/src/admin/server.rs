//! One small HTTP/1.1 request per connection, answered and closed.

use std::{io, path::Path, sync::Arc, time::Duration};

use serde::Serialize;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::{TcpListener, UnixListener},
};

use super::{AdminState, operator};

/// Requests larger than this are refused: the admin API takes small JSON bodies at most.
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
        // Who is asking, for the record of revocations and break-glass sessions.
        let operator = stream
            .peer_cred()
            .ok()
            .map_or_else(|| "unknown".to_owned(), |c| operator_name(c.uid()));
        let state = Arc::clone(&state);
        tokio::spawn(async move { handle(stream, &state, Surface::Operator(operator)).await });
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

/// Which listener a request came in on: the operator socket may change things, the metrics
/// address only reads.
pub(super) enum Surface {
    Operator(String),
    Metrics,
}

/// One parsed request.
pub(super) struct Request {
    pub method: String,
    pub path: String,
    /// The query string, without the `?`.
    pub query: String,
    pub body: Vec<u8>,
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    state: &AdminState,
    surface: Surface,
) {
    let response = match tokio::time::timeout(READ_TIMEOUT, read_request(&mut stream)).await {
        Ok(Ok(Some(request))) => route(state, &surface, &request).await,
        Ok(Ok(None)) => Response::text(400, "malformed request\n"),
        Ok(Err(_)) | Err(_) => return,
    };
    let _ = stream.write_all(&response.encode()).await;
    let _ = stream.shutdown().await;
}

pub(super) async fn route(state: &AdminState, surface: &Surface, request: &Request) -> Response {
    let (method, path, query) = (
        request.method.as_str(),
        request.path.as_str(),
        request.query.as_str(),
    );
    match (surface, method, path) {
        // Patient references: the root-only socket, never the metrics listener.
        (Surface::Operator(_), "GET", p) if p.starts_with("/v1/audit/") => {
            state.audit_queries.answer(p, query).await
        }
        (Surface::Operator(_), _, p) if p.starts_with("/v1/audit/") => {
            Response::text(405, "method not allowed\n")
        }
        (_, "GET", "/healthz" | "/v1/health") => Response::json(200, &state.health()),
        (Surface::Metrics, "GET", "/metrics") => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4",
            body: state.metrics_text().into_bytes(),
        },
        (Surface::Metrics, _, _) => Response::text(404, "not found\n"),
        (Surface::Operator(_), "GET", "/v1/workloads") => {
            Response::json(200, &state.live.snapshot())
        }
        (Surface::Operator(_), "GET", "/v1/kernel") => Response::json(200, &state.kernel()),
        (Surface::Operator(who), _, _) => operator::route(state, who, request).await,
    }
}

/// Reads the request head and its `Content-Length` body; `None` when it is not HTTP we accept.
async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Option<Request>> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let length = content_length(parsed.headers);
                let (Some(method), Some(target), Some(length)) =
                    (parsed.method, parsed.path, length)
                else {
                    return Ok(None);
                };
                // A fragment is never sent (RFC 9112 section 3.2); drop one if a client does.
                let target = target.split('#').next().unwrap_or_default();
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                let (path, query) = (path.to_owned(), query.to_owned());
                let method = method.to_owned();
                if head_len + length > MAX_REQUEST {
                    return Ok(None);
                }
                let mut body = buf[head_len..].to_vec();
                while body.len() < length {
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 {
                        return Ok(None);
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                body.truncate(length);
                return Ok(Some(Request {
                    method,
                    path,
                    query,
                    body,
                }));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST => {}
            _ => return Ok(None),
        }
    }
}

/// The body length: 0 without the header, `None` (refuse) when it is repeated or not a number.
fn content_length(headers: &[httparse::Header<'_>]) -> Option<usize> {
    let mut values = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"));
    match (values.next(), values.next()) {
        (None, _) => Some(0),
        (Some(h), None) => std::str::from_utf8(h.value).ok()?.trim().parse().ok(),
        (Some(_), Some(_)) => None,
    }
}

fn operator_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| format!("uid:{uid}"), |u| u.name)
}

pub(super) struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub(super) fn bytes(status: u16, content_type: &'static str, body: Vec<u8>) -> Self {
        Self {
            status,
            content_type,
            body,
        }
    }

    pub(super) fn json<T: Serialize>(status: u16, value: &T) -> Self {
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
            409 => "Conflict",
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
