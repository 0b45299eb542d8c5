"""A key's reasoning policy applied to a request body, before the route reads it.

Each API family names the effort its own way; the policy is applied where the field is, and the body the route
then reads carries the effort the request runs at. A body that is not a JSON object, or an effort that is not
one of low / medium / high, is passed through untouched: the route answers it with its own 400.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tkr_embed.security.policy import EFFORTS, EffortDecision, ReasoningPolicy

# route -> (the path of the effort field in the body, whether the server's configured default applies when absent)
EFFORT_FIELDS: dict[str, tuple[tuple[str, ...], bool]] = {
    "/v1/chat/completions": (("reasoning_effort",), True),
    "/v1/responses": (("reasoning", "effort"), True),
    "/generate": (("reasoning_level",), False),
    "/chat": (("reasoning_level",), False),
    "/stream": (("reasoning_level",), False),
}
NATIVE_DEFAULT_EFFORT = "medium"  # the native request models' default


@dataclass(frozen=True)
class PolicyOutcome:
    body: bytes
    decision: EffortDecision | None  # None: the body names no effort the policy could judge
    param: str | None = None  # the field as the client spells it (for a refusal)


def param_name(route: str) -> str:
    return ".".join(EFFORT_FIELDS[route][0])


def apply_policy(route: str, body: bytes, policy: ReasoningPolicy, server_default: str) -> PolicyOutcome:
    """The body with the effort the key's policy allows; raises EffortNotAllowed (policy.py) on a refusal."""
    if route not in EFFORT_FIELDS or policy.allowed_efforts is None:
        return PolicyOutcome(body, None)
    path, server_default_applies = EFFORT_FIELDS[route]
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return PolicyOutcome(body, None)
    if not isinstance(payload, dict):
        return PolicyOutcome(body, None)
    holder = payload
    for name in path[:-1]:
        inner = holder.get(name)
        if inner is None:
            inner = holder[name] = {}
        if not isinstance(inner, dict):
            return PolicyOutcome(body, None)
        holder = inner
    requested = holder.get(path[-1])
    if requested is None:
        requested = server_default if server_default_applies else NATIVE_DEFAULT_EFFORT
    if requested not in EFFORTS:
        return PolicyOutcome(body, None)
    decision = policy.decide(requested)
    if not decision.stepped_down:
        return PolicyOutcome(body, decision)
    holder[path[-1]] = decision.applied
    return PolicyOutcome(json.dumps(payload).encode(), decision, ".".join(path))
