//! `veer plugin new`: writes a Rust picker crate against the SDK that builds,
//! tests and loads with the commands the README gives.
//!
//! The crate is its own Cargo workspace (so it builds wherever it is written)
//! and depends on `veer-sdk` by path: by default the `sdk/` of the source tree
//! this `veer` was built from; `--sdk` points elsewhere (a checkout of veer, for
//! authors outside the repository).

use std::path::{Path, PathBuf};

const CARGO_TOML: &str = include_str!("template/Cargo.toml.tmpl");
const LIB_RS: &str = include_str!("template/lib.rs.tmpl");
const GITIGNORE: &str = include_str!("template/gitignore.tmpl");

/// Why a plugin crate could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name is not usable as a crate and policy name.
    #[error(
        "plugin name '{0}' must start with a lowercase letter and contain only lowercase letters, digits and '-' (e.g. 'canary-by-header')"
    )]
    BadName(String),
    /// The target directory exists and is not empty: nothing is overwritten.
    #[error("{0} already exists and is not empty; choose another name or --dir")]
    Exists(PathBuf),
    /// The SDK directory does not hold `veer-sdk`.
    #[error("no veer-sdk at {0} (expected {0}/Cargo.toml); pass --sdk PATH to a veer checkout's sdk/ directory")]
    NoSdk(PathBuf),
    /// Writing failed.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
}

/// The `sdk/` directory of the source tree this binary was built from.
pub fn default_sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk")
}

/// What was generated.
#[derive(Debug, Clone)]
pub struct Scaffold {
    /// The crate's directory.
    pub dir: PathBuf,
    /// The crate name (also the policy's `NAME`).
    pub crate_name: String,
    /// File name of the component `cargo build --profile plugin --target
    /// wasm32-wasip2` produces, relative to the crate directory.
    pub component: PathBuf,
}

/// Writes crate `name` into `parent/name`, depending on the SDK at `sdk_dir`.
pub fn new_plugin(name: &str, parent: &Path, sdk_dir: &Path) -> Result<Scaffold, ScaffoldError> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !valid {
        return Err(ScaffoldError::BadName(name.to_string()));
    }
    if !sdk_dir.join("Cargo.toml").is_file() {
        return Err(ScaffoldError::NoSdk(sdk_dir.to_path_buf()));
    }
    let sdk_dir = sdk_dir.canonicalize().unwrap_or_else(|_| sdk_dir.to_path_buf());
    let dir = parent.join(name);
    if dir.read_dir().is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(ScaffoldError::Exists(dir));
    }
    let file = name.replace('-', "_");
    let type_name: String = name
        .split('-')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_ascii_uppercase()).into_iter().chain(chars).collect::<String>()
        })
        .collect();
    // A TOML basic string: backslashes and quotes escaped.
    let sdk_path = sdk_dir.display().to_string().replace('\\', "\\\\").replace('"', "\\\"");
    let fill = |template: &str| {
        template
            .replace("{{crate}}", name)
            .replace("{{file}}", &file)
            .replace("{{type}}", &type_name)
            .replace("{{sdk}}", &format!("{{ path = \"{sdk_path}\" }}"))
    };
    let write = |path: PathBuf, text: String| {
        std::fs::write(&path, text).map_err(|e| ScaffoldError::Write { path, reason: e.to_string() })
    };
    std::fs::create_dir_all(dir.join("src"))
        .map_err(|e| ScaffoldError::Write { path: dir.clone(), reason: e.to_string() })?;
    write(dir.join("Cargo.toml"), fill(CARGO_TOML))?;
    write(dir.join("src/lib.rs"), fill(LIB_RS))?;
    write(dir.join(".gitignore"), GITIGNORE.to_string())?;
    Ok(Scaffold {
        component: Path::new("target/wasm32-wasip2/plugin").join(format!("{file}.wasm")),
        dir,
        crate_name: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_crate_names_are_refused() {
        let dir = std::env::temp_dir();
        for bad in ["", "Upper", "1st", "under_score", "trailing-", "sp ace"] {
            assert!(matches!(new_plugin(bad, &dir, &default_sdk_dir()), Err(ScaffoldError::BadName(_))), "{bad}");
        }
    }

    #[test]
    fn writes_a_crate_against_the_sdk_and_never_overwrites() {
        let parent = std::env::temp_dir().join(format!("veer-scaffold-unit-{}", std::process::id()));
        let made = new_plugin("canary-by-header", &parent, &default_sdk_dir()).expect("writes");
        let manifest = std::fs::read_to_string(made.dir.join("Cargo.toml")).expect("written");
        assert!(manifest.contains("name = \"canary-by-header\""), "{manifest}");
        assert!(manifest.contains("veer-sdk = { path = \""), "{manifest}");
        let lib = std::fs::read_to_string(made.dir.join("src/lib.rs")).expect("written");
        assert!(lib.contains("pub struct CanaryByHeader") && lib.contains("export_policy!(CanaryByHeader)"));
        assert!(!lib.contains("{{"), "every placeholder is filled");
        assert_eq!(made.component, Path::new("target/wasm32-wasip2/plugin/canary_by_header.wasm"));
        assert!(matches!(new_plugin("canary-by-header", &parent, &default_sdk_dir()), Err(ScaffoldError::Exists(_))));
        let _ = std::fs::remove_dir_all(parent);
    }
}
