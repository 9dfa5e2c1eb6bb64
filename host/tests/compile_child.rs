//! Components compiled by a child `veer __compile` process, as `veer run`
//! does so that the compiler never enters the serving process's memory; and
//! the fallback to compiling in process when that path fails.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use veer::plugin::{HttpMethod, Limits, Membership, PickContext, Picker, PluginRuntime, PluginSource, RequestMeta};
use veer_core::{Backend, BackendEvent};

fn runtime(compiler: Option<PathBuf>) -> std::sync::Arc<PluginRuntime> {
    PluginRuntime::new(Limits { compiler, ..Limits::default() }).unwrap()
}

fn membership() -> Membership {
    let mut membership = Membership::default();
    let backend =
        |id| Backend { id, name: format!("b{id}"), address: format!("127.0.0.1:{id}"), weight: 1, labels: vec![] };
    membership.apply(&[BackendEvent::Added(backend(1)), BackendEvent::Added(backend(2))]);
    membership
}

/// Loads `source` on `runtime`, starts it and makes a pick.
fn picks(runtime: &std::sync::Arc<PluginRuntime>, source: &str) {
    let code = runtime.load(&PluginSource::parse(source)).unwrap();
    let (picker, _) = Picker::start(runtime.clone(), code, vec![], membership(), None).unwrap();
    let ctx = PickContext { attempt: 0, exclude: None, method: HttpMethod::Get };
    let (choice, _) = picker.pick(RequestMeta::get("/", std::net::Ipv4Addr::LOCALHOST.into()), ctx);
    assert!(choice.unwrap().by_plugin, "{source}: the plugin answered");
}

#[test]
fn every_builtin_compiled_by_the_veer_binary_loads_and_picks() {
    let runtime = runtime(Some(PathBuf::from(env!("CARGO_BIN_EXE_veer"))));
    for name in veer::plugin::BUILTIN_NAMES {
        picks(&runtime, &format!("builtin:{name}"));
    }
    assert_eq!(runtime.compiled_apart(), veer::plugin::BUILTIN_NAMES.len() as u64, "none was compiled in process");
}

#[test]
fn a_compiler_that_fails_costs_memory_not_the_picker() {
    for broken in ["/bin/false", "/nonexistent/veer"] {
        let runtime = runtime(Some(PathBuf::from(broken)));
        picks(&runtime, "builtin:round-robin");
        assert_eq!(runtime.compiled_apart(), 0, "{broken}: compiled in process instead");
    }
}

#[test]
fn a_broken_component_is_refused_with_the_same_error_either_way() {
    let bytes = b"\0asm\x0d\0\x01\0 definitely not a component";
    let apart = runtime(Some(PathBuf::from(env!("CARGO_BIN_EXE_veer")))).load_bytes("broken", bytes).unwrap_err();
    let here = runtime(None).load_bytes("broken", bytes).unwrap_err();
    assert_eq!(apart.to_string(), here.to_string());
}

#[test]
fn the_compile_subcommand_refuses_what_is_not_a_component_on_stderr() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_veer"))
        .arg(veer::plugin::compiler::SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "nothing but an artifact goes to stdout");
    assert!(!output.stderr.is_empty());
}
