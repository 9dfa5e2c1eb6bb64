//! Persisting the picker's learned state (a Q-table, say) across restarts.
//!
//! The serving picker's exported state is written to
//! `<state_dir>/<policy-name>.state` periodically and at shutdown, and offered
//! to the picker at start when a file for its policy exists. The file is one
//! header line, `veer-picker-state 1 NAME VERSION`, then the plugin's bytes;
//! it is written to a temporary file and renamed, so a crash never leaves a
//! torn one. The plugin decides whether to import (same policy, same or newer
//! version; the plugin may still refuse bytes it does not understand).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use veer_plugin_runtime::{Handoff, HandoffResult, Picker, PickerInfo, PickerSlot};

const MAGIC: &str = "veer-picker-state 1";

/// Where the state of the policy `name` is kept under `dir`.
pub fn path(dir: &Path, name: &str) -> PathBuf {
    // Policy names are plugin-chosen: keep the file name tame.
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    dir.join(format!("{safe}.state"))
}

/// Writes `picker`'s exported state to `dir`; returns the file and its size
/// in bytes, or `None` when the picker keeps no state.
pub fn save(dir: &Path, picker: &Picker) -> std::io::Result<Option<(PathBuf, usize)>> {
    let state = picker.export_state().map_err(std::io::Error::other)?;
    if state.is_empty() {
        return Ok(None);
    }
    let info = picker.info();
    std::fs::create_dir_all(dir)?;
    let file = path(dir, &info.name);
    let temporary = file.with_extension("state.tmp");
    let mut bytes = format!("{MAGIC} {} {}\n", info.name, info.version).into_bytes();
    bytes.extend_from_slice(&state);
    std::fs::write(&temporary, &bytes)?;
    std::fs::rename(&temporary, &file)?;
    Ok(Some((file, state.len())))
}

/// Reads the saved state for the policy `name` from `dir`, if there is any.
pub fn read(dir: &Path, name: &str) -> std::io::Result<Option<Handoff>> {
    let file = path(dir, name);
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

/// Offers the serving picker of `slot` the state saved in `dir` for its
/// policy. Blocking (restarts the picker). `None` when nothing was saved.
pub fn restore(dir: &Path, slot: &PickerSlot) -> Option<HandoffResult> {
    let name = slot.current().info().name.clone();
    let saved = match read(dir, &name) {
        Ok(Some(saved)) => saved,
        Ok(None) => return None,
        Err(error) => {
            tracing::warn!(%error, "saved picker state unreadable; the picker starts fresh");
            return None;
        }
    };
    match slot.restore(saved) {
        Ok(report) => {
            tracing::info!(picker = %name, handoff = ?report.handoff, "saved picker state offered");
            Some(report.handoff)
        }
        Err(error) => {
            tracing::warn!(%error, "restarting the picker with saved state failed; it keeps running fresh");
            None
        }
    }
}

/// Saves the serving picker's state every `interval` and once more when
/// `stop` completes.
pub async fn run(slot: Arc<PickerSlot>, dir: PathBuf, interval: Duration, stop: impl std::future::Future<Output = ()>) {
    let save_now = |slot: Arc<PickerSlot>, dir: PathBuf| async move {
        let result = tokio::task::spawn_blocking(move || save(&dir, &slot.current())).await;
        match result {
            Ok(Ok(Some((file, bytes)))) => tracing::debug!(file = %file.display(), bytes, "picker state saved"),
            Ok(Ok(None)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "saving the picker state failed"),
            Err(error) => tracing::warn!(%error, "the state saving task failed"),
        }
    };
    tokio::pin!(stop);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate; nothing learned yet
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticker.tick() => save_now(slot.clone(), dir.clone()).await,
        }
    }
    save_now(slot, dir).await;
}
