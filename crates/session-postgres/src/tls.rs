//! rustls client settings for each `sslmode`, with libpq's meaning of each.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::ConfigError;

/// Where trusted root certificates come from.
#[derive(Debug, Clone)]
pub(crate) enum Roots {
    /// The operating system's store.
    System,
    /// A PEM file (`sslrootcert`).
    File(PathBuf),
}

/// How much of the server's certificate is checked.
pub(crate) enum Verification {
    /// Nothing: the connection is encrypted but the server is not authenticated
    /// (libpq's `prefer` and `require`).
    None,
    /// The certificate chains to a trusted root (`verify-ca`).
    Chain(Roots),
    /// The chain, and the certificate names the host (`verify-full`).
    ChainAndName(Roots),
}

/// The rustls client settings for `verification`.
pub(crate) fn client_config(
    verification: &Verification,
) -> Result<rustls::ClientConfig, ConfigError> {
    // An explicit provider, so nothing depends on which rustls backend other
    // crates in the binary happen to enable.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(ConfigError::Tls)?;
    let algorithms = provider.signature_verification_algorithms;
    let config = match verification {
        Verification::None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NameIgnoringVerifier {
                roots: None,
                algorithms,
            })),
        Verification::Chain(roots) => {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NameIgnoringVerifier {
                    roots: Some(Arc::new(load_roots(roots)?)),
                    algorithms,
                }))
        }
        Verification::ChainAndName(roots) => {
            let verifier = WebPkiServerVerifier::builder_with_provider(
                Arc::new(load_roots(roots)?),
                Arc::clone(&provider),
            )
            .build()
            .map_err(|err| ConfigError::Tls(rustls::Error::General(err.to_string())))?;
            builder.with_webpki_verifier(verifier)
        }
    };
    Ok(config.with_no_client_auth())
}

fn load_roots(roots: &Roots) -> Result<RootCertStore, ConfigError> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::System => {
            // Unreadable entries are skipped, as every other TLS client does;
            // an empty result is an error below.
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(ConfigError::NoRootCertificates(
                    "the system certificate store".to_owned(),
                ));
            }
        }
        Roots::File(path) => {
            let unreadable = |reason: String| ConfigError::RootCertificateFile {
                path: path.clone(),
                reason,
            };
            let certs =
                CertificateDer::pem_file_iter(path).map_err(|err| unreadable(err.to_string()))?;
            for cert in certs {
                let cert = cert.map_err(|err| unreadable(err.to_string()))?;
                store.add(cert).map_err(|err| unreadable(err.to_string()))?;
            }
            if store.is_empty() {
                return Err(ConfigError::NoRootCertificates(path.display().to_string()));
            }
        }
    }
    Ok(store)
}

/// A verifier for the modes that do not check the host name. With `roots`
/// it checks that the certificate chains to one of them (`verify-ca`:
/// managed databases are often reached through names their certificates do
/// not carry); without, it accepts any certificate (`prefer`, `require`).
/// Either way it checks the handshake signatures, so the session is at least
/// bound to the key the server presented.
#[derive(Debug)]
struct NameIgnoringVerifier {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NameIgnoringVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
