"""The fixtures the official MCP conformance suite
(@modelcontextprotocol/conformance) calls, served by the Python SDK
(mcp==2.3.0) for Warden's differential conformance run: the suite is run
against this server directly and through a gateway, and the verdicts must
agree. Written from the suite's scenario descriptions; where the SDK does
not do what a scenario asks (some 2026-07-28 and tasks-extension
scenarios), both runs fail alike, which is what the comparison needs.

usage: conformance_server.py PORT
"""
import asyncio
import base64
import json
import sys

from pydantic import BaseModel, Field

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import (
    AudioContent,
    BlobResourceContents,
    Completion,
    CreateMessageRequest,
    CreateMessageRequestParams,
    ElicitRequest,
    ElicitRequestFormParams,
    EmbeddedResource,
    ImageContent,
    InputRequiredResult,
    ListRootsRequest,
    PromptReference,
    ResourceTemplateReference,
    SamplingMessage,
    TextContent,
    TextResourceContents,
)

# A 1×1 PNG and a short silent WAV.
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()
WAV = base64.b64encode(
    b"RIFF" + (36 + 8).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
    + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (8000).to_bytes(4, "little")
    + (8000).to_bytes(4, "little") + (1).to_bytes(2, "little") + (8).to_bytes(2, "little")
    + b"data" + (8).to_bytes(4, "little") + bytes([128] * 8)
).decode()

server = MCPServer("warden-conformance-peer")


def text(s: str) -> TextContent:
    return TextContent(type="text", text=s)


# ---- tools -----------------------------------------------------------------


@server.tool()
def test_simple_text() -> list[TextContent]:
    """Returns simple text content."""
    return [text("This is a simple text response for testing.")]


@server.tool()
def test_image_content() -> list[ImageContent]:
    """Returns image content."""
    return [ImageContent(type="image", data=PNG, mime_type="image/png")]


@server.tool()
def test_audio_content() -> list[AudioContent]:
    """Returns audio content."""
    return [AudioContent(type="audio", data=WAV, mime_type="audio/wav")]


def embedded() -> EmbeddedResource:
    return EmbeddedResource(
        type="resource",
        resource=TextResourceContents(
            uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."
        ),
    )


@server.tool()
def test_embedded_resource() -> list[EmbeddedResource]:
    """Returns an embedded resource."""
    return [embedded()]


@server.tool()
def test_multiple_content_types() -> list:
    """Returns text, an image and an embedded resource."""
    return [
        text("Multiple content types test:"),
        ImageContent(type="image", data=PNG, mime_type="image/png"),
        EmbeddedResource(
            type="resource",
            resource=TextResourceContents(
                uri="test://mixed-content-resource",
                mime_type="application/json",
                text=json.dumps({"test": "data", "value": 123}),
            ),
        ),
    ]


@server.tool()
async def test_tool_with_logging(ctx: Context) -> str:
    """Logs three messages while it runs."""
    for msg in ["Tool execution started", "Tool processing data", "Tool execution completed"]:
        await ctx.log("info", msg)
        await asyncio.sleep(0.05)
    return "Tool with logging executed successfully"


@server.tool()
async def test_logging_tool(ctx: Context) -> str:
    """Logs a message."""
    await ctx.log("info", "logging tool ran")
    return "logged"


@server.tool()
async def test_tool_with_progress(ctx: Context) -> str:
    """Reports progress 0, 50, 100 of 100."""
    for p in (0, 50, 100):
        await ctx.report_progress(p, 100, f"step {p}")
        await asyncio.sleep(0.05)
    return "Tool with progress completed"


@server.tool()
def test_error_handling() -> str:
    """Always fails."""
    raise ValueError("This tool intentionally returns an error for testing")


@server.tool()
async def test_reconnection(ctx: Context) -> str:
    """Closes the SSE stream mid-call, then answers (SEP-1699 polling)."""
    await asyncio.sleep(0.05)
    try:
        await ctx.close_sse_stream()
    except Exception:  # noqa: BLE001 — a transport without resumable streams
        pass
    await asyncio.sleep(0.1)
    return "Reconnection test completed successfully"


