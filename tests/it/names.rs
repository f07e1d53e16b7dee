//! One name, one reading: servers, tools, tenants and people compared in one form by the agent, the gateway, the kill switch, the registry and the layers.
