//! Upgrades that drop nothing: a new veer process takes over the listening
//! sockets of the running one, as HAProxy, Envoy and Pingora do.
//!
//! The running veer offers its sockets on a Unix socket (`upgrade.socket`).
//! `veer run --upgrade` connects to it and asks; the running one saves its
//! pickers' learned state (to `state.dir`, which the new one restores
//! from), stops offering, and sends every listening socket — the proxy's
//! listeners and the admin API's — by `SCM_RIGHTS`, each with its name and
//! address. The new process serves on them (binding only what it does not
//! inherit) and then says `ready`; only then does the old one stop
//! accepting, finish its in-flight requests and exit. The kernel keeps one
//! accept queue per socket whoever holds it, so no connection is refused
//! at any point. A new process that fails before `ready` (a broken config,
//! a picker that does not load) closes the connection instead, and the old
//! one keeps serving and offering as if nothing happened.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};

use veer_data_plane::proxy::Proxy;

/// The request the new process sends.
const ASK: &[u8] = b"veer-upgrade 1\n";
/// What it sends once it serves.
const READY: &[u8] = b"ready\n";
/// The most sockets one handover carries.
const MAX_SOCKETS: usize = 64;

/// The `upgrade:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpgradeConfig {
    /// The Unix socket a running veer offers its listening sockets on, and
    /// `veer run --upgrade` takes them from (relative to the config file);
    /// `null`: no upgrades.
    pub socket: Option<PathBuf>,
    /// How long the running veer waits for the new one to say it serves
    /// (it may compile pickers first) before it keeps serving itself.
    #[serde(with = "humantime_serde")]
    pub ready_timeout: Duration,
}

impl Default for UpgradeConfig {
    fn default() -> Self {
        UpgradeConfig { socket: None, ready_timeout: Duration::from_secs(60) }
    }
}

/// What travels with the sockets, in their order.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    sockets: Vec<Described>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Described {
    name: String,
    address: SocketAddr,
}

/// A listening socket handed over, by name (`admin` for the admin API's).
#[derive(Debug)]
pub struct Inherited {
    /// The listener's name where it was.
    pub name: String,
    /// Its bound address.
    pub address: SocketAddr,
    /// The socket, still listening.
    pub socket: std::net::TcpListener,
}

/// The name the admin API's socket travels under.
pub const ADMIN_SOCKET: &str = "admin";

/// The sockets a new process took over, and the line back to the old one.
#[derive(Debug)]
pub struct Handover {
    stream: UnixStream,
    sockets: Vec<Inherited>,
}

impl Handover {
    /// Asks the veer offering on `path` for its sockets.
    pub fn take(path: &Path) -> Result<Handover, String> {
        let fail = |what: &str, e: &dyn std::fmt::Display| format!("upgrade from {}: {what}: {e}", path.display());
        let mut stream = UnixStream::connect(path).map_err(|e| fail("no running veer offers its sockets there", &e))?;
        stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| fail("socket", &e))?;
        stream.write_all(ASK).map_err(|e| fail("asking", &e))?;
        let (manifest, fds) = receive(&stream).map_err(|e| fail("receiving the sockets", &e))?;
        if manifest.sockets.len() != fds.len() {
            return Err(fail(
                "the manifest does not match the sockets",
                &format!("{} and {}", manifest.sockets.len(), fds.len()),
            ));
        }
        let sockets = manifest
            .sockets
            .into_iter()
            .zip(fds)
            .map(|(described, fd)| Inherited { name: described.name, address: described.address, socket: fd.into() })
            .collect();
        Ok(Handover { stream, sockets })
    }

    /// The socket listening at `address` (handed over under any name), if
    /// one was; each is taken once.
    pub fn socket_at(&mut self, address: SocketAddr) -> Option<std::net::TcpListener> {
        let index = self.sockets.iter().position(|inherited| inherited.address == address)?;
        Some(self.sockets.swap_remove(index).socket)
    }

    /// The sockets not taken (closed when the handover is dropped).
    pub fn remaining(&self) -> impl Iterator<Item = &Inherited> {
        self.sockets.iter()
    }

    /// Tells the old process that this one serves: it stops accepting,
    /// finishes its in-flight requests and exits.
    pub fn ready(mut self) -> Result<(), String> {
        self.stream.write_all(READY).map_err(|e| format!("telling the old veer to go: {e}"))
    }
}