@server.tool()
async def test_sampling(prompt: str, ctx: Context) -> str:
    """Asks the client's model."""
    r = await ctx.session.create_message(
        messages=[SamplingMessage(role="user", content=text(prompt))], max_tokens=100
    )
    content = r.content
    got = getattr(content, "text", None) or str(content)
    return f"LLM response: {got}"


class Confirm(BaseModel):
    username: str = Field(description="User's response")
    email: str | None = Field(default=None, description="User's email address")


@server.tool()
async def test_elicitation(message: str, ctx: Context) -> str:
    """Asks the user."""
    r = await ctx.elicit(message, Confirm)
    return f"User response: action={r.action}, content={json.dumps(r.data.model_dump() if r.action == 'accept' and r.data else {})}"


class Defaults(BaseModel):
    name: str = Field(default="John Doe", description="User name")
    age: int = Field(default=30, description="User age")
    score: float = Field(default=95.5, description="User score")
    status: str = Field(default="active", json_schema_extra={"enum": ["active", "inactive", "pending"]})
    verified: bool = Field(default=True, description="Verification status")


@server.tool()
async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
    """Asks with defaults for every primitive type."""
    r = await ctx.elicit("Please review and update the form fields with defaults", Defaults)
    return f"Elicitation completed: action={r.action}"


class Enums(BaseModel):
    untitledSingle: str = Field(json_schema_extra={"enum": ["option1", "option2", "option3"]})
    titledSingle: str = Field(
        json_schema_extra={
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
            ]
        }
    )
    untitledMulti: list[str] = Field(json_schema_extra={"items": {"type": "string", "enum": ["a", "b", "c"]}})


@server.tool()
async def test_elicitation_sep1330_enums(ctx: Context) -> str:
    """Asks with the enum forms of SEP-1330."""
    r = await ctx.elicit("Please select options from the enum fields", Enums)
    return f"Elicitation completed: action={r.action}"


@server.tool()
async def test_trigger_tool_change(ctx: Context) -> str:
    """Tells the client the tool list changed."""
    await ctx.notify_tools_changed()
    return "tool list change notified"


@server.tool()
async def test_trigger_prompt_change(ctx: Context) -> str:
    """Tells the client the prompt list changed."""
    await ctx.notify_prompts_changed()
    return "prompt list change notified"


# ---- multi-round-trip input (2026-07-28) -------------------------------------


