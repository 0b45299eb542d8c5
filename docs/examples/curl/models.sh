#!/usr/bin/env bash
# GET /v1/models: the one model this server serves (its id is what "model" fields accept).
set -euo pipefail
BASE_URL="${BASE_URL:-http://127.0.0.1:8008}"
API_KEY="${API_KEY:-}"

curl --fail-with-body -sS "$BASE_URL/v1/models" -H "Authorization: Bearer $API_KEY"
echo