/// Offers this veer's listening sockets on `path` until `stop` completes or
/// a new process has taken them over; then asks `shutdown` (the server's
/// stop) to stop. Before sending, the pickers' state is saved to
/// `state_dir` for the new process to restore.
pub async fn offer(
    path: PathBuf,
    proxy: Arc<Proxy>,
    admin: Option<(SocketAddr, Arc<OwnedFd>)>,
    state_dir: Option<PathBuf>,
    ready_timeout: Duration,
    shutdown: tokio::sync::watch::Sender<bool>,
) {
    let mut stop = shutdown.subscribe();
    loop {
        let listener = match bind(&path) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "cannot offer sockets for upgrades; upgrades are off");
                return;
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => {
                let _ = std::fs::remove_file(&path);
                return;
            }
        };
        // One upgrade at a time, and the next process offers on this path.
        drop(listener);
        let _ = std::fs::remove_file(&path);
        let stream = match accepted.and_then(|(stream, _)| stream.into_std()) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "an upgrade connection failed");
                continue;
            }
        };
        let (proxy, admin, state_dir) = (proxy.clone(), admin.clone(), state_dir.clone());
        let handed =
            tokio::task::spawn_blocking(move || hand_over(stream, &proxy, admin, state_dir, ready_timeout)).await;
        match handed {
            Ok(Ok(())) => {
                tracing::info!("a new veer serves on the sockets; finishing in-flight requests, then exiting");
                shutdown.send_replace(true);
                return;
            }
            Ok(Err(error)) => tracing::warn!(%error, "the upgrade did not complete; this veer keeps serving"),
            Err(error) => tracing::error!(%error, "the upgrade task failed; this veer keeps serving"),
        }
    }
}

/// Binds `path`, replacing a stale socket file no process listens on.
fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another veer offers its sockets there (start this one with --upgrade to take them over)",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    // Whoever connects gets the listening sockets: this user only.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// One handover, on a blocking thread: the request, the state, the
/// sockets, and the new process's `ready`.
fn hand_over(
    mut stream: UnixStream,
    proxy: &Proxy,
    admin: Option<(SocketAddr, Arc<OwnedFd>)>,
    state_dir: Option<PathBuf>,
    ready_timeout: Duration,
) -> Result<(), String> {
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    let mut ask = [0u8; ASK.len()];
    stream.read_exact(&mut ask).map_err(|e| format!("reading the request: {e}"))?;
    if ask != ASK {
        return Err("the request is not a veer upgrade".to_string());
    }
    if let Some(dir) = &state_dir {
        crate::config::state::save_all(proxy, dir);
    }
    let mut sockets: Vec<(Described, Arc<OwnedFd>)> =
        proxy.listening_sockets().into_iter().map(|(name, address, fd)| (Described { name, address }, fd)).collect();
    if let Some((address, fd)) = admin {
        sockets.push((Described { name: ADMIN_SOCKET.to_string(), address }, fd));
    }
    let names: Vec<_> = sockets.iter().map(|(d, _)| format!("{}={}", d.name, d.address)).collect();
    send(&stream, &sockets).map_err(|e| format!("sending the sockets: {e}"))?;
    tracing::info!(sockets = ?names, "listening sockets handed to a new veer; waiting for it to serve");
    stream.set_read_timeout(Some(ready_timeout)).map_err(|e| e.to_string())?;
    let mut ready = [0u8; READY.len()];
    match stream.read_exact(&mut ready) {
        Ok(()) if ready == READY => Ok(()),
        Ok(()) => Err("the new veer answered something else than ready".to_string()),
        Err(error) => Err(format!("the new veer did not say it serves ({error}); it failed to start or took too long")),
    }
}

/// The manifest (its length first) with every socket attached.
fn send(stream: &UnixStream, sockets: &[(Described, Arc<OwnedFd>)]) -> std::io::Result<()> {
    if sockets.len() > MAX_SOCKETS {
        return Err(std::io::Error::other(format!("more than {MAX_SOCKETS} listening sockets")));
    }
    let manifest = Manifest { sockets: sockets.iter().map(|(d, _)| d.clone()).collect() };
    let body = serde_json::to_vec(&manifest).map_err(std::io::Error::other)?;
    let mut message = (body.len() as u32).to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    let fds: Vec<_> = sockets.iter().map(|(_, fd)| fd.as_fd()).collect();
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(std::io::Error::other("the sockets do not fit the control message"));
    }
    // The descriptors travel with the first byte; the rest follows as usual.
    let sent = rustix::net::sendmsg(stream, &[IoSlice::new(&message)], &mut control, SendFlags::empty())?;
    (&*stream).write_all(&message[sent..])
}

/// The manifest and the sockets [`send`] sent.
fn receive(stream: &UnixStream) -> std::io::Result<(Manifest, Vec<OwnedFd>)> {
    let mut first = vec![0u8; 64 * 1024];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received =
        rustix::net::recvmsg(stream, &mut [IoSliceMut::new(&mut first)], &mut control, RecvFlags::CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    let mut bytes = first[..received.bytes].to_vec();
    if bytes.len() < 4 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the running veer closed the connection"));
    }
    let length = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    if length > 1 << 20 {
        return Err(std::io::Error::other("the manifest is too long"));
    }
    while bytes.len() < 4 + length {
        let mut more = vec![0u8; 4 + length - bytes.len()];
        let n = (&*stream).read(&mut more)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the manifest was cut short"));
        }
        bytes.extend_from_slice(&more[..n]);
    }
    let manifest = serde_json::from_slice(&bytes[4..4 + length]).map_err(std::io::Error::other)?;
    Ok((manifest, fds))
}
