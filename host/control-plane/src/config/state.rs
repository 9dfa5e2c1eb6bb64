//! Persisting the pickers' learned state (a Q-table, say) across restarts.
//!
//! Every upstream group's serving picker's exported state is written
//! periodically and at shutdown, and offered to the group's picker when it
//! starts (with veer, or when a reload adds the group) and a file for its
//! policy exists: `<state_dir>/<policy-name>.state` for the default group
//! (where it always was), `<state_dir>/<upstream>/<policy-name>.state` for the
//! others, so two groups running one policy keep apart what each learned. The file is one
//! header line, `veer-picker-state 1 NAME VERSION`, then the plugin's bytes;
//! it is written to a temporary file and renamed, so a crash never leaves a
//! torn one. The plugin decides whether to import (same policy, same or newer
//! version; the plugin may still refuse bytes it does not understand).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use veer_data_plane::proxy::Proxy;
use veer_data_plane::routing::DEFAULT_UPSTREAM;
use veer_data_plane::upstream::Upstream;
use veer_plugin_runtime::{Handoff, HandoffResult, Picker, PickerInfo};

const MAGIC: &str = "veer-picker-state 1";

/// Where the state of the policy `name` of the group `upstream` is kept
/// under `dir`.
pub fn path(dir: &Path, upstream: &str, name: &str) -> PathBuf {
    // Policy names are plugin-chosen, upstream names the operator's: keep them tame.
    let tame = |text: &str| -> String {
        text.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
    };
    let file = format!("{}.state", tame(name));
    match upstream {
        DEFAULT_UPSTREAM => dir.join(file),
        other => dir.join(tame(other)).join(file),
    }
}

/// Writes the exported state of `picker`, serving the group `upstream`, under
/// `dir`; returns the file and its size in bytes, or `None` when the picker
/// keeps no state.
pub fn save(dir: &Path, upstream: &str, picker: &Picker) -> std::io::Result<Option<(PathBuf, usize)>> {
    let state = picker.export_state().map_err(std::io::Error::other)?;
    if state.is_empty() {
        return Ok(None);
    }
    let info = picker.info();
    let file = path(dir, upstream, &info.name);
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let temporary = file.with_extension("state.tmp");
    let mut bytes = format!("{MAGIC} {} {}\n", info.name, info.version).into_bytes();
    bytes.extend_from_slice(&state);
    std::fs::write(&temporary, &bytes)?;
    std::fs::rename(&temporary, &file)?;
    Ok(Some((file, state.len())))
}

/// Reads the saved state for the policy `name` of the group `upstream` from
/// `dir`, if there is any.
pub fn read(dir: &Path, upstream: &str, name: &str) -> std::io::Result<Option<Handoff>> {
    let file = path(dir, upstream, name);
    let bytes = match std::fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let invalid =
        || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} is not a veer state file", file.display()));
    let newline = bytes.iter().position(|b| *b == b'\n').ok_or_else(invalid)?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| invalid())?;
    let rest = header.strip_prefix(MAGIC).ok_or_else(invalid)?;
    let mut fields = rest.split_whitespace();
    let (Some(saved_name), Some(version), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err(invalid());
    };
    let from = PickerInfo {
        name: saved_name.to_string(),
        version: version.to_string(),
        wants_outcomes: false,
        source: file.display().to_string(),
    };
    Ok(Some(Handoff { from, state: bytes[newline + 1..].to_vec() }))
}

/// Offers the serving picker of `group` the state saved in `dir` for its
/// policy. Blocking (restarts the picker). `None` when nothing was saved.
pub fn restore(dir: &Path, group: &Upstream) -> Option<HandoffResult> {
    let slot = &group.slot;
    let name = slot.current().info().name.clone();
    let saved = match read(dir, &group.name, &name) {
        Ok(Some(saved)) => saved,
        Ok(None) => return None,
        Err(error) => {
            tracing::warn!(%error, "saved picker state unreadable; the picker starts fresh");
            return None;
        }
    };
    match slot.restore(saved) {
        Ok(report) => {
            tracing::info!(upstream = %group.name, picker = %name, handoff = ?report.handoff, "saved picker state offered");
            Some(report.handoff)
        }
        Err(error) => {
            tracing::warn!(%error, "restarting the picker with saved state failed; it keeps running fresh");
            None
        }
    }
}

/// Saves the state of every group's serving picker (the groups `proxy`
/// routes over now, reloads included). Blocking.
pub fn save_all(proxy: &Proxy, dir: &Path) {
    for group in proxy.routes().upstreams() {
        match save(dir, &group.name, &group.slot.current()) {
            Ok(Some((file, bytes))) => tracing::debug!(file = %file.display(), bytes, "picker state saved"),
            Ok(None) => {}
            Err(error) => tracing::warn!(upstream = %group.name, %error, "saving the picker state failed"),
        }
    }
}

/// Saves the state of every group's serving picker every `interval` and
/// once more when `stop` completes.
pub async fn run(proxy: Arc<Proxy>, dir: PathBuf, interval: Duration, stop: impl std::future::Future<Output = ()>) {
    let save_now = |proxy: Arc<Proxy>, dir: PathBuf| async move {
        let result = tokio::task::spawn_blocking(move || save_all(&proxy, &dir)).await;
        if let Err(error) = result {
            tracing::warn!(%error, "the state saving task failed");
        }
    };
    tokio::pin!(stop);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate; nothing learned yet
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticker.tick() => save_now(proxy.clone(), dir.clone()).await,
        }
    }
    save_now(proxy, dir).await;
}
