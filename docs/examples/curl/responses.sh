#!/usr/bin/env bash
# POST /v1/responses, once as JSON and once streamed as typed events.
set -euo pipefail
BASE_URL="${BASE_URL:-http://127.0.0.1:8008}"
API_KEY="${API_KEY:-}"
MAX_TOKENS="${MAX_TOKENS:-512}"

curl --fail-with-body -sS "$BASE_URL/v1/responses" \
  -H "Authorization: Bearer $API_KEY" \
  -H "Content-Type: application/json" \
  --data @- <<JSON
{
  "instructions": "You are a concise assistant.",
  "input": "Name three primary colours.",
  "reasoning": {"effort": "low"},
  "max_output_tokens": $MAX_TOKENS
}
JSON
echo

# Streamed: `event: response.created`, ..., `event: response.completed` (each with a `data:` line).
curl --fail-with-body -sS -N "$BASE_URL/v1/responses" \
  -H "Authorization: Bearer $API_KEY" \
  -H "Content-Type: application/json" \
  --data @- <<JSON
{"input": "Say hello.", "max_output_tokens": $MAX_TOKENS, "stream": true}
JSON
