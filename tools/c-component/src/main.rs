//! `veer-c-component`: the two steps of building a veer picker in C that a C
//! toolchain cannot do itself.
//!
//! 1. `bindings`: C bindings for the `veer:picker` world (wit-bindgen's C
//!    generator): `picker.h`, `picker.c` and `picker_component_type.o`, the
//!    object that carries the world's type into the core module.
//! 2. `componentize`: wraps the core module clang and wasm-ld wrote into a
//!    component (wit-component), with the WASI preview 1 adapter that turns
//!    wasi-libc's `wasi_snapshot_preview1` imports into WASI 0.2 ones. The
//!    adapter ships inside a crate (the reactor flavour: a library, no `main`),
//!    so nothing is downloaded at build time.
//!
//! Both run from `examples/c-plugin/build.sh` and from a scaffold written by
//! `veer plugin new NAME --lang c`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Parser;
use wit_bindgen_core::wit_parser::Resolve;

#[derive(Debug, Parser)]
#[command(name = "veer-c-component", about = "Bindings and component packaging for veer pickers in C")]
enum Command {
    /// Writes the C bindings of a world (default: veer:picker/picker) to OUT.
    Bindings {
        /// The WIT directory (a veer checkout's wit/).
        #[arg(long)]
        wit: PathBuf,
        /// The world to generate bindings for.
        #[arg(long, default_value = "picker")]
        world: String,
        /// Directory to write the bindings to (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Turns a core Wasm module (built for wasm32-wasi with the bindings'
    /// object linked in) into a component.
    Componentize {
        /// The core module.
        module: PathBuf,
        /// Where to write the component.
        #[arg(long, short)]
        output: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Command::parse() {
        Command::Bindings { wit, world, out } => bindings(&wit, &world, &out),
        Command::Componentize { module, output } => componentize(&module, &output),
    }
}

fn bindings(wit: &Path, world: &str, out: &Path) -> anyhow::Result<()> {
    let mut resolve = Resolve::default();
    let (package, _) = resolve.push_path(wit).with_context(|| format!("reading the WIT in {}", wit.display()))?;
    let world = resolve.select_world(&[package], Some(world))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default().build().generate(&mut resolve, world, &mut files)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (name, contents) in files.iter() {
        let path = out.join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

fn componentize(module: &Path, output: &Path) -> anyhow::Result<()> {
    use wasi_preview1_component_adapter_provider::{
        WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    };
    let bytes = std::fs::read(module).with_context(|| format!("reading {}", module.display()))?;
    if !bytes.starts_with(b"\0asm") {
        bail!("{} is not a WebAssembly module", module.display());
    }
    // wit-component would wrap a module without the world's type into a
    // component that exports nothing, which veer then refuses with a less
    // helpful message: say what is missing here.
    if !has_component_type(&bytes) {
        bail!("{}: no component type found (link the bindings' picker_component_type.o)", module.display());
    }
    let component = wit_component::ComponentEncoder::default()
        .module(&bytes)
        .with_context(|| {
            format!("{}: no component type found (link the bindings' picker_component_type.o)", module.display())
        })?
        .validate(true)
        .adapter(WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER)?
        .encode()
        .with_context(|| format!("encoding {} as a component", module.display()))?;
    std::fs::write(output, &component).with_context(|| format!("writing {}", output.display()))?;
    println!("{} ({} bytes)", output.display(), component.len());
    Ok(())
}

/// Whether a core module carries a `component-type*` custom section (what
/// the bindings' object file adds), the world it implements.
fn has_component_type(module: &[u8]) -> bool {
    wasmparser::Parser::new(0).parse_all(module).any(|payload| {
        matches!(payload, Ok(wasmparser::Payload::CustomSection(section)) if section.name().starts_with("component-type"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, bytes: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!("veer-c-component-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).expect("the temp dir is writable");
        path
    }

    #[test]
    fn what_is_not_a_picker_module_is_refused_with_the_reason() {
        let out = std::env::temp_dir().join(format!("veer-c-component-{}-out.wasm", std::process::id()));
        let text = temp("text.wasm", b"int main() {}");
        let error = componentize(&text, &out).unwrap_err().to_string();
        assert!(error.contains("is not a WebAssembly module"), "{error}");
        // A valid, empty core module: no component type linked in.
        let bare = temp("bare.wasm", b"\0asm\x01\0\0\0");
        let error = format!("{:#}", componentize(&bare, &out).unwrap_err());
        assert!(error.contains("picker_component_type.o"), "{error}");
        assert!(!out.exists(), "nothing is written for a refused module");
        let missing = componentize(Path::new("/no/such/module.wasm"), &out).unwrap_err().to_string();
        assert!(missing.contains("/no/such/module.wasm"), "{missing}");
        for path in [text, bare] {
            let _ = std::fs::remove_file(path);
        }
    }

    #[test]
    fn bindings_name_a_wit_directory_that_is_not_one() {
        let out = std::env::temp_dir().join(format!("veer-c-component-{}-bindings", std::process::id()));
        let error = bindings(Path::new("/no/such/wit"), "picker", &out).unwrap_err().to_string();
        assert!(error.contains("/no/such/wit"), "{error}");
        let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit");
        let error = bindings(&wit, "no-such-world", &out).unwrap_err().to_string();
        assert!(error.contains("no-such-world"), "{error}");
    }
}
