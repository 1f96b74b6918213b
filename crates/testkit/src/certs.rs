//! Test certificates generated at test time: a CA, a server certificate for 127.0.0.1 and
//! localhost, and a client certificate. No key is ever committed.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

/// PEM files in a temporary directory, removed on drop.
#[derive(Debug)]
pub struct TestCerts {
    dir: TempDir,
}

impl TestCerts {
    /// Generates a fresh CA with a server and a client certificate signed by it.
    ///
    /// # Panics
    ///
    /// When generation or writing the files fails.
    pub fn generate() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("testkit-certs-")
            .tempdir()
            .expect("create a directory for certificates");
        let ca = new_ca("testkit CA");
        write(dir.path(), "ca.pem", &ca.as_ref().pem());

        let server = leaf(
            &["localhost", "127.0.0.1", "::1"],
            "testkit server",
            ExtendedKeyUsagePurpose::ServerAuth,
            &ca,
        );
        write(dir.path(), "server.pem", &server.0);
        write(dir.path(), "server-key.pem", &server.1);

        let client = leaf(
            &[],
            "testkit client",
            ExtendedKeyUsagePurpose::ClientAuth,
            &ca,
        );
        write(dir.path(), "client.pem", &client.0);
        write(dir.path(), "client-key.pem", &client.1);

        // An unrelated CA: a client trusting it must refuse the server, and a server must
        // refuse the client certificate it signs.
        let other = new_ca("unrelated CA");
        write(dir.path(), "other-ca.pem", &other.as_ref().pem());
        let foreign = leaf(
            &[],
            "foreign client",
            ExtendedKeyUsagePurpose::ClientAuth,
            &other,
        );
        write(dir.path(), "foreign-client.pem", &foreign.0);
        write(dir.path(), "foreign-client-key.pem", &foreign.1);
        Self { dir }
    }

    /// The CA certificate that signed the server and client certificates.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A CA certificate unrelated to the others.
    pub fn other_ca(&self) -> PathBuf {
        self.dir.path().join("other-ca.pem")
    }

    /// The server certificate (SANs: localhost, 127.0.0.1, ::1).
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server's private key.
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server-key.pem")
    }

    /// A client certificate for mTLS.
    pub fn client_cert(&self) -> PathBuf {
        self.dir.path().join("client.pem")
    }

    /// The client's private key.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client-key.pem")
    }

    /// A client certificate signed by the unrelated CA.
    pub fn foreign_client_cert(&self) -> PathBuf {
        self.dir.path().join("foreign-client.pem")
    }

    /// The key of the foreign client certificate.
    pub fn foreign_client_key(&self) -> PathBuf {
        self.dir.path().join("foreign-client-key.pem")
    }
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
        .expect("self-sign the CA")
}

/// A certificate and its key, in PEM.
fn leaf(
    names: &[&str],
    common_name: &str,
    usage: ExtendedKeyUsagePurpose,
    ca: &CertifiedIssuer<'static, KeyPair>,
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("certificate parameters");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate().expect("certificate key");
    let cert = params.signed_by(&key, ca).expect("sign the certificate");
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, contents: &str) {
    std::fs::write(dir.join(name), contents)
        .unwrap_or_else(|error| panic!("write {name}: {error}"));
}
