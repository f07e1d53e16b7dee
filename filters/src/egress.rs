//! Egress checks of URL- and host-valued tool arguments (SSRF defence).
//!
//! Which values: top-level arguments the catalog names (`url_arguments`),
//! properties the tool's schema marks `format: uri | url | hostname | …`, and
//! (with `egress.detect_urls`) any string anywhere in the arguments that
//! contains `://`. Each is parsed the way browsers and HTTP clients do (the
//! WHATWG URL parser), so `0x7f.1`, `2130706433`, `0177.0.0.1`, `127.1`,
//! `[::ffff:127.0.0.1]`, `user@host` and `LOCALHOST.` all reach the same
//! normalised host that a client would connect to. That host is refused when
//! it is loopback, private, link-local, CGNAT, multicast, unspecified, a cloud
//! metadata address or name, or an IPv6 form embedding one (IPv4-mapped,
//! -compatible, 6to4, NAT64) — unless an allowlist CIDR names it — and, when
//! allowlists are configured, unless it matches one.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use serde_json::Value as Json;
use warden_config::access::ServerCatalog;
use warden_config::guards::HostPattern;

use crate::error::{codes, JsonRpcError};
use crate::filter::{Decision, Denial, FilterContext, McpFilter, MessageView};
use crate::jsonrpc::Kind;
use crate::tools::ToolPins;

/// Why a host is refused (the rule name in denials and audit).
pub fn ssrf_rule_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    Some(match o {
        [127, ..] => "ssrf_loopback",
        [10, ..] | [192, 168, ..] => "ssrf_private",
        [172, b, ..] if (16..32).contains(&b) => "ssrf_private",
        [169, 254, 169, 254] | [100, 100, 100, 200] => "ssrf_metadata",
        [169, 254, ..] => "ssrf_link_local",
        [100, b, ..] if (64..128).contains(&b) => "ssrf_cgnat",
        [0, ..] => "ssrf_unspecified",
        [a, ..] if a >= 224 => "ssrf_multicast_or_reserved",
        [192, 0, 0, _] | [198, 18..=19, _, _] => "ssrf_reserved",
        _ => return None,
    })
}

pub fn ssrf_rule(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => ssrf_rule_v4(v4),
        IpAddr::V6(v6) => ssrf_rule_v6(v6),
    }
}

fn ssrf_rule_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_loopback() {
        return Some("ssrf_loopback");
    }
    if ip.is_unspecified() {
        return Some("ssrf_unspecified");
    }
    // Forms that embed an IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(ssrf_rule_v4(v4).unwrap_or("ssrf_ipv4_mapped"));
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    if s[..6] == [0; 6] {
        // IPv4-compatible (deprecated) ::a.b.c.d
        return Some(ssrf_rule_v4(embedded(s[6], s[7])).unwrap_or("ssrf_ipv4_compatible"));
    }
    if s[0] == 0x2002 {
        if let Some(r) = ssrf_rule_v4(embedded(s[1], s[2])) {
            return Some(r);
        }
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        if let Some(r) = ssrf_rule_v4(embedded(s[6], s[7])) {
            return Some(r);
        }
    }
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some("ssrf_metadata");
    }
    Some(match s[0] {
        x if x & 0xfe00 == 0xfc00 => "ssrf_private",
        x if x & 0xffc0 == 0xfe80 => "ssrf_link_local",
        x if x & 0xff00 == 0xff00 => "ssrf_multicast_or_reserved",
        _ => return None,
    })
}

fn ssrf_name(domain: &str) -> Option<&'static str> {
    const METADATA: &[&str] = &[
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.com",
    ];
    if domain == "localhost" || domain.ends_with(".localhost") {
        return Some("ssrf_loopback");
    }
    if METADATA.contains(&domain) {
        return Some("ssrf_metadata");
    }
    if domain.ends_with(".internal") || domain.ends_with(".local") {
        return Some("ssrf_internal_name");
    }
    None
}

