//! Reads the subject and issuer names out of a DER certificate, for evidence.
//!
//! Only the few fields a technician needs to spot TLS inspection are decoded (who the
//! certificate names and who signed it); validation is rustls' job, not this module's.

/// The subject and issuer of a DER-encoded X.509 certificate, each rendered like an LDAP DN
/// (`CN=…, O=…, C=…`, most specific first). `None` when the certificate cannot be parsed.
pub fn subject_and_issuer(der: &[u8]) -> Option<(String, String)> {
    let (certificate, _) = read(der, SEQUENCE)?;
    let (tbs, _) = read(certificate, SEQUENCE)?;
    let mut rest = tbs;
    // The version is an optional explicit [0] tag.
    if rest.first() == Some(&0xA0) {
        rest = read(rest, 0xA0)?.1;
    }
    let (_serial, rest) = read(rest, INTEGER)?;
    let (_signature, rest) = read(rest, SEQUENCE)?;
    let (issuer, rest) = read(rest, SEQUENCE)?;
    let (_validity, rest) = read(rest, SEQUENCE)?;
    let (subject, _) = read(rest, SEQUENCE)?;
    Some((render_name(subject)?, render_name(issuer)?))
}

const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;

/// Reads one DER element with tag `tag`: its contents and what follows it.
fn read(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, contents, rest) = read_any(input)?;
    (found == tag).then_some((contents, rest))
}

/// Reads one DER element of any single-byte tag.
fn read_any(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7F);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    (rest.len() >= len).then(|| {
        let (contents, after) = rest.split_at(len);
        (tag, contents, after)
    })
}

/// Renders an X.501 `Name` (a sequence of relative distinguished names).
fn render_name(mut name: &[u8]) -> Option<String> {
    let mut rdns = Vec::new();
    while !name.is_empty() {
        let (set, rest) = read(name, SET)?;
        name = rest;
        let mut attributes = Vec::new();
        let mut set = set;
        while !set.is_empty() {
            let (pair, rest) = read(set, SEQUENCE)?;
            set = rest;
            let (oid, value) = read(pair, OID)?;
            let (value_tag, value, _) = read_any(value)?;
            attributes.push(format!(
                "{}={}",
                attribute_name(oid),
                escape(&decode_string(value_tag, value))
            ));
        }
        rdns.push(attributes.join("+"));
    }
    // Certificates list the most general part first; DNs are read most specific first.
    rdns.reverse();
    Some(rdns.join(", "))
}

fn attribute_name(oid: &[u8]) -> String {
    match oid {
        [0x55, 0x04, 0x03] => "CN".to_owned(),
        [0x55, 0x04, 0x05] => "serialNumber".to_owned(),
        [0x55, 0x04, 0x06] => "C".to_owned(),
        [0x55, 0x04, 0x07] => "L".to_owned(),
        [0x55, 0x04, 0x08] => "ST".to_owned(),
        [0x55, 0x04, 0x0A] => "O".to_owned(),
        [0x55, 0x04, 0x0B] => "OU".to_owned(),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x19] => "DC".to_owned(),
        [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x01] => "emailAddress".to_owned(),
        _ => dotted(oid),
    }
}

fn dotted(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for &b in oid {
        value = (value << 7) | u64::from(b & 0x7F);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

fn decode_string(tag: u8, value: &[u8]) -> String {
    match tag {
        // BMPString: UCS-2, big-endian.
        0x1E => {
            let units: Vec<u16> = value
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        // UniversalString: UCS-4, big-endian.
        0x1C => value
            .chunks_exact(4)
            .map(|c| {
                char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])).unwrap_or('\u{FFFD}')
            })
            .collect(),
        // UTF8String, PrintableString, IA5String, T61String and the rest: read as UTF-8.
        _ => String::from_utf8_lossy(value).into_owned(),
    }
}

/// Escapes the characters that RFC 4514 reserves inside a DN value.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::subject_and_issuer;

    /// A leaf issued by a private CA, as a TLS-inspecting proxy would present (version 1).
    const LEAF: &str = "-----BEGIN CERTIFICATE-----
