#!/usr/bin/env bash
# Send one signed Jira Cloud webhook to a running bizbus, as Jira would (HMAC-SHA256 of the raw body with the
# webhook secret in X-Hub-Signature, a fresh X-Atlassian-Webhook-Identifier).
#   send-jira-webhook.sh project_created KEY "Name"
#   send-jira-webhook.sh issue_created KEY ISSUE_ID "Summary"
#   send-jira-webhook.sh worklog_created KEY WORKLOG_ID SECONDS YYYY-MM-DD [ISSUE_ID]
#   send-jira-webhook.sh project_archived KEY "Name"            (= project completed: the cost center closes)
# Needs JIRA_WEBHOOK_SECRET; BIZBUS_URL defaults to http://127.0.0.1:8088.
set -euo pipefail
: "${JIRA_WEBHOOK_SECRET:?export JIRA_WEBHOOK_SECRET first (the same value bizbus reads)}"
url="${BIZBUS_URL:-http://127.0.0.1:8088}/webhooks/${JIRA_CONNECTOR:-jira}"
event="$1"; key="$2"; now=$(date +%s%3N); author=5b10ac8d82e05b22cc7d4ef5
case "$event" in
  project_created|project_updated|project_archived)
    body=$(printf '{"timestamp":%s,"webhookEvent":"%s","project":{"self":"https://example.atlassian.net/rest/api/2/project/%s","id":%s,"key":"%s","name":"%s","projectLead":{"accountId":"%s","displayName":"Demo Lead"}}}' \
      "$now" "$event" "${key}" "$(( ${#key} * 1000 + 7 ))" "$key" "${3:-$key project}" "$author") ;;
  issue_created)
    issue="${3:-10042}"
    body=$(printf '{"timestamp":%s,"webhookEvent":"jira:issue_created","issue_event_type_name":"issue_created","user":{"accountId":"%s"},"issue":{"id":"%s","self":"https://example.atlassian.net/rest/api/2/issue/%s","key":"%s-1","fields":{"summary":"%s","status":{"name":"To Do"},"project":{"id":"%s","key":"%s","name":"%s"},"created":"2026-11-01T09:00:00.000+0800","updated":"2026-11-01T09:00:00.000+0800"}}}' \
      "$now" "$author" "$issue" "$issue" "$key" "${4:-Demo task}" "$(( ${#key} * 1000 + 7 ))" "$key" "$key") ;;
  worklog_created|worklog_updated|worklog_deleted)
    wid="$3"; secs="$4"; day="$5"; issue="${6:-10042}"
    body=$(printf '{"timestamp":%s,"webhookEvent":"%s","worklog":{"self":"https://example.atlassian.net/rest/api/2/issue/%s/worklog/%s","author":{"accountId":"%s","displayName":"Demo User"},"updateAuthor":{"accountId":"%s"},"comment":"demo","created":"%sT18:00:00.000+0800","updated":"%sT18:00:00.000+0800","started":"%sT09:00:00.000+0800","timeSpent":"%ss","timeSpentSeconds":%s,"id":"%s","issueId":"%s"}}' \
      "$now" "$event" "$issue" "$wid" "$author" "$author" "$day" "$day" "$day" "$secs" "$secs" "$wid" "$issue") ;;
  *) echo "unknown event $event" >&2; exit 2 ;;
esac
sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$JIRA_WEBHOOK_SECRET" | sed 's/^.*= //')
curl -sS -X POST "$url" -H 'Content-Type: application/json' -H "X-Hub-Signature: sha256=$sig" \
  -H "X-Atlassian-Webhook-Identifier: $(cat /proc/sys/kernel/random/uuid)" --data-binary "$body"
echo