/// The verdict on one value: `Ok` or the rule that refuses it.
pub fn check(value: &str, allow: &[&HostPattern]) -> Result<(), &'static str> {
    let v = value.trim();
    let url = if v.contains("://") {
        url::Url::parse(v).map_err(|_| "egress_unparsable_url")?
    } else {
        // A bare host or host:port: judge it as a client would dial it.
        url::Url::parse(&format!("http://{v}/")).map_err(|_| "egress_unparsable_host")?
    };
    if !matches!(url.scheme(), "http" | "https" | "ws" | "wss") {
        return Err("egress_scheme");
    }
    let host = url.host().ok_or("egress_no_host")?;
    let explicitly = |ip: IpAddr| allow.iter().any(|p| p.matches_ip(ip));
    match host {
        url::Host::Ipv4(ip) => {
            let ip = IpAddr::V4(ip);
            if explicitly(ip) {
                return Ok(());
            }
            if let Some(r) = ssrf_rule(ip) {
                return Err(r);
            }
        }
        url::Host::Ipv6(ip) => {
            let ip = IpAddr::V6(ip);
            if explicitly(ip) {
                return Ok(());
            }
            if let Some(r) = ssrf_rule(ip) {
                return Err(r);
            }
        }
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            let allowed = allow.iter().any(|p| p.matches_domain(&d));
            if allowed {
                return Ok(());
            }
            if let Some(r) = ssrf_name(&d) {
                return Err(r);
            }
        }
    }
    if allow.is_empty() {
        Ok(())
    } else {
        Err("egress_not_allowlisted")
    }
}

const URL_FORMATS: &[&str] = &[
    "uri",
    "url",
    "iri",
    "uri-reference",
    "iri-reference",
    "hostname",
    "idn-hostname",
];

pub struct EgressFilter {
    global: Vec<HostPattern>,
    catalog: HashMap<String, ServerCatalog>,
    pins: Arc<ToolPins>,
    detect: bool,
}

impl std::fmt::Debug for EgressFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EgressFilter")
    }
}

