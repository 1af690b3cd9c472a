//! The load client: keep-alive TLS connections sending small FHIR GETs, one thread each with
//! blocking I/O, either as fast as answers come back (closed loop) or on a fixed schedule (open
//! loop). In the open loop the latency of a request is measured from the time it was *scheduled*,
//! not from when it could be sent, so a slow answer delays the requests behind it and that delay
//! is counted: no coordinated omission (the wrk2 method).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, StreamOwned,
    pki_types::{CertificateDer, ServerName, pem::PemObject as _},
};
use serde_json::{Value, json};

/// Where the client connects and how it checks the server.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// SNI and the name verified in the server's certificate.
    pub server_name: String,
    /// PEM file of the CA that signed the server's certificate.
    pub ca: PathBuf,
}

/// One load run.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub connections: usize,
    /// Requests per second over all connections; `None` for a closed loop.
    pub rate: Option<f64>,
    /// Measured part of the run, after the warm-up.
    pub duration: Duration,
    pub warmup: Duration,
    pub path: String,
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

fn config(ca: &PathBuf) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("{}", ca.display()))? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS connection with its handshake done.
fn connect(target: &Target, config: &Arc<ClientConfig>) -> anyhow::Result<Tls> {
    let tcp = TcpStream::connect(target.addr).with_context(|| format!("{}", target.addr))?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(target.server_name.clone())?;
    let conn = ClientConnection::new(Arc::clone(config), name)?;
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// Sends one request and reads its response (which must carry `Content-Length`); returns the
/// status. `buf` keeps bytes between calls.
fn exchange(tls: &mut Tls, request: &[u8], buf: &mut Vec<u8>) -> anyhow::Result<u16> {
    tls.write_all(request)?;
    tls.flush()?;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).context("response head")?;
            let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .context("a response without Content-Length")?;
            let total = end + 4 + length;
            while buf.len() < total {
                let n = tls.read(&mut chunk)?;
                if n == 0 {
                    bail!("closed mid-response");
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..total);
            return Ok(status);
        }
        let n = tls.read(&mut chunk)?;
        if n == 0 {
            bail!("closed before a response");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Asks the kernel to wake sleeping threads on time (the default slack is 50 us), so the open
/// loop sends when it planned to.
fn tight_timers() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and touches only this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1_u64, 0_u64, 0_u64, 0_u64);
    }
}

/// What one connection measured.
#[derive(Default)]
struct Tally {
    latencies: Vec<u64>,
    completed: u64,
    errors: u64,
}

/// Runs the load and returns a JSON summary: requests completed in the measured window,
/// requests per second, latency percentiles in microseconds, errors.
pub fn run(target: &Target, spec: &LoadSpec) -> anyhow::Result<Value> {
    let config = config(&target.ca)?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: application/fhir+json\r\n\r\n",
        spec.path, target.server_name
    );
    // Connections are opened (and handshaken) before the clock starts.
    let connections = (0..spec.connections)
        .map(|_| connect(target, &config))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let start = Instant::now() + Duration::from_millis(50);
    let measured_from = start + spec.warmup;
    let stop = measured_from + spec.duration;
    let threads: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(index, tls)| {
            let (spec, request, target, config) = (
                spec.clone(),
                request.clone(),
                target.clone(),
                Arc::clone(&config),
            );
            thread::spawn(move || {
                let plan = Plan {
                    index,
                    start,
                    measured_from,
                    stop,
                };
                drive(tls, &plan, &spec, request.as_bytes(), &target, &config)
            })
        })
        .collect();
    let mut all = Tally::default();
    for t in threads {
        let tally = t
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        all.latencies.extend(tally.latencies);
        all.completed += tally.completed;
        all.errors += tally.errors;
    }
    Ok(summary(all, spec.duration))
}

struct Plan {
    index: usize,
    start: Instant,
    measured_from: Instant,
    stop: Instant,
}

#[expect(
    clippy::cast_precision_loss,
    reason = "connection counts and indices are small: exact in f64"
)]
fn drive(
    mut tls: Tls,
    plan: &Plan,
    spec: &LoadSpec,
    request: &[u8],
    target: &Target,
    config: &Arc<ClientConfig>,
) -> Tally {
    tight_timers();
    let mut tally = Tally::default();
    let mut buf = Vec::with_capacity(16 * 1024);
    let interval = spec
        .rate
        .map(|r| Duration::from_secs_f64(spec.connections as f64 / r));
    let mut scheduled = plan.start
        + interval.map_or(Duration::ZERO, |i| {
            i.mul_f64(plan.index as f64 / spec.connections as f64)
        });
    loop {
        let now = Instant::now();
        let due = if interval.is_some() { scheduled } else { now };
        if due >= plan.stop {
            break;
        }
        if due > now {
            thread::sleep(due - now);
        }
        let sent = if interval.is_some() {
            due
        } else {
            Instant::now()
        };
        let ok = matches!(exchange(&mut tls, request, &mut buf), Ok(200));
        let done = Instant::now();
        if sent >= plan.measured_from && done <= plan.stop + Duration::from_secs(5) {
            if ok {
                tally.completed += 1;
                tally
                    .latencies
                    .push(u64::try_from((done - sent).as_nanos()).unwrap_or(u64::MAX));
            } else {
                tally.errors += 1;
            }
        }
        if !ok {
            buf.clear();
            match connect(target, config) {
                Ok(fresh) => tls = fresh,
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
        if let Some(i) = interval {
            scheduled += i;
        }
    }
    tally
}

#[expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "sample counts and nanosecond latencies are far below 2^52; the index is in range"
)]
fn summary(mut all: Tally, window: Duration) -> Value {
    all.latencies.sort_unstable();
    let at = |q: f64| {
        if all.latencies.is_empty() {
            return 0.0;
        }
        let i = ((all.latencies.len() - 1) as f64 * q).round() as usize;
        all.latencies[i] as f64 / 1000.0
    };
    json!({
        "completed": all.completed,
        "errors": all.errors,
        "rps": all.completed as f64 / window.as_secs_f64(),
        "p50_us": at(0.50),
        "p90_us": at(0.90),
        "p99_us": at(0.99),
        "p999_us": at(0.999),
        "max_us": at(1.0),
    })
}

/// Opens `count` TLS connections, sends one request on each (so the proxy has served it), and
/// keeps them all open and idle until stdin closes. Prints `{"opened": n}` once they are up.
pub fn hold_idle(target: &Target, count: usize, path: &str) -> anyhow::Result<()> {
    let config = config(&target.ca)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n",
        target.server_name
    );
    let mut held = Vec::with_capacity(count);
    let mut buf = Vec::new();
    for _ in 0..count {
        let mut tls = connect(target, &config)?;
        let status = exchange(&mut tls, request.as_bytes(), &mut buf)?;
        if status != 200 {
            bail!("status {status} on an idle-to-be connection");
        }
        held.push(tls);
    }
    println!("{}", json!({ "opened": held.len() }));
    std::io::stdout().flush()?;
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(held);
    Ok(())
}
