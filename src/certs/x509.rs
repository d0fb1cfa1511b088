//! The validity of a certificate file, read with the `x509-cert` crate (RustCrypto, DER
//! decoding only, features `pem` and `std`). Pure: bytes in.
//!
//! k3s's `.crt` files are PEM and often chains: `serving-kubelet.crt` and
//! `client-kubelet.crt` hold the leaf then the CA that signed it. The leaf (the first
//! block) is what expires and what k3s renews; a CA in the chain lives ten years.

use x509_cert::Certificate;
use x509_cert::der::DecodePem;

const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
const END: &[u8] = b"-----END CERTIFICATE-----";

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CertInfo {
    /// notAfter of the first certificate in the file, unix seconds.
    pub(crate) not_after_unix: u64,
    /// Its subject, RFC 4514 (`CN=system:node:pi1,O=system:nodes`), for messages.
    pub(crate) subject: String,
}

/// Reads the first certificate of a PEM file. The error says what is wrong with it.
/// Only the first block is decoded (the crate's `load_pem_chain` panics on an empty file).
pub(crate) fn read(pem: &[u8]) -> Result<CertInfo, String> {
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let start = find(pem, BEGIN).ok_or_else(|| "no PEM certificate in the file".to_string())?;
    let end = find(&pem[start..], END)
        .map(|e| start + e + END.len())
        .ok_or_else(|| "the PEM certificate has no END line (file cut short?)".to_string())?;
    let leaf = Certificate::from_pem(&pem[start..end])
        .map_err(|e| format!("not a PEM certificate ({e})"))?;
    let v = &leaf.tbs_certificate.validity;
    Ok(CertInfo {
        not_after_unix: v.not_after.to_unix_duration().as_secs(),
        subject: leaf.tbs_certificate.subject.to_string(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Unix seconds of midnight UTC on a civil date (Howard Hinnant's days_from_civil).
    pub(crate) fn ymd_unix(y: i32, m: u8, d: u8) -> u64 {
        let y = i64::from(y) - i64::from(m <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (i64::from(m) + 9) % 12;
        let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        ((era * 146_097 + doe - 719_468) * 86_400) as u64
    }

    /// A PEM certificate for `cn` valid until midnight UTC of the date, as rcgen makes it.
    pub(crate) fn pem_until(cn: &str, y: i32, m: u8, d: u8) -> String {
        let mut p = rcgen::CertificateParams::new(vec![format!("{cn}.local")]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, cn.to_string());
        p.not_before = rcgen::date_time_ymd(y - 1, m, d);
        p.not_after = rcgen::date_time_ymd(y, m, d);
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn the_leaf_of_a_generated_chain_gives_not_after_and_subject() {
        let leaf = pem_until("system:node:pi1", 2027, 3, 1);
        let ca = pem_until("k3s-server-ca", 2035, 1, 1);
        let info = read(format!("{leaf}{ca}").as_bytes()).unwrap();
        assert_eq!(info.not_after_unix, ymd_unix(2027, 3, 1));
        assert!(
            info.subject.contains("CN=system:node:pi1"),
            "{}",
            info.subject
        );
    }

    #[test]
    fn garbage_and_empty_files_are_named_errors() {
        assert!(read(b"").unwrap_err().contains("certificate"));
        let e =
            read(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap_err();
        assert!(e.contains("not a PEM certificate"), "{e}");
        assert!(read(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").is_err());
    }

    #[test]
    fn civil_dates_convert_like_the_calendar() {
        assert_eq!(ymd_unix(1970, 1, 1), 0);
        assert_eq!(ymd_unix(2000, 3, 1), 951_868_800);
        assert_eq!(ymd_unix(2024, 2, 29), 1_709_164_800);
    }
}
