//! How the client trusts the server certificate (PROTOCOL.md §1, *Trusting the server
//! certificate*): WebPKI against exactly the CAs of a PEM file, or a SHA-256 pin of the server's
//! end-entity certificate. TLS 1.3 only, ALPN `bluewave/1`, ring provider, never 0-RTT.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::ClientError;
use crate::codec::ALPN;

/// Most pins a client holds at once: the current certificate and, during a rotation, the next.
pub const PINS_MAX: usize = 2;
/// Most CA certificates read from a CA file.
pub const CA_CERTIFICATES_MAX: usize = 64;

/// How the client decides that it talks to the real server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// A PEM file of the CA certificate(s) that signed the server certificate. Normal WebPKI
    /// verification (chain, validity, server name) against exactly these CAs, never the
    /// system store.
    CaFile(PathBuf),
    /// SHA-256 of the server's end-entity certificate (DER), 1–[`PINS_MAX`] pins. The
    /// certificate must hash to one of them exactly; the handshake signature is still verified
    /// with that certificate's key. Name and validity are not checked: the pin is the identity.
    Pinned(Vec<[u8; 32]>),
}

/// SHA-256 of a certificate's DER bytes: the value a [`Trust::Pinned`] client holds.
pub fn certificate_sha256(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut pin = [0u8; 32];
    pin.copy_from_slice(digest.as_ref());
    pin
}

/// Parses a pin written as 64 hex digits (upper or lower case, `:` separators allowed).
pub fn parse_pin(text: &str) -> Result<[u8; 32], ClientError> {
    let digits: Vec<u8> = text.bytes().filter(|&b| b != b':').collect();
    let bad = || ClientError::Config(format!("pin {text:?} is not 64 hex digits (a SHA-256)"));
    if digits.len() != 64 {
        return Err(bad());
    }
    let mut pin = [0u8; 32];
    for (byte, pair) in pin.iter_mut().zip(digits.chunks_exact(2)) {
        let text = std::str::from_utf8(pair).map_err(|_| bad())?;
        *byte = u8::from_str_radix(text, 16).map_err(|_| bad())?;
    }
    Ok(pin)
}

/// The rustls client configuration for `trust`: ring provider, TLS 1.3 only, ALPN `bluewave/1`,
/// no client certificate, early data (0-RTT) off. Public so other clients of the same server
/// (e.g. an HTTPS client of its API, which sets its own ALPN) trust it the same way.
pub fn rustls_config(trust: &Trust) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Config(format!("TLS setup: {e}")))?;
    let mut config = match trust {
        Trust::CaFile(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| ClientError::Config(format!("CA file {}: {e}", path.display())))?;
            for cert in certs.take(CA_CERTIFICATES_MAX + 1) {
                if roots.len() >= CA_CERTIFICATES_MAX {
                    return Err(ClientError::Config(format!(
                        "CA file {} holds more than {CA_CERTIFICATES_MAX} certificates",
                        path.display()
                    )));
                }
                let cert =
                    cert.map_err(|e| ClientError::Config(format!("CA file {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| ClientError::Config(format!("CA file {}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(ClientError::Config(format!("CA file {} holds no certificate", path.display())));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Pinned(pins) => {
            if pins.is_empty() || pins.len() > PINS_MAX {
                return Err(ClientError::Config(format!("between 1 and {PINS_MAX} pins are needed")));
            }
            let verifier =
                PinVerifier { pins: pins.clone(), algorithms: provider.signature_verification_algorithms };
            builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.enable_early_data = false;
    Ok(config)
}

/// Accepts exactly the certificates whose SHA-256 is pinned, and still checks that the server
/// holds the certificate's private key (the TLS 1.3 CertificateVerify signature).
#[derive(Debug)]
struct PinVerifier {
    pins: Vec<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

/// Why a pinned certificate was refused, carried inside the rustls error.
#[derive(Debug, thiserror::Error)]
#[error("server certificate SHA-256 {presented} matches none of the {pins} pinned value(s)")]
struct PinMismatch {
    presented: String,
    pins: usize,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = certificate_sha256(end_entity.as_ref());
        // Pins are public values (hashes of a public certificate): a plain comparison leaks nothing.
        if self.pins.contains(&presented) {
            Ok(ServerCertVerified::assertion())
        } else {
            let mismatch = PinMismatch { presented: hex(&presented), pins: self.pins.len() };
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
                mismatch,
            )))))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The config offers TLS 1.3 only, so this is never reached; refuse if it ever is.
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
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

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        None
    }
}
