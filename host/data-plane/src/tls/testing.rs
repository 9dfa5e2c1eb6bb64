//! Certificates made on the spot (rcgen), for tests: a CA, leaves it signs
//! for any names and validity, written as PEM files. Enabled by the
//! `test-pki` feature (the end-to-end suite uses it too).
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::path::{Path, PathBuf};

use time::{Duration, OffsetDateTime};

/// A CA in a directory of PEM files, and what it signs.
pub struct TestPki {
    dir: PathBuf,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_path: PathBuf,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl TestPki {
    /// A fresh CA named `tag` in a new directory under the system's temp dir.
    pub fn new(tag: &str) -> TestPki {
        let dir = std::env::temp_dir().join(format!("veer-pki-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("veer test CA {tag}"));
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca_path = dir.join(format!("{tag}-ca.pem"));
        std::fs::write(&ca_path, cert.pem()).unwrap();
        TestPki { dir, ca: rcgen::Issuer::new(params, key), ca_path }
    }

    /// The CA's certificate file (the bundle clients trust).
    pub fn ca(&self) -> &Path {
        &self.ca_path
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid
    /// from a day ago until `days` days from now (negative: expired), as
    /// `<file>.pem` and `<file>.key`; returns their paths.
    pub fn server(&self, file: &str, names: &[&str], days: i64) -> (PathBuf, PathBuf) {
        self.leaf(file, names, days, rcgen::ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate with common name `name` (for mTLS).
    pub fn client(&self, file: &str, name: &str) -> (PathBuf, PathBuf) {
        self.leaf(file, &[name], 30, rcgen::ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, file: &str, names: &[&str], days: i64, usage: rcgen::ExtendedKeyUsagePurpose) -> (PathBuf, PathBuf) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        if let Some(name) = names.first() {
            params.distinguished_name.push(rcgen::DnType::CommonName, *name);
        }
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1).max(Duration::days(1 - days));
        params.not_after = now + Duration::days(days);
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (cert_path, key_path) = (self.dir.join(format!("{file}.pem")), self.dir.join(format!("{file}.key")));
        write_atomically(&cert_path, cert.pem().as_bytes());
        write_atomically(&key_path, key.serialize_pem().as_bytes());
        (cert_path, key_path)
    }
}

/// Writes through a temporary file and a rename, as deploy tooling does, so
/// a watcher never reads half a file.
pub fn write_atomically(path: &Path, contents: &[u8]) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, contents).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}
