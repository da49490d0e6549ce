//! A throwaway certificate authority and a server certificate for `localhost` and
//! `127.0.0.1`, so tests can run the server over HTTPS and clients can trust it the way a
//! self-hosting user would (`ca_cert` / `ANIATE_CA_CERT`).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// PEM files written into a directory.
#[derive(Debug, Clone)]
pub struct TestCa {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub ca_pem: String,
}

impl TestCa {
    /// Makes a CA and a leaf it signs, and writes `ca.pem`, `server.pem`, `server.key` into
    /// `dir`.
    pub fn create(dir: &Path) -> anyhow::Result<TestCa> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "Aniate test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut leaf_params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf_params.use_authority_key_identifier_extension = true;
        let leaf_key = KeyPair::generate()?;
        let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;

        let files = TestCa {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            ca_pem: ca_cert.pem(),
        };
        std::fs::write(&files.ca_cert, &files.ca_pem)?;
        std::fs::write(&files.server_cert, leaf.pem())?;
        std::fs::write(&files.server_key, leaf_key.serialize_pem())?;
        Ok(files)
    }
}
