//! Upstream connections: the [`Upstreams`] trait the driver draws connections from, and
//! [`Pool`], a keep-alive pool over any [`Connector`] (plain TCP in tests, TLS/mTLS in the
//! sidecar).

use std::{
    collections::HashMap,
    future::Future,
    hash::Hash,
    io,
    pin::Pin,
    sync::{Mutex, PoisonError},
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection handed to the driver.
#[derive(Debug)]
pub struct Checkout<S> {
    /// The stream, ready for a request.
    pub stream: S,
    /// Whether it served an earlier request (a failure on it before any response byte may be a
    /// stale keep-alive connection rather than a real upstream failure).
    pub reused: bool,
}

/// Where the driver gets upstream connections and returns reusable ones.
pub trait Upstreams: Sync {
    /// Identifies an upstream (the handler returns it in [`Dispatch::Forward`](super::Dispatch)).
    type Key: Send + Sync;
    /// The connection type.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send;

    /// A connection to `key`: a pooled idle one or a new one. The driver bounds the time this
    /// takes with [`Limits::connect_timeout`](super::Limits::connect_timeout).
    fn checkout(
        &self,
        key: &Self::Key,
    ) -> impl Future<Output = io::Result<Checkout<Self::Stream>>> + Send;

    /// Gives back a connection that just finished a complete response and may be reused.
    fn checkin(&self, key: &Self::Key, stream: Self::Stream);
}

/// Opens new upstream connections (TCP, then TLS/mTLS in the sidecar).
pub trait Connector: Send + Sync {
    /// Identifies an upstream.
    type Key: Clone + Eq + Hash + Send + Sync;
    /// The connection type.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send;

    /// Opens a connection to `key`, handshakes included.
    fn connect(&self, key: &Self::Key) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// Pool limits.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Idle connections kept per upstream; the oldest go first.
    pub max_idle_per_key: usize,
    /// An idle connection older than this is closed instead of reused.
    pub idle_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_idle_per_key: 32,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

struct Idle<S> {
    stream: S,
    since: Instant,
}

/// Idle connections per upstream, most recent last.
type IdleMap<K, S> = HashMap<K, Vec<Idle<S>>>;

/// A keep-alive pool: per-upstream stacks of idle connections (most recent first, so the pool
/// shrinks back by idle timeout after a burst), bounded in count and age.
pub struct Pool<C: Connector> {
    connector: C,
    config: PoolConfig,
    idle: Mutex<IdleMap<C::Key, C::Stream>>,
}

impl<C: Connector> Pool<C> {
    /// A pool over `connector`.
    pub fn new(connector: C, config: PoolConfig) -> Self {
        Self {
            connector,
            config,
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// The connector new connections come from.
    pub fn connector(&self) -> &C {
        &self.connector
    }

    /// Idle connections currently held for `key`.
    pub fn idle_count(&self, key: &C::Key) -> usize {
        self.lock().get(key).map_or(0, Vec::len)
    }

    /// Closes idle connections past their timeout (call it from a periodic task; checkout and
    /// checkin also evict lazily).
    pub fn purge_expired(&self) {
        let timeout = self.config.idle_timeout;
        let mut idle = self.lock();
        for stack in idle.values_mut() {
            stack.retain(|c| c.since.elapsed() < timeout);
        }
        idle.retain(|_, stack| !stack.is_empty());
    }

    /// The lock is never held across an await or a panic-prone call; a poisoned map is still
    /// consistent (only whole entries are pushed and popped), so it is used as is.
    fn lock(&self) -> std::sync::MutexGuard<'_, IdleMap<C::Key, C::Stream>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take_idle(&self, key: &C::Key) -> Option<C::Stream> {
        let mut idle = self.lock();
        let stack = idle.get_mut(key)?;
        while let Some(mut conn) = stack.pop() {
            if conn.since.elapsed() < self.config.idle_timeout && is_quiet(&mut conn.stream) {
                return Some(conn.stream);
            }
        }
        None
    }
}

impl<C: Connector> Upstreams for Pool<C> {
    type Key = C::Key;
    type Stream = C::Stream;

    async fn checkout(&self, key: &C::Key) -> io::Result<Checkout<C::Stream>> {
        if let Some(stream) = self.take_idle(key) {
            return Ok(Checkout {
                stream,
                reused: true,
            });
        }
        let stream = self.connector.connect(key).await?;
        Ok(Checkout {
            stream,
            reused: false,
        })
    }

    fn checkin(&self, key: &C::Key, stream: C::Stream) {
        if self.config.max_idle_per_key == 0 {
            return;
        }
        let timeout = self.config.idle_timeout;
        let mut idle = self.lock();
        let stack = idle.entry(key.clone()).or_default();
        stack.retain(|c| c.since.elapsed() < timeout);
        if stack.len() >= self.config.max_idle_per_key {
            stack.remove(0);
        }
        stack.push(Idle {
            stream,
            since: Instant::now(),
        });
    }
}

/// Whether an idle connection is still open and silent. A readable idle connection is either
/// closed by the upstream (EOF, error) or carries bytes nobody asked for; both are unusable.
fn is_quiet<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    matches!(Pin::new(stream).poll_read(&mut cx, &mut buf), Poll::Pending)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncWriteExt, DuplexStream, duplex};

    use super::*;

    /// Hands out duplex streams and keeps the far ends so the test can close or write to them.
    #[derive(Default)]
    struct Pairs {
        made: AtomicUsize,
        far: Mutex<Vec<DuplexStream>>,
    }

    impl Connector for Pairs {
        type Key = &'static str;
        type Stream = DuplexStream;

        async fn connect(&self, _key: &&'static str) -> io::Result<DuplexStream> {
            self.made.fetch_add(1, Ordering::SeqCst);
            let (near, far) = duplex(64);
            self.far
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(far);
            Ok(near)
        }
    }

    #[tokio::test]
    async fn reuses_quiet_connections_and_drops_dead_ones() {
        let pool = Pool::new(
            Pairs::default(),
            PoolConfig {
                max_idle_per_key: 2,
                idle_timeout: Duration::from_mins(1),
            },
        );
        let first = pool.checkout(&"a").await.expect("connect");
        assert!(!first.reused);
        pool.checkin(&"a", first.stream);
        let again = pool.checkout(&"a").await.expect("reuse");
        assert!(again.reused, "a quiet idle connection is reused");
        assert_eq!(pool.connector.made.load(Ordering::SeqCst), 1);

        pool.checkin(&"a", again.stream);
        // The upstream closes the idle connection: it must not be handed out.
        pool.connector.far.lock().expect("not poisoned").clear();
        let fresh = pool.checkout(&"a").await.expect("connect");
        assert!(!fresh.reused);

        pool.checkin(&"a", fresh.stream);
        // Unsolicited bytes on an idle connection: unusable too.
        let mut far = pool
            .connector
            .far
            .lock()
            .expect("not poisoned")
            .pop()
            .expect("far end");
        far.write_all(b"HTTP/1.1 200 OK\r\n\r\n")
            .await
            .expect("write");
        assert!(!pool.checkout(&"a").await.expect("connect").reused);
        assert_eq!(pool.connector.made.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn bounds_idle_count_per_key_and_age() {
        let pool = Pool::new(
            Pairs::default(),
            PoolConfig {
                max_idle_per_key: 2,
                idle_timeout: Duration::from_mins(1),
            },
        );
        let mut streams = Vec::new();
        for _ in 0..3 {
            streams.push(pool.checkout(&"a").await.expect("connect").stream);
        }
        for s in streams {
            pool.checkin(&"a", s);
        }
        assert_eq!(pool.idle_count(&"a"), 2);
        assert_eq!(pool.idle_count(&"b"), 0);

        let short = Pool::new(
            Pairs::default(),
            PoolConfig {
                max_idle_per_key: 2,
                idle_timeout: Duration::ZERO,
            },
        );
        let s = short.checkout(&"a").await.expect("connect").stream;
        short.checkin(&"a", s);
        assert!(
            !short.checkout(&"a").await.expect("connect").reused,
            "expired idle connection reused"
        );
        short.purge_expired();
        assert_eq!(short.idle_count(&"a"), 0);
    }
}
