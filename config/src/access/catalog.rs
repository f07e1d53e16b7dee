//! The tool catalog (`catalog:`): risk, cost, schemas, fingerprints, egress
//! allowlist and step-up scopes, per server and per tool.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::error::Problems;
use crate::host::{host_patterns, HostPattern};
use crate::raw;
use crate::risk::Risk;

/// What the bundle says about one tool.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolEntry {
    pub risk: Option<Risk>,
    pub cost: u64,
    pub input_schema: Option<std::sync::Arc<serde_json::Value>>,
    pub output_schema: Option<std::sync::Arc<serde_json::Value>>,
    pub fingerprints: Vec<String>,
    pub url_arguments: Vec<String>,
    pub egress_allow: Vec<HostPattern>,
    /// Scopes a caller's token must carry for this tool (step-up).
    pub scopes: Vec<String>,
    /// Classification and flow roles (`flows`).
    pub labels: crate::flows::Labels,
    /// What a call costs in money (`price`; none: the server's, else nothing).
    pub price: Option<Price>,
}

/// What a call costs, in millionths of the currency's unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    /// ISO 4217 code (three capital letters).
    pub currency: String,
    pub per_call: u64,
    /// A price per unit of the number at a JSON Pointer into the result.
    pub per_unit: Option<(String, u64)>,
}

impl Price {
    /// What a call with `result` costs (millionths) and the units read:
    /// the price per call, plus the price per unit times the number the
    /// result holds at the pointer (a non-negative JSON number, or a string
    /// that is only such a number in decimal digits, as a text content
    /// block carries one; anything else there counts no unit). Rounded to
    /// the millionth; saturating.
    pub fn cost(&self, result: Option<&serde_json::Value>) -> (u64, Option<f64>) {
        let Some((pointer, each)) = &self.per_unit else {
            return (self.per_call, None);
        };
        let units = result
            .and_then(|r| r.pointer(pointer))
            .and_then(|v| match v {
                serde_json::Value::String(s) => {
                    let (w, f) = s.split_once('.').unwrap_or((s, "0"));
                    let digits = |x: &str| {
                        !x.is_empty() && x.len() <= 18 && x.bytes().all(|b| b.is_ascii_digit())
                    };
                    (digits(w) && digits(f))
                        .then(|| s.parse::<f64>().ok())
                        .flatten()
                }
                v => v.as_f64(),
            })
            .filter(|u| u.is_finite() && *u >= 0.0);
        let variable = units.map_or(0, |u| {
            let v = (u * *each as f64).round();
            if v >= u64::MAX as f64 {
                u64::MAX
            } else {
                v as u64
            }
        });
        (self.per_call.saturating_add(variable), units)
    }
}

/// The currency the catalog prices in (one per bundle), if any tool has a price.
pub fn currency(catalog: &std::collections::HashMap<String, ServerCatalog>) -> Option<&str> {
    let mut all: Vec<&str> = catalog
        .values()
        .flat_map(|c| {
            c.price
                .iter()
                .chain(c.tools.values().filter_map(|t| t.price.as_ref()))
                .map(|p| p.currency.as_str())
        })
        .collect();
    all.sort_unstable();
    all.first().copied()
}

