//! TLS to the servers several gateways share (PostgreSQL, Redis), with rustls:
//! certificates are always verified, against the system's trusted roots and the
//! authorities of `store.tls_ca_file` (a hospital's own CA).

use std::path::Path;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The authorities in the PEM file at `path`, as its bytes and parsed. A file
/// that cannot be read or holds no certificate is an error naming it.
pub(crate) fn authorities(path: &Path) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), String> {
    let failed = |e: &dyn std::fmt::Display| format!("store.tls_ca_file {}: {e}", path.display());
    let pem = std::fs::read(path).map_err(|e| failed(&e))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(&e))?;
    if certificates.is_empty() {
        return Err(failed(&"holds no PEM certificate"));
    }
    Ok((pem, certificates))
}

/// A client configuration trusting the system's roots and `extra`.
pub(crate) fn client_config(
    extra: &[CertificateDer<'static>],
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped: the others, and `extra`, still
    // count.
    let system = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(system.certs);
    let (added, _) = roots.add_parsable_certificates(extra.iter().cloned());
    if added < extra.len() {
        return Err("store.tls_ca_file holds a certificate that is not a usable authority".into());
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}
