//! Real SDK traffic through the strict parser (no false refusal of what a
//! Python SDK session sends and receives, sampling with tools included), and
//! egress on Pydantic-style `$ref`/`$defs` schemas (nested models are judged
//! like top-level arguments).

use warden_filters::{parse, ParseLimits, Parsed};

/// Every message of a Python SDK (mcp==2.3.0) session over stdio, both
/// directions, captured on the wire under 2025-11-25: initialize with
/// capabilities, Pydantic schemas with `$defs`/`$ref`/`anyOf` nullable,
/// `title`, `additionalProperties`, structured output, elicitation with a
/// Pydantic `requestedSchema`, sampling (model preferences, metadata),
/// progress, logging with structured data, roots, resources and templates,
/// prompts with arguments, completion with context, errors, ping.
const PYTHON_SDK_2025_11_25: &[&str] = &[
    r##"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"sampling":{"context":{},"tools":{}},"elicitation":{"form":{},"url":{}},"roots":{"listChanged":true}},"clientInfo":{"name":"mcp","version":"0.1.0"}}}"##,
    r##"{"jsonrpc":"2.0","id":1,"result":{"capabilities":{"completions":{},"prompts":{"listChanged":false},"resources":{"listChanged":false,"subscribe":false},"tools":{"listChanged":false}},"instructions":"Use the tools.","protocolVersion":"2025-11-25","serverInfo":{"name":"capture","version":""}}}"##,
    r##"{"jsonrpc":"2.0","method":"notifications/initialized"}"##,
    r##"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"##,
    r##"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"description":"Search.","inputSchema":{"properties":{"q":{"$ref":"#/$defs/Query"},"limit":{"default":10,"title":"Limit","type":"integer"},"hint":{"anyOf":[{"type":"string"},{"type":"null"}],"default":null,"title":"Hint"}},"required":["q"],"type":"object","$defs":{"Color":{"enum":["red","blue"],"title":"Color","type":"string"},"Query":{"description":"A query.","properties":{"target":{"$ref":"#/$defs/Target"},"backup":{"anyOf":[{"$ref":"#/$defs/Target"},{"type":"null"}],"default":null},"extra":{"default":[],"items":{"$ref":"#/$defs/Target"},"title":"Extra","type":"array"},"tags":{"additionalProperties":{"type":"integer"},"default":{},"title":"Tags","type":"object"},"mode":{"default":"fast","enum":["fast","slow"],"title":"Mode","type":"string"}},"required":["target"],"title":"Query","type":"object"},"Target":{"properties":{"url":{"description":"Where to fetch","format":"uri","minLength":1,"title":"Url","type":"string"},"region":{"anyOf":[{"type":"string"},{"type":"null"}],"default":null,"title":"Region"},"color":{"$ref":"#/$defs/Color","default":"red"}},"required":["url"],"title":"Target","type":"object"}},"title":"searchArguments"},"name":"search","outputSchema":{"properties":{"items":{"items":{"$ref":"#/$defs/Target"},"title":"Items","type":"array"},"total":{"title":"Total","type":"integer"},"note":{"anyOf":[{"type":"string"},{"type":"null"}],"default":null,"title":"Note"}},"required":["items","total"],"type":"object","$defs":{"Color":{"enum":["red","blue"],"title":"Color","type":"string"},"Target":{"properties":{"url":{"description":"Where to fetch","format":"uri","minLength":1,"title":"Url","type":"string"},"region":{"anyOf":[{"type":"string"},{"type":"null"}],"default":null,"title":"Region"},"color":{"$ref":"#/$defs/Color","default":"red"}},"required":["url"],"title":"Target","type":"object"}},"title":"Answer"},"title":"Search things"},{"description":"","inputSchema":{"properties":{"x":{"title":"X","type":"number"},"flag":{"default":false,"title":"Flag","type":"boolean"}},"required":["x"],"type":"object","title":"plainArguments"},"name":"plain","outputSchema":{"type":"object","additionalProperties":{"type":"integer"},"title":"plainDictOutput"}},{"description":"","inputSchema":{"properties":{},"type":"object","title":"askArguments"},"name":"ask","outputSchema":{"properties":{"result":{"title":"Result","type":"string"}},"required":["result"],"type":"object","title":"askOutput"}},{"description":"","inputSchema":{"properties":{},"type":"object","title":"thinkArguments"},"name":"think","outputSchema":{"properties":{"result":{"title":"Result","type":"string"}},"required":["result"],"type":"object","title":"thinkOutput"}},{"description":"","inputSchema":{"properties":{},"type":"object","title":"think_toolsArguments"},"name":"think_tools","outputSchema":{"properties":{"result":{"title":"Result","type":"string"}},"required":["result"],"type":"object","title":"think_toolsOutput"}},{"description":"","inputSchema":{"properties":{},"type":"object","title":"ask_mrtrArguments"},"name":"ask_mrtr","outputSchema":{"properties":{"result":{"title":"Result","type":"string"}},"required":["result"],"type":"object","title":"ask_mrtrOutput"}},{"description":"","inputSchema":{"properties":{"steps":{"title":"Steps","type":"integer"}},"required":["steps"],"type":"object","title":"countArguments"},"name":"count","outputSchema":{"properties":{"result":{"title":"Result","type":"string"}},"required":["result"],"type":"object","title":"countOutput"}},{"description":"","inputSchema":{"properties":{},"type":"object","title":"rootsArguments"},"name":"roots","outputSchema":{"properties":{"result":{"title":"Result","type":"string"}},"required":["result"],"type":"object","title":"rootsOutput"}}]}}"##,
    r##"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"search","arguments":{"q":{"target":{"url":"https://example.com/a"}}},"_meta":{"progressToken":3}}}"##,
    r##"{"jsonrpc":"2.0","id":3,"result":{"content":[{"text":"{\n  \"items\": [\n    {\n      \"url\": \"https://example.com/a\",\n      \"region\": null,\n      \"color\": \"red\"\n    }\n  ],\n  \"total\": 1,\n  \"note\": null\n}","type":"text"}],"isError":false,"structuredContent":{"items":[{"url":"https://example.com/a","region":null,"color":"red"}],"total":1,"note":null}}}"##,
    r##"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"plain","arguments":{"x":1.5},"_meta":{"progressToken":4}}}"##,
    r##"{"jsonrpc":"2.0","id":4,"result":{"content":[{"text":"{\n  \"a\": 1\n}","type":"text"}],"isError":false,"structuredContent":{"a":1}}}"##,
    r##"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"ask","arguments":{},"_meta":{"progressToken":5}}}"##,
    r##"{"jsonrpc":"2.0","id":1,"method":"elicitation/create","params":{"mode":"form","message":"Tell me","requestedSchema":{"properties":{"name":{"description":"Name","title":"Your name","type":"string"},"age":{"default":30,"minimum":0,"title":"Age","type":"integer"},"color":{"default":"red","enum":["red","blue"],"title":"Color","type":"string"},"ok":{"default":true,"title":"Ok","type":"boolean"}},"required":["name"],"title":"Prefs","type":"object"}}}"##,
    r##"{"jsonrpc":"2.0","id":1,"result":{"action":"accept","content":{"name":"Bob","age":3,"color":"blue","ok":true}}}"##,
    r##"{"jsonrpc":"2.0","id":5,"result":{"content":[{"text":"action='accept' data=Prefs(name='Bob', age=3, color='blue', ok=True)","type":"text"}],"isError":false,"structuredContent":{"result":"action='accept' data=Prefs(name='Bob', age=3, color='blue', ok=True)"}}}"##,
    r##"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"think","arguments":{},"_meta":{"progressToken":6}}}"##,
    r##"{"jsonrpc":"2.0","id":2,"method":"sampling/createMessage","params":{"messages":[{"role":"user","content":{"type":"text","text":"hi"}}],"modelPreferences":{"hints":[{"name":"claude"}],"speedPriority":0.5},"systemPrompt":"be brief","includeContext":"thisServer","temperature":0.5,"maxTokens":10,"stopSequences":["x"],"metadata":{"Name":1}}}"##,
    r##"{"jsonrpc":"2.0","id":2,"result":{"role":"assistant","content":{"type":"text","text":"hello"},"model":"m","stopReason":"endTurn"}}"##,
    r##"{"jsonrpc":"2.0","id":6,"result":{"content":[{"text":"type='text' text='hello' annotations=None meta=None","type":"text"}],"isError":false,"structuredContent":{"result":"type='text' text='hello' annotations=None meta=None"}}}"##,
    r##"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"count","arguments":{"steps":2},"_meta":{"progressToken":7}}}"##,
    r##"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":7,"progress":1,"total":2,"message":"step 0"}}"##,
    r##"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":7,"progress":2,"total":2,"message":"step 1"}}"##,
    r##"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"info log"}}"##,
    r##"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"warning","logger":"lg","data":{"Name":"x","Type":1}}}"##,
    r##"{"jsonrpc":"2.0","id":7,"result":{"content":[{"text":"ok","type":"text"}],"isError":false,"structuredContent":{"result":"ok"}}}"##,
    r##"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"roots","arguments":{},"_meta":{"progressToken":8}}}"##,
    r##"{"jsonrpc":"2.0","id":3,"method":"roots/list"}"##,
    r##"{"jsonrpc":"2.0","id":3,"result":{"roots":[{"uri":"file:///tmp","name":"tmp"}]}}"##,
    r##"{"jsonrpc":"2.0","id":8,"result":{"content":[{"text":"meta=None roots=[Root(uri=FileUrl('file:///tmp'), name='tmp', meta=None)]","type":"text"}],"isError":false,"structuredContent":{"result":"meta=None roots=[Root(uri=FileUrl('file:///tmp'), name='tmp', meta=None)]"}}}"##,
    r##"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"think_tools","arguments":{},"_meta":{"progressToken":9}}}"##,
    r##"{"jsonrpc":"2.0","id":4,"error":{"code":-32602,"message":"Invalid request parameters","data":""}}"##,
    r##"{"jsonrpc":"2.0","id":9,"error":{"code":-32602,"message":"Invalid request parameters","data":""}}"##,
    r##"{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"ask_mrtr","arguments":{},"_meta":{"progressToken":10}}}"##,
    r##"{"jsonrpc":"2.0","id":10,"error":{"code":-32603,"message":"Handler returned an invalid result"}}"##,
    r##"{"jsonrpc":"2.0","id":11,"method":"resources/list"}"##,
    r##"{"jsonrpc":"2.0","id":11,"result":{"resources":[{"description":"","mimeType":"text/plain","name":"fixed","title":"Fixed","uri":"res://fixed"}]}}"##,
    r##"{"jsonrpc":"2.0","id":12,"method":"resources/templates/list"}"##,
    r##"{"jsonrpc":"2.0","id":12,"result":{"resourceTemplates":[{"description":"","mimeType":"text/plain","name":"item","uriTemplate":"res://items/{item_id}/detail{?verbose}"}]}}"##,
    r##"{"jsonrpc":"2.0","id":13,"method":"resources/read","params":{"uri":"res://fixed"}}"##,
    r##"{"jsonrpc":"2.0","id":13,"result":{"contents":[{"mimeType":"text/plain","text":"fixed","uri":"res://fixed"}]}}"##,
    r##"{"jsonrpc":"2.0","id":14,"method":"prompts/list"}"##,
    r##"{"jsonrpc":"2.0","id":14,"result":{"prompts":[{"arguments":[{"name":"code","required":true},{"name":"language","required":false}],"description":"Review code.","name":"review","title":"Review"}]}}"##,
    r##"{"jsonrpc":"2.0","id":15,"method":"prompts/get","params":{"name":"review","arguments":{"code":"x=1"}}}"##,
    r##"{"jsonrpc":"2.0","id":15,"result":{"description":"Review code.","messages":[{"content":{"text":"review x=1 in python","type":"text"},"role":"user"}]}}"##,
    r##"{"jsonrpc":"2.0","id":16,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"review"},"argument":{"name":"language","value":"py"}}}"##,
    r##"{"jsonrpc":"2.0","id":16,"result":{"completion":{"hasMore":false,"total":2,"values":["python","rust"]}}}"##,
    r##"{"jsonrpc":"2.0","id":17,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"res://items/{item_id}/detail{?verbose}"},"argument":{"name":"item_id","value":"1"},"context":{"arguments":{"verbose":"yes"}}}}"##,
    r##"{"jsonrpc":"2.0","id":17,"result":{"completion":{"hasMore":false,"total":2,"values":["python","rust"]}}}"##,
    r##"{"jsonrpc":"2.0","id":18,"method":"logging/setLevel","params":{"level":"debug"}}"##,
    r##"{"jsonrpc":"2.0","id":18,"error":{"code":-32601,"message":"Method not found","data":"logging/setLevel"}}"##,
    r##"{"jsonrpc":"2.0","id":19,"method":"ping"}"##,
    r##"{"jsonrpc":"2.0","id":19,"result":{}}"##,
];