MIIBUzCB+QIBBzAKBggqhkjOPQQDAjA/MQswCQYDVQQGEwJVUzEVMBMGA1UECgwM
Q29udG9zbywgTHRkMRkwFwYDVQQDDBBDb250b3NvIFByb3h5IENBMB4XDTI2MTEy
NTE1NDcxNloXDTM2MTEyMjE1NDcxNlowLDEqMCgGA1UEAwwhcGFzc3dvcmRyZXNl
dC5taWNyb3NvZnRvbmxpbmUuY29tMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
t2dz3Czh4VLUuDIvePZxqgO0ZZM3sslwSvob2RCLpJR0KXMHLy8DtX6vDlG2VMq+
O0fcicPq+vlbZF/oI5VhOjAKBggqhkjOPQQDAgNJADBGAiEA86dzjA+l7+aCsiWc
kDd0ORGXuAtTQPG7hnqx1nK+sskCIQDdoV4vOs/SYd1+RHJon0FOh+oJzUFNsTHZ
8WY2aql4rA==
-----END CERTIFICATE-----
";

    /// The self-signed CA that issued it (version 3, with extensions).
    const CA: &str = "-----BEGIN CERTIFICATE-----
MIIB0zCCAXmgAwIBAgIUPN0pofDu+XZ8vZyQPiXs0LeMj/UwCgYIKoZIzj0EAwIw
PzELMAkGA1UEBhMCVVMxFTATBgNVBAoMDENvbnRvc28sIEx0ZDEZMBcGA1UEAwwQ
Q29udG9zbyBQcm94eSBDQTAeFw0yNjExMjUxNTQ3MTRaFw0zNjExMjIxNTQ3MTRa
MD8xCzAJBgNVBAYTAlVTMRUwEwYDVQQKDAxDb250b3NvLCBMdGQxGTAXBgNVBAMM
EENvbnRvc28gUHJveHkgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAT8xAxB
XqFI2vfurVKQa783FPgGr+GHBPqzg+Ro+WanSHELwSqw03WYZT4VTaAV4LmA0Na4
V4nSy+Q3nwVQMIOQo1MwUTAdBgNVHQ4EFgQUYM/zBetr8WZKcAIXGdDDz+1qh94w
HwYDVR0jBBgwFoAUYM/zBetr8WZKcAIXGdDDz+1qh94wDwYDVR0TAQH/BAUwAwEB
/zAKBggqhkjOPQQDAgNIADBFAiA/HlLL8cabwYgN02n5HqdZkCzXhImO/ToTkSGq
fMh+4QIhAIK3qgvCdTL/+wJP024CLXIJGkU+zq3+wXPF1LWsErk/
-----END CERTIFICATE-----
";

    fn der(pem: &str) -> Vec<u8> {
        let mut reader = pem.as_bytes();
        let cert = rustls_pemfile::certs(&mut reader)
            .next()
            .expect("one cert")
            .expect("valid PEM");
        cert.as_ref().to_vec()
    }

    #[test]
    fn reads_subject_and_issuer_of_a_version_1_leaf() {
        let (subject, issuer) = subject_and_issuer(&der(LEAF)).expect("parses");
        assert_eq!(subject, "CN=passwordreset.microsoftonline.com");
        assert_eq!(issuer, r"CN=Contoso Proxy CA, O=Contoso\, Ltd, C=US");
    }

    #[test]
    fn reads_a_version_3_certificate() {
        let (subject, issuer) = subject_and_issuer(&der(CA)).expect("parses");
        assert_eq!(subject, issuer);
        assert!(subject.starts_with("CN=Contoso Proxy CA"));
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        assert!(subject_and_issuer(b"").is_none());
        assert!(subject_and_issuer(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]).is_none());
        let mut truncated = der(LEAF);
        truncated.truncate(60);
        assert!(subject_and_issuer(&truncated).is_none());
    }
}
