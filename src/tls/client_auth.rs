//! Device certificates (mTLS): the client CA that device certificates must
//! chain to, swappable while the server runs ([`ClientCaStore`]), and the
//! device identity read from a verified certificate ([`identity_of`]).
//!
//! When a client CA is configured, every connection must present a
//! certificate that chains to it and is valid now (rustls'
//! `WebPkiClientVerifier`: signature chain, validity period, key usage for
//! client authentication); the handshake fails otherwise. The identity of
//! such a connection is, in this order, the certificate's first DNS subject
//! alternative name, its first URI SAN (e.g. a SPIFFE id), or the subject's
//! common name. Without a client CA no certificate is asked for and every
//! connection is [`ANONYMOUS_IDENTITY`]. The two never mix: with a client
//! CA the certificate is mandatory, so `anonymous` cannot be claimed by a
//! certificate's name being "anonymous" in a setup that also has
//! certificate-less devices.
//!
//! The CA file is reloaded like the server certificate (see
//! [`crate::reload`]): a file that does not load is refused and the CA in
//! use stays. Connections already open keep the identity they proved.
//!
//! No hints: the server's certificate request names no acceptable CAs
//! (rustls' `clear_root_hint_subjects`), because the CA can change under a
//! running config; a device presents the one certificate it has anyway.
//!
//! This module verifies and names; what an identity may do is
//! [`crate::acl`]'s business.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use x509_cert::der::{self, DecodeValue};

use super::{load_certs, provider, TlsError};

/// The identity of a connection that presented no certificate (no client
/// CA configured).
pub const ANONYMOUS_IDENTITY: &str = "anonymous";

/// Longest identity accepted, in bytes: a certificate whose identity is
/// longer is refused at the handshake, never cut (two names that differ
/// only past the limit would otherwise become one identity). Certificate
/// names are far shorter in practice.
pub const IDENTITY_BYTES_MAX: usize = 255;

/// The client CA in use, swappable while the server runs; the server's
/// client certificate verifier delegates to the current one.
pub struct ClientCaStore {
    path: PathBuf,
    current: RwLock<Arc<dyn ClientCertVerifier>>,
    /// Certificates in the CA file in use (for the reload log line).
    count: RwLock<usize>,
}

impl std::fmt::Debug for ClientCaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCaStore")
            .field("path", &self.path)
            .finish()
    }
}

/// A verifier that accepts exactly the certificates chaining to the CAs in
/// `path`.
fn load_verifier(path: &Path) -> Result<(Arc<dyn ClientCertVerifier>, usize), TlsError> {
    let bad = |reason: String| TlsError::BadCa {
        path: path.to_path_buf(),
        reason,
    };
    let certs = load_certs(path)?;
    let count = certs.len();
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .clear_root_hint_subjects()
        .build()
        .map_err(|e| bad(e.to_string()))?;
    Ok((verifier, count))
}

impl ClientCaStore {
    /// Loads the CA certificate(s) in `path` (PEM).
    pub fn load(path: &Path) -> Result<ClientCaStore, TlsError> {
        let (verifier, count) = load_verifier(path)?;
        Ok(ClientCaStore {
            path: path.to_path_buf(),
            current: RwLock::new(verifier),
            count: RwLock::new(count),
        })
    }

    /// Loads the file again; on error the CA in use stays.
    pub fn reload(&self) -> Result<usize, TlsError> {
        let (verifier, count) = load_verifier(&self.path)?;
        *self.current.write().expect("client CA lock") = verifier;
        *self.count.write().expect("client CA lock") = count;
        Ok(count)
    }

    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        self.current.read().expect("client CA lock").clone()
    }
}

impl ClientCertVerifier for ClientCaStore {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

impl crate::reload::Reloadable for ClientCaStore {
    fn name(&self) -> &'static str {
        "client_ca"
    }

    fn files(&self) -> Vec<PathBuf> {
        vec![self.path.clone()]
    }

