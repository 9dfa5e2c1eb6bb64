//! TLS end to end: veer terminating HTTPS (SNI among several certificates
//! and a wildcard, unknown names answered or refused, ALPN, mTLS, session
//! resumption, certificates rotated under load and broken pairs refused),
//! and veer speaking TLS to backends (trusted and untrusted CAs, SNI, h2 by
//! ALPN, client certificates, health checks). Certificates are made by the
//! tests (rcgen); clients are rustls, and Debian's `curl` and `openssl`.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use veer::server::RunningServer;
use veer::tls::{read_certificates, read_private_key};
use veer_data_plane::tls::testing::TestPki;
use veer_tests::operator::{ConfigFile, admin, json, start_from};

/// A client config trusting `pki`'s CA, offering `alpn`, presenting
/// `identity` (cert, key) if given.
fn client_config(ca: &Path, alpn: &[&[u8]], identity: Option<&(PathBuf, PathBuf)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in read_certificates(ca).unwrap() {
        roots.add(certificate).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(veer::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            builder.with_client_auth_cert(read_certificates(cert).unwrap(), read_private_key(key).unwrap()).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS connection to `address` asking for `sni`.
async fn connect(
    address: SocketAddr,
    sni: &str,
    config: &Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(address).await?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp).await
}

/// The leaf certificate the server presented equals the one in `file`.
fn served(stream: &TlsStream<TcpStream>, file: &Path) -> bool {
    let presented = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    presented == read_certificates(file).unwrap()[0]
}

/// `GET path` over an established TLS stream, in HTTP/2 if ALPN chose it.
async fn get_over(stream: TlsStream<TcpStream>, host: &str, path: &str) -> (StatusCode, String) {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let request =
        Request::get(format!("https://{host}{path}")).header("host", host).body(Full::new(Bytes::new())).unwrap();
    let response = if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        let mut request = request;
        *request.uri_mut() = path.parse().unwrap();
        sender.send_request(request).await.unwrap()
    };
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A backend that answers every request with what it saw: the HTTP version,
/// `X-Forwarded-Proto`, and whether the client showed a certificate. Plain,
/// or TLS with `tls`.
struct Backend {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (tls, counter) = (tls.clone(), counter.clone());
                tokio::spawn(async move {
                    match tls {
                        None => serve_backend(tcp, false, counter).await,
                        Some(config) => {
                            let Ok(stream) = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await else { return };
                            let client_cert = stream.get_ref().1.peer_certificates().is_some();
                            serve_backend(stream, client_cert, counter).await
                        }
                    }
                });
            }
        });
        Backend { addr, requests, task }
    }

    /// A TLS config for `pki`'s certificate for `name`, requiring a client
    /// certificate from `client_ca` if given.
    fn tls(pki: &TestPki, file: &str, names: &[&str], client_ca: Option<&Path>) -> Arc<rustls::ServerConfig> {
        let (cert, key) = pki.server(file, names, 30);
        let builder = rustls::ServerConfig::builder_with_provider(veer::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => {
                let roots = Arc::new(veer::tls::read_roots(ca).unwrap());
                let verifier =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(roots, veer::tls::provider())
                        .build()
                        .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config =
            builder.with_single_cert(read_certificates(&cert).unwrap(), read_private_key(&key).unwrap()).unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

async fn serve_backend<I>(io: I, client_cert: bool, counter: Arc<AtomicU64>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let counter = counter.clone();
        async move {
            if request.uri().path() != "/healthz" {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            let proto = request.headers().get("x-forwarded-proto").map(|v| v.to_str().unwrap().to_string());
            let seen = serde_json::json!({
                "version": format!("{:?}", request.version()),
                "proto": proto,
                "client_cert": client_cert,
            });
            Ok::<_, hyper::Error>(http::Response::new(Full::new(Bytes::from(seen.to_string()))))
        }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// A config: veer on 127.0.0.1:0 with `listen_tls` (YAML under it, indented
/// two spaces) in front of one plain backend, health checks off.
fn https_config(backend: SocketAddr, listen_tls: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nhealth:\n  check:\n    enabled: false\nproxy:\n  workers: 2\nreload:\n  watch: false\npicker:\n  source: native:round-robin\nbackends:\n  - name: b1\n    address: {backend}\nlisten_tls:\n{listen_tls}"
    )
}

fn certificate_entry(pair: &(PathBuf, PathBuf)) -> String {
    format!("    - cert: {}\n      key: {}\n", pair.0.display(), pair.1.display())
}

/// The value of the `veer_tls_handshakes_total` series for `result`.
async fn handshakes(server: &RunningServer, result: &str) -> u64 {
    let metrics = admin(server, "GET", "/metrics", "").await.body;
    metrics
        .lines()
        .find(|line| line.starts_with("veer_tls_handshakes_total{") && line.contains(&format!("result=\"{result}\"")))
        .and_then(|line| line.rsplit(' ').next())
        .map_or(0, |value| value.parse().unwrap())
}

#[tokio::test]
async fn sni_chooses_among_three_certificates_and_a_wildcard_and_unknown_names_get_the_default() {
    let pki = TestPki::new("sni");
    let backend = Backend::start(None).await;
    let pairs = [
        pki.server("a", &["a.test"], 30),
        pki.server("b", &["b.test"], 30),
        pki.server("c", &["c.test"], 30),
        pki.server("wild", &["*.wild.test"], 30),
    ];
    let mut tls = String::from("  certificates:\n");
    for pair in &pairs {
        tls.push_str(&certificate_entry(pair));
    }
    let file = ConfigFile::new("tls", "sni");
    file.write(&https_config(backend.addr, &tls));
    let server = start_from(&file).await;
    let client = client_config(pki.ca(), &[b"http/1.1"], None);
    for (sni, pair) in [("a.test", &pairs[0]), ("b.test", &pairs[1]), ("c.test", &pairs[2]), ("x.wild.test", &pairs[3])]
    {
        let stream = connect(server.proxy_addr, sni, &client).await.unwrap();
        assert!(served(&stream, &pair.0), "{sni} gets its own certificate");
        let (status, body) = get_over(stream, sni, "/").await;
        assert_eq!(status, StatusCode::OK);
        let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(seen["proto"], "https", "the backend hears the client came over HTTPS");
    }
    // A name no certificate has, and no name at all: the first certificate (a real client shows it).
    for args in [&["-servername", "unknown.test"][..], &["-noservername"][..]] {
        let output = openssl_s_client(server.proxy_addr, pki.ca(), args).await;
        assert!(output.contains("CN=a.test") || output.contains("CN = a.test"), "{args:?}: {output}");
    }
    assert!(handshakes(&server, "full").await >= 6);
    // `/listeners` shows what each listener serves, with the time left.
    let listeners = json(&admin(&server, "GET", "/listeners", "").await);
    let certificates = listeners[0]["tls"]["certificates"].as_array().unwrap();
    assert_eq!(certificates.len(), 4);
    assert_eq!(certificates[3]["certificate"]["names"][0], "*.wild.test");
    assert!(certificates[0]["expires_in_seconds"].as_i64().unwrap() > 29 * 86_400);
    server.shutdown().await;
}

/// `openssl s_client` against `address` with `args`, its output (stdout and stderr).
async fn openssl_s_client(address: SocketAddr, ca: &Path, args: &[&str]) -> String {
    let output = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &address.to_string(), "-CAfile", &ca.display().to_string()])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("openssl runs (Debian package openssl; scripts/test.sh installs it)");
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test]
async fn unknown_names_can_be_refused_and_the_refusal_is_counted() {
    let pki = TestPki::new("refuse");
    let backend = Backend::start(None).await;
    let pair = pki.server("only", &["only.test"], 30);
    let file = ConfigFile::new("tls", "refuse");
    file.write(&https_config(
        backend.addr,
        &format!("  unknown_sni: refuse\n  certificates:\n{}", certificate_entry(&pair)),
    ));
    let server = start_from(&file).await;
    let client = client_config(pki.ca(), &[b"http/1.1"], None);
    assert!(connect(server.proxy_addr, "other.test", &client).await.is_err());
    let output = openssl_s_client(server.proxy_addr, pki.ca(), &["-noservername"]).await;
    assert!(!output.contains("CN=only.test") && !output.contains("CN = only.test"), "{output}");
    let stream = connect(server.proxy_addr, "only.test", &client).await.unwrap();
    assert_eq!(get_over(stream, "only.test", "/").await.0, StatusCode::OK);
    assert_eq!(handshakes(&server, "unknown_sni").await, 2);
    server.shutdown().await;
}

#[tokio::test]
async fn alpn_negotiates_h2_or_http1_and_sessions_resume() {
    let pki = TestPki::new("alpn");
    let backend = Backend::start(None).await;
    let pair = pki.server("site", &["site.test"], 30);
    let file = ConfigFile::new("tls", "alpn");
    file.write(&https_config(backend.addr, &format!("  certificates:\n{}", certificate_entry(&pair))));
    let server = start_from(&file).await;
    for (offered, expected) in [(&[&b"h2"[..], b"http/1.1"][..], "h2"), (&[&b"http/1.1"[..]][..], "http/1.1")] {
        let client = client_config(pki.ca(), offered, None);
        let stream = connect(server.proxy_addr, "site.test", &client).await.unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(expected.as_bytes()));
        let (status, body) = get_over(stream, "site.test", "/").await;
        assert_eq!(status, StatusCode::OK, "{expected}: {body}");
    }
    // A second connection with the same client resumes its session (tickets).
    let client = client_config(pki.ca(), &[b"http/1.1"], None);
    let first = connect(server.proxy_addr, "site.test", &client).await.unwrap();
    assert_eq!(get_over(first, "site.test", "/").await.0, StatusCode::OK);
    let second = connect(server.proxy_addr, "site.test", &client).await.unwrap();
    assert_eq!(second.get_ref().1.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
    assert_eq!(get_over(second, "site.test", "/").await.0, StatusCode::OK);
    assert!(handshakes(&server, "resumed").await >= 1);
    // Resumption turned off: every connection pays a full handshake.
    file.write(&https_config(
        backend.addr,
        &format!("  session_resumption: false\n  certificates:\n{}", certificate_entry(&pair)),
    ));
    assert_eq!(admin(&server, "POST", "/reload", "").await.status, StatusCode::OK);
    let resumed = handshakes(&server, "resumed").await;
    for _ in 0..2 {
        let stream = connect(server.proxy_addr, "site.test", &client).await.unwrap();
        assert_eq!(stream.get_ref().1.handshake_kind(), Some(rustls::HandshakeKind::Full));
        assert_eq!(get_over(stream, "site.test", "/").await.0, StatusCode::OK);
    }
    assert_eq!(handshakes(&server, "resumed").await, resumed);
    // curl, a real client: HTTP/2 by ALPN, the CA verified.
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "--http2", "-o", "-", "-w", "\n%{http_version} %{http_code}"])
        .args(["--cacert", &pki.ca().display().to_string()])
        .args(["--resolve", &format!("site.test:{}:127.0.0.1", server.proxy_addr.port())])
        .arg(format!("https://site.test:{}/", server.proxy_addr.port()))
        .output()
        .await
        .expect("curl runs (Debian package curl; scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.ends_with("2 200"), "curl: {text} {}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("\"proto\":\"https\""), "{text}");
    server.shutdown().await;
}

