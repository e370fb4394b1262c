//! Certificate creation for `ranged cert` (rcgen): a cluster CA, node certificates (server and
//! client auth, one per node, with its host names and IPs) and client certificates (CN = user).
//! Private keys are written with mode 0600 and existing files are never overwritten silently.

use std::io::Write;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::services::error::{Error, Result};
use crate::services::tls::{CA_CERT, NODE_CERT, NODE_KEY, client_cert_name, client_key_name};

/// Certificates are valid this long (CockroachDB: CA 10 years, node and client 5 years).
const CA_DAYS: i64 = 3650;
const LEAF_DAYS: i64 = 1825;

fn cert_error(err: rcgen::Error) -> Error {
    Error::Internal(format!("certificate generation: {err}"))
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // Backdated a day so a peer whose clock runs a little behind accepts a fresh certificate.
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
}

/// The CA's parameters; the name is fixed so the issuer can be rebuilt from the key alone.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "ranged");
    name.push(DnType::CommonName, "ranged CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut params, CA_DAYS);
    params
}

fn write_file(path: &Path, contents: &str, private: bool, overwrite: bool) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path).map_err(|err| match err.kind() {
        std::io::ErrorKind::AlreadyExists => {
            Error::AlreadyExists(format!("{} already exists (pass --overwrite to replace it)", path.display()))
        }
        _ => Error::FailedPrecondition(format!("cannot write {}: {err}", path.display())),
    })?;
    file.write_all(contents.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|err| Error::FailedPrecondition(format!("cannot write {}: {err}", path.display())))
}

fn load_issuer(ca_key: &Path) -> Result<Issuer<'static, KeyPair>> {
    let pem = std::fs::read_to_string(ca_key)
        .map_err(|err| Error::FailedPrecondition(format!("cannot read CA key {}: {err}", ca_key.display())))?;
    let key = KeyPair::from_pem(&pem)
        .map_err(|err| Error::FailedPrecondition(format!("invalid CA key {}: {err}", ca_key.display())))?;
    Ok(Issuer::new(ca_params(), key))
}

/// Creates `ca.crt` in `certs_dir` and the CA key at `ca_key`.
pub fn create_ca(certs_dir: &Path, ca_key: &Path, overwrite: bool) -> Result<()> {
    create_dir(certs_dir)?;
    let key = KeyPair::generate().map_err(cert_error)?;
    let cert = ca_params().self_signed(&key).map_err(cert_error)?;
    write_file(ca_key, &key.serialize_pem(), true, overwrite)?;
    write_file(&certs_dir.join(CA_CERT), &cert.pem(), false, overwrite)
}

/// Creates `node.crt`/`node.key` for `hosts` (DNS names or IPs), signed by the CA.
pub fn create_node(certs_dir: &Path, ca_key: &Path, hosts: &[String], overwrite: bool) -> Result<()> {
    if hosts.is_empty() {
        return Err(Error::InvalidArgument("create-node needs at least one host name or IP".into()));
    }
    let issuer = load_issuer(ca_key)?;
    let mut params = CertificateParams::new(hosts.to_vec())
        .map_err(|err| Error::InvalidArgument(format!("invalid host name: {err}")))?;
    params.distinguished_name.push(DnType::OrganizationName, "ranged");
    params.distinguished_name.push(DnType::CommonName, "node");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut params, LEAF_DAYS);
    let key = KeyPair::generate().map_err(cert_error)?;
    let cert = params.signed_by(&key, &issuer).map_err(cert_error)?;
    write_file(&certs_dir.join(NODE_KEY), &key.serialize_pem(), true, overwrite)?;
    write_file(&certs_dir.join(NODE_CERT), &cert.pem(), false, overwrite)
}

/// Creates `client.<user>.crt`/`.key` (CN = user), signed by the CA.
pub fn create_client(certs_dir: &Path, ca_key: &Path, user: &str, overwrite: bool) -> Result<()> {
    if user.is_empty() || !user.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.') {
        return Err(Error::InvalidArgument(format!("invalid user name {user:?}")));
    }
    let issuer = load_issuer(ca_key)?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::OrganizationName, "ranged");
    params.distinguished_name.push(DnType::CommonName, user);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut params, LEAF_DAYS);
    let key = KeyPair::generate().map_err(cert_error)?;
    let cert = params.signed_by(&key, &issuer).map_err(cert_error)?;
    write_file(&certs_dir.join(client_key_name(user)), &key.serialize_pem(), true, overwrite)?;
    write_file(&certs_dir.join(client_cert_name(user)), &cert.pem(), false, overwrite)
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|err| Error::FailedPrecondition(format!("cannot create {}: {err}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_ca_and_signed_leaves_without_overwriting() {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let ca_key = dir.path().join(crate::services::tls::CA_KEY);
        create_ca(dir.path(), &ca_key, false).unwrap();
        create_node(dir.path(), &ca_key, &["localhost".into(), "127.0.0.1".into()], false).unwrap();
        create_client(dir.path(), &ca_key, "root", false).unwrap();
        assert!(matches!(create_ca(dir.path(), &ca_key, false), Err(Error::AlreadyExists(_))));
        for name in [CA_CERT, NODE_CERT, "client.root.crt"] {
            let pem = std::fs::read_to_string(dir.path().join(name)).unwrap();
            assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{name}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(NODE_KEY)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "node key readable by others");
        }
        assert!(create_client(dir.path(), &ca_key, "bad user", false).is_err());
    }
}
