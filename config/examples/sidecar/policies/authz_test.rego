# Run with: warden policy test --bundle config/examples/sidecar
package warden.authz_test

import rego.v1

import data.warden.authz

dev := {"id": "agent-dev", "tenant": "acme", "roles": ["developer"], "kind": "agent", "auth": "api_key", "attributes": {"region": "eu"}}

auditor := {"id": "agent-auditor", "tenant": "acme", "roles": ["auditor"], "kind": "agent", "auth": "api_key", "attributes": {}}

tuesday_10 := {"time": "2026-11-17T09:00:00Z", "hour": 10, "weekday": "Tuesday", "source_ip": "127.0.0.1", "justification": null, "session_id": null}

sunday_10 := object.union(tuesday_10, {"weekday": "Sunday"})

call(principal, tool, risk, args, ctx) := {
	"principal": principal,
	"server": {"name": "mock", "group": "tools"},
	"request": {"method": "tools/call", "tool": tool, "prompt": null, "resource_uri": null, "arguments": args, "risk": risk, "listing": false},
	"context": ctx,
}

test_protocol_open_to_everyone if {
	authz.decision.allow with input as object.union(call(auditor, null, null, {}, tuesday_10), {"request": {"method": "tools/list"}})
}

test_rbac_denies_role_without_group if {
	d := authz.decision with input as call(auditor, "echo", "LOW", {"text": "x"}, tuesday_10)
	d == {"allow": false, "reason": "rbac_group_not_granted"}
}

test_rbac_allows_developer if {
	authz.decision.allow with input as call(dev, "echo", "LOW", {"text": "x"}, tuesday_10)
}

test_high_risk_outside_hours_denied if {
	d := authz.decision with input as call(dev, "deploy", "HIGH", {"service": "a", "region": "eu"}, sunday_10)
	d.reason == "outside_business_hours"
}

ops := {"id": "alice-ops", "tenant": "acme", "roles": ["operator"], "kind": "user", "auth": "api_key", "attributes": {"region": "us"}}

test_on_call_operator_any_hour if {
	authz.decision.allow with input as call(ops, "deploy", "HIGH", {"service": "a", "region": "us"}, sunday_10)
}

test_on_call_operator_still_region_checked if {
	d := authz.decision with input as call(ops, "deploy", "HIGH", {"service": "a", "region": "eu"}, sunday_10)
	d.reason == "region_mismatch"
}

test_on_call_operator_still_needs_justification if {
	d := authz.decision with input as call(ops, "purge", "CRITICAL", {"table": "t"}, sunday_10)
	d.reason == "justification_required"
}

test_low_risk_any_time if {
	authz.decision.allow with input as call(dev, "echo", "LOW", {"text": "x"}, sunday_10)
}

test_region_must_match if {
	d := authz.decision with input as call(dev, "deploy", "HIGH", {"service": "a", "region": "us"}, tuesday_10)
	d.reason == "region_mismatch"
}

test_region_match_allowed if {
	authz.decision.allow with input as call(dev, "deploy", "HIGH", {"service": "a", "region": "eu"}, tuesday_10)
}

test_critical_needs_justification if {
	d := authz.decision with input as call(dev, "purge", "CRITICAL", {"table": "t"}, tuesday_10)
	d.reason == "justification_required"
}

test_critical_with_justification if {
	ctx := object.union(tuesday_10, {"justification": "INC-4711 cleanup approved by bob"})
	authz.decision.allow with input as call(dev, "purge", "CRITICAL", {"table": "t"}, ctx)
}

first_purge := {"learning": false, "signals": [{"kind": "first_tool", "strength": 1.0, "detail": "mock/purge"}]}

known_purge := {"learning": false, "signals": []}

justified_ctx := object.union(tuesday_10, {"justification": "INC-4711 cleanup approved by bob"})

test_agents_need_approvers_for_risky_calls if {
	d := authz.decision with input as call(dev, "deploy", "HIGH", {"service": "a", "region": "eu"}, tuesday_10)
	d.require_approval.approvers == 1
	c := authz.decision with input as object.union(call(dev, "purge", "CRITICAL", {"table": "t"}, justified_ctx), {"anomaly": first_purge})
	c.require_approval.approvers == 2
	c.require_approval.reason == "first use of a CRITICAL tool by this agent"
}

test_a_critical_tool_the_agent_used_before_needs_no_approver if {
	c := authz.decision with input as object.union(call(dev, "purge", "CRITICAL", {"table": "t"}, justified_ctx), {"anomaly": known_purge})
	c == {"allow": true, "reason": "granted"}
}

test_other_signals_do_not_hold_a_known_critical_tool if {
	busy := {"learning": false, "signals": [{"kind": "rate", "strength": 6.0, "detail": "30 calls in 1m, usually 5.0"}]}
	c := authz.decision with input as object.union(call(dev, "purge", "CRITICAL", {"table": "t"}, justified_ctx), {"anomaly": busy})
	not c.require_approval
}

test_without_a_baseline_every_critical_call_is_held if {
	c := authz.decision with input as object.union(call(dev, "purge", "CRITICAL", {"table": "t"}, justified_ctx), {"anomaly": null})
	c.require_approval.approvers == 2
	d := authz.decision with input as call(dev, "purge", "CRITICAL", {"table": "t"}, justified_ctx)
	d.require_approval.approvers == 2
}

test_a_new_critical_tool_still_needs_its_justification if {
	d := authz.decision with input as object.union(call(dev, "purge", "CRITICAL", {"table": "t"}, tuesday_10), {"anomaly": first_purge})
	d.reason == "justification_required"
}

test_people_and_low_risk_need_no_approver if {
	d := authz.decision with input as call(ops, "deploy", "HIGH", {"service": "a", "region": "us"}, tuesday_10)
	d == {"allow": true, "reason": "granted"}
	e := authz.decision with input as call(dev, "echo", "LOW", {"text": "x"}, tuesday_10)
	e == {"allow": true, "reason": "granted"}
}

test_critical_listed_without_justification if {
	inp := call(dev, "purge", "CRITICAL", {}, tuesday_10)
	authz.decision.allow with input as object.union(inp, {"request": {"listing": true}})
}

test_ping_allowed_both_ways if {
	authz.decision == {"allow": true, "reason": "protocol"} with input as object.union(call(auditor, null, null, {}, tuesday_10), {"request": {"method": "ping"}})
}

test_sampling_not_allowed if {
	d := authz.decision with input as object.union(call(dev, null, null, {}, tuesday_10), {"request": {"method": "sampling/createMessage"}})
	d.reason == "method_not_allowed"
}

test_unknown_method_denied if {
	d := authz.decision with input as object.union(call(dev, null, null, {}, tuesday_10), {"request": {"method": "tasks/cancel"}})
	d.reason == "method_not_allowed"
}
