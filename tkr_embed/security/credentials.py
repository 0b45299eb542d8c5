"""Where a request carries its key: `X-API-Key`, `Authorization: Bearer` (the OpenAI SDK) or `?api_key=`."""

from __future__ import annotations

from collections.abc import Mapping


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # plain dicts are case-sensitive; Starlette's Headers are not
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def extract_api_key(headers: Mapping[str, str], query: Mapping[str, str] | None = None) -> str | None:
    """The presented key, or None. Checked in order: X-API-Key, Authorization: Bearer, api_key query value.

    Values are stripped; an Authorization header with another scheme (Basic...) carries no key.
    """
    presented = _header(headers, "x-api-key")
    if presented and presented.strip():
        return presented.strip()
    authorization = _header(headers, "authorization")
    if authorization:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    if query is not None:
        from_query = query.get("api_key")
        if from_query and from_query.strip():
            return from_query.strip()
    return None
