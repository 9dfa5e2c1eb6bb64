//! `veer plugin new NAME --lang rust|python|js|c`: writes a picker project
//! that builds, tests and loads with the commands it prints.
//!
//! Every language gets the same working policy (round robin with a `start`
//! parameter), its tests where the language has a fake host (Rust, Python,
//! JavaScript), and its build. A project refers to the veer checkout it was
//! generated from (by default the source tree this `veer` was built from;
//! `--veer-dir` points elsewhere) for the SDK, the WIT and the C toolchain:
//! a Rust crate depends on `sdk/` by path, Python imports `sdk/python`,
//! JavaScript imports `sdk/js`, and C builds with `scripts/c-toolchain.sh`.

use std::path::{Component, Path, PathBuf};

/// A language `veer plugin new` writes a project in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// A Cargo crate against `veer-sdk`.
    Rust,
    /// componentize-py, with the SDK in `sdk/python`.
    Python,
    /// jco (QuickJS), with the SDK in `sdk/js`.
    Js,
    /// clang-16 and wasi-libc, with bindings from wit-bindgen's C generator.
    C,
}

impl Lang {
    /// Every language, in the order the docs list them.
    pub const ALL: [Lang; 4] = [Lang::Rust, Lang::Python, Lang::Js, Lang::C];

    /// The name `--lang` takes.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
            Lang::C => "c",
        }
    }
}

impl std::str::FromStr for Lang {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Lang::ALL
            .into_iter()
            .find(|lang| lang.name() == text)
            .ok_or_else(|| format!("unknown language '{text}' (known: rust, python, js, c)"))
    }
}

/// Why a project could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name is not usable as a crate, module and policy name.
    #[error(
        "plugin name '{0}' must start with a lowercase letter and contain only lowercase letters, digits and '-' (e.g. 'canary-by-header')"
    )]
    BadName(String),
    /// The target directory exists and is not empty: nothing is overwritten.
    #[error("{0} already exists and is not empty; choose another name or --dir")]
    Exists(PathBuf),
    /// The directory given as the veer checkout is not one.
    #[error("no veer checkout at {0} (expected {0}/sdk/Cargo.toml and {0}/wit/picker.wit); pass --veer-dir PATH")]
    NoCheckout(PathBuf),
    /// Writing failed.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
}

/// The source tree this binary was built from.
pub fn default_veer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What was generated.
#[derive(Debug, Clone)]
pub struct Scaffold {
    /// The project's directory.
    pub dir: PathBuf,
    /// The policy's name (also the crate or package name).
    pub name: String,
    /// Its language.
    pub lang: Lang,
    /// Where its build writes the component, relative to `dir`.
    pub component: PathBuf,
    /// The commands that test and build it, each with what it does, to run in `dir`.
    pub steps: Vec<(String, &'static str)>,
}

/// Writes project `name` in `lang` into `parent/name`, against the veer checkout at `veer_dir`.
pub fn new_plugin(name: &str, lang: Lang, parent: &Path, veer_dir: &Path) -> Result<Scaffold, ScaffoldError> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !valid {
        return Err(ScaffoldError::BadName(name.to_string()));
    }
    if !veer_dir.join("sdk/Cargo.toml").is_file() || !veer_dir.join("wit/picker.wit").is_file() {
        return Err(ScaffoldError::NoCheckout(veer_dir.to_path_buf()));
    }
    let veer_dir = veer_dir.canonicalize().unwrap_or_else(|_| veer_dir.to_path_buf());
    let dir = parent.join(name);
    if dir.read_dir().is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(ScaffoldError::Exists(dir));
    }
    let create = |path: &Path| {
        std::fs::create_dir_all(path)
            .map_err(|e| ScaffoldError::Write { path: path.to_path_buf(), reason: e.to_string() })
    };
    create(&dir)?;
    let dir = dir.canonicalize().unwrap_or(dir);
    let file = name.replace('-', "_");
    let type_name: String = name
        .split('-')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_ascii_uppercase()).into_iter().chain(chars).collect::<String>()
        })
        .collect();
    let veer_text = veer_dir.display().to_string();
    // jco bundles only modules under its --cwd: the deepest directory holding
    // both the project and the SDK, with the SDK imported relative to the project.
    let common = common_ancestor(&dir, &veer_dir);
    let ups = dir.strip_prefix(&common).map_or(0, |below| below.components().count());
    let sdk_js = format!(
        "{}{}",
        "../".repeat(ups),
        veer_dir.strip_prefix(&common).unwrap_or(&veer_dir).join("sdk/js").display()
    );
    let app_from_cwd = dir.strip_prefix(&common).unwrap_or(&dir).join("app.js");
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{file}}", &file)
            .replace("{{type}}", &type_name)
            // A TOML basic string: backslashes and quotes escaped.
            .replace(
                "{{sdk}}",
                &format!(
                    "{{ path = \"{}\" }}",
                    veer_dir.join("sdk").display().to_string().replace('\\', "\\\\").replace('"', "\\\"")
                ),
            )
            .replace("{{veer}}", &veer_text)
            .replace("{{sdk_js}}", &sdk_js)
            .replace("{{jco_cwd}}", &common.display().to_string())
            .replace("{{app_from_cwd}}", &app_from_cwd.display().to_string())
    };
    let write = |relative: &str, template: &str| {
        let path = dir.join(relative);
        std::fs::write(&path, fill(template)).map_err(|e| ScaffoldError::Write { path, reason: e.to_string() })
    };
    let (component, steps): (PathBuf, Vec<(String, &'static str)>) = match lang {
        Lang::Rust => {
            create(&dir.join("src"))?;
            write("Cargo.toml", include_str!("template/rust/Cargo.toml.tmpl"))?;
            write("src/lib.rs", include_str!("template/rust/lib.rs.tmpl"))?;
            write(".gitignore", include_str!("template/rust/gitignore.tmpl"))?;
            (
                Path::new("target/wasm32-wasip2/plugin").join(format!("{file}.wasm")),
                vec![
                    ("cargo test".into(), "native tests, fake host"),
                    ("cargo build --profile plugin --target wasm32-wasip2".into(), "the component"),
                ],
            )
        }
        Lang::Python => {
            write("policy.py", include_str!("template/python/policy.py.tmpl"))?;
            write("app.py", include_str!("template/python/app.py.tmpl"))?;
            write("test_policy.py", include_str!("template/python/test_policy.py.tmpl"))?;
            write("requirements.txt", include_str!("template/python/requirements.txt.tmpl"))?;
            write("build.sh", include_str!("template/python/build.sh.tmpl"))?;
            write(".gitignore", include_str!("template/python/gitignore.tmpl"))?;
            (
                PathBuf::from(format!("{file}.wasm")),
                vec![("bash build.sh test".into(), "pytest, fake host"), ("bash build.sh".into(), "the component")],
            )
        }
        Lang::Js => {
            write("policy.js", include_str!("template/js/policy.js.tmpl"))?;
            write("app.js", include_str!("template/js/app.js.tmpl"))?;
            write("policy.test.js", include_str!("template/js/policy.test.js.tmpl"))?;
            write("package.json", include_str!("template/js/package.json.tmpl"))?;
            write("build.sh", include_str!("template/js/build.sh.tmpl"))?;
            write(".gitignore", include_str!("template/js/gitignore.tmpl"))?;
            (
                PathBuf::from(format!("{file}.wasm")),
                vec![
                    ("bash build.sh test".into(), "node --test, fake host"),
                    ("bash build.sh".into(), "the component"),
                ],
            )
        }
        Lang::C => {
            write(&format!("{file}.c"), include_str!("template/c/policy.c.tmpl"))?;
            write("build.sh", include_str!("template/c/build.sh.tmpl"))?;
            write(".gitignore", include_str!("template/c/gitignore.tmpl"))?;
            (PathBuf::from(format!("{file}.wasm")), vec![("bash build.sh".into(), "the component")])
        }
    };
    Ok(Scaffold { dir, name: name.to_string(), lang, component, steps })
}

