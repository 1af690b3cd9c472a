//! Answers the proxy gives itself: the handler's local responses, error answers, and the
//! lingering close after them.

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    time::{Instant, timeout_at},
};

use super::{Conn, ConnectionEnd, Exchange};
use crate::{
    ExchangeId, Finished, Handler, HttpError, LocalResponse, Upstreams,
    body::{self, Decoder},
};

/// The methods the engine passes (CONNECT and TRACE never do).
const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

impl<D, H, U, F> Conn<'_, '_, D, H, U, F>
where
    D: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
    U: Upstreams<Key = H::Upstream>,
    F: Future<Output = ()>,
{
    /// Answers with the handler's response. An unread body is drained when small, else the
    /// connection closes after the answer.
    pub(super) async fn respond_local(
        &mut self,
        ex: &mut Exchange,
        response: &LocalResponse,
        mut decoder: Decoder,
    ) -> Result<(), HttpError> {
        if !(200..=599).contains(&response.status) {
            return Err(HttpError::InvalidStatus {
                status: response.status,
            });
        }
        let unread = !decoder.is_done();
        // A client still waiting for `100 Continue` will not send its body: do not wait for it.
        let client_sends_body = ex.sent_continue || !self.head.expects_continue();
        let small = match decoder {
            Decoder::Length(n) => n <= self.limits.max_drain,
            _ => true,
        };
        let drain = unread && client_sends_body && small;
        ex.close = !self.head.keep_alive() || self.shutdown.requested() || (unread && !drain);
        self.write_local(response, ex.close, ex.is_head).await?;
        ex.status = Some(response.status);
        ex.response_bytes = if ex.is_head {
            0
        } else {
            response.body.len() as u64
        };
        if drain {
            let t = self.transfer(body::Encoding::Identity);
            if !body::discard(
                &mut self.io,
                &mut self.down,
                &mut decoder,
                self.limits.max_drain,
                t,
            )
            .await
            {
                ex.close = true;
            }
        }
        if ex.close && unread {
            self.linger().await;
        }
        Ok(())
    }

    /// Ends the connection after `err`: answers when nothing was sent yet, reports, lingers.
    pub(super) async fn fail(&mut self, ex: &mut Exchange, err: HttpError) -> ConnectionEnd {
        // Whatever was staged for the upstream must never reach the client.
        self.out.buf.clear();
        let mut answered = false;
        if ex.status.is_none()
            && let Some(response) = self.error_response(&err, ex.id)
            && self.write_local(&response, true, ex.is_head).await.is_ok()
        {
            ex.status = Some(response.status);
            answered = true;
        }
        self.report(ex, Some(&err));
        if answered {
            self.linger().await;
        }
        ConnectionEnd::Failed(err)
    }

    /// The handler's answer to `err`; a 405 lists the methods that are allowed (RFC 9110
    /// section 15.5.6), which the engine knows and the handler need not.
    fn error_response(&self, err: &HttpError, id: ExchangeId) -> Option<LocalResponse> {
        let mut response = self.handler.error_response(err, id)?;
        if let HttpError::MethodNotAllowed { .. } = err
            && response.headers.get("Allow").is_none()
        {
            let _ = response.headers.insert("Allow", ALLOWED_METHODS);
        }
        Some(response)
    }

    pub(super) fn report(&mut self, ex: &Exchange, error: Option<&HttpError>) {
        self.handler.finish(&Finished {
            id: ex.id,
            status: ex.status,
            forwarded: ex.forwarded,
            request_body_bytes: ex.request_bytes,
            response_body_bytes: ex.response_bytes,
            duration: ex.started.elapsed(),
            error,
        });
    }

    /// Lingering close: stop sending, then read and drop what the client still sends for a
    /// bounded time, so the answer is not lost to a connection reset.
    async fn linger(&mut self) {
        let deadline = Instant::now() + self.limits.linger_timeout;
        let _ = timeout_at(deadline, self.io.shutdown()).await;
        let mut dropped = 0u64;
        while dropped <= self.limits.max_drain {
            self.down.clear();
            match timeout_at(deadline, self.io.read_buf(&mut self.down)).await {
                Ok(Ok(n)) if n > 0 => dropped += n as u64,
                _ => break,
            }
        }
        self.down.clear();
    }
}
