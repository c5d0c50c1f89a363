//! TLS to PostgreSQL with libpq's `sslmode` meanings, on rustls.
//!
//! `database_url` takes libpq's `sslmode` and `sslrootcert` query parameters (tokio-postgres
//! knows only disable/prefer/require and no `sslrootcert`, so they are taken out of the URL here):
//!
//! | `sslmode` | TLS | certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | when the server offers it | no (with `sslrootcert`: chain) |
//! | `require` | always | no (with `sslrootcert`: chain) |
//! | `verify-ca` | always | chain to `sslrootcert` or the system's roots |
//! | `verify-full` | always | chain and host name |
//!
//! `sslrootcert` is a PEM file of CA certificates, or `system` for the system's store.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;

use super::conninfo::UrlError;

/// How to check the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Encrypt only, as libpq's `prefer` and `require`.
    None,
    /// The chain must lead to a trusted root; any host name.
    Chain,
    /// The chain and the host name.
    Full,
}

/// The TLS settings of a database URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub mode: SslMode,
    pub verify: Verify,
    /// A PEM file of trusted roots; None for the system's store.
    pub root_cert: Option<PathBuf>,
}

/// Why the TLS client could not be set up for the database's settings.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS set-up: {0}")]
    Protocols(#[source] rustls::Error),
    #[error("TLS set-up: {0}")]
    Verifier(#[source] rustls::client::VerifierBuilderError),
    #[error("sslrootcert {}: {source}", .path.display())]
    ReadRoots {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("sslrootcert {}: no certificate in it", .path.display())]
    NoCertificate { path: PathBuf },
    #[error("no system root certificates found; give sslrootcert=FILE")]
    NoSystemRoots,
}

/// Take `sslmode` and `sslrootcert` out of a `postgres://` URL; the rest goes to tokio-postgres.
/// Key/value connection strings pass through unchanged (tokio-postgres reads their `sslmode`).
pub fn split_url(url: &str) -> Result<(String, Tls), UrlError> {
    let mut tls = Tls { mode: SslMode::Prefer, verify: Verify::None, root_cert: None };
    let (base, query) = match url.split_once('?') {
        Some((b, q)) if super::conninfo::is_url(url) => (b, q),
        _ => return Ok((url.to_string(), tls)),
    };
    // The other parameters are kept byte for byte: tokio-postgres decodes them itself.
    let decode = |v: &str| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned();
    let mut mode: Option<String> = None;
    let mut root: Option<String> = None;
    let mut rest: Vec<&str> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match decode(k).as_str() {
            "sslmode" => mode = Some(decode(v)),
            "sslrootcert" => root = Some(decode(v)),
            _ => rest.push(pair),
        }
    }
    let rebuilt = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
    (tls.mode, tls.verify) = match mode.as_deref().unwrap_or("prefer") {
        "disable" => (SslMode::Disable, Verify::None),
        "prefer" => (SslMode::Prefer, Verify::None),
        "require" => (SslMode::Require, Verify::None),
        "verify-ca" => (SslMode::Require, Verify::Chain),
        "verify-full" => (SslMode::Require, Verify::Full),
        other => return Err(UrlError::SslMode(other.into())),
    };
    match root.as_deref() {
        None | Some("") | Some("system") => {}
        Some(path) => {
            tls.root_cert = Some(PathBuf::from(path));
            // As libpq: a root certificate given makes prefer/require check the chain too.
            if tls.verify == Verify::None {
                tls.verify = Verify::Chain;
            }
        }
    }
    Ok((rebuilt, tls))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The rustls client configuration for these settings.
pub fn client_config(tls: &Tls) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocols)?;
    let config = match tls.verify {
        Verify::None => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(EncryptOnly(provider))).with_no_client_auth()
        }
        Verify::Chain | Verify::Full => {
            let roots = Arc::new(roots(tls.root_cert.as_ref())?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(TlsError::Verifier)?;
            if tls.verify == Verify::Full {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            } else {
                builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyName(webpki))).with_no_client_auth()
            }
        }
    };
    Ok(config)
}

fn roots(file: Option<&PathBuf>) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|source| TlsError::ReadRoots {
                    path: path.clone(),
                    source,
                })?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(TlsError::NoCertificate { path: path.clone() });
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(TlsError::NoSystemRoots);
            }
        }
    }
    Ok(store)
}

/// libpq's `require`: the session is encrypted; the certificate is not checked (the handshake's
/// signatures still are, so the key matches the certificate presented).
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// libpq's `verify-ca`: the chain must lead to a trusted root; the host name is not compared.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_the_url() {
        let (url, tls) = split_url("postgres://u:p@db:5432/hk?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=x").unwrap();
        assert_eq!(url, "postgres://u:p@db:5432/hk?application_name=x");
        assert_eq!(tls, Tls { mode: SslMode::Require, verify: Verify::Full, root_cert: Some("/etc/ca.pem".into()) });
        let (url, tls) = split_url("postgres://db/hk?sslmode=require").unwrap();
        assert_eq!((url.as_str(), tls.mode, tls.verify), ("postgres://db/hk", SslMode::Require, Verify::None));
        let (_, tls) = split_url("postgres://db/hk?sslmode=require&sslrootcert=ca.pem").unwrap();
        assert_eq!(tls.verify, Verify::Chain, "a root certificate makes require check the chain, as in libpq");
        let (_, tls) = split_url("postgres://db/hk?sslmode=verify-ca&sslrootcert=system").unwrap();
        assert_eq!((tls.verify, tls.root_cert), (Verify::Chain, None));
        let (_, tls) = split_url("postgres://db/hk").unwrap();
        assert_eq!((tls.mode, tls.verify), (SslMode::Prefer, Verify::None));
        assert!(
            split_url("postgres://db/hk?sslmode=allow")
                .unwrap_err()
                .to_string()
                .contains("\"allow\"")
        );
        // Everything else is kept as written, percent-encoding included.
        let (url, tls) =
            split_url("postgres://u:p%40ss@db/hk?options=-c%20statement_timeout%3D5s&sslrootcert=%2Fetc%2Fca.pem&sslmode=require").unwrap();
        assert_eq!(url, "postgres://u:p%40ss@db/hk?options=-c%20statement_timeout%3D5s");
        assert_eq!(tls.root_cert, Some("/etc/ca.pem".into()));
        let url = "postgres://u:p%40ss@db/hk?options=-c%20a%3Db";
        assert_eq!(split_url(url).unwrap().0, url);
    }
}
