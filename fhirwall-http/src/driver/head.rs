//! Reading request heads: header and idle timeouts, and the graceful-stop signal.

use std::{
    pin::Pin,
    task::{Context, Poll, Waker},
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite},
    time::{Instant, timeout_at},
};

use super::{Conn, ConnectionEnd};
use crate::{Handler, HttpError, Upstreams};

/// The graceful-stop signal, polled without being consumed twice.
pub(super) struct Shutdown<'s, F> {
    pub(super) fut: Pin<&'s mut F>,
    pub(super) fired: bool,
}

impl<F: Future<Output = ()>> Shutdown<'_, F> {
    /// Whether the signal fired, without waiting.
    pub(super) fn requested(&mut self) -> bool {
        if !self.fired {
            let mut cx = Context::from_waker(Waker::noop());
            self.fired = self.fut.as_mut().poll(&mut cx) == Poll::Ready(());
        }
        self.fired
    }

    /// Completes when the signal fires (at once if it already did).
    pub(super) async fn wait(&mut self) {
        if !self.fired {
            self.fut.as_mut().await;
            self.fired = true;
        }
    }
}

pub(super) enum HeadRead {
    Request(Instant),
    Closed(ConnectionEnd),
    Refused(HttpError, Instant),
}

impl<D, H, U, F> Conn<'_, '_, D, H, U, F>
where
    D: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
    U: Upstreams<Key = H::Upstream>,
    F: Future<Output = ()>,
{
    /// Reads until a complete request head is parsed. The first request must arrive within the
    /// header timeout from accept; later ones may wait the idle timeout for their first byte,
    /// then have the header timeout from that byte.
    pub(super) async fn read_head(&mut self, first: bool, accepted: Instant) -> HeadRead {
        let mut started = first.then_some(accepted);
        let idle_deadline = Instant::now() + self.limits.idle_timeout;
        loop {
            let partial = self.parser.has_partial(&self.down);
            if started.is_none() && partial {
                started = Some(Instant::now());
            }
            match self
                .parser
                .parse(&mut self.down, self.limits, &mut self.head)
            {
                Ok(true) => return HeadRead::Request(started.unwrap_or_else(Instant::now)),
                Ok(false) => {}
                Err(err) => return HeadRead::Refused(err, started.unwrap_or_else(Instant::now)),
            }
            let deadline = started.map_or(idle_deadline, |t| t + self.limits.header_timeout);
            self.down.reserve(self.limits.io_buffer);
            self.sample();
            let read = tokio::select! {
                biased;
                () = self.shutdown.wait(), if !partial => return HeadRead::Closed(ConnectionEnd::Shutdown),
                read = timeout_at(deadline, self.io.read_buf(&mut self.down)) => read,
            };
            let at = started.unwrap_or_else(Instant::now);
            match read {
                Err(_) if !partial => return HeadRead::Closed(ConnectionEnd::IdleTimeout),
                Ok(Ok(0)) if !partial => return HeadRead::Closed(ConnectionEnd::ClientClosed),
                Err(_) => {
                    return HeadRead::Refused(
                        HttpError::HeaderTimeout {
                            after: self.limits.header_timeout,
                        },
                        at,
                    );
                }
                Ok(Ok(0)) => return HeadRead::Refused(HttpError::DownstreamClosed, at),
                Ok(Err(source)) => {
                    return HeadRead::Refused(HttpError::DownstreamIo { source }, at);
                }
                Ok(Ok(_)) => {}
            }
        }
    }
}