/// The same session under 2026-07-28 (`mode="2026-07-28"`): `_meta`
/// protocol fields, `resultType`, `cacheScope`, an `InputRequiredResult`
/// with an elicitation (Pydantic schema) and a sampling request, and the
/// retry carrying `inputResponses` and `requestState`.
const PYTHON_SDK_2026_07_28: &[&str] = &[
    r##"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{"sampling":{"context":{},"tools":{}},"elicitation":{"form":{},"url":{}},"roots":{"listChanged":true}}}}}"##,
    r##"{"jsonrpc":"2.0","id":1,"result":{"cacheScope":"private","resultType":"complete","tools":[{"description":"Search.","inputSchema":{"type":"object","$defs":{"Color":{"enum":["red","blue"],"title":"Color","type":"string"},"Query":{"description":"A query.","properties":{"target":{"$ref":"#/$defs/Target"},"backup":{"anyOf":[{"$ref":"#/$defs/Target"},{"type":"null"}],"default":null},"extra":{"default":[],"items":{"$ref":"#/$defs/Target"},"title":"Extra","type":"array"},"tags":{"additionalProperties":{"type":"integer"},"default":{},"title":"Tags","type":"object"},"mode":{"default":"fast","enum":["fast","slow"],"title":"Mode","type":"string"}},"required":["target"],"title":"Query","type":"object"},"Target":{"properties":{"url":{"description":"Where to fetch","format":"uri","minLength":1,"title":"Url","type":"string"},"region":{"anyOf":[{"type":"string"},{"type":"null"}],"default":null,"title":"Region"},"color":{"$ref":"#/$defs/Color","default":"red"}},"required":["url"],"title":"Target","type":"object"}},"properties":{"q":{"$ref":"#/$defs/Query"},"limit":{"default":10,"title":"Limit","type":"integer"},"hint":{"anyOf":[{"type":"string"},{"type":"null"}],"default":null,"title":"Hint"}},"required":["q"],"title":"searchArguments"},"name":"search","outputSchema":{"$defs":{"Color":{"enum":["red","blue"],"title":"Color","type":"string"},"Target":{"properties":{"url":{"description":"Where to fetch","format":"uri","minLength":1,"title":"Url","type":"string"},"region":{"anyOf":[{"type":"string"},{"type":"null"}],"default":null,"title":"Region"},"color":{"$ref":"#/$defs/Color","default":"red"}},"required":["url"],"title":"Target","type":"object"}},"properties":{"items":{"items":{"$ref":"#/$defs/Target"},"title":"Items","type":"array"},"total":{"title":"Total","type":"integer"},"note":{"anyOf":[{"type":"string"},{"type":"null"}],"default":null,"title":"Note"}},"required":["items","total"],"title":"Answer","type":"object"},"title":"Search things"},{"description":"","inputSchema":{"type":"object","properties":{"x":{"title":"X","type":"number"},"flag":{"default":false,"title":"Flag","type":"boolean"}},"required":["x"],"title":"plainArguments"},"name":"plain","outputSchema":{"additionalProperties":{"type":"integer"},"title":"plainDictOutput","type":"object"}},{"description":"","inputSchema":{"type":"object","properties":{},"title":"askArguments"},"name":"ask","outputSchema":{"properties":{"result":{"title":"Result","type":"string"}},"required":["result"],"title":"askOutput","type":"object"}},{"description":"","inputSchema":{"type":"object","properties":{},"title":"thinkArguments"},"name":"think","outputSchema":{"properties":{"result":{"title":"Result","type":"string"}},"required":["result"],"title":"thinkOutput","type":"object"}},{"description":"","inputSchema":{"type":"object","properties":{},"title":"think_toolsArguments"},"name":"think_tools","outputSchema":{"properties":{"result":{"title":"Result","type":"string"}},"required":["result"],"title":"think_toolsOutput","type":"object"}},{"description":"","inputSchema":{"type":"object","properties":{},"title":"ask_mrtrArguments"},"name":"ask_mrtr","outputSchema":{"properties":{"result":{"title":"Result","type":"string"}},"required":["result"],"title":"ask_mrtrOutput","type":"object"}},{"description":"","inputSchema":{"type":"object","properties":{"steps":{"title":"Steps","type":"integer"}},"required":["steps"],"title":"countArguments"},"name":"count","outputSchema":{"properties":{"result":{"title":"Result","type":"string"}},"required":["result"],"title":"countOutput","type":"object"}},{"description":"","inputSchema":{"type":"object","properties":{},"title":"rootsArguments"},"name":"roots","outputSchema":{"properties":{"result":{"title":"Result","type":"string"}},"required":["result"],"title":"rootsOutput","type":"object"}}],"ttlMs":0,"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"capture","version":""}}}}"##,
    r##"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"search","arguments":{"q":{"target":{"url":"https://example.com/a"}}},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{"sampling":{"context":{},"tools":{}},"elicitation":{"form":{},"url":{}},"roots":{"listChanged":true}},"progressToken":2}}}"##,
    r##"{"jsonrpc":"2.0","id":2,"result":{"content":[{"text":"{\n  \"items\": [\n    {\n      \"url\": \"https://example.com/a\",\n      \"region\": null,\n      \"color\": \"red\"\n    }\n  ],\n  \"total\": 1,\n  \"note\": null\n}","type":"text"}],"isError":false,"resultType":"complete","structuredContent":{"items":[{"url":"https://example.com/a","region":null,"color":"red"}],"total":1,"note":null},"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"capture","version":""}}}}"##,
    r##"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"plain","arguments":{"x":1.5},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{"sampling":{"context":{},"tools":{}},"elicitation":{"form":{},"url":{}},"roots":{"listChanged":true}},"progressToken":3}}}"##,
    r##"{"jsonrpc":"2.0","id":3,"result":{"content":[{"text":"{\n  \"a\": 1\n}","type":"text"}],"isError":false,"resultType":"complete","structuredContent":{"a":1},"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"capture","version":""}}}}"##,
    r##"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"ask","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{"sampling":{"context":{},"tools":{}},"elicitation":{"form":{},"url":{}},"roots":{"listChanged":true}},"progressToken":4}}}"##,
    r##"{"jsonrpc":"2.0","id":4,"error":{"code":-32600,"message":"Cannot send 'elicitation/create': this transport context has no back-channel for server-initiated requests."}}"##,
    r##"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"think","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{"sampling":{"context":{},"tools":{}},"elicitation":{"form":{},"url":{}},"roots":{"listChanged":true}},"progressToken":5}}}"##,
    r##"{"jsonrpc":"2.0","id":5,"error":{"code":-32600,"message":"Cannot send 'sampling/createMessage': this transport context has no back-channel for server-initiated requests."}}"##,
    r##"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"count","arguments":{"steps":2},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{"sampling":{"context":{},"tools":{}},"elicitation":{"form":{},"url":{}},"roots":{"listChanged":true}},"progressToken":6}}}"##,
    r##"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":6,"progress":1,"total":2,"message":"step 0"}}"##,
    r##"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":6,"progress":2,"total":2,"message":"step 1"}}"##,
    r##"{"jsonrpc":"2.0","id":6,"result":{"content":[{"text":"ok","type":"text"}],"isError":false,"resultType":"complete","structuredContent":{"result":"ok"},"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"capture","version":""}}}}"##,
    r##"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"roots","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{"sampling":{"context":{},"tools":{}},"elicitation":{"form":{},"url":{}},"roots":{"listChanged":true}},"progressToken":7}}}"##,
    r##"{"jsonrpc":"2.0","id":7,"error":{"code":-32600,"message":"Cannot send 'roots/list': this transport context has no back-channel for server-initiated requests."}}"##,
    r##"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"think_tools","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{"sampling":{"context":{},"tools":{}},"elicitation":{"form":{},"url":{}},"roots":{"listChanged":true}},"progressToken":8}}}"##,
    r##"{"jsonrpc":"2.0","id":8,"error":{"code":-32600,"message":"Cannot send 'sampling/createMessage': this transport context has no back-channel for server-initiated requests."}}"##,
    r##"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"ask_mrtr","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{"sampling":{"context":{},"tools":{}},"elicitation":{"form":{},"url":{}},"roots":{"listChanged":true}},"progressToken":9}}}"##,
    r##"{"jsonrpc":"2.0","id":9,"result":{"inputRequests":{"who":{"method":"elicitation/create","params":{"message":"Name?","mode":"form","requestedSchema":{"properties":{"name":{"description":"Name","title":"Your name","type":"string"},"age":{"default":30,"minimum":0,"title":"Age","type":"integer"},"color":{"default":"red","enum":["red","blue"],"title":"Color","type":"string"},"ok":{"default":true,"title":"Ok","type":"boolean"}},"required":["name"],"type":"object"}}},"llm":{"method":"sampling/createMessage","params":{"maxTokens":5,"messages":[{"content":{"text":"hi","type":"text"},"role":"user"}]}}},"requestState":"v1.P6QRD-bIfA1c7dpiujZ8z4t7qsFLOJnhEh-q4IZADGmv9ib3XOk8hfqlmM2PBj_C8u9UN20Cw6blrKSfS-EXxwJ9c1EQN7VwttXGn0boBzqm7IpB6fp9tHYOrzj8hCTH6bWGlE1O1d13DpDYadDWNDonKuFCEFZ7Hh185PkxFnXDdEs3AS-_N-PCAgs3aPisDnLVkFj848jbSCdzwusCuvetveHojO7kHcz6LMzAnQ","resultType":"input_required","_meta":{"io.modelcontextprotocol/serverInfo":{"name":"capture","version":""}}}}"##,
    r##"{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"inputResponses":{"who":{"action":"accept","content":{"name":"Bob","age":3,"color":"blue","ok":true}},"llm":{"role":"assistant","content":{"type":"text","text":"hello"},"model":"m","stopReason":"endTurn"}},"requestState":"v1.P6QRD-bIfA1c7dpiujZ8z4t7qsFLOJnhEh-q4IZADGmv9ib3XOk8hfqlmM2PBj_C8u9UN20Cw6blrKSfS-EXxwJ9c1EQN7VwttXGn0boBzqm7IpB6fp9tHYOrzj8hCTH6bWGlE1O1d13DpDYadDWNDonKuFCEFZ7Hh185PkxFnXDdEs3AS-_N-PCAgs3aPisDnLVkFj848jbSCdzwusCuvetveHojO7kHcz6LMzAnQ","name":"ask_mrtr","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{"sampling":{"context":{},"tools":{}},"elicitation":{"form":{},"url":{}},"roots":{"listChanged":true}},"progressToken":10}}}"##,
    r##"{"jsonrpc":"2.0","id":10,"result":{"content":[{"text":"{'who': ElicitResult(meta=None, action='accept', content={'name': 'Bob', 'age': 3, 'color': 'blue', 'ok': True}), 'llm': CreateMessageResult(meta=None, role='assistant', content=TextContent(type='text', text='hello', annotations=None, meta=None), model='m', stop_reason='endTurn')}","type":"text"}],"isError":false,"resultType":"complete","structuredContent":{"result":"{'who': ElicitResult(meta=None, action='accept', content={'name': 'Bob', 'age': 3, 'color': 'blue', 'ok': True}), 'llm': CreateMessageResult(meta=None, role='assistant', content=TextContent(type='text', text='hello', annotations=None, meta=None), model='m', stop_reason='endTurn')}"},"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"capture","version":""}}}}"##,
    r##"{"jsonrpc":"2.0","id":11,"method":"resources/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{"sampling":{"context":{},"tools":{}},"elicitation":{"form":{},"url":{}},"roots":{"listChanged":true}}}}}"##,
    r##"{"jsonrpc":"2.0","id":11,"result":{"cacheScope":"private","resources":[{"description":"","mimeType":"text/plain","name":"fixed","title":"Fixed","uri":"res://fixed"}],"resultType":"complete","ttlMs":0,"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"capture","version":""}}}}"##,
    r##"{"jsonrpc":"2.0","id":12,"method":"resources/templates/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{"sampling":{"context":{},"tools":{}},"elicitation":{"form":{},"url":{}},"roots":{"listChanged":true}}}}}"##,
    r##"{"jsonrpc":"2.0","id":12,"result":{"cacheScope":"private","resourceTemplates":[{"description":"","mimeType":"text/plain","name":"item","uriTemplate":"res://items/{item_id}/detail{?verbose}"}],"resultType":"complete","ttlMs":0,"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"capture","version":""}}}}"##,
    r##"{"jsonrpc":"2.0","id":13,"method":"resources/read","params":{"uri":"res://fixed","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{"sampling":{"context":{},"tools":{}},"elicitation":{"form":{},"url":{}},"roots":{"listChanged":true}}}}}"##,
    r##"{"jsonrpc":"2.0","id":13,"result":{"cacheScope":"private","contents":[{"mimeType":"text/plain","text":"fixed","uri":"res://fixed"}],"resultType":"complete","ttlMs":0,"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"capture","version":""}}}}"##,
    r##"{"jsonrpc":"2.0","id":14,"method":"prompts/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{"sampling":{"context":{},"tools":{}},"elicitation":{"form":{},"url":{}},"roots":{"listChanged":true}}}}}"##,
    r##"{"jsonrpc":"2.0","id":14,"result":{"cacheScope":"private","prompts":[{"arguments":[{"name":"code","required":true},{"name":"language","required":false}],"description":"Review code.","name":"review","title":"Review"}],"resultType":"complete","ttlMs":0,"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"capture","version":""}}}}"##,
    r##"{"jsonrpc":"2.0","id":15,"method":"prompts/get","params":{"name":"review","arguments":{"code":"x=1"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{"sampling":{"context":{},"tools":{}},"elicitation":{"form":{},"url":{}},"roots":{"listChanged":true}}}}}"##,
    r##"{"jsonrpc":"2.0","id":15,"result":{"description":"Review code.","messages":[{"content":{"text":"review x=1 in python","type":"text"},"role":"user"}],"resultType":"complete","_meta":{"io.modelcontextprotocol/serverInfo":{"name":"capture","version":""}}}}"##,
    r##"{"jsonrpc":"2.0","id":16,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"review"},"argument":{"name":"language","value":"py"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{"sampling":{"context":{},"tools":{}},"elicitation":{"form":{},"url":{}},"roots":{"listChanged":true}}}}}"##,
    r##"{"jsonrpc":"2.0","id":16,"result":{"completion":{"hasMore":false,"total":2,"values":["python","rust"]},"resultType":"complete","_meta":{"io.modelcontextprotocol/serverInfo":{"name":"capture","version":""}}}}"##,
    r##"{"jsonrpc":"2.0","id":17,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"res://items/{item_id}/detail{?verbose}"},"argument":{"name":"item_id","value":"1"},"context":{"arguments":{"verbose":"yes"}},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{"sampling":{"context":{},"tools":{}},"elicitation":{"form":{},"url":{}},"roots":{"listChanged":true}}}}}"##,
    r##"{"jsonrpc":"2.0","id":17,"result":{"completion":{"hasMore":false,"total":2,"values":["python","rust"]},"resultType":"complete","_meta":{"io.modelcontextprotocol/serverInfo":{"name":"capture","version":""}}}}"##,
    r##"{"jsonrpc":"2.0","id":18,"method":"logging/setLevel","params":{"level":"debug","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{"sampling":{"context":{},"tools":{}},"elicitation":{"form":{},"url":{}},"roots":{"listChanged":true}}}}}"##,
    r##"{"jsonrpc":"2.0","id":18,"error":{"code":-32601,"message":"Method not found","data":"logging/setLevel"}}"##,
    r##"{"jsonrpc":"2.0","id":19,"method":"ping","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{"sampling":{"context":{},"tools":{}},"elicitation":{"form":{},"url":{}},"roots":{"listChanged":true}}}}}"##,
    r##"{"jsonrpc":"2.0","id":19,"error":{"code":-32601,"message":"Method not found","data":"ping"}}"##,
];

