#!/usr/bin/env bash
# POST /chat: messages (+ an optional system_prompt); same response shape as /generate.
set -euo pipefail
BASE_URL="${BASE_URL:-http://127.0.0.1:8008}"
API_KEY="${API_KEY:-}"
MAX_TOKENS="${MAX_TOKENS:-512}"

curl --fail-with-body -sS "$BASE_URL/chat" \
  -H "X-API-Key: $API_KEY" \
  -H "Content-Type: application/json" \
  --data @- <<JSON
{
  "messages": [{"role": "user", "content": "Name three primary colours."}],
  "system_prompt": "You are a concise assistant.",
  "max_tokens": $MAX_TOKENS,
  "reasoning_level": "medium"
}
JSON
echo
