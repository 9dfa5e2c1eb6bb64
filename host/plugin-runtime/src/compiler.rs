//! Compiling components in a child process, so that the serving process
//! never runs the compiler.
//!
//! Compiling a component with cranelift in the proxy's own process cost it
//! ~16 MB of resident memory for good: the compiler's code pages (clean but
//! resident once touched) and what the allocator keeps of its working
//! memory — with one 80 KB built-in loaded, 36 MB resident against 18 MB with
//! the host's native picker (`bench/memory.sh`). A child process running the
//! same executable (`veer __compile`) compiles the component with the same
//! engine settings and writes wasmtime's serialized artifact to its stdout;
//! the proxy only deserializes it: 20 MB resident with the same picker.
//!
//! Anything going wrong on that path (no executable to run, the child fails,
//! an artifact wasmtime refuses as incompatible) falls back to compiling in
//! process, with a warning: it costs memory, never a picker.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use wasmtime::Engine;
use wasmtime::component::Component;

/// The hidden subcommand a child is started with.
pub const SUBCOMMAND: &str = "__compile";

/// What a child process does: reads component bytes from stdin, compiles
/// them with `engine` (made with the serving process's settings) and writes
/// the artifact to stdout. `Err` says why not, for stderr.
pub fn serve_child(engine: &Engine) -> Result<(), String> {
    let mut bytes = Vec::new();
    std::io::stdin().read_to_end(&mut bytes).map_err(|e| format!("reading the component: {e}"))?;
    let artifact = engine.precompile_component(&bytes).map_err(|e| format!("{e:#}"))?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&artifact).and_then(|()| stdout.flush()).map_err(|e| format!("writing the artifact: {e}"))
}

/// Compiles `bytes` by running `executable __compile` and deserializes its
/// artifact; `Err` says why that did not work (the caller then compiles in
/// process).
pub fn compile_in_child(engine: &Engine, executable: &Path, bytes: &[u8]) -> Result<Component, String> {
    let mut child = Command::new(executable)
        .arg(SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", executable.display()))?;
    // Written from a thread while the output is read: neither side can
    // block the other on a full pipe. Dropping `stdin` at the end closes it.
    let mut stdin = child.stdin.take().ok_or("the child has no stdin")?;
    let (written, output) = std::thread::scope(|scope| {
        let writer = scope.spawn(move || stdin.write_all(bytes));
        // Output first: the writer may wait on a child that waits on us.
        let output = child.wait_with_output();
        (writer.join(), output)
    });
    let output = output.map_err(|e| format!("waiting for the child: {e}"))?;
    let written = written.map_err(|_| "the writer thread panicked".to_string())?;
    if !output.status.success() {
        return Err(format!(
            "the child failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    written.map_err(|e| format!("writing the component: {e}"))?;
    let artifact = output.stdout;
    deserialize(engine, &artifact)
}

/// Loads an artifact made by [`serve_child`].
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> Result<Component, String> {
    // SAFETY: `Component::deserialize` runs the machine code in the
    // artifact, so it must come from wasmtime's own compiler and not be
    // tampered with. It does: this process started its own executable, gave
    // it the component through a pipe only the two share, and read the
    // answer from another; nothing else can write to either. Wasmtime still
    // checks the header, its version and that the settings match this
    // engine's, and refuses the artifact otherwise.
    unsafe { Component::deserialize(engine, artifact) }.map_err(|e| format!("{e:#}"))
}