/// An amount of money as millionths: a decimal string or number with at
/// most six decimals, not negative.
pub fn micros(v: &serde_yaml_ng::Value) -> Result<u64, String> {
    let text = match v {
        serde_yaml_ng::Value::String(s) => s.trim().to_owned(),
        serde_yaml_ng::Value::Number(n) => n.to_string(),
        _ => return Err("an amount is a decimal such as \"0.002\"".into()),
    };
    let (whole, frac) = text.split_once('.').unwrap_or((&text, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (text.contains('.') && !digits(frac)) || frac.len() > 6 {
        return Err(format!(
            "`{text}` is not an amount (digits, at most six decimals, not negative)"
        ));
    }
    let w: u64 = whole
        .parse()
        .map_err(|_| format!("`{text}` is too large"))?;
    let f: u64 = format!("{frac:0<6}").parse().unwrap_or(0);
    w.checked_mul(1_000_000)
        .and_then(|w| w.checked_add(f))
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// A `price:` of the catalog, checked.
fn price(raw: &raw::PriceConfig, base: &str, p: &mut Problems) -> Option<Price> {
    let c = &raw.currency;
    if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
        p.push(
            format!("{base}.currency"),
            format!(
                "`{}` is not an ISO 4217 code (three capital letters)",
                c.escape_debug()
            ),
        );
        return None;
    }
    let per_call = match &raw.per_call {
        None => 0,
        Some(v) => match micros(v) {
            Ok(m) => m,
            Err(e) => {
                p.push(format!("{base}.per_call"), e);
                return None;
            }
        },
    };
    let per_unit = match &raw.per_unit {
        None => None,
        Some(u) => {
            if !u.pointer.starts_with('/') {
                p.push(
                    format!("{base}.per_unit.pointer"),
                    "a JSON Pointer into the result, such as /structuredContent/rows",
                );
                return None;
            }
            match micros(&u.price) {
                Ok(m) => Some((u.pointer.clone(), m)),
                Err(e) => {
                    p.push(format!("{base}.per_unit.price"), e);
                    return None;
                }
            }
        }
    };
    Some(Price {
        currency: c.clone(),
        per_call,
        per_unit,
    })
}

/// A catalog entry that says nothing but the defaults (cost 1).
impl Default for ToolEntry {
    fn default() -> Self {
        ToolEntry {
            risk: None,
            cost: 1,
            input_schema: None,
            output_schema: None,
            fingerprints: Vec::new(),
            url_arguments: Vec::new(),
            egress_allow: Vec::new(),
            scopes: Vec::new(),
            labels: crate::flows::Labels::default(),
            price: None,
        }
    }
}

/// A server's tools by name. Looked up several times on every call, so
/// keyed by a seeded fast hash rather than SipHash: the names are the
/// bundle's, fixed when it loads (a client's name is only looked up).
pub type ToolMap = HashMap<String, ToolEntry, foldhash::fast::RandomState>;

/// Risk levels (and schemas, costs, egress, fingerprints) of one server's tools.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerCatalog {
    pub default_risk: Risk,
    pub tools: ToolMap,
    pub egress_allow: Vec<HostPattern>,
    /// Labels of every tool of the server the tool's own do not replace.
    pub labels: crate::flows::Labels,
    /// Labels of resources by URI pattern (first match).
    pub resources: Vec<(String, crate::flows::Labels)>,
    /// The price of the server's tools that name none.
    pub price: Option<Price>,
}

impl Default for ServerCatalog {
    fn default() -> Self {
        ServerCatalog {
            default_risk: Risk::Medium,
            tools: ToolMap::default(),
            egress_allow: Vec::new(),
            labels: crate::flows::Labels::default(),
            resources: Vec::new(),
            price: None,
        }
    }
}

impl ServerCatalog {
    pub fn risk(&self, tool: &str) -> Risk {
        self.tools
            .get(tool)
            .and_then(|t| t.risk)
            .unwrap_or(self.default_risk)
    }

    pub fn tool(&self, tool: &str) -> Option<&ToolEntry> {
        self.tools.get(tool)
    }

    /// The price of a call of `tool`: its own, else the server's (none:
    /// the call costs nothing, and its audit record says it is unpriced).
    pub fn price(&self, tool: &str) -> Option<&Price> {
        self.tools
            .get(tool)
            .and_then(|t| t.price.as_ref())
            .or(self.price.as_ref())
    }
}

pub(crate) fn catalog(
    raw: &BTreeMap<String, raw::ServerCatalogConfig>,
    servers: &HashSet<&str>,
    flows: Option<&crate::flows::Flows>,
    p: &mut Problems,
) -> HashMap<String, ServerCatalog> {
    let mut out = HashMap::new();
    for (name, c) in raw {
        let base = format!("catalog.{name}");
        if !servers.contains(name.as_str()) {
            p.push(&base, format!("unknown server `{name}`"));
        }
        let default_risk = match c.default_risk.as_deref() {
            None => Risk::Medium,
            Some(r) => Risk::parse(r).unwrap_or_else(|| {
                p.push(
                    format!("{base}.default_risk"),
                    format!("`{r}` is not a risk level (LOW, MEDIUM, HIGH, CRITICAL)"),
                );
                Risk::Medium
            }),
        };
        let mut tools = ToolMap::default();
        for (tool, t) in &c.tools {
            let tbase = format!("{base}.tools.{tool}");
            let risk = t.risk.as_deref().and_then(|r| {
                Risk::parse(r).or_else(|| {
                    p.push(
                        format!("{tbase}.risk"),
                        format!("`{r}` is not a risk level (LOW, MEDIUM, HIGH, CRITICAL)"),
                    );
                    None
                })
            });
            for (field, schema) in [
                ("input_schema", &t.input_schema),
                ("output_schema", &t.output_schema),
            ] {
                if let Some(s) = schema {
                    if let Err(e) = jsonschema::validator_for(s) {
                        p.push(
                            format!("{tbase}.{field}"),
                            format!("not a valid JSON Schema: {e}"),
                        );
                    }
                }
            }
            for (i, sc) in t.scopes.iter().enumerate() {
                // RFC 6749 scope-token: visible ASCII but `"` and `\`.
                if sc.is_empty()
                    || !sc
                        .bytes()
                        .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
                {
                    p.push(
                        format!("{tbase}.scopes[{i}]"),
                        "must be an OAuth scope token (visible ASCII, no quote or backslash)",
                    );
                }
            }
            for (i, f) in t.fingerprints.iter().enumerate() {
                if !f.starts_with("sha256:") || f.len() != 7 + 64 {
                    p.push(
                        format!("{tbase}.fingerprints[{i}]"),
                        "must be `sha256:<64 hex>`",
                    );
                }
            }
            tools.insert(
                tool.clone(),
                ToolEntry {
                    risk,
                    cost: t.cost.unwrap_or(1).max(1),
                    input_schema: t.input_schema.clone().map(std::sync::Arc::new),
                    output_schema: t.output_schema.clone().map(std::sync::Arc::new),
                    fingerprints: t.fingerprints.clone(),
                    url_arguments: t.url_arguments.clone(),
                    egress_allow: host_patterns(
                        &t.egress_allow,
                        &format!("{tbase}.egress_allow"),
                        p,
                    ),
                    scopes: t.scopes.clone(),
                    labels: crate::flows::labels(flows, &t.classification, &t.flow, &tbase, p),
                    price: t
                        .price
                        .as_ref()
                        .and_then(|r| price(r, &format!("{tbase}.price"), p)),
                },
            );
        }
        out.insert(
            name.clone(),
            ServerCatalog {
                default_risk,
                tools,
                egress_allow: host_patterns(&c.egress_allow, &format!("{base}.egress_allow"), p),
                labels: crate::flows::labels(flows, &c.classification, &c.flow, &base, p),
                resources: c
                    .resources
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let at = format!("{base}.resources[{i}]");
                        if r.uri.is_empty() {
                            p.push(format!("{at}.uri"), "a URI pattern is required");
                        }
                        (
                            r.uri.clone(),
                            crate::flows::labels(flows, &r.classification, &r.flow, &at, p),
                        )
                    })
                    .collect(),
                price: c
                    .price
                    .as_ref()
                    .and_then(|r| price(r, &format!("{base}.price"), p)),
            },
        );
    }
    // One currency per bundle: spend adds up across servers and tenants.
    let mut currencies: Vec<&str> = out
        .values()
        .flat_map(|c: &ServerCatalog| {
            c.price
                .iter()
                .chain(c.tools.values().filter_map(|t| t.price.as_ref()))
                .map(|p| p.currency.as_str())
        })
        .collect();
    currencies.sort_unstable();
    currencies.dedup();
    if currencies.len() > 1 {
        p.push(
            "catalog",
            format!(
                "prices in several currencies ({}): one currency per bundle, so that spend adds up",
                currencies.join(", ")
            ),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> serde_yaml_ng::Value {
        serde_yaml_ng::from_str(s).expect("yaml")
    }

    #[test]
    fn amounts_are_millionths_of_decimals() {
        for (text, want) in [
            ("\"0.002\"", Ok(2_000)),
            ("0.002", Ok(2_000)),
            ("\"12\"", Ok(12_000_000)),
            ("\"1.000001\"", Ok(1_000_001)),
            ("3", Ok(3_000_000)),
        ] {
            assert_eq!(micros(&yaml(text)), want, "{text}");
        }
        for bad in [
            "\"-1\"",
            "\"1.0000001\"",
            "\"1e3\"",
            "\".5\"",
            "\"1.\"",
            "[1]",
            "\"99999999999999999999\"",
        ] {
            assert!(micros(&yaml(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_tool_without_a_price_takes_its_servers() {
        let eur = |c| Price {
            currency: "EUR".into(),
            per_call: c,
            per_unit: None,
        };
        let mut s = ServerCatalog {
            price: Some(eur(10)),
            ..ServerCatalog::default()
        };
        s.tools.insert(
            "own".into(),
            ToolEntry {
                price: Some(eur(5)),
                ..ToolEntry::default()
            },
        );
        s.tools.insert("plain".into(), ToolEntry::default());
        assert_eq!(s.price("own").map(|p| p.per_call), Some(5));
        assert_eq!(s.price("plain").map(|p| p.per_call), Some(10));
        assert_eq!(s.price("unlisted").map(|p| p.per_call), Some(10));
        s.price = None;
        assert!(s.price("plain").is_none());
    }

    #[test]
    fn a_call_costs_its_price_and_its_units() {
        let p = Price {
            currency: "EUR".into(),
            per_call: 2_000,
            per_unit: Some(("/content/0/text".into(), 500_000)),
        };
        let r =
            |t: serde_json::Value| serde_json::json!({"content": [{"type": "text", "text": t}]});
        assert_eq!(p.cost(Some(&r("7".into()))), (3_502_000, Some(7.0)));
        assert_eq!(
            p.cost(Some(&r(serde_json::json!(7)))),
            (3_502_000, Some(7.0))
        );
        assert_eq!(p.cost(Some(&r("2.5".into()))), (1_252_000, Some(2.5)));
        for none in [
            r("seven".into()),
            r("-1".into()),
            r(serde_json::json!(-1)),
            r("1e9".into()),
        ] {
            assert_eq!(p.cost(Some(&none)), (2_000, None), "{none}");
        }
        assert_eq!(p.cost(None), (2_000, None));
        let huge = r(serde_json::json!(1e300));
        assert_eq!(p.cost(Some(&huge)).0, u64::MAX);
    }
}
