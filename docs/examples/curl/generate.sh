#!/usr/bin/env bash
# POST /generate: one prompt, the answer in "text" and the reasoning apart in "reasoning".
set -euo pipefail
BASE_URL="${BASE_URL:-http://127.0.0.1:8008}"
API_KEY="${API_KEY:-}"
MAX_TOKENS="${MAX_TOKENS:-512}"

curl --fail-with-body -sS "$BASE_URL/generate" \
  -H "X-API-Key: $API_KEY" \
  -H "Content-Type: application/json" \
  --data @- <<JSON
{
  "text": "Explain what a hash map is in one sentence.",
  "max_tokens": $MAX_TOKENS,
  "temperature": 0.7,
  "top_p": 0.9,
  "repetition_penalty": 1.0,
  "reasoning_level": "low"
}
JSON
echo
