"""Shared by the Python SDK client scripts: the streamable-HTTP transport to a
Warden endpoint, carrying WARDEN_API_KEY as `x-api-key`, or WARDEN_BEARER as
`Authorization: Bearer`, when set."""
import os

from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def server(url, key=None):
    """What `mcp.Client` connects to: the URL itself, or a transport with the key."""
    key = key or os.environ.get("WARDEN_API_KEY")
    bearer = os.environ.get("WARDEN_BEARER")
    if bearer:
        headers = {"Authorization": f"Bearer {bearer}"}
    elif key:
        headers = {"x-api-key": key}
    else:
        return url
    return streamable_http_client(url, http_client=create_mcp_http_client(headers=headers))