/// The deepest directory both absolute paths are under.
fn common_ancestor(a: &Path, b: &Path) -> PathBuf {
    a.components()
        .zip(b.components())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_crate_names_are_refused() {
        let dir = std::env::temp_dir();
        for bad in ["", "Upper", "1st", "under_score", "trailing-", "sp ace"] {
            let made = new_plugin(bad, Lang::Rust, &dir, &default_veer_dir());
            assert!(matches!(made, Err(ScaffoldError::BadName(_))), "{bad}");
        }
        let made = new_plugin("fine", Lang::Python, &dir, Path::new("/nonexistent"));
        assert!(matches!(made, Err(ScaffoldError::NoCheckout(_))));
        assert_eq!("js".parse::<Lang>(), Ok(Lang::Js));
        assert!("go".parse::<Lang>().unwrap_err().contains("known: rust, python, js, c"));
    }

    #[test]
    fn writes_every_language_against_the_checkout_and_never_overwrites() {
        let parent = std::env::temp_dir().join(format!("veer-scaffold-unit-{}", std::process::id()));
        for lang in Lang::ALL {
            let parent = parent.join(lang.name());
            let made = new_plugin("canary-by-header", lang, &parent, &default_veer_dir()).expect("writes");
            let mut files = 0;
            for entry in std::fs::read_dir(&made.dir)
                .expect("written")
                .chain(std::fs::read_dir(made.dir.join("src")).into_iter().flatten())
            {
                let path = entry.expect("listed").path();
                if path.is_file() {
                    let text = std::fs::read_to_string(&path).expect("text");
                    assert!(!text.contains("{{"), "every placeholder is filled in {}", path.display());
                    files += 1;
                }
            }
            assert!(files >= 3, "{lang:?}: {files} files");
            assert!(!made.steps.is_empty());
            let again = new_plugin("canary-by-header", lang, &parent, &default_veer_dir());
            assert!(matches!(again, Err(ScaffoldError::Exists(_))), "{lang:?}");
        }
        let rust = parent.join("rust/canary-by-header");
        let manifest = std::fs::read_to_string(rust.join("Cargo.toml")).expect("written");
        assert!(manifest.contains("name = \"canary-by-header\"") && manifest.contains("veer-sdk = { path = \""));
        let lib = std::fs::read_to_string(rust.join("src/lib.rs")).expect("written");
        assert!(lib.contains("pub struct CanaryByHeader") && lib.contains("export_policy!(CanaryByHeader)"));
        let policy = std::fs::read_to_string(parent.join("python/canary-by-header/policy.py")).expect("written");
        assert!(policy.contains("class CanaryByHeader(Policy)") && policy.contains("NAME = \"canary-by-header\""));
        let app = std::fs::read_to_string(parent.join("js/canary-by-header/app.js")).expect("written");
        assert!(app.contains("sdk/js/export.js\""), "{app}");
        assert!(parent.join("c/canary-by-header/canary_by_header.c").is_file());
        let _ = std::fs::remove_dir_all(parent);
    }

    #[test]
    fn the_common_ancestor_is_the_deepest_shared_directory() {
        assert_eq!(common_ancestor(Path::new("/a/b/c"), Path::new("/a/b/d/e")), PathBuf::from("/a/b"));
        assert_eq!(common_ancestor(Path::new("/x"), Path::new("/y")), PathBuf::from("/"));
    }
}
