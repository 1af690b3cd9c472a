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
    #[error("the agent answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the agent's answer is not what this fhirwall expects")]
    Decode(#[source] serde_json::Error),
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
        let body = self.request("GET", path).await?;
        serde_json::from_slice(&body).map_err(ClientError::Decode)
    }

    async fn request(&self, method: &str, path: &str) -> Result<Vec<u8>, ClientError> {
        let mut stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let head =
            format!("{method} {path} HTTP/1.1\r\nHost: fhirwall\r\nConnection: close\r\n\r\n");
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(ClientError::Io)?;
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
