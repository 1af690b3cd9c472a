//! The command-line side of the admin API: `fhirwall workloads` and friends.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::UnixStream,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the agent at {socket} (is `fhirwall run` running, and are you root?)")]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the agent failed")]
    Io(#[source] std::io::Error),
    #[error("the agent refused: {}", error_text(body))]
    Status { status: u16, body: String },
    #[error("the agent's answer is not what this fhirwall expects")]
    Decode(#[source] serde_json::Error),
}

/// The `error` member of a JSON error answer, else the body as is.
fn error_text(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned())
}

pub struct AdminClient {
    socket: PathBuf,
}

impl AdminClient {
    #[must_use]
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
        }
    }

    /// `GET path`, decoded from JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let body = self.request("GET", path, None).await?;
        serde_json::from_slice(&body).map_err(ClientError::Decode)
    }

    /// `POST path` with a JSON body, the answer decoded from JSON.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(ClientError::Decode)?;
        let answer = self.request("POST", path, Some(&body)).await?;
        serde_json::from_slice(&answer).map_err(ClientError::Decode)
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, ClientError> {
        let mut stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let body = body.unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: fhirwall\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(ClientError::Io)?;
        stream.write_all(body).await.map_err(ClientError::Io)?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(ClientError::Io)?;
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(response.len(), |i| i + 4);
        let status = std::str::from_utf8(&response[..split])
            .ok()
            .and_then(|head| head.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        let body = response[split..].to_vec();
        if status == 200 {
            Ok(body)
        } else {
            Err(ClientError::Status {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        }
    }
}
