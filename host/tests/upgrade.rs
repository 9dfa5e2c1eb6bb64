//! `veer run --upgrade` as an operator runs it: the binary replaced under
//! load, with the listening sockets passed over the upgrade socket.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use veer::sim::{BackendProfile, SimBackend, SimBackendSpec};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn(config: &Path, upgrade: bool, log: &Path) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_veer"));
    command.arg("run").arg("--config").arg(config);
    if upgrade {
        command.arg("--upgrade");
    }
    let log = std::fs::File::create(log).unwrap();
    command.env("RUST_LOG", "info").stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap()
}

/// One request on a fresh connection: what went wrong, if anything did.
async fn fresh_connection_request(address: SocketAddr) -> Result<(), String> {
    let mut stream = tokio::net::TcpStream::connect(address).await.map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    if text.starts_with("HTTP/1.1 200") { Ok(()) } else { Err(format!("answer: {text:.80}")) }
}

async fn wait_ready(admin: SocketAddr) {
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let uri: http::Uri = format!("http://{admin}/readyz").parse().unwrap();
        if let Ok(response) = client.get(uri).await
            && response.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "veer never became ready on {admin}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The old process hands its sockets to the new one and drains while a
/// load runs on fresh and on kept-alive connections: not one request
/// fails, not one connection is refused; the old one exits by itself, the
/// new one serves on the same addresses (admin API included) with the
/// picker state the old one saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_takes_over_under_load_and_nothing_is_refused() {
    let dir = Dir(std::env::temp_dir().join(format!("veer-upgrade-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let spec = SimBackendSpec::new("b", BackendProfile::fixed(Duration::from_millis(2)));
    let backend = SimBackend::start(spec, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (listen, admin) = (free_port(), free_port());
    let config = dir.0.join("veer.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{listen}\nadmin: {{listen: 127.0.0.1:{admin}}}\n\
             backends: [{{name: b, address: \"{}\"}}]\npicker: {{source: \"builtin:q-learning\"}}\n\
             health: {{check: {{enabled: false}}}}\nreload: {{watch: false}}\n\
             state: {{dir: state}}\nupgrade: {{socket: upgrade.sock}}\n",
            backend.addr()
        ),
    )
    .unwrap();
    let (proxy, admin): (SocketAddr, SocketAddr) =
        (format!("127.0.0.1:{listen}").parse().unwrap(), format!("127.0.0.1:{admin}").parse().unwrap());
    let mut old = spawn(&config, false, &dir.0.join("old.log"));
    wait_ready(admin).await;

    let running = Arc::new(AtomicBool::new(true));
    let (ok, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(Failures::default()));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (running, ok, failures) = (running.clone(), ok.clone(), failures.clone());
        load.push(tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                match fresh_connection_request(proxy).await {
                    Ok(()) => drop(ok.fetch_add(1, Ordering::Relaxed)),
                    Err(error) => failures.push(format!("fresh connection: {error}")),
                }
            }
        }));
    }
    for _ in 0..4 {
        let (running, ok, failures) = (running.clone(), ok.clone(), failures.clone());
        load.push(tokio::spawn(async move {
            let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Empty<Bytes>>();
            let uri: http::Uri = format!("http://{proxy}/").parse().unwrap();
            while running.load(Ordering::Relaxed) {
                match client.get(uri.clone()).await {
                    Ok(response) if response.status() == 200 => {
                        let _ = response.into_body().collect().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(response) => failures.push(format!("kept-alive connection: {}", response.status())),
                    Err(error) => failures.push(format!("kept-alive connection: {error:?}")),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = ok.load(Ordering::Relaxed);
    assert!(before > 100, "the load runs ({before} requests)");

    let mut new = spawn(&config, true, &dir.0.join("new.log"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(status) = old.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the old veer never exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let during = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.store(false, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let served = ok.load(Ordering::Relaxed);
    let old_log = std::fs::read_to_string(dir.0.join("old.log")).unwrap();
    let new_log = std::fs::read_to_string(dir.0.join("new.log")).unwrap();
    let failures = failures.take();
    assert!(
        failures.is_empty(),
        "{} requests failed, first {:?}\nold:\n{old_log}\nnew:\n{new_log}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(exit.success(), "the old veer exits cleanly: {exit:?}\n{old_log}");
    assert!(
        served > during + 100,
        "the new veer serves the load ({before} before, {during} at the handover, {served} in all)"
    );
    assert!(old_log.contains("a new veer serves on the sockets"), "{old_log}");
    assert!(new_log.contains("serving on the sockets of the previous veer"), "{new_log}");
    assert!(new_log.contains("saved picker state offered"), "the state the old one saved is restored:\n{new_log}");
    assert!(new.try_wait().unwrap().is_none(), "the new veer keeps serving");
    wait_ready(admin).await;
    new.kill().unwrap();
    let _ = new.wait();
}

/// A new process that cannot start (here: its config names a picker that
/// does not exist) leaves the running one serving and offering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_that_fails_to_start_leaves_the_old_one_serving() {
    let dir = Dir(std::env::temp_dir().join(format!("veer-upgrade-fail-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let spec = SimBackendSpec::new("b", BackendProfile::fixed(Duration::ZERO));
    let backend = SimBackend::start(spec, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (listen, admin) = (free_port(), free_port());
    let config = dir.0.join("veer.yaml");
    let text = |picker: &str| {
        format!(
            "listen: 127.0.0.1:{listen}\nadmin: {{listen: 127.0.0.1:{admin}}}\n\
             backends: [{{name: b, address: \"{}\"}}]\npicker: {{source: \"{picker}\"}}\n\
             reload: {{watch: false}}\nupgrade: {{socket: upgrade.sock}}\n",
            backend.addr()
        )
    };
    std::fs::write(&config, text("native:round-robin")).unwrap();
    let proxy: SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
    let mut old = spawn(&config, false, &dir.0.join("old.log"));
    wait_ready(format!("127.0.0.1:{admin}").parse().unwrap()).await;

    std::fs::write(&config, text("./missing-picker.wasm")).unwrap();
    let failed = spawn(&config, true, &dir.0.join("new.log")).wait().unwrap();
    assert!(!failed.success());
    fresh_connection_request(proxy).await.unwrap();
    assert!(old.try_wait().unwrap().is_none(), "the old veer keeps running");

    // Whatever else connects to the upgrade socket (garbage, silence, a
    // request then nothing) gets no socket and changes nothing.
    use std::io::Write;
    let socket = dir.0.join("upgrade.sock");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "only its user may connect: {mode:o}");
    let mut garbage = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    drop(garbage);
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(std::os::unix::net::UnixStream::connect(&socket).unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut walks_away = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    walks_away.write_all(b"veer-upgrade 1\n").unwrap();
    drop(walks_away);
    tokio::time::sleep(Duration::from_millis(500)).await;
    fresh_connection_request(proxy).await.unwrap();
    assert!(old.try_wait().unwrap().is_none(), "the old veer keeps running after hostile upgrade requests");

    // And it still offers: a good new process takes over.
    std::fs::write(&config, text("native:round-robin")).unwrap();
    let mut new = spawn(&config, true, &dir.0.join("new2.log"));
    let status = old.wait().unwrap();
    assert!(status.success());
    fresh_connection_request(proxy).await.unwrap();
    new.kill().unwrap();
    let _ = new.wait();
}

/// Failures the load tasks saw.
#[derive(Debug, Default)]
struct Failures(std::sync::Mutex<Vec<String>>);

impl Failures {
    fn push(&self, failure: String) {
        self.0.lock().unwrap().push(failure);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}
