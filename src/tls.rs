//! TLS setup: the dev CA and server certificate generated on first start,
//! loading PEM files, rustls configs (ring provider) for both sides, and the
//! server's swappable certificate ([`CertStore`]).
//!
//! The server config resolves its certificate through a [`CertStore`] on
//! every handshake, so a reload (SIGHUP or changed files, see
//! [`crate::reload`]) reaches new connections at once while connections
//! already open keep the session they negotiated. A certificate and key that
//! do not load, or do not match, are refused and the previous pair stays.
//!
//! Device certificates (mTLS: the client CA, the identity a certificate
//! proves) are in [`client_auth`].
//!
//! This module builds configurations; it does not accept or dial
//! connections (that is `net` and `client`).

mod client_auth;

pub use client_auth::{identity_of, ClientCaStore, ANONYMOUS_IDENTITY, IDENTITY_BYTES_MAX};

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Validity of generated dev certificates, in years.
pub const DEV_CERT_VALIDITY_YEARS: i32 = 10;

/// Where the dev CA and server certificate live inside a data directory.
#[derive(Debug, Clone)]
pub struct DevTlsPaths {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl DevTlsPaths {
    /// Paths under `<data_dir>/tls`.
    pub fn in_data_dir(data_dir: &Path) -> DevTlsPaths {
        let dir = data_dir.join("tls");
        DevTlsPaths {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            dir,
        }
    }
}

/// TLS errors, each naming the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("certificate {cert} and key {key} do not work together: {source}")]
    BadPair {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("CA file {path} is not usable: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("generating the dev certificate failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0:?} is not a valid TLS server name; pass --tls-server-name NAME")]
    BadServerName(String),
    #[error("its certificate names no identity (no DNS or URI subject alternative name, no common name)")]
    NoIdentity,
    #[error("its certificate's identity is {bytes} bytes long, over the limit of {max} (identities are never cut: two names that differ only past the limit would become one)", max = IDENTITY_BYTES_MAX)]
    IdentityTooLong { bytes: usize },
    #[error("its certificate's identity contains a control character")]
    IdentityControlCharacter,
}

/// Makes sure the dev CA and a server certificate for `hosts` exist under
/// `<data_dir>/tls`, generating them on first start. Existing files are
/// reused, so clients keep trusting the same CA across restarts.
/// Returns the paths and whether anything was generated.
///
/// Modes are set explicitly, whatever the umask (systemd's unit has
/// `UMask=0077`): the keys are private (0600); the certificates are public
/// by nature, so the CA can be handed to clients (0644, in a 0755 `tls/`
/// the first start creates). Who reaches them is then the data
/// directory's business (`/var/lib/eddy` is 0750 eddy:eddy: members of
/// group eddy and root).
pub fn ensure_dev_certs(
    data_dir: &Path,
    hosts: &[String],
) -> Result<(DevTlsPaths, bool), TlsError> {
    let paths = DevTlsPaths::in_data_dir(data_dir);
    if paths.server_cert.exists() && paths.server_key.exists() && paths.ca_cert.exists() {
        return Ok((paths, false));
    }
    if !paths.dir.exists() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&paths.dir)
            .and_then(|()| {
                std::fs::set_permissions(&paths.dir, std::fs::Permissions::from_mode(0o755))
            })
            .map_err(|source| TlsError::Write {
                path: paths.dir.clone(),
                source,
            })?;
    }

    let now_year = current_year();
    let not_before = rcgen::date_time_ymd(now_year - 1, 1, 1);
    let not_after = rcgen::date_time_ymd(now_year + DEV_CERT_VALIDITY_YEARS, 1, 1);

    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "eddy dev CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let server_key = rcgen::KeyPair::generate()?;
    let mut server_params = rcgen::CertificateParams::new(hosts.to_vec())?;
    server_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "eddy dev server");
    server_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    server_params.not_before = not_before;
    server_params.not_after = not_after;
    let server_cert = server_params.signed_by(&server_key, &issuer)?;

    write_file(&paths.ca_cert, ca_cert.pem().as_bytes(), false)?;
    write_file(&paths.ca_key, issuer.key().serialize_pem().as_bytes(), true)?;
    write_file(
        &paths.server_key,
        server_key.serialize_pem().as_bytes(),
        true,
    )?;
    // The server certificate last: its presence means the set is complete.
    write_file(&paths.server_cert, server_cert.pem().as_bytes(), false)?;
    // The names too, else a power cut takes the set back (and the next
    // start makes a new CA that devices do not trust).
    for dir in [&paths.dir, data_dir] {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| TlsError::Write {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    Ok((paths, true))
}

fn current_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Average Gregorian year; exact enough for a validity window.
    1970 + i32::try_from(secs / 31_556_952).unwrap_or(0)
}

