//! A workload for the kernel tests: joins a cgroup, optionally marks its socket, connects (TCP or
//! UDP) and reports what it saw as one JSON line on stdout. Exit status 0 even on connect
//! failure: the JSON says what happened.
//!
//! fw-probe [--cgroup DIR] [--mark N] [--udp] [--v6] [--wait] [--send TEXT] [--hold] ADDR
//!   --wait  print `ready <pid>` and wait for a line on stdin before connecting
//!   --hold  after connecting, print the result and keep the connection until stdin closes,
//!           then report whether the connection was reset meanwhile
//!   --repeat N  connect and close N times; report the median and p99 connect() latency
//!   --load  send the --send request again and again over keep-alive connections (reconnecting
//!           after any error) until a line or EOF on stdin; report the count of each status,
//!           a sample body per status, and the errors

use std::{
    io::{BufRead as _, Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
};

use serde_json::json;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

#[derive(Default)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "one flag per command-line switch"
)]
struct Args {
    cgroup: Option<String>,
    mark: Option<u32>,
    udp: bool,
    v6: bool,
    wait: bool,
    hold: bool,
    load: bool,
    send: Option<String>,
    repeat: Option<usize>,
    addr: Option<SocketAddr>,
}

fn parse_args() -> Args {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--cgroup" => args.cgroup = it.next(),
            "--mark" => args.mark = it.next().and_then(|m| m.parse().ok()),
            "--udp" => args.udp = true,
            "--v6" => args.v6 = true,
            "--wait" => args.wait = true,
            "--hold" => args.hold = true,
            "--load" => args.load = true,
            "--send" => args.send = it.next(),
            "--repeat" => args.repeat = it.next().and_then(|n| n.parse().ok()),
            other => args.addr = other.parse().ok(),
        }
    }
    args
}

fn main() {
    let args = parse_args();
    if let Some(dir) = &args.cgroup {
        std::fs::write(
            format!("{dir}/cgroup.procs"),
            std::process::id().to_string(),
        )
        .expect("joining the test cgroup");
    }
    if args.wait {
        println!("ready {}", std::process::id());
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
    }
    let addr = args.addr.expect("usage: fw-probe [options] ADDR");
    let result = match args.repeat {
        Some(n) => repeat(&args, addr, n),
        None if args.load => load::run(&args, addr),
        None if args.udp => udp(&args, addr),
        None => tcp(&args, addr),
    };
    println!("{result}");
}

mod load {
    //! `--load`: many small requests, as an interface engine sends them.

    use std::{
        collections::BTreeMap,
        io::{BufRead as _, BufReader, Read as _, Write as _},
        net::{SocketAddr, TcpStream},
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
        time::Duration,
    };

    use serde_json::json;
    use socket2::{Protocol, Type};

    use super::{Args, socket, target};

    pub fn run(args: &Args, addr: SocketAddr) -> String {
        let request = args.send.clone().unwrap_or_default();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
            flag.store(true, Ordering::SeqCst);
        });
        let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
        let mut samples: BTreeMap<u16, String> = BTreeMap::new();
        // The request ids the destination echoed in answers that reached this client.
        let mut answered: Vec<String> = Vec::new();
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        let mut conn: Option<BufReader<TcpStream>> = None;
        while !stop.load(Ordering::SeqCst) {
            let stream = match conn.take() {
                Some(c) => c,
                None => match connect(args, addr) {
                    Ok(c) => BufReader::new(c),
                    Err(e) => {
                        *errors.entry(format!("connect:{e}")).or_default() += 1;
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                },
            };
            match exchange(stream, &request) {
                Ok((status, body, stream)) => {
                    *statuses.entry(status).or_default() += 1;
                    answered.extend(echoed_id(&body));
                    samples.entry(status).or_insert(body);
                    conn = stream;
                }
                Err(e) => {
                    *errors.entry(format!("exchange:{e}")).or_default() += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        json!({"ok": true, "statuses": statuses, "samples": samples, "errors": errors, "answered": answered})
            .to_string()
    }

    /// The request id the test destination put into its answer (`meta.source`), if any.
    fn echoed_id(body: &str) -> Option<String> {
        let value: serde_json::Value = serde_json::from_str(body).ok()?;
        let source = value.pointer("/meta/source")?.as_str()?;
        source
            .strip_prefix(fhirwall_tests::destination::SOURCE)
            .map(str::to_owned)
    }

    fn connect(args: &Args, addr: SocketAddr) -> Result<TcpStream, i32> {
        let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(0);
        let s = socket(args, addr, Type::STREAM, Protocol::TCP).map_err(errno)?;
        s.connect(&target(args, addr)).map_err(errno)?;
        let stream: TcpStream = s.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(errno)?;
        Ok(stream)
    }

    /// One request and its response; the connection comes back unless the server closes it.
    fn exchange(
        mut stream: BufReader<TcpStream>,
        request: &str,
    ) -> Result<(u16, String, Option<BufReader<TcpStream>>), &'static str> {
        stream
            .get_mut()
            .write_all(request.as_bytes())
            .map_err(|_| "write")?;
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).map_err(|_| "read")? == 0 {
                return Err("eof");
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let status = head
            .strip_prefix("HTTP/1.1 ")
            .and_then(|h| h.get(..3))
            .and_then(|s| s.parse().ok())
            .ok_or("status")?;
        let header = |name: &str| {
            head.lines().skip(1).find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
        };
        let length: u64 = header("content-length")
            .and_then(|l| l.parse().ok())
            .ok_or("length")?;
        let mut body = String::new();
        (&mut stream)
            .take(length)
            .read_to_string(&mut body)
            .map_err(|_| "body")?;
        // Cut off before its end (the sidecar was killed mid-answer): not an answer.
        if body.len() as u64 != length {
            return Err("short body");
        }
        let close = header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
        Ok((status, body, (!close).then_some(stream)))
    }
}

fn socket(args: &Args, addr: SocketAddr, ty: Type, protocol: Protocol) -> std::io::Result<Socket> {
    let domain = if args.v6 || addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, ty, Some(protocol))?;
    if let Some(mark) = args.mark {
        socket.set_mark(mark)?;
    }
    Ok(socket)
}