fn walk<'a>(v: &'a Json, path: &mut String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Json::String(s) if s.contains("://") => out.push((path.clone(), s)),
        Json::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(x, path, out);
                path.truncate(len);
            }
        }
        Json::Object(o) => {
            for (k, x) in o {
                let len = path.len();
                path.push('.');
                path.push_str(k);
                walk(x, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

impl EgressFilter {
    pub fn new(
        global: Vec<HostPattern>,
        catalog: HashMap<String, ServerCatalog>,
        pins: Arc<ToolPins>,
        detect: bool,
    ) -> Self {
        EgressFilter {
            global,
            catalog,
            pins,
            detect,
        }
    }
}

impl McpFilter for EgressFilter {
    fn name(&self) -> &'static str {
        "egress"
    }

    fn on_request(&self, msg: MessageView<'_>, ctx: &FilterContext<'_>) -> Decision {
        let env = msg.envelope;
        if env.kind != Kind::Request || env.method.as_deref() != Some("tools/call") {
            return Decision::Pass;
        }
        let tool = env.name.as_deref().unwrap_or_default();
        let server_cat = self.catalog.get(ctx.server);
        let tool_cat = server_cat.and_then(|c| c.tool(tool));
        let Some(raw) = crate::jsonrpc::params_arguments(msg.bytes) else {
            return Decision::Pass;
        };
        let Ok(args) = serde_json::from_str::<Json>(raw) else {
            return Decision::Pass;
        };
        // Declared URL arguments: the catalog's names and the schema's formats.
        let mut declared: Vec<String> = tool_cat
            .map(|t| t.url_arguments.clone())
            .unwrap_or_default();
        let schema_props = tool_cat.and_then(|t| t.input_schema.clone()).or_else(|| {
            // The server's own advertised schema, as pinned from tools/list.
            self.pins
                .get(ctx.server, tool)
                .and_then(|p| p.input_json.clone())
        });
        if let Some(props) = schema_props
            .as_ref()
            .and_then(|s| s.get("properties"))
            .and_then(Json::as_object)
        {
            for (k, p) in props {
                if p.get("format")
                    .and_then(Json::as_str)
                    .is_some_and(|f| URL_FORMATS.contains(&f))
                {
                    declared.push(k.clone());
                }
            }
        }
        let mut values: Vec<(String, &str)> = Vec::new();
        for name in &declared {
            match args.get(name) {
                Some(Json::String(s)) => values.push((name.clone(), s)),
                Some(Json::Array(a)) => {
                    for (i, x) in a.iter().enumerate() {
                        if let Some(s) = x.as_str() {
                            values.push((format!("{name}[{i}]"), s));
                        }
                    }
                }
                _ => {}
            }
        }
        if self.detect {
            let mut path = String::new();
            walk(&args, &mut path, &mut values);
        }
        if values.is_empty() {
            return Decision::Pass;
        }
        let allow: Vec<&HostPattern> = self
            .global
            .iter()
            .chain(
                server_cat
                    .map(|c| c.egress_allow.iter())
                    .into_iter()
                    .flatten(),
            )
            .chain(
                tool_cat
                    .map(|t| t.egress_allow.iter())
                    .into_iter()
                    .flatten(),
            )
            .collect();
        for (arg, v) in values {
            if let Err(rule) = check(v, &allow) {
                let arg = arg.trim_start_matches('.').to_owned();
                return Decision::Reject(Denial::error(
                    JsonRpcError::new(
                        codes::EGRESS_DENIED,
                        format!("Argument `{arg}` points at an address this gateway does not allow ({rule})"),
                    )
                    .with_data(serde_json::json!({"reason": "egress_denied", "rule": rule, "argument": arg})),
                    format!("egress_denied:{rule}"),
                ));
            }
        }
        Decision::Pass
    }

    fn inspects_responses(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_encoding_of_loopback_and_metadata_is_refused() {
        for v in [
            "http://127.0.0.1/",
            "http://localhost/",
            "http://LOCALHOST./x",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0x7f.0x0.0x0.0x1/",
            "http://0177.0.0.1/",
            "http://017700000001/",
            "http://127.1/",
            "http://127.0.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[0:0:0:0:0:0:0:1]/",
            "http://[::127.0.0.1]/",
            "http://[2002:7f00:1::]/",
            "http://[64:ff9b::7f00:1]/",
            "http://user:pw@127.0.0.1/",
            "http://api.example.com@127.0.0.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://10.0.0.1/",
            "http://172.31.255.255/",
            "http://192.168.1.1/",
            "http://[fe80::1]/",
            "http://[fc00::1]/",
            "http://0.0.0.0/",
            "http://0/",
            "HTTP://127.0.0.1/",
            "file:///etc/passwd",
            "gopher://127.0.0.1:25/",
            "127.0.0.1:6379",
            "localhost",
        ] {
            assert!(check(v, &[]).is_err(), "{v} was allowed");
        }
        assert_eq!(check("http://0x7f.1/", &[]), Err("ssrf_loopback"));
        assert_eq!(check("http://169.254.169.254/", &[]), Err("ssrf_metadata"));
        for v in [
            "https://api.example.com/v1",
            "http://93.184.216.34/",
            "example.org:443",
        ] {
            assert_eq!(check(v, &[]), Ok(()), "{v}");
        }
    }

    #[test]
    fn allowlists() {
        let allow = [
            HostPattern::parse("*.example.com").expect("p"),
            HostPattern::parse("10.1.0.0/16").expect("p"),
        ];
        let refs: Vec<&HostPattern> = allow.iter().collect();
        assert_eq!(check("https://api.example.com/", &refs), Ok(()));
        assert_eq!(check("https://API.Example.COM./", &refs), Ok(()));
        assert_eq!(
            check("https://example.com/", &refs),
            Err("egress_not_allowlisted")
        );
        assert_eq!(
            check("https://evil.com/", &refs),
            Err("egress_not_allowlisted")
        );
        assert_eq!(
            check("http://10.1.2.3/", &refs),
            Ok(()),
            "an explicit CIDR overrides"
        );
        assert_eq!(check("http://10.2.0.1/", &refs), Err("ssrf_private"));
        assert_eq!(
            check("https://api.example.com.evil.com/", &refs),
            Err("egress_not_allowlisted")
        );
    }
}