fn refusal(msg: &str) -> Option<String> {
    match parse(msg.as_bytes(), ParseLimits::default()) {
        Ok(Parsed::Single(_)) => None,
        Ok(_) => Some("not a single message".into()),
        Err((_, e)) => Some(e.message),
    }
}

#[test]
fn python_sdk_wire_traffic_is_accepted() {
    for m in PYTHON_SDK_2025_11_25.iter().chain(PYTHON_SDK_2026_07_28) {
        assert_eq!(refusal(m), None, "{m}");
    }
}

/// Sampling with tools (2025-11-25): a `tool_use` block's `input` is the
/// model's arguments for a tool the server declared (payload, like
/// `tools/call` `arguments`), yet the parser reads it as MCP structure and
/// refuses any key that case-folds to MCP vocabulary (`Name`, `ID`, `Type`,
/// `URI`, `Data`, `Text` ...). The first message is the Python SDK's own
/// wire bytes (`ServerSession.create_message(..., tools=...)`); the second is
/// a client's `CreateMessageResult` answering with a tool call.
#[test]
fn sampling_tool_use_input_is_payload() {
    let server_request = r##"{"jsonrpc":"2.0","id":4,"method":"sampling/createMessage","params":{"messages":[{"role":"user","content":{"type":"text","text":"hi"}},{"role":"assistant","content":[{"type":"tool_use","name":"lookup","id":"tu1","input":{"Name":"x","Type":"y","URI":"z"}}]},{"role":"user","content":[{"type":"tool_result","toolUseId":"tu1","content":[{"type":"text","text":"r"}],"structuredContent":{"Text":1}}]}],"maxTokens":10,"tools":[{"name":"lookup","inputSchema":{"type":"object","properties":{"Name":{"type":"string"}}}}],"toolChoice":{"mode":"auto"}}}"##;
    assert_eq!(refusal(server_request), None, "{server_request}");
    let client_result = r#"{"jsonrpc":"2.0","id":4,"result":{"role":"assistant","model":"m","stopReason":"toolUse","content":[{"type":"tool_use","id":"tu2","name":"lookup","input":{"ID":7,"Name":"q"}}]}}"#;
    assert_eq!(refusal(client_result), None, "{client_result}");
    // Under 2026-07-28 the same answer travels in `inputResponses`.
    let retry = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"t","arguments":{},"requestState":"s","inputResponses":{"llm":{"role":"assistant","model":"m","content":[{"type":"tool_use","id":"tu","name":"lookup","input":{"Type":"x"}}]}}}}"#;
    assert_eq!(refusal(retry), None, "{retry}");
}

