# Warden example policy. Entry point: data.warden.authz.decision, which
# returns {"allow": bool, "reason": string}. The input document is described
# in docs/policy.md ("Policy input contract").
package warden.authz

import rego.v1

# One decision per message, first match wins (an else chain cannot produce
# two conflicting values, which would be an evaluation error).
# The protocol itself (handshake, lists, pings) is open to every principal;
# list results are filtered item by item with `input.request.listing`.
decision := {"allow": true, "reason": "protocol"} if {
	input.request.method in data.warden.protocol_methods
} else := tool_decision if {
	input.request.method == "tools/call"
} else := group_decision if {
	input.request.method in {"resources/read", "prompts/get"}
} else := {"allow": true, "reason": "server_request"} if {
	# Server → client requests arriving on the response path.
	input.request.method in data.warden.server_requests
} else := {"allow": false, "reason": "method_not_allowed"}

# RBAC per service group: a role grants the groups listed in data.json.
group_granted if {
	some role in input.principal.roles
	input.server.group in data.warden.roles[role].groups
}

group_decision := {"allow": true, "reason": "granted"} if group_granted

else := {"allow": false, "reason": "rbac_group_not_granted"}

# Time window: risky tools only during business hours (policy.timezone).
# They stay listed outside hours; a call gets the reason instead.
in_business_hours if {
	bh := data.warden.business_hours
	input.context.hour >= bh.start
	input.context.hour < bh.end
	input.context.weekday in bh.days
}

# On-call roles may run risky tools at any hour (the other checks still hold).
on_call if {
	some role in input.principal.roles
	role in data.warden.business_hours.on_call
}

# ABAC on arguments: a `region` argument must be the principal's own region.
region_ok if not input.request.arguments.region

region_ok if input.request.arguments.region == input.principal.attributes.region

# CRITICAL tools need a written justification (x-warden-justification header).
justified if {
	is_string(input.context.justification)
	count(trim_space(input.context.justification)) >= 10
}

# The first rule that refuses wins; the reason is the stable code callers see.
tool_decision := {"allow": false, "reason": "rbac_group_not_granted"} if {
	not group_granted
} else := {"allow": false, "reason": "outside_business_hours"} if {
	input.request.risk in data.warden.business_hours.risks
	not input.request.listing
	not in_business_hours
	not on_call
} else := {"allow": false, "reason": "region_mismatch"} if {
	not region_ok
} else := {"allow": false, "reason": "justification_required"} if {
	input.request.risk == "CRITICAL"
	not input.request.listing
	not justified
} else := granted

# Autonomous agents need people to say yes to risky calls
# (data.warden.approvals): one approver for every HIGH call, and two
# distinct ones for an agent's first call of a CRITICAL tool (its
# behaviour baseline has not seen the tool: `first_tool` in
# input.anomaly). Once a call of that tool was approved and served, the
# agent's later calls of it are not held. The call is held until then;
# approvers use `warden-agent approvals`.
approvers_needed := data.warden.approvals.tiers[input.request.risk] if {
	input.principal.kind in data.warden.approvals.kinds
	input.request.risk != "CRITICAL"
}

approvers_needed := data.warden.approvals.tiers.CRITICAL if {
	input.principal.kind in data.warden.approvals.kinds
	input.request.risk == "CRITICAL"
	first_use
}

# The agent never used this tool (as far as its baseline knows).
first_use if {
	some s in input.anomaly.signals
	s.kind == "first_tool"
}

# No baseline to ask (a gateway without `anomaly:`): every call is a first.
first_use if not is_object(input.anomaly)

approval_reason := "first use of a CRITICAL tool by this agent" if {
	input.request.risk == "CRITICAL"
} else := sprintf("%s call by an agent", [input.request.risk])

granted := {"allow": true, "reason": "granted", "require_approval": {
	"approvers": approvers_needed,
	"reason": approval_reason,
}} if {
	approvers_needed
} else := {"allow": true, "reason": "granted"}
