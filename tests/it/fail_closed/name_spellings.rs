//! Names read as another name, through a real gateway: list entries that
//! shadow a hidden one, on an SSE stream split at odd places, and calls,
//! prompts and completions named in a spelling a folding server reads as a
//! name the policy denies.

use serde_json::{json, Value};

use super::{messages, post_with, posts_received, setup_with, BUNDLE};
use warden_tests::hostile::Reply;

/// A deny list: everything but the tool `purge` and the prompt `secret`.
const DENY_LIST: &str = r#"package warden.authz
import rego.v1
default decision := {"allow": true, "reason": "ok"}
decision := {"allow": false, "reason": "no_purge"} if input.request.tool == "purge"
decision := {"allow": false, "reason": "no_secret"} if input.request.prompt == "secret"
"#;

fn names(text: &str, array: &str) -> Vec<String> {
    messages(text)
        .iter()
        .filter_map(|m| m["result"][array].as_array().cloned())
        .flatten()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn names_a_folding_peer_reads_as_a_hidden_one_never_pass() {
    let (h, gw) = setup_with(BUNDLE, DENY_LIST).await;
    // The list, as an SSE event split inside names and escapes: `Purge`
    // (escaped `P`) is another spelling of the hidden `purge`.
    let ev = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[\
              {\"name\":\"echo\",\"description\":\"e\",\"inputSchema\":{\"type\":\"object\"}},\
              {\"name\":\"purge\",\"description\":\"p\",\"inputSchema\":{\"type\":\"object\"}},\
              {\"name\":\"\\u0050urge\",\"description\":\"P\",\"inputSchema\":{\"type\":\"object\"}}]}}\n\n";
    let cut = |at: &str| ev.find(at).expect("cut");
    let (a, b) = (cut("\\u0050") + 3, cut("\"P\"") + 1);
    h.script([Reply::sse(&[&ev[..a], &ev[a..b], &ev[b..]])]);
    let (s, _, text) = post_with(
        &gw,
        &json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}).to_string(),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{text}");
    assert_eq!(names(&text, "tools"), ["echo"], "{text}");
    // Prompts likewise, as JSON.
    h.script([Reply::json(
        &json!({"jsonrpc":"2.0","id":2,"result":{"prompts":[
            {"name":"hello"},{"name":"secret"},{"name":"SECRET"}]}})
        .to_string(),
    )]);
    let (_, _, text) = post_with(
        &gw,
        &json!({"jsonrpc":"2.0","id":2,"method":"prompts/list"}).to_string(),
        &[],
    )
    .await;
    assert_eq!(names(&text, "prompts"), ["hello"], "{text}");

    // Requests in another spelling of a denied name reach no server.
    let before = posts_received(&h);
    let asks: Vec<Value> = vec![
        json!({"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"PURGE","arguments":{}}}),
        json!({"jsonrpc":"2.0","id":11,"method":"prompts/get","params":{"name":"Secret"}}),
        json!({"jsonrpc":"2.0","id":12,"method":"prompts/get","params":{"name":"secret\u{0}"}}),
        json!({"jsonrpc":"2.0","id":13,"method":"completion/complete","params":{
            "ref":{"type":"ref/prompt","name":"secret"},"argument":{"name":"a","value":""}}}),
    ];
    for ask in asks {
        let (_, _, text) = post_with(&gw, &ask.to_string(), &[]).await;
        let m = messages(&text);
        assert!(
            m.first().is_some_and(|m| m["error"]["code"] == -32602),
            "{ask}: {text}"
        );
    }
    assert_eq!(posts_received(&h), before, "a near-name reached the server");
    // The exact names the principal may use still pass.
    h.script([Reply::json(
        &json!({"jsonrpc":"2.0","id":20,"result":{"messages":[]}}).to_string(),
    )]);
    let ask = json!({"jsonrpc":"2.0","id":20,"method":"prompts/get","params":{"name":"hello"}});
    let (_, _, text) = post_with(&gw, &ask.to_string(), &[]).await;
    assert_eq!(posts_received(&h), before + 1, "control: {text}");
}
