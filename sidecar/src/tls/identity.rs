//! Who is calling: the SPIFFE ID in the verified client certificate's URI
//! SAN (`spiffe://<trust-domain>/…`), and — when the peer is a proxy the
//! sidecar trusts to say so (a region gateway) — the identity that proxy
//! verified and forwarded in `x-forwarded-client-cert`, hop by hop. A
//! header from anyone else is ignored, so a caller cannot claim another's
//! identity by sending it.

use rustls::pki_types::CertificateDer;
use std::fmt;

/// Envoy's forwarded client certificate header.
pub const XFCC: &str = "x-forwarded-client-cert";

/// The SPIFFE ID of a certificate: its first URI SAN with the `spiffe`
/// scheme.
pub fn spiffe_id(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(uri.to_string()),
        _ => None,
    })
}

/// An identity pattern: an exact SPIFFE ID, or a prefix ending in `*`
/// (`spiffe://td/ns/web/*`, `spiffe://td/ns/meridian/sa/gateway-*`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct IdentityPattern(String);

impl TryFrom<String> for IdentityPattern {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl std::str::FromStr for IdentityPattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::parse(text)
    }
}

impl IdentityPattern {
    /// Reads a pattern; it must be a SPIFFE ID, with `*` only at the end
    /// after a `/`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("spiffe://")
            .ok_or_else(|| format!("`{text}` is not a SPIFFE ID (spiffe://<trust domain>/…)"))?;
        let domain = rest.split_once('/').map_or(rest, |(domain, _)| domain);
        if domain.is_empty() || domain.contains('*') {
            return Err(format!("`{text}` names no trust domain"));
        }
        if let Some(star) = text.find('*') {
            if star != text.len() - 1 || !text[..star].contains(&format!("{domain}/")) {
                return Err(format!(
                    "`{text}`: `*` may only end a pattern, after the trust domain (spiffe://td/ns/web/*)"
                ));
            }
        }
        Ok(Self(text.to_string()))
    }

    /// Whether `identity` matches.
    pub fn matches(&self, identity: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => identity.starts_with(prefix),
            None => identity == self.0,
        }
    }
}

impl fmt::Display for IdentityPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The URI of each element of an `x-forwarded-client-cert` value, in
/// order (the last added by the nearest proxy); `None` for an element
/// without one.
pub fn xfcc_uris(value: &str) -> Vec<Option<String>> {
    split_outside_quotes(value, ',')
        .into_iter()
        .map(|element| {
            split_outside_quotes(&element, ';').into_iter().find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("uri").then(|| v.trim().trim_matches('"').to_string())
            })
        })
        .collect()
}

fn split_outside_quotes(text: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            current.push(c);
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
            current.push(c);
        } else if c == sep && !quoted {
            out.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out
}

/// The caller's identity: the peer certificate's SPIFFE ID; while that is
/// a trusted proxy, the identity it forwarded (the last element of
/// `x-forwarded-client-cert`), and so on back to the caller. `None`: no
/// verified identity (plaintext, no SPIFFE URI, or a trusted proxy that
/// forwarded none).
pub fn caller_identity(peer: Option<&str>, xfcc: Option<&str>, trusted: &[IdentityPattern]) -> Option<String> {
    let mut identity = peer?.to_string();
    let mut forwarded = xfcc.map(xfcc_uris).unwrap_or_default();
    while trusted.iter().any(|p| p.matches(&identity)) {
        match forwarded.pop() {
            Some(Some(uri)) => identity = uri,
            // The proxy forwarded an element without an identity.
            Some(None) => return None,
            // The proxy called on its own behalf (a health check).
            None => break,
        }
    }
    Some(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_spiffe_ids_or_prefixes() {
        let p = IdentityPattern::parse("spiffe://td/ns/web/*").expect("prefix");
        assert!(p.matches("spiffe://td/ns/web/sa/a"));
        assert!(!p.matches("spiffe://td/ns/webby/sa/a"));
        let exact = IdentityPattern::parse("spiffe://td/ns/web/sa/a").expect("exact");
        assert!(exact.matches("spiffe://td/ns/web/sa/a") && !exact.matches("spiffe://td/ns/web/sa/ab"));
        let gateways = IdentityPattern::parse("spiffe://td/ns/meridian/sa/gateway-*").expect("prefix");
        assert!(gateways.matches("spiffe://td/ns/meridian/sa/gateway-eu-west"));
        assert!(!gateways.matches("spiffe://td/ns/meridian/sa/caller"));
        for bad in ["web", "spiffe://", "spiffe://*/x", "spiffe://td/ns/w*b", "spiffe://td*", "spiffe://td/*/x"] {
            assert!(IdentityPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn xfcc_elements_read_with_quotes() {
        let v = r#"By=spiffe://td/gw;Hash=abc;URI=spiffe://td/caller;Subject="CN=a,O=b",URI=spiffe://td/proxy;DNS=x"#;
        assert_eq!(xfcc_uris(v), [Some("spiffe://td/caller".to_string()), Some("spiffe://td/proxy".to_string())]);
        assert_eq!(xfcc_uris("Hash=1"), [None]);
    }

    #[test]
    fn forwarded_identities_count_only_behind_trusted_proxies() {
        let trusted = [
            IdentityPattern::parse("spiffe://td/ns/meridian/sa/gateway-*").expect("pattern"),
            IdentityPattern::parse("spiffe://td/ns/meridian/sa/caller-proxy-*").expect("pattern"),
        ];
        let chain = "URI=spiffe://td/ns/web/sa/web-eu,URI=spiffe://td/ns/meridian/sa/caller-proxy-eu-west";
        let via_gateway = caller_identity(Some("spiffe://td/ns/meridian/sa/gateway-eu-west"), Some(chain), &trusted);
        assert_eq!(via_gateway.as_deref(), Some("spiffe://td/ns/web/sa/web-eu"));
        // A caller that forges the header is itself the identity.
        let forged =
            caller_identity(Some("spiffe://td/ns/app/sa/app"), Some("URI=spiffe://td/ns/web/sa/web-eu"), &trusted);
        assert_eq!(forged.as_deref(), Some("spiffe://td/ns/app/sa/app"));
        assert_eq!(caller_identity(None, Some(chain), &trusted), None, "no certificate, no identity");
        let own = caller_identity(Some("spiffe://td/ns/meridian/sa/gateway-eu-west"), None, &trusted);
        assert_eq!(own.as_deref(), Some("spiffe://td/ns/meridian/sa/gateway-eu-west"), "the gateway's own call");
        assert_eq!(caller_identity(Some("spiffe://td/ns/meridian/sa/gateway-x"), Some("Hash=1"), &trusted), None);
    }
}
