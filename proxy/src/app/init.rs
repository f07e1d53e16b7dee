//! `warden init DIR --upstream URL`: a working bundle for the user's own MCP
//! server. One generated API key (printed once; only its salted hash is
//! written), deny-by-default RBAC in Rego with its unit tests, DLP both ways,
//! the audit trail in a file beside the bundle. If the server answers, its
//! tools are listed and written into the catalog at MEDIUM risk.

use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

pub struct InitOptions {
    pub dir: PathBuf,
    pub upstream: String,
    /// Server (and route) name; default from the URL's host.
    pub name: Option<String>,
    pub listen: String,
    pub admin: String,
    /// Identity of the generated key.
    pub id: String,
    pub tenant: String,
}

/// What `init` made, for the caller to print (and tests to use).
pub struct Initialised {
    pub key: String,
    pub client_url: String,
    pub tools: Result<Vec<String>, String>,
}

struct Upstream {
    /// The URL as parsed (no control characters).
    url: String,
    address: String,
    host: String,
    tls: bool,
    path: String,
}

fn parse_upstream(raw: &str) -> anyhow::Result<Upstream> {
    let url = url::Url::parse(raw)
        .with_context(|| format!("--upstream {raw}: not a URL (try http://127.0.0.1:3000/mcp)"))?;
    let tls = match url.scheme() {
        "http" => false,
        "https" => true,
        other => bail!("--upstream {raw}: scheme `{other}` (Warden speaks http:// and https:// to MCP servers)"),
    };
    if !url.username().is_empty() || url.password().is_some() {
        bail!("--upstream {raw}: credentials do not belong in the URL; add `credentials:` to the server after init");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("--upstream {raw}: a query or fragment is not part of an MCP endpoint");
    }
    let host = url
        .host_str()
        .ok_or_else(|| anyhow::anyhow!("--upstream {raw}: no host"))?
        .to_owned();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| anyhow::anyhow!("--upstream {raw}: no port"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let address = (bare, port)
        .to_socket_addrs()
        .with_context(|| format!("--upstream {raw}: cannot resolve {host}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("--upstream {raw}: {host} has no address"))?
        .to_string();
    let path = match url.path() {
        "" => "/".to_owned(),
        p => p.to_owned(),
    };
    Ok(Upstream {
        url: url.as_str().to_owned(),
        address,
        host: format!("{host}:{port}"),
        tls,
        path,
    })
}

fn default_name(raw: &str) -> String {
    let host = url::Url::parse(raw)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let first = host.split('.').next().unwrap_or_default();
    let name: String = first
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    // Addresses make poor names.
    if name.is_empty()
        || name.chars().all(|c| c.is_ascii_digit() || c == '-')
        || name == "localhost"
    {
        "server".to_owned()
    } else {
        name
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

const POLICY: &str = r#"# Written by `warden init`. Entry point: data.warden.authz.decision.
# The input document is described in docs/policy.md; test with
# `warden policy test --bundle <this directory>`.
package warden.authz

import rego.v1

# The protocol itself (handshake, lists, pings) is open to every principal
# the gateway authenticated; lists are filtered item by item below.
decision := {"allow": true, "reason": "protocol"} if {
	input.request.method in data.warden.protocol_methods
} else := {"allow": true, "reason": "granted"} if {
	input.request.method in {"tools/call", "resources/read", "prompts/get"}
	granted
} else := {"allow": true, "reason": "server_request"} if {
	input.request.method in data.warden.server_requests
} else := {"allow": false, "reason": "rbac_group_not_granted"} if {
	input.request.method in {"tools/call", "resources/read", "prompts/get"}
} else := {"allow": false, "reason": "method_not_allowed"}

# RBAC: a role grants the service groups listed in data.json.
granted if {
	some role in input.principal.roles
	input.server.group in data.warden.roles[role].groups
}
"#;

const POLICY_TEST: &str = r#"# Run with: warden policy test --bundle <this directory>
package warden.authz_test

import rego.v1

import data.warden.authz

ctx := {"time": "2026-11-17T09:00:00Z", "hour": 10, "weekday": "Tuesday", "source_ip": "127.0.0.1", "justification": null, "session_id": null}

call(roles) := {
	"principal": {"id": "p", "tenant": "t", "roles": roles, "kind": "agent", "auth": "api_key", "attributes": {}},
	"server": {"name": "s", "group": "tools"},
	"request": {"method": "tools/call", "tool": "x", "prompt": null, "resource_uri": null, "arguments": {}, "risk": "MEDIUM", "listing": false},
	"context": ctx,
}

test_developer_may_call if {
	authz.decision.allow with input as call(["developer"])
}

test_other_roles_may_not if {
	d := authz.decision with input as call(["auditor"])
	d == {"allow": false, "reason": "rbac_group_not_granted"}
}

test_unknown_method_denied if {
	d := authz.decision with input as object.union(call(["developer"]), {"request": {"method": "sampling/whatever"}})
	d.reason == "method_not_allowed"
}
"#;

const DATA: &str = r#"{
  "warden": {
    "protocol_methods": [
      "initialize", "server/discover", "ping",
      "notifications/initialized", "notifications/cancelled",
      "notifications/progress", "notifications/roots/list_changed",
      "tools/list", "prompts/list", "resources/list", "resources/templates/list",
      "logging/setLevel", "completion/complete"
    ],
    "roles": {
      "developer": {"groups": ["tools"]}
    },
    "server_requests": ["roots/list", "ping", "elicitation/create"]
  }
}
"#;

fn yaml_str(s: &str) -> String {
    // JSON strings are YAML strings.
    serde_json::Value::from(s).to_string()
}

/// Writes the bundle. `tools` are the server's tool names if it answered.
pub fn init(opts: &InitOptions) -> anyhow::Result<Initialised> {
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| default_name(&opts.upstream));
    if !valid_name(&name) {
        bail!("--name {name}: use lower-case letters, digits, `-` and `_` (at most 63)");
    }
    let up = parse_upstream(&opts.upstream)?;
    if opts.listen.parse::<std::net::SocketAddr>().is_err() {
        bail!(
            "--listen {}: not an address (try 127.0.0.1:8080)",
            opts.listen
        );
    }
    if opts.admin.parse::<std::net::SocketAddr>().is_err() {
        bail!(
            "--admin {}: not an address (try 127.0.0.1:9090)",
            opts.admin
        );
    }
    if opts.dir.exists()
        && std::fs::read_dir(&opts.dir)
            .with_context(|| format!("{}", opts.dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{}: exists and is not empty; init writes a new bundle into an empty or new directory",
            opts.dir.display()
        );
    }

    // Ask the server for its tools: the catalog starts from what it lists.
    let tools = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")?
        .block_on(async {
            tokio::time::timeout(
                std::time::Duration::from_secs(10),
                crate::app::cli::list_tools(&opts.upstream, &[]),
            )
            .await
        })
        .map_err(|_| "no answer within 10 s".to_owned())
        // The server's text goes to the terminal beside the new key: nothing
        // in it may move the cursor or rewrite the screen.
        .and_then(|r| r.map_err(|e| crate::app::top::clean(&format!("{e:#}"), 300)))
        .map(|ts| {
            let mut names: Vec<String> = ts
                .iter()
                .filter_map(|t| t["name"].as_str())
                .filter(|n| warden_filters::guards::tools::valid_name(n))
                .map(str::to_owned)
                .collect();
            names.sort();
            names.dedup();
            names
        });

    let key = format!("wk_{}", hex::encode(rand::random::<[u8; 24]>()));
    let salt: [u8; 16] = rand::random();
    let hash = warden_config::access::hash_api_key(&key, &salt);
    std::fs::create_dir_all(opts.dir.join("policies"))
        .with_context(|| format!("creating {}", opts.dir.display()))?;
    let dir = opts
        .dir
        .canonicalize()
        .with_context(|| format!("{}", opts.dir.display()))?;
    let client_path = format!("/{name}{}", up.path);
    let client_url = format!("http://{}{client_path}", opts.listen);
    let tls = if up.tls {
        let sni = up
            .host
            .rsplit_once(':')
            .map_or(up.host.as_str(), |(h, _)| h);
        format!(
            "        tls: {{sni: {}, verify: true}}\n",
            yaml_str(sni.trim_start_matches('[').trim_end_matches(']'))
        )
    } else {
        String::new()
    };
    let catalog = match &tools {
        Ok(names) if !names.is_empty() => {
            let mut c = String::from("    tools:                  # from the server's tools/list at init; raise the risk of what is dangerous\n");
            for n in names {
                c.push_str(&format!("      {}: {{risk: MEDIUM}}\n", yaml_str(n)));
            }
            c
        }
        _ => "    tools: {}               # add tools here with their risk (LOW/MEDIUM/HIGH/CRITICAL)\n"
            .to_owned(),
    };
    let yaml = format!(
        r#"# Written by `warden init` for {upstream}.
# Reference: docs/bundle-reference.md. Check with `warden validate <this directory>`.
version: 1

listeners:
  - name: main
    address: {listen}

admin:
  address: {admin}

audit:
  path: {audit}

service_groups:
  - name: tools
    servers:
      - name: {name}
        upstreams: [{address}]
        host: {host}
{tls}        health_check: {{interval: 5s}}

routes:
  # {client_url} -> {upstream}
  - {{prefix: /{name}, server: {name}, upstream_prefix: /}}

identity:
  resource: {client_url}
  api_keys:
    # The key was printed once by `warden init`; only its salted hash is here.
    # More keys: `warden apikey hash --id NAME --tenant {tenant} --roles developer`.
    - id: {id}
      tenant: {tenant}
      roles: [developer]
      kind: agent
      hash: {hash}

policy:
  entrypoint: data.warden.authz.decision
  denial: tool_error

catalog:
  {name}:
    default_risk: MEDIUM
{catalog}
kill_switch:
  tenants: []
  principals: []
  tools: []

# Secrets neither leave nor enter; personal data is redacted in results;
# prompt-injection markers are stripped from results.
dlp:
  rules:
    - {{name: no-secrets, detectors: ["category:secret"], action: block}}
    - {{name: pii-in-results, detectors: [email, "card_*", "phone_*", us_ssn, iban], direction: response, action: redact}}
    - {{name: injection, detectors: ["category:injection"], direction: response, action: strip}}
"#,
        // As parsed: a pasted URL's stray newline never reaches the YAML.
        upstream = up.url,
        listen = opts.listen,
        admin = opts.admin,
        audit = yaml_str(&dir.join("audit.jsonl").to_string_lossy()),
        address = yaml_str(&up.address),
        host = yaml_str(&up.host),
        tenant = yaml_str(&opts.tenant),
        id = yaml_str(&opts.id),
        hash = yaml_str(&hash),
    );
    let files: [(&str, &str); 5] = [
        ("warden.yaml", &yaml),
        (".manifest", "{\"roots\": [\"warden\"]}\n"),
        ("data.json", DATA),
        ("policies/authz.rego", POLICY),
        ("policies/authz_test.rego", POLICY_TEST),
    ];
    for (f, text) in files {
        write_new(&dir.join(f), text)?;
    }
    // What was written must be a bundle the gateway accepts.
    warden_config::Bundle::load(&dir)
        .map_err(anyhow::Error::from)
        .and_then(|b| Ok(warden_filters::Snapshot::build(&b).map(|_| ())?))
        .with_context(|| {
            format!(
                "the bundle written to {} does not load (a bug in init)",
                dir.display()
            )
        })?;
    Ok(Initialised {
        key,
        client_url,
        tools,
    })
}

fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_hosts_not_addresses() {
        assert_eq!(default_name("https://jira.internal:8443/mcp"), "jira");
        assert_eq!(default_name("http://127.0.0.1:3000/mcp"), "server");
        assert_eq!(default_name("http://localhost:3000/mcp"), "server");
        assert_eq!(default_name("http://[::1]:3000/mcp"), "server");
        assert_eq!(default_name("http://My_Tools.example.com/"), "my-tools");
    }

    #[test]
    fn upstream_urls_are_checked() {
        let u = parse_upstream("http://127.0.0.1:3000/mcp").expect("ok");
        assert_eq!(
            (u.address.as_str(), u.path.as_str(), u.tls),
            ("127.0.0.1:3000", "/mcp", false)
        );
        let u = parse_upstream("https://127.0.0.1").expect("ok");
        assert_eq!(
            (u.address.as_str(), u.path.as_str(), u.tls),
            ("127.0.0.1:443", "/", true)
        );
        for bad in [
            "ftp://127.0.0.1/mcp",
            "http://user:pw@127.0.0.1/mcp",
            "http://127.0.0.1/mcp?x=1",
            "127.0.0.1:3000",
        ] {
            assert!(parse_upstream(bad).is_err(), "{bad}");
        }
    }
}