def ask_name() -> ElicitRequest:
    return ElicitRequest(
        params=ElicitRequestFormParams(
            message="What is your name?",
            requested_schema={"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
        )
    )


def sampling_request() -> CreateMessageRequest:
    return CreateMessageRequest(
        params=CreateMessageRequestParams(
            messages=[SamplingMessage(role="user", content=text("Say hello"))], max_tokens=50
        )
    )


@server.tool()
async def test_input_required_result_elicitation(ctx: Context) -> str | InputRequiredResult:
    """One elicitation round."""
    answers = ctx.input_responses
    if not answers or "user_name" not in answers:
        return InputRequiredResult(input_requests={"user_name": ask_name()})
    return f"input received: {answers['user_name']}"


@server.tool()
async def test_input_required_result_sampling(ctx: Context) -> str | InputRequiredResult:
    """One sampling round."""
    answers = ctx.input_responses
    if not answers or "llm" not in answers:
        return InputRequiredResult(input_requests={"llm": sampling_request()})
    return "sampling received"


@server.tool()
async def test_input_required_result_list_roots(ctx: Context) -> str | InputRequiredResult:
    """One roots round."""
    answers = ctx.input_responses
    if not answers or "roots" not in answers:
        return InputRequiredResult(input_requests={"roots": ListRootsRequest()})
    return "roots received"


@server.tool()
async def test_input_required_result_request_state(ctx: Context) -> str | InputRequiredResult:
    """A round whose state comes back."""
    if ctx.request_state and ctx.input_responses:
        return "state-ok: requestState validated"
    return InputRequiredResult(input_requests={"confirm": ask_name()}, request_state=json.dumps({"round": 1}))


@server.tool()
async def test_input_required_result_multiple_inputs(ctx: Context) -> str | InputRequiredResult:
    """Two requests in one round."""
    answers = ctx.input_responses or {}
    if {"user_name", "llm"} <= set(answers):
        return "all inputs received"
    return InputRequiredResult(input_requests={"user_name": ask_name(), "llm": sampling_request()})


@server.tool()
async def test_input_required_result_multi_round(ctx: Context) -> str | InputRequiredResult:
    """Two rounds."""
    state = ctx.request_state
    if not state:
        return InputRequiredResult(input_requests={"step1": ask_name()}, request_state="round-1")
    if state == "round-1":
        return InputRequiredResult(input_requests={"step2": ask_name()}, request_state="round-2")
    return "multi-round complete"


@server.tool()
async def test_input_required_result_tampered_state(ctx: Context) -> str | InputRequiredResult:
    """A state the server checks."""
    if ctx.request_state == "signed-state" and ctx.input_responses:
        return "state verified"
    if ctx.request_state:
        raise ValueError("Invalid requestState")
    return InputRequiredResult(input_requests={"confirm": ask_name()}, request_state="signed-state")


@server.tool()
async def test_input_required_result_capabilities(ctx: Context) -> str | InputRequiredResult:
    """Asks only for what the client can answer."""
    caps = ctx.client_capabilities
    if ctx.input_responses:
        return "capabilities respected"
    reqs = {}
    if caps is not None and caps.elicitation is not None:
        reqs["user_name"] = ask_name()
    if caps is not None and caps.sampling is not None:
        reqs["llm"] = sampling_request()
    if not reqs:
        return "no input capabilities"
    return InputRequiredResult(input_requests=reqs)


@server.tool()
async def test_missing_capability(ctx: Context) -> str:
    """Answers whatever the client declared."""
    return "ok"


# ---- resources --------------------------------------------------------------


@server.resource("test://static-text", mime_type="text/plain")
def static_text() -> str:
    """A static text resource."""
    return "This is the content of the static text resource."


@server.resource("test://static-binary", mime_type="image/png")
def static_binary() -> bytes:
    """A static binary resource."""
    return base64.b64decode(PNG)


@server.resource("test://template/{id}/data", mime_type="application/json")
def template_data(id: str) -> str:
    """A resource template with a parameter."""
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


@server.resource("test://watched-resource", mime_type="text/plain")
def watched() -> str:
    """A resource that can be subscribed to."""
    return "Watched resource content"


@server.resource("test://example-resource", mime_type="text/plain")
def example() -> str:
    """A resource prompts embed."""
    return "Example resource content"


# ---- prompts ------------------------------------------------------------------


@server.prompt()
def test_simple_prompt() -> str:
    """A prompt without arguments."""
    return "This is a simple prompt for testing."


@server.prompt()
def test_prompt_with_arguments(arg1: str, arg2: str) -> str:
    """A prompt with two arguments."""
    return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"


@server.prompt()
def test_prompt_with_embedded_resource(resourceUri: str) -> list:
    """A prompt that embeds a resource."""
    return [
        {
            "role": "user",
            "content": EmbeddedResource(
                type="resource",
                resource=TextResourceContents(uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."),
            ),
        },
        {"role": "user", "content": text("Please process the embedded resource above.")},
    ]


@server.prompt()
def test_prompt_with_image() -> list:
    """A prompt with an image."""
    return [
        {"role": "user", "content": ImageContent(type="image", data=PNG, mime_type="image/png")},
        {"role": "user", "content": text("Please analyze the image above.")},
    ]


@server.completion()
async def complete(ref, argument, context):
    if isinstance(ref, (PromptReference, ResourceTemplateReference)):
        return Completion(values=["paris", "park", "party"], total=3, has_more=False)
    return None


if __name__ == "__main__":
    server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