mod egress_refs {
    use std::collections::HashMap;
    use std::sync::Arc;

    use serde_json::{json, Value as Json};
    use warden_config::access::{ServerCatalog, ToolEntry};
    use warden_config::guards::HostPattern;
    use warden_filters::guards::egress::EgressFilter;
    use warden_filters::{
        codes, parse, Decision, Exchange, McpFilter, Message, Notes, ParseLimits, Parsed, Principal,
    };

    /// `search`'s `inputSchema` exactly as the Python SDK lists it: a
    /// Pydantic model whose `url: AnyUrl` (`format: uri`) sits behind
    /// `$ref: #/$defs/Target`, nested in `#/$defs/Query`.
    const PYDANTIC_SCHEMA: &str = r##"{"properties": {"q": {"$ref": "#/$defs/Query"}, "limit": {"default": 10, "title": "Limit", "type": "integer"}, "hint": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": null, "title": "Hint"}}, "required": ["q"], "type": "object", "$defs": {"Color": {"enum": ["red", "blue"], "title": "Color", "type": "string"}, "Query": {"description": "A query.", "properties": {"target": {"$ref": "#/$defs/Target"}, "backup": {"anyOf": [{"$ref": "#/$defs/Target"}, {"type": "null"}], "default": null}, "extra": {"default": [], "items": {"$ref": "#/$defs/Target"}, "title": "Extra", "type": "array"}, "tags": {"additionalProperties": {"type": "integer"}, "default": {}, "title": "Tags", "type": "object"}, "mode": {"default": "fast", "enum": ["fast", "slow"], "title": "Mode", "type": "string"}}, "required": ["target"], "title": "Query", "type": "object"}, "Target": {"properties": {"url": {"description": "Where to fetch", "format": "uri", "minLength": 1, "title": "Url", "type": "string"}, "region": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": null, "title": "Region"}, "color": {"$ref": "#/$defs/Color", "default": "red"}}, "required": ["url"], "title": "Target", "type": "object"}}, "title": "searchArguments"}"##;

