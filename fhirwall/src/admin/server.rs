//! The admin API's HTTP: hyper serves it, one task per connection; the routes are ours.

use std::{convert::Infallible, io, path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{StatusCode, body::Incoming, header, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, UnixListener},
};

use super::{AdminState, operator};

/// Request heads larger than this are refused (hyper's smallest read buffer).
const MAX_HEAD: usize = 8 * 1024;
/// Bodies larger than this are refused: the admin API takes small JSON bodies at most.
const MAX_BODY: usize = 16 * 1024;
/// A request head, and then its body, must arrive within this long.
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
        tokio::spawn(serve(
            stream,
            Arc::clone(&state),
            Surface::Operator(operator),
        ));
    }
}

/// Serves `/metrics` and `/healthz` on TCP.
pub async fn serve_metrics(listener: TcpListener, state: Arc<AdminState>) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(serve(stream, Arc::clone(&state), Surface::Metrics));
    }
}

/// Which listener a request came in on: the operator socket may change things, the metrics
/// address only reads.
pub(super) enum Surface {
    Operator(String),
    Metrics,
}

/// One request as the routes see it.
pub(super) struct Request {
    pub method: String,
    pub path: String,
    /// The query string, without the `?`.
    pub query: String,
    pub body: Vec<u8>,
}

/// Serves one connection until the client closes it or breaks the protocol.
async fn serve<S>(stream: S, state: Arc<AdminState>, surface: Surface)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let surface = Arc::new(surface);
    let service = service_fn(move |request| {
        let (state, surface) = (Arc::clone(&state), Arc::clone(&surface));
        async move { Ok::<_, Infallible>(answer(&state, &surface, request).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), service);
    // A client that breaks the protocol or goes away has nothing more to be told.
    let _ = connection.await;
}

async fn answer(
    state: &AdminState,
    surface: &Surface,
    request: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let (head, body) = request.into_parts();
    let body =
        match tokio::time::timeout(READ_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await {
            Ok(Ok(body)) => body.to_bytes().to_vec(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return Response::text(413, "request body too large\n").into_hyper();
            }
            Ok(Err(_)) | Err(_) => {
                return Response::text(400, "incomplete request body\n").into_hyper();
            }
        };
    let request = Request {
        method: head.method.as_str().to_owned(),
        path: head.uri.path().to_owned(),
        query: head.uri.query().unwrap_or_default().to_owned(),
        body,
    };
    route(state, surface, &request).await.into_hyper()
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

    fn into_hyper(self) -> hyper::Response<Full<Bytes>> {
        let mut response = hyper::Response::new(Full::new(Bytes::from(self.body)));
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(self.content_type),
        );
        response
    }
}