/// `--v6` with an IPv4 address connects a dual-stack IPv6 socket to its IPv4-mapped form.
fn target(args: &Args, addr: SocketAddr) -> SockAddr {
    match addr {
        SocketAddr::V4(v4) if args.v6 => {
            SockAddr::from(SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()))
        }
        _ => SockAddr::from(addr),
    }
}

fn tcp(args: &Args, addr: SocketAddr) -> String {
    let socket = match socket(args, addr, Type::STREAM, Protocol::TCP) {
        Ok(s) => s,
        Err(e) => return failure("socket", &e),
    };
    if let Err(e) = socket.connect(&target(args, addr)) {
        return failure("connect", &e);
    }
    let mut stream: TcpStream = socket.into();
    let peer = stream
        .peer_addr()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let local = stream
        .local_addr()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let mut reply = String::new();
    let mut send_errno = None;
    if let Some(text) = &args.send {
        if let Err(e) = stream.write_all(text.as_bytes()) {
            send_errno = e.raw_os_error();
        }
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let _ = stream.read_to_string(&mut reply);
    }
    let connected =
        json!({"ok": true, "peer": peer, "local": local, "reply": reply, "send_errno": send_errno});
    if !args.hold {
        return connected.to_string();
    }
    println!("{connected}");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    let mut buf = [0u8; 16];
    let after = match stream.read(&mut buf) {
        Ok(0) => "eof".to_owned(),
        Ok(_) => "data".to_owned(),
        Err(e) => format!("error:{}", e.raw_os_error().unwrap_or(0)),
    };
    json!({"ok": true, "after": after}).to_string()
}

/// Connect latency over `n` connects (each closed at once), for the kernel benchmark.
fn repeat(args: &Args, addr: SocketAddr, n: usize) -> String {
    let mut nanos = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = match socket(args, addr, Type::STREAM, Protocol::TCP) {
            Ok(s) => s,
            Err(e) => return failure("socket", &e),
        };
        let start = std::time::Instant::now();
        if let Err(e) = socket.connect(&target(args, addr)) {
            return failure("connect", &e);
        }
        nanos.push(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    nanos.sort_unstable();
    let at = |percent: usize| {
        nanos
            .get((nanos.len().saturating_sub(1)) * percent / 100)
            .copied()
            .unwrap_or(0)
    };
    json!({"ok": true, "n": n, "median_ns": at(50), "p99_ns": at(99)}).to_string()
}

fn udp(args: &Args, addr: SocketAddr) -> String {
    let socket = match socket(args, addr, Type::DGRAM, Protocol::UDP) {
        Ok(s) => s,
        Err(e) => return failure("socket", &e),
    };
    let udp: UdpSocket = socket.into();
    match udp.send_to(b"probe", addr) {
        Ok(_) => json!({"ok": true}).to_string(),
        Err(e) => failure("sendto", &e),
    }
}

fn failure(call: &str, e: &std::io::Error) -> String {
    json!({"ok": false, "call": call, "errno": e.raw_os_error().unwrap_or(0)}).to_string()
}