#[tokio::test]
async fn client_certificates_are_required_and_verified() {
    let pki = TestPki::new("mtls");
    let strangers = TestPki::new("mtls-strangers");
    let backend = Backend::start(None).await;
    let pair = pki.server("site", &["site.test"], 30);
    let file = ConfigFile::new("tls", "mtls");
    file.write(&https_config(
        backend.addr,
        &format!("  client_auth:\n    ca: {}\n  certificates:\n{}", pki.ca().display(), certificate_entry(&pair)),
    ));
    let server = start_from(&file).await;
    let trusted = pki.client("alice", "alice");
    let client = client_config(pki.ca(), &[b"http/1.1"], Some(&trusted));
    let stream = connect(server.proxy_addr, "site.test", &client).await.unwrap();
    assert_eq!(get_over(stream, "site.test", "/").await.0, StatusCode::OK);
    // Without a certificate, or with one from another CA: the handshake fails
    // (TLS 1.3 reports it after the client's side completes, at the first read).
    let untrusted = strangers.client("mallory", "mallory");
    for identity in [None, Some(&untrusted)] {
        let client = client_config(pki.ca(), &[b"http/1.1"], identity);
        if let Ok(mut stream) = connect(server.proxy_addr, "site.test", &client).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = stream.write_all(b"GET / HTTP/1.1\r\nhost: site.test\r\n\r\n").await;
            let mut answer = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await.unwrap();
            assert!(
                read.is_err() || answer.is_empty(),
                "{identity:?} was served: {}",
                String::from_utf8_lossy(&answer)
            );
        }
    }
    assert_eq!(backend.requests.load(Ordering::SeqCst), 1, "only the trusted client reached the backend");
    assert_eq!(handshakes(&server, "no_client_certificate").await, 1);
    assert_eq!(handshakes(&server, "bad_client_certificate").await, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn certificates_rotate_under_load_without_a_failed_request_and_broken_pairs_are_refused() {
    let pki = TestPki::new("rotate");
    let backend = Backend::start(None).await;
    let pair = pki.server("site", &["site.test"], 30);
    let file = ConfigFile::new("tls", "rotate");
    let text = https_config(backend.addr, &format!("  certificates:\n{}", certificate_entry(&pair)))
        .replace("reload:\n  watch: false", "reload:\n  watch: true\n  poll_interval: 100ms");
    file.write(&text);
    let server = start_from(&file).await;
    // Every connection a full handshake: a resumed session shows no certificate.
    let mut client = client_config(pki.ca(), &[b"http/1.1"], None).as_ref().clone();
    client.resumption = rustls::client::Resumption::disabled();
    let client = Arc::new(client);
    // An established keep-alive connection, to use across the rotations.
    let kept = connect(server.proxy_addr, "site.test", &client).await.unwrap();
    let (mut kept_sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(kept)).await.unwrap();
    tokio::spawn(connection);
    // Load: new connections (a full handshake each) and requests, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (stop, ok, failed, client, address) =
            (stop.clone(), ok.clone(), failed.clone(), client.clone(), server.proxy_addr);
        load.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let verdict = match connect(address, "site.test", &client).await {
                    Ok(stream) => get_over(stream, "site.test", "/").await.0 == StatusCode::OK,
                    Err(_) => false,
                };
                if verdict { &ok } else { &failed }.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    let rotated = Arc::new(pki);
    let mut served_names = Vec::new();
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let name = format!("r{round}.site.test");
        rotated.server("site", &["site.test", &name], 30);
        // New handshakes get the new certificate within a few polls.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stream = connect(server.proxy_addr, "site.test", &client).await.unwrap();
            if served(&stream, &pair.0)
                && server.proxy.listener_tls()["default"].certificates()[0].names.contains(&name)
            {
                served_names.push(name.clone());
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "round {round}: the new certificate is not served");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The connection made before any rotation still works.
        let request = Request::get("/").header("host", "site.test").body(Full::new(Bytes::new())).unwrap();
        assert_eq!(kept_sender.send_request(request).await.unwrap().status(), StatusCode::OK, "round {round}");
    }
    // A key that is not the certificate's: refused, the last good pair serves on.
    let before = server.proxy.listener_tls()["default"].certificates();
    let (_, other_key) = rotated.server("other", &["other.test"], 30);
    std::fs::copy(&other_key, &pair.1).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.proxy.listener_tls()["default"].certificates(), before);
    stop.store(true, Ordering::SeqCst);
    while load.join_next().await.is_some() {}
    assert_eq!(failed.load(Ordering::SeqCst), 0, "no request failed ({} succeeded)", ok.load(Ordering::SeqCst));
    assert!(ok.load(Ordering::SeqCst) > 20, "the load ran: {}", ok.load(Ordering::SeqCst));
    assert_eq!(served_names.len(), 3);
    // A reload naming an expired certificate is refused with the file named; the old one serves on.
    let expired = rotated.server("expired", &["site.test"], -1);
    file.write(
        &text
            .replace(&pair.0.display().to_string(), &expired.0.display().to_string())
            .replace(&pair.1.display().to_string(), &expired.1.display().to_string()),
    );
    let answer = admin(&server, "POST", "/reload", "").await;
    assert_ne!(answer.status, StatusCode::OK);
    assert!(answer.body.contains("expired.pem") && answer.body.contains("expired"), "{}", answer.body);
    let stream = connect(server.proxy_addr, "site.test", &client).await.unwrap();
    assert_eq!(get_over(stream, "site.test", "/").await.0, StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test]
