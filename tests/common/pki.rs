//! A throwaway PKI for mTLS tests: a CA and device certificates (good,
//! expired, from another CA) as PEM files in a temp dir.

use std::path::{Path, PathBuf};

/// A CA that signs device certificates.
pub struct Ca {
    pub cert: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    dir: PathBuf,
}

/// A device certificate and its key.
#[derive(Clone)]
pub struct Device {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    /// A new CA named `name`, its certificate at `dir/name.pem`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, cert.pem()).unwrap();
        Ca {
            cert: path,
            issuer: rcgen::Issuer::new(params, key),
            dir: dir.to_path_buf(),
        }
    }

    /// A device certificate whose identity is the common name `cn`.
    pub fn device(&self, cn: &str) -> Device {
        self.issue(cn, Vec::new(), false)
    }

    /// A device certificate that expired last year.
    pub fn expired_device(&self, cn: &str) -> Device {
        self.issue(cn, Vec::new(), true)
    }

    /// A device certificate with these subject alternative names.
    pub fn device_with_sans(&self, cn: &str, sans: Vec<rcgen::SanType>) -> Device {
        self.issue(cn, sans, false)
    }

    fn issue(&self, cn: &str, sans: Vec<rcgen::SanType>, expired: bool) -> Device {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let stem = format!(
            "{}-{cn}{}",
            self.cert.file_stem().unwrap().to_str().unwrap(),
            if expired { "-expired" } else { "" }
        );
        let device = Device {
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}.key")),
        };
        std::fs::write(&device.cert, cert.pem()).unwrap();
        std::fs::write(&device.key, key.serialize_pem()).unwrap();
        device
    }
}

/// Client options for `server` trusting `server_ca`, presenting `device`.
pub fn options(
    server: &str,
    server_ca: &Path,
    device: Option<&Device>,
) -> eddy::client::ClientOptions {
    let mut options = eddy::client::ClientOptions::tls(server, server_ca);
    if let (Some(tls), Some(device)) = (options.tls.as_mut(), device) {
        tls.identity = Some((device.cert.clone(), device.key.clone()));
    }
    options
}
