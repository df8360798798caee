//! The connection flags every client command shares (`--server`, `--ca`,
//! `--plaintext`, `--tls-server-name`, `--cert`, `--key`), defined once,
//! and [`Connection`], what they become.
//!
//! argh cannot flatten one struct into another, so [`client_args!`] appends
//! the same fields to each client command's argument struct and gives it a
//! `connection()` method. It does not connect by itself and knows nothing
//! of the commands' other flags.

use std::path::PathBuf;

use super::CliError;
use crate::client::{Client, ClientError, ClientOptions, ClientTls};
use crate::config::{DATA_DIR_DEFAULT, LISTEN_DEFAULT};

/// The server address a client command uses by default.
pub fn default_server() -> String {
    LISTEN_DEFAULT.to_string()
}

/// Defines a client command's argh struct with the shared connection flags
/// appended, and its `connection()`.
#[macro_export]
#[doc(hidden)]
macro_rules! client_args {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($fields:tt)*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $($fields)*
            /// server address HOST:PORT (default 127.0.0.1:7654)
            #[argh(option, short = 's', default = "crate::cli::default_server()")]
            pub server: String,
            /// CA certificate to trust (default ./eddy-data/tls/ca.pem)
            #[argh(option)]
            pub ca: Option<std::path::PathBuf>,
            /// connect without TLS (only to a server started with --insecure-plaintext)
            #[argh(switch)]
            pub plaintext: bool,
            /// name to verify in the server certificate (default: the host of --server)
            #[argh(option)]
            pub tls_server_name: Option<String>,
            /// client certificate (PEM) to present to a server that requires one (mTLS)
            #[argh(option)]
            pub cert: Option<std::path::PathBuf>,
            /// private key (PEM) of --cert
            #[argh(option)]
            pub key: Option<std::path::PathBuf>,
        }

        impl $name {
            /// The connection the shared flags describe.
            pub fn connection(&self) -> $crate::cli::Connection {
                $crate::cli::Connection {
                    server: self.server.clone(),
                    ca: self.ca.clone(),
                    plaintext: self.plaintext,
                    tls_server_name: self.tls_server_name.clone(),
                    cert: self.cert.clone(),
                    key: self.key.clone(),
                }
            }
        }
    };
}

/// Connection settings shared by the client commands.
#[derive(Debug, Clone)]
pub struct Connection {
    pub server: String,
    pub ca: Option<PathBuf>,
    pub plaintext: bool,
    pub tls_server_name: Option<String>,
    /// Client certificate and key to present (mTLS).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl Connection {
    /// Client options; the CA defaults to the dev CA of `./eddy-data`.
    pub fn options(&self, client_id: &str) -> Result<ClientOptions, CliError> {
        check_server_address(&self.server)?;
        let mut options = if self.plaintext {
            ClientOptions::plaintext(&self.server)
        } else {
            let ca = match &self.ca {
                Some(ca) => ca.clone(),
                None => {
                    let dev = PathBuf::from(DATA_DIR_DEFAULT).join("tls").join("ca.pem");
                    if !dev.exists() {
                        return Err(CliError::usage(format!(
                            "no CA certificate to trust: pass --ca FILE (eddy serve writes its dev CA to \
                             <data-dir>/tls/ca.pem; {} does not exist here), or --plaintext for a server \
                             started with --insecure-plaintext",
                            dev.display()
                        )));
                    }
                    dev
                }
            };
            let identity =
                match (&self.cert, &self.key) {
                    (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
                    (None, None) => None,
                    _ => return Err(CliError::usage(
                        "--cert and --key go together: the client certificate and its private key",
                    )),
                };
            let mut options = ClientOptions::tls(&self.server, ca);
            if let Some(tls) = options.tls.as_mut() {
                *tls = ClientTls {
                    ca: tls.ca.clone(),
                    server_name: self.tls_server_name.clone(),
                    identity,
                };
            }
            options
        };
        options.client_id = client_id.to_string();
        Ok(options)
    }

    /// Connects.
    pub async fn connect(&self, client_id: &str) -> Result<Client, CliError> {
        let options = self.options(client_id)?;
        Client::connect(&options)
            .await
            .map_err(|e| CliError::new(explain_connect_error(&e)))
    }
}

/// A usage error for a `--server` without a port (the most common slip:
/// `--server 127.0.0.1`).
fn check_server_address(server: &str) -> Result<(), CliError> {
    let has_port = match server.rsplit_once(':') {
        // `[::1]:7654`, `host:7654`; a bare IPv6 address has colons but
        // its last part is not a port after a `]`.
        Some((host, port)) => {
            !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    };
    if has_port {
        Ok(())
    } else {
        Err(CliError::usage(format!(
            "--server {server:?} has no port: add one, e.g. {}:7654",
            if server.contains(':') && !server.starts_with('[') {
                format!("[{server}]")
            } else {
                server.to_string()
            }
        )))
    }
}

/// The client's connect error, with the fix when a TLS client talks to a
/// plaintext hub (the reverse is caught by the client's reader: it sees a
/// TLS record where a frame should be).
fn explain_connect_error(error: &ClientError) -> String {
    let not_tls = match error {
        ClientError::Handshake { source, .. } => source
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|e| {
                matches!(
                    e,
                    rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
                )
            }),
        _ => false,
    };
    if not_tls {
        let server = match error {
            ClientError::Handshake { server, .. } => server.as_str(),
            _ => "",
        };
        format!(
            "the server at {server} does not speak TLS (started with --insecure-plaintext?): \
             add --plaintext"
        )
    } else {
        error.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_without_a_port_is_a_usage_error_that_names_the_fix() {
        for bad in ["127.0.0.1", "localhost", "hub.example", "::1", "host:"] {
            let e = check_server_address(bad).unwrap_err();
            assert_eq!(e.code, 2, "{bad}");
            assert!(e.message.contains("add one, e.g."), "{}", e.message);
        }
        let e = check_server_address("127.0.0.1").unwrap_err();
        assert!(e.message.contains("127.0.0.1:7654"), "{}", e.message);
        for good in ["127.0.0.1:7654", "[::1]:7654", "hub.example:1"] {
            check_server_address(good).unwrap();
        }
    }
}
