//! A certificate authority and a server certificate made for one test server.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// PEM texts for a TLS test server.
pub(crate) struct ServerCertificate {
    /// The authority clients trust (`sslrootcert`).
    pub(crate) authority: String,
    /// The server's certificate, signed by the authority.
    pub(crate) certificate: String,
    /// The server's private key.
    pub(crate) key: String,
}

/// A fresh authority and a certificate for the name `localhost` only: a client
/// connecting to 127.0.0.1 can verify the chain but not the name, which tells
/// `verify-ca` and `verify-full` apart.
pub(crate) fn generate() -> Result<ServerCertificate, rcgen::Error> {
    let mut authority = CertificateParams::new(Vec::<String>::new())?;
    authority
        .distinguished_name
        .push(DnType::CommonName, "session-test-postgres authority");
    authority.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    authority.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let authority = CertifiedIssuer::self_signed(authority, KeyPair::generate()?)?;

    let mut server = CertificateParams::new(vec!["localhost".to_owned()])?;
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate()?;
    let certificate = server.signed_by(&key, &authority)?;
    Ok(ServerCertificate {
        authority: authority.pem(),
        certificate: certificate.pem(),
        key: key.serialize_pem(),
    })
}
