//! A TCP connection that is TLS or plain, as one `AsyncRead + AsyncWrite` type the HTTP engine
//! can serve (downstream) or pool (upstream).

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{client, server};

/// TLS over TCP, or plain TCP. The TLS state is boxed: it is large (a rustls connection), and
/// the plain variant should not pay for it.
#[derive(Debug)]
pub enum MaybeTls<T> {
    Tls(Box<T>),
    Plain(TcpStream),
}

/// The application's connection, after protocol detection and TLS termination.
pub type Downstream = MaybeTls<server::TlsStream<TcpStream>>;

/// The sidecar's connection to an upstream, TLS (verified, maybe mTLS) or plain.
pub type UpstreamStream = MaybeTls<client::TlsStream<TcpStream>>;

impl<T> MaybeTls<T> {
    /// Whether the connection is TLS.
    #[must_use]
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }
}

impl Downstream {
    /// The TCP connection underneath (peer address, socket options).
    #[must_use]
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Tls(tls) => tls.get_ref().0,
            Self::Plain(tcp) => tcp,
        }
    }

    /// The SNI the client sent, if TLS and any.
    #[must_use]
    pub fn server_name(&self) -> Option<&str> {
        match self {
            Self::Tls(tls) => tls.get_ref().1.server_name(),
            Self::Plain(_) => None,
        }
    }
}

impl UpstreamStream {
    /// The TCP connection underneath (socket options such as the mark).
    #[must_use]
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Tls(tls) => tls.get_ref().0,
            Self::Plain(tcp) => tcp,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for MaybeTls<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for MaybeTls<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
            Self::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tls(tls) => tls.is_write_vectored(),
            Self::Plain(tcp) => tcp.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
        }
    }
}