/// Writes a generated file: `private` ones 0600, the others 0644 (set
/// after creation, so the umask does not narrow it).
fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mode = if private { 0o600 } else { 0o644 };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true).mode(mode);
    let mut f = options.open(path).map_err(|source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| f.write_all(bytes))
        .and_then(|_| f.sync_all())
        .map_err(|source| TlsError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// Reads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsError::NoKey {
        path: path.to_path_buf(),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a certificate chain and its private key and checks that they
/// belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = load_certs(cert)?;
    let private = load_key(key)?;
    CertifiedKey::from_der(chain, private, &provider()).map_err(|source| TlsError::BadPair {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    })
}

/// The server certificate in use, swappable while the server runs.
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

impl CertStore {
    /// Loads `cert` and `key`; fails if they do not load or do not match.
    pub fn load(cert: &Path, key: &Path) -> Result<CertStore, TlsError> {
        let loaded = load_certified_key(cert, key)?;
        Ok(CertStore {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(loaded)),
        })
    }

    /// Loads the files again and, if they are good, serves them to new
    /// connections. On error the pair in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = Arc::new(load_certified_key(&self.cert, &self.key)?);
        *self.current.write().expect("cert lock") = loaded;
        Ok(())
    }

    /// The certificate chain and key handed to new connections.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().expect("cert lock").clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl crate::reload::Reloadable for CertStore {
    fn name(&self) -> &'static str {
        "tls"
    }

    fn files(&self) -> Vec<PathBuf> {
        vec![self.cert.clone(), self.key.clone()]
    }

    fn reload(&self) -> Result<String, String> {
        CertStore::reload(self).map_err(|e| e.to_string())?;
        let chain = self.current().cert.len();
        Ok(format!(
            "certificate {} ({chain} in chain) and key {}; new connections use them",
            self.cert.display(),
            self.key.display()
        ))
    }
}

/// A server config whose certificate comes from `store`; with
/// `client_ca`, devices must present a certificate that chains to it.
pub fn server_config_with(
    store: Arc<CertStore>,
    client_ca: Option<Arc<ClientCaStore>>,
) -> Arc<rustls::ServerConfig> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let config = match client_ca {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    }
    .with_cert_resolver(store);
    Arc::new(config)
}

/// A server config presenting `cert` (chain) with `key`; no client certs.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    Ok(server_config_with(
        Arc::new(CertStore::load(cert, key)?),
        None,
    ))
}

/// A client config that trusts exactly the CAs in `ca`.
pub fn client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    client_config_with_cert(ca, None)
}

/// A client config that trusts exactly the CAs in `ca` and, with
/// `identity` (certificate chain and key files), presents that certificate
/// to servers that ask for one (mTLS).
pub fn client_config_with_cert(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            path: ca.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = load_certs(cert)?;
            let private = load_key(key)?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|source| TlsError::BadPair {
                    cert: cert.to_path_buf(),
                    key: key.to_path_buf(),
                    source,
                })?
        }
    };
    Ok(Arc::new(config))
}

/// The TLS server name for `host` (a DNS name or an IP address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_string()).map_err(|_| TlsError::BadServerName(host.to_string()))
}

/// Host names and addresses the generated server certificate covers.
pub fn dev_cert_hosts(listen: &std::net::SocketAddr) -> Vec<String> {
    let mut hosts = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let ip = listen.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        hosts.push(ip.to_string());
    }
    if let Ok(name) = std::fs::read_to_string("/etc/hostname") {
        let name = name.trim();
        if !name.is_empty() && !hosts.iter().any(|h| h == name) {
            hosts.push(name.to_string());
        }
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn generated_certificates_are_public_and_keys_private() {
        let dir = tempfile::tempdir().unwrap();
        let (paths, generated) = ensure_dev_certs(dir.path(), &["localhost".to_string()]).unwrap();
        assert!(generated);
        assert_eq!(mode(&paths.dir), 0o755, "tls/");
        assert_eq!(mode(&paths.ca_cert), 0o644, "ca.pem");
        assert_eq!(mode(&paths.server_cert), 0o644, "server.pem");
        assert_eq!(mode(&paths.ca_key), 0o600, "ca.key");
        assert_eq!(mode(&paths.server_key), 0o600, "server.key");
    }
}
