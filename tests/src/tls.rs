//! TLS material for HTTPS test registries: throwaway certificate authorities, a server
//! certificate for `127.0.0.1` and `localhost`, and client certificates for mutual TLS. All
//! keys are ECDSA P-256 (rcgen's default), written as PKCS#8 PEM, which distribution (Go),
//! skopeo (Go), curl (OpenSSL) and regferry (rustls) all read.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// Whether a [`crate::TestRegistry`] serves HTTPS, and whether it requires client certificates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Tls {
    /// Plain HTTP.
    #[default]
    Off,
    /// HTTPS with a server certificate from a fresh CA ([`TlsMaterial::ca_pem`]); clients
    /// must trust that CA or skip verification.
    Https,
    /// HTTPS that also requires a client certificate issued by a second fresh CA
    /// (`http.tls.clientcas`); [`TlsMaterial::client`] is one.
    Mutual,
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertAndKey {
    /// The certificate (`-----BEGIN CERTIFICATE-----`).
    pub cert_pem: String,
    /// The PKCS#8 private key (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: String,
}

/// A throwaway certificate authority.
#[derive(Debug)]
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    /// A new self-signed CA whose subject is `common_name`.
    ///
    /// # Panics
    /// If rcgen fails (it does not for these parameters).
    pub fn new(common_name: &str) -> Self {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("generate CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-sign CA certificate");
        let pem = issuer.pem();
        Self { issuer, pem }
    }

    /// The CA certificate (PEM): what clients add to their trusted roots.
    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    /// A server certificate for these names; IP addresses (`127.0.0.1`) become IP SANs, the
    /// rest DNS SANs.
    ///
    /// # Panics
    /// If a name is neither an IP address nor a valid DNS name.
    pub fn issue_server(&self, names: &[&str]) -> CertAndKey {
        let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(sans).expect("server certificate names");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("server"),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate (extended key usage `clientAuth`) whose subject is `common_name`.
    pub fn issue_client(&self, common_name: &str) -> CertAndKey {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, mut params: CertificateParams) -> CertAndKey {
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("generate key");
        let issuer: &rcgen::Issuer<'_, KeyPair> = &self.issuer;
        let cert = params.signed_by(&key, issuer).expect("sign certificate");
        CertAndKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// The TLS files of an HTTPS [`crate::TestRegistry`], under `<registry dir>/tls/`.
#[derive(Debug)]
pub struct TlsMaterial {
    ca: TestCa,
    ca_path: PathBuf,
    server_cert_path: PathBuf,
    server_key_path: PathBuf,
    client_ca: Option<(TestCa, PathBuf)>,
    client: Option<(CertAndKey, PathBuf, PathBuf)>,
    cert_dir: PathBuf,
}

impl TlsMaterial {
    /// Generates and writes the files for `mode` under `dir/tls/`; `None` for [`Tls::Off`].
    ///
    /// # Panics
    /// If a file cannot be written.
    pub(crate) fn generate(dir: &Path, mode: Tls) -> Option<Self> {
        if mode == Tls::Off {
            return None;
        }
        let tls_dir = dir.join("tls");
        let cert_dir = tls_dir.join("skopeo");
        std::fs::create_dir_all(&cert_dir).expect("create tls dir");
        let write = |path: &Path, text: &str| {
            std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        };

        let ca = TestCa::new("regferry-testkit registry CA");
        let server = ca.issue_server(&["127.0.0.1", "localhost"]);
        let ca_path = tls_dir.join("ca.crt");
        let server_cert_path = tls_dir.join("server.crt");
        let server_key_path = tls_dir.join("server.key");
        write(&ca_path, ca.cert_pem());
        write(&server_cert_path, &server.cert_pem);
        write(&server_key_path, &server.key_pem);
        // skopeo's --cert-dir: every *.crt is a trusted CA, each *.cert needs its *.key.
        write(&cert_dir.join("ca.crt"), ca.cert_pem());

        let (client_ca, client) = if mode == Tls::Mutual {
            let client_ca = TestCa::new("regferry-testkit client CA");
            let client_ca_path = tls_dir.join("client-ca.crt");
            write(&client_ca_path, client_ca.cert_pem());
            let client = client_ca.issue_client("regferry-testkit client");
            let cert_path = tls_dir.join("client.cert");
            let key_path = tls_dir.join("client.key");
            write(&cert_path, &client.cert_pem);
            write(&key_path, &client.key_pem);
            write(&cert_dir.join("client.cert"), &client.cert_pem);
            write(&cert_dir.join("client.key"), &client.key_pem);
            (
                Some((client_ca, client_ca_path)),
                Some((client, cert_path, key_path)),
            )
        } else {
            (None, None)
        };
        Some(Self {
            ca,
            ca_path,
            server_cert_path,
            server_key_path,
            client_ca,
            client,
            cert_dir,
        })
    }

    /// The CA that issued the server certificate (PEM): regferry's `regcert`.
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// Where [`Self::ca_pem`] is written.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// The CA itself, to issue more server certificates.
    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    /// With [`Tls::Mutual`]: a client certificate and key the registry accepts.
    pub fn client(&self) -> Option<&CertAndKey> {
        self.client.as_ref().map(|(c, _, _)| c)
    }

    /// With [`Tls::Mutual`]: where [`Self::client`]'s certificate and key are written.
    pub fn client_paths(&self) -> Option<(&Path, &Path)> {
        self.client
            .as_ref()
            .map(|(_, c, k)| (c.as_path(), k.as_path()))
    }

    /// With [`Tls::Mutual`]: the CA the registry trusts for client certificates, to issue
    /// more of them.
    pub fn client_ca(&self) -> Option<&TestCa> {
        self.client_ca.as_ref().map(|(ca, _)| ca)
    }

    /// A directory for skopeo's `--cert-dir`: `ca.crt`, plus `client.cert` and `client.key`
    /// with [`Tls::Mutual`].
    pub fn cert_dir(&self) -> &Path {
        &self.cert_dir
    }

    /// The `http.tls` section of the registry's configuration, indented for `http:`.
    pub(crate) fn config_yaml(&self) -> String {
        let mut y = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            self.server_cert_path.display(),
            self.server_key_path.display()
        );
        if let Some((_, path)) = &self.client_ca {
            // distribution: any clientcas means tls.RequireAndVerifyClientCert.
            y.push_str(&format!("    clientcas:\n      - {}\n", path.display()));
        }
        y
    }
}
