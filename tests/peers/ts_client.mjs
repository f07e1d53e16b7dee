// Drives the real TypeScript SDK client (@modelcontextprotocol/sdk) through Warden.
// usage: node ts_client.mjs URL ECHO_TOOL PROGRESS_TOOL
// Prints a JSON report; exits 0 only when every step succeeded.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, echoTool = "echo", progressTool = "count"] = process.argv.slice(2);
const report = { url, client: "typescript" };
try {
  const client = new Client({ name: "warden-conformance-ts", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(url));
  await client.connect(transport);
  report.protocol = transport.protocolVersion;
  const tools = await client.listTools();
  report.tools = tools.tools.map((t) => t.name).sort();
  const schema = tools.tools.find((t) => t.name === echoTool).inputSchema;
  const arg = (schema.required ?? Object.keys(schema.properties ?? {}))[0];
  const echo = await client.callTool({ name: echoTool, arguments: { [arg]: "through warden" } });
  report.echo = echo.content.map((c) => c.text);
  if (!report.echo.some((t) => t && t.includes("through warden"))) throw new Error("echo did not come back");
  let progress = 0;
  const args = progressTool === "count" ? { steps: 3 } : { duration: 1, steps: 3 };
  const r = await client.callTool({ name: progressTool, arguments: args }, undefined, { onprogress: () => progress++ });
  report.progress_result = r.content.map((c) => c.text);
  report.progress_events = progress;
  if (progress === 0) throw new Error("no progress notification arrived");
  const res = await client.listResources();
  if (res.resources.length > 0) {
    const rr = await client.readResource({ uri: res.resources[0].uri });
    report.read = rr.contents.length;
  }
  await transport.terminateSession().catch(() => {});
  await client.close();
  report.ok = true;
} catch (e) {
  report.ok = false;
  report.error = String(e && e.stack ? e.stack : e).slice(0, 2000);
}
console.log(JSON.stringify(report));
process.exit(report.ok ? 0 : 1);
