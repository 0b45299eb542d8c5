#!/usr/bin/env bash
# POST /v1/chat/completions (OpenAI shape); the reasoning comes back as message.reasoning (and reasoning_content).
set -euo pipefail
BASE_URL="${BASE_URL:-http://127.0.0.1:8008}"
API_KEY="${API_KEY:-}"
MAX_TOKENS="${MAX_TOKENS:-512}"

curl --fail-with-body -sS "$BASE_URL/v1/chat/completions" \
  -H "Authorization: Bearer $API_KEY" \
  -H "Content-Type: application/json" \
  --data @- <<JSON
{
  "messages": [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Name three primary colours."}
  ],
  "max_tokens": $MAX_TOKENS,
  "reasoning_effort": "low",
  "temperature": 0.7
}
JSON
echo