    fn filter(detect: bool) -> EgressFilter {
        let tool = ToolEntry {
            input_schema: Some(Arc::new(
                serde_json::from_str(PYDANTIC_SCHEMA).expect("schema"),
            )),
            ..ToolEntry::default()
        };
        let catalog = ServerCatalog {
            tools: HashMap::from_iter([("search".to_owned(), tool)]),
            ..ServerCatalog::default()
        };
        EgressFilter::new(
            vec![HostPattern::parse("*.example.com").expect("pattern")],
            HashMap::from([("s".to_owned(), catalog)]),
            Arc::default(),
            detect,
        )
    }

    fn call(f: &EgressFilter, args: Json) -> Decision {
        let raw = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "search", "arguments": args}})
        .to_string();
        let Ok(Parsed::Single(env)) = parse(raw.as_bytes(), ParseLimits::default()) else {
            panic!("parse {raw}")
        };
        let p = Principal::anonymous();
        f.on_request(
            &Message::new(&env, raw.as_bytes()),
            &Exchange::new(&p, "s"),
            &mut Notes::default(),
        )
    }

    fn code(d: Decision) -> Option<i32> {
        match d {
            Decision::Reject(d) => Some(d.error.code),
            _ => None,
        }
    }

    /// The schema declares `q.target.url` a URI (through `$ref`), so the
    /// host is judged with detection off, as it is for an inline schema
    /// (`hosts_are_judged_at_every_depth_and_format_the_schema_declares`).
    #[test]
    fn urls_declared_behind_ref_are_judged() {
        let f = filter(false);
        for args in [
            json!({"q": {"target": {"url": "http://169.254.169.254/latest/meta-data/"}}}),
            json!({"q": {"target": {"url": "https://api.example.com/"},
                         "backup": {"url": "http://127.0.0.1:6379/"}}}),
            json!({"q": {"target": {"url": "https://api.example.com/"},
                         "extra": [{"url": "http://10.0.0.1/"}]}}),
        ] {
            assert_eq!(
                code(call(&f, args.clone())),
                Some(codes::EGRESS_DENIED),
                "{args}"
            );
        }
        assert_eq!(
            code(call(
                &f,
                json!({"q": {"target": {"url": "https://api.example.com/"}}})
            )),
            None
        );
    }

    /// A near-name of a property declared behind `$ref` (`URL` for
    /// `url`) is what Go's encoding/json reads as `url`; refused as at
    /// every inline depth (`argument_near_name`).
    #[test]
    fn near_names_behind_ref_are_refused() {
        for detect in [false, true] {
            let f = filter(detect);
            let args = json!({"q": {"target": {"url": "https://api.example.com/"},
                                    "backup": {"URL": "http://169.254.169.254/"}}});
            assert_eq!(
                code(call(&f, args.clone())),
                Some(codes::INVALID_PARAMS),
                "detect {detect}: {args}"
            );
        }
    }
}
