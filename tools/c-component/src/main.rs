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