async fn plain_listeners_redirect_to_https_and_forwarded_proto_is_not_spoofable() {
    let backend = Backend::start(None).await;
    let file = ConfigFile::new("tls", "redirect");
    file.write(&format!(
        "listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nhealth:\n  check:\n    enabled: false\nreload:\n  watch: false\nupstreams:\n  - name: app\n    picker: {{ source: native:round-robin }}\n    backends: [{{ name: b1, address: {} }}]\nroutes:\n  - name: to-https\n    match: {{ path: {{ prefix: /secure/ }} }}\n    redirect: {{ scheme: https, port: 8443, status: 308 }}\n  - name: app\n    forward: app\n",
        backend.addr
    ));
    let server = start_from(&file).await;
    let answer = veer_tests::send(
        server.proxy_addr,
        Request::get("/secure/page?x=1").header("host", "shop.test").body(Full::new(Bytes::new())).unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(answer.headers["location"], "https://shop.test:8443/secure/page?x=1");
    let answer = veer_tests::send(
        server.proxy_addr,
        Request::get("/")
            .header("host", "shop.test")
            .header("x-forwarded-proto", "https")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    let seen: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(seen["proto"], "http", "a plain-HTTP client cannot claim HTTPS");
    server.shutdown().await;
}

/// A config: veer (plain) in front of one upstream `secure` of `backends`,
/// with `tls` (YAML under the upstream's `tls:`, indented six spaces).
fn upstream_tls_config(backends: &[(&str, SocketAddr, &str)], tls: &str, checks: bool) -> String {
    let mut text = format!(
        "listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nhealth:\n  check:\n    enabled: {checks}\n    interval_ms: 100\n    path: /healthz\n    timeout_ms: 1000\nreload:\n  watch: false\nupstreams:\n  - name: secure\n    picker: {{ source: native:round-robin }}\n    tls:\n{tls}    backends:\n"
    );
    for (name, address, protocol) in backends {
        text.push_str(&format!("      - {{ name: {name}, address: {address}, protocol: {protocol} }}\n"));
    }
    text
}

#[tokio::test]
async fn upstream_tls_verifies_the_backend_against_the_configured_ca_and_speaks_h2_by_alpn() {
    let pki = TestPki::new("upstream");
    let strangers = TestPki::new("upstream-strangers");
    let h1 = Backend::start(Some(Backend::tls(&pki, "backend", &["backend.test"], None))).await;
    let h2 = Backend::start(Some(Backend::tls(&pki, "backend2", &["backend.test"], None))).await;
    let ca = pki.ca().display().to_string();
    let file = ConfigFile::new("tls", "upstream");
    file.write(&upstream_tls_config(
        &[("tls1", h1.addr, "http1"), ("tls2", h2.addr, "http2")],
        &format!("      server_name: backend.test\n      ca: {ca}\n"),
        false,
    ));
    let server = start_from(&file).await;
    let mut versions = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let answer = veer_tests::get(server.proxy_addr, "/").await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        let seen: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        versions.insert(seen["version"].as_str().unwrap().to_string());
    }
    assert_eq!(versions, ["HTTP/1.1".to_string(), "HTTP/2.0".to_string()].into(), "both protocols over TLS");
    // The same backends, trusted through another CA: refused, and blamed on the backend.
    file.write(&upstream_tls_config(
        &[("tls1", h1.addr, "http1")],
        &format!("      server_name: backend.test\n      ca: {}\n", strangers.ca().display()),
        false,
    ));
    assert_eq!(admin(&server, "POST", "/reload", "").await.status, StatusCode::OK);
    let answer = veer_tests::get(server.proxy_addr, "/").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.body);
    assert!(answer.body.contains("certificate") || answer.body.contains("UnknownIssuer"), "{}", answer.body);
    assert!(server.proxy.metrics().failures_of("backend") > 0, "an untrusted certificate is the backend's failure");
    assert_eq!(server.proxy.metrics().failures_of("client"), 0);
    // A name the certificate does not have: refused too.
    file.write(&upstream_tls_config(
        &[("tls1", h1.addr, "http1")],
        &format!("      server_name: elsewhere.test\n      ca: {ca}\n"),
        false,
    ));
    assert_eq!(admin(&server, "POST", "/reload", "").await.status, StatusCode::OK);
    assert_eq!(veer_tests::get(server.proxy_addr, "/").await.status, StatusCode::BAD_GATEWAY);
    // Verification off, explicitly: served (and logged loudly).
    file.write(&upstream_tls_config(&[("tls1", h1.addr, "http1")], "      insecure_skip_verify: true\n", false));
    assert_eq!(admin(&server, "POST", "/reload", "").await.status, StatusCode::OK);
    assert_eq!(veer_tests::get(server.proxy_addr, "/").await.status, StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test]
async fn upstream_mtls_presents_the_client_certificate_and_health_checks_use_tls() {
    let pki = TestPki::new("upstream-mtls");
    let backend = Backend::start(Some(Backend::tls(&pki, "backend", &["backend.test"], Some(pki.ca())))).await;
    let identity = pki.client("veer", "veer");
    let ca = pki.ca().display().to_string();
    let with_identity = format!(
        "      server_name: backend.test\n      ca: {ca}\n      client_cert: {}\n      client_key: {}\n",
        identity.0.display(),
        identity.1.display()
    );
    let file = ConfigFile::new("tls", "upstream-mtls");
    file.write(&upstream_tls_config(&[("b1", backend.addr, "http1")], &with_identity, true));
    let server = start_from(&file).await;
    let answer = veer_tests::get(server.proxy_addr, "/").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let seen: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(seen["client_cert"], true);
    // Without the client certificate the backend refuses veer: the checks
    // (over the same TLS settings) take it out of rotation.
    file.write(&upstream_tls_config(
        &[("b1", backend.addr, "http1")],
        &format!("      server_name: backend.test\n      ca: {ca}\n"),
        true,
    ));
    assert_eq!(admin(&server, "POST", "/reload", "").await.status, StatusCode::OK);
    let group = server.proxy.routes().upstream("secure").unwrap().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while group.health.snapshot()[0].eligible {
        assert!(tokio::time::Instant::now() < deadline, "the failing checks never took the backend out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // With it again: the checks bring the backend back.
    file.write(&upstream_tls_config(&[("b1", backend.addr, "http1")], &with_identity, true));
    assert_eq!(admin(&server, "POST", "/reload", "").await.status, StatusCode::OK);
    while !group.health.snapshot()[0].eligible {
        assert!(tokio::time::Instant::now() < deadline, "passing checks never brought the backend back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(veer_tests::get(server.proxy_addr, "/").await.status, StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test]
async fn a_broken_certificate_is_a_clear_error_at_start() {
    let pki = TestPki::new("start");
    let (cert, _) = pki.server("one", &["one.test"], 30);
    let (_, other_key) = pki.server("two", &["two.test"], 30);
    let file = ConfigFile::new("tls", "start");
    file.write(&https_config(
        "127.0.0.1:1".parse().unwrap(),
        &format!("  certificates:\n    - cert: {}\n      key: {}\n", cert.display(), other_key.display()),
    ));
    let error = veer::config::load(&file.0).unwrap_err().to_string();
    assert!(error.contains("listen_tls") && error.contains("is not this certificate's key"), "{error}");
}

#[tokio::test]
async fn a_reload_turns_a_plain_listener_into_https_on_the_same_socket_and_back() {
    let pki = TestPki::new("toggle");
    let backend = Backend::start(None).await;
    let pair = pki.server("site", &["site.test"], 30);
    let file = ConfigFile::new("tls", "toggle");
    let plain = https_config(backend.addr, "").replace("listen_tls:\n", "");
    file.write(&plain);
    let server = start_from(&file).await;
    assert_eq!(veer_tests::get(server.proxy_addr, "/").await.status, StatusCode::OK);
    // Now with TLS: the socket is kept, new connections handshake.
    let with_tls = format!("{plain}listen_tls:\n  certificates:\n{}", certificate_entry(&pair));
    file.write(&with_tls);
    let answer = admin(&server, "POST", "/reload", "").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let client = client_config(pki.ca(), &[b"http/1.1"], None);
    let stream = connect(server.proxy_addr, "site.test", &client).await.unwrap();
    let (status, body) = get_over(stream, "site.test", "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("\"proto\":\"https\""), "{body}");
    // And back to plain HTTP.
    file.write(&plain);
    assert_eq!(admin(&server, "POST", "/reload", "").await.status, StatusCode::OK);
    let answer = veer_tests::get(server.proxy_addr, "/").await;
    assert!(answer.body.contains("\"proto\":\"http\""), "{}", answer.body);
    server.shutdown().await;
}

#[tokio::test]
async fn hostile_clients_on_an_https_port_cost_a_counted_failure_and_never_a_backend_strike() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = TestPki::new("hostile");
    let backend = Backend::start(None).await;
    let pair = pki.server("site", &["site.test"], 30);
    let file = ConfigFile::new("tls", "hostile");
    let text = https_config(backend.addr, &format!("  certificates:\n{}", certificate_entry(&pair)))
        .replace("proxy:\n  workers: 2", "proxy:\n  workers: 2\n  client_header_timeout: 300ms");
    file.write(&text);
    let server = start_from(&file).await;
    // Plain HTTP, and bytes that are no protocol at all: closed, counted as `protocol`.
    for junk in [&b"GET / HTTP/1.1\r\nhost: site.test\r\n\r\n"[..], &[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0][..]] {
        let mut tcp = TcpStream::connect(server.proxy_addr).await.unwrap();
        tcp.write_all(junk).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await.unwrap();
        assert!(read.is_err() || !String::from_utf8_lossy(&answer).contains("HTTP/1.1 200"), "{answer:?}");
    }
    // A client that connects and never says hello: cut at the header limit, counted as `timeout`.
    let mut silent = TcpStream::connect(server.proxy_addr).await.unwrap();
    let mut buffer = [0; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buffer)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the silent connection is closed: {read:?}");
    // A client that hangs up mid-handshake.
    drop(TcpStream::connect(server.proxy_addr).await.unwrap());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(handshakes(&server, "protocol").await, 2);
    assert_eq!(handshakes(&server, "timeout").await, 1);
    // None of it reached a backend or counted against one, and honest clients are served.
    let client = client_config(pki.ca(), &[b"http/1.1"], None);
    let stream = connect(server.proxy_addr, "site.test", &client).await.unwrap();
    assert_eq!(get_over(stream, "site.test", "/").await.0, StatusCode::OK);
    assert_eq!(backend.requests.load(Ordering::SeqCst), 1);
    assert_eq!(server.proxy.metrics().failures_of("backend"), 0);
    assert!(server.proxy.health().snapshot().iter().all(|b| b.eligible && b.checks_failed_total == 0));
    server.shutdown().await;
}

#[test]
fn bad_tls_settings_are_config_errors_naming_the_key() {
    for (tls, expected) in [
        ("  certificates: []\n", "needs at least one certificate"),
        ("  alpn: [spdy/3]\n  certificates: []\n", "alpn"),
        ("  min_version: \"1.1\"\n  certificates: []\n", "min_version"),
        ("  unknown_sni: maybe\n  certificates: []\n", "unknown_sni"),
        ("  certificates: []\n  ciphers: [RC4]\n", "unknown field `ciphers`"),
    ] {
        let text = https_config("127.0.0.1:1".parse().unwrap(), tls);
        let error = veer::config::parse(&text, "t.yaml", None).unwrap_err().to_string();
        assert!(error.contains(expected), "{tls}: {error}");
    }
    let upstream =
        "listen: 127.0.0.1:0\nupstreams:\n  - name: u\n    backends: [{name: a, address: 127.0.0.1:1}]\n    tls:\n";
    for (tls, expected) in [
        ("      server_name: \"not a name!\"\n", "server_name"),
        ("      client_cert: /nonexistent.pem\n", "client_cert and client_key go together"),
        ("      ca: /nonexistent/ca.pem\n", "cannot read"),
        ("      verify: false\n", "unknown field `verify`"),
    ] {
        let error = veer::config::parse(&format!("{upstream}{tls}"), "t.yaml", None).unwrap_err().to_string();
        assert!(error.contains(expected), "{tls}: {error}");
    }
}
