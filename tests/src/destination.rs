//! A plain-HTTP FHIR stand-in for the protected destination: it counts every request it
//! receives and keeps each one's `X-Request-Id` (the sidecar sets it to the audit record's
//! correlation id), so a test can hold what arrived against what the audit store holds. Its
//! answer carries that id back (as the Patient's `meta.source`, `urn:fhirwall-request:<id>`),
//! so a client can tell which requests it got an answer to.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
};

/// What the answer's `meta.source` holds before the request's id.
pub const SOURCE: &str = "urn:fhirwall-request:";

/// The stand-in, serving on its own threads (one per connection) for the life of the test.
pub struct Destination {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    request_ids: Arc<Mutex<Vec<String>>>,
}

impl Destination {
    /// Listens on `ip` (a loopback address of its own, so the policy can protect it alone).
    #[must_use]
    pub fn start(ip: [u8; 4]) -> Self {
        let listener = TcpListener::bind(SocketAddr::from((ip, 0))).expect("bind destination");
        let addr = listener.local_addr().expect("bound");
        let accepted = Arc::new(AtomicUsize::new(0));
        let request_ids = Arc::new(Mutex::new(Vec::new()));
        let (count, ids) = (Arc::clone(&accepted), Arc::clone(&request_ids));
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (count, ids) = (Arc::clone(&count), Arc::clone(&ids));
                thread::spawn(move || serve(stream, &count, &ids));
            }
        });
        Self {
            addr,
            accepted,
            request_ids,
        }
    }

    /// Requests (and raw, non-HTTP connections that sent a line) that reached the destination.
    #[must_use]
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The `X-Request-Id` of every request received so far (requests without one are counted
    /// but not listed).
    #[must_use]
    pub fn request_ids(&self) -> Vec<String> {
        self.request_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Answers requests on one connection until the client closes or asks to close. A connection
/// that does not start with an HTTP method gets `direct` and is closed (a raw connect test).
fn serve(stream: TcpStream, count: &AtomicUsize, ids: &Mutex<Vec<String>>) {
    let Ok(write) = stream.try_clone() else {
        return;
    };
    let mut write = write;
    let mut read = BufReader::new(stream);
    loop {
        let Some(head) = read_head(&mut read) else {
            return;
        };
        // Counted once the head is complete: this request has been received.
        count.fetch_add(1, Ordering::SeqCst);
        if !head.starts_with("GET ") && !head.starts_with("POST ") {
            let _ = write.write_all(b"direct");
            return;
        }
        let id = header(&head, "x-request-id");
        if let Some(id) = id {
            ids.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(id.to_owned());
        }
        let length = header(&head, "content-length")
            .and_then(|l| l.parse::<u64>().ok())
            .unwrap_or(0);
        if std::io::copy(&mut (&mut read).take(length), &mut std::io::sink()).is_err() {
            return;
        }
        let close = header(&head, "connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let body = match id {
            Some(id) => serde_json::json!({
                "resourceType": "Patient",
                "id": "1",
                "meta": { "source": format!("{SOURCE}{id}") },
            })
            .to_string(),
            None => r#"{"resourceType":"Patient","id":"1"}"#.to_owned(),
        };
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\n{}\r\n",
            body.len(),
            if close { "Connection: close\r\n" } else { "" },
        );
        if write.write_all(response.as_bytes()).is_err()
            || write.write_all(body.as_bytes()).is_err()
        {
            return;
        }
        if close {
            return;
        }
    }
}

/// The request head up to the blank line, or `None` at end of stream. A first line that is not
/// a request line comes back alone (a raw probe is answered at once).
fn read_head(read: &mut BufReader<TcpStream>) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        match read.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) if line == "\r\n" || line == "\n" => return Some(head),
            Ok(_) => head.push_str(&line),
        }
        if !head.starts_with("GET ") && !head.starts_with("POST ") {
            return Some(head);
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}