    fn reload(&self) -> Result<String, String> {
        let count = ClientCaStore::reload(self).map_err(|e| e.to_string())?;
        Ok(format!(
            "client CA {} ({count} certificates); new connections are checked against it",
            self.path.display()
        ))
    }
}

/// The identity a verified device certificate proves: its first DNS
/// subject alternative name, else its first URI SAN, else its subject's
/// common name. Refused: none of them (or a certificate that does not
/// parse, which cannot happen after rustls verified it), a name over
/// [`IDENTITY_BYTES_MAX`], or one with a control character (a NUL would
/// blur where an identity ends, e.g. in producer names it owns).
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<String, TlsError> {
    let parsed = webpki::EndEntityCert::try_from(cert).map_err(|_| TlsError::NoIdentity)?;
    let name = parsed
        .valid_dns_names()
        .next()
        .map(str::to_string)
        .or_else(|| parsed.valid_uri_names().next().map(str::to_string))
        .or_else(|| common_name(parsed.subject()))
        .ok_or(TlsError::NoIdentity)?;
    if name.len() > IDENTITY_BYTES_MAX {
        return Err(TlsError::IdentityTooLong { bytes: name.len() });
    }
    if name.chars().any(char::is_control) {
        return Err(TlsError::IdentityControlCharacter);
    }
    Ok(name)
}

/// The common name in a subject (`subject` is the content of the Name
/// SEQUENCE, as webpki hands it out).
fn common_name(subject: &[u8]) -> Option<String> {
    let length = der::Length::try_from(subject.len()).ok()?;
    let mut reader = der::SliceReader::new(subject).ok()?;
    let name = x509_cert::name::Name::decode_value(
        &mut reader,
        der::Header::new(der::Tag::Sequence, length),
    )
    .ok()?;
    let cn = name.common_name().ok()??;
    let cn = cn.value().into_owned();
    (!cn.is_empty()).then_some(cn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(sans: &[rcgen::SanType], cn: Option<&str>) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans.to_vec();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "fleet");
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        params.self_signed(&key).unwrap().der().clone()
    }

    fn dns(name: &str) -> rcgen::SanType {
        rcgen::SanType::DnsName(name.try_into().unwrap())
    }

    fn uri(name: &str) -> rcgen::SanType {
        rcgen::SanType::URI(name.try_into().unwrap())
    }

    #[test]
    fn identity_is_the_dns_san_then_the_uri_san_then_the_common_name() {
        let both = cert(
            &[uri("spiffe://fleet/pump-1"), dns("pump-1.devices.example")],
            Some("cn-1"),
        );
        assert_eq!(
            identity_of(&both).ok().as_deref(),
            Some("pump-1.devices.example")
        );
        let uri_only = cert(&[uri("spiffe://fleet/pump-2")], Some("cn-2"));
        assert_eq!(
            identity_of(&uri_only).ok().as_deref(),
            Some("spiffe://fleet/pump-2")
        );
        let cn_only = cert(&[], Some("pump-3"));
        assert_eq!(identity_of(&cn_only).ok().as_deref(), Some("pump-3"));
        let nothing = cert(&[], None);
        assert!(matches!(identity_of(&nothing), Err(TlsError::NoIdentity)));
    }

    /// Issue 16, item 10: two URI SANs that differ only past the limit are
    /// both refused, never cut to one identity; at the limit is fine.
    #[test]
    fn identities_over_the_limit_are_refused_not_cut() {
        let base = format!("spiffe://fleet/{}", "a".repeat(IDENTITY_BYTES_MAX));
        for tail in ["victim", "thief"] {
            let long = cert(&[uri(&format!("{base}{tail}"))], None);
            assert!(matches!(
                identity_of(&long),
                Err(TlsError::IdentityTooLong { .. })
            ));
        }
        let at_limit = "b".repeat(IDENTITY_BYTES_MAX);
        assert_eq!(identity_of(&cert(&[], Some(&at_limit))).unwrap(), at_limit);
        let control = cert(&[], Some("pump\u{0}admin"));
        assert!(matches!(
            identity_of(&control),
            Err(TlsError::IdentityControlCharacter)
        ));
    }
}
