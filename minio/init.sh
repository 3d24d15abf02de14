#!/bin/sh
# Prepare a MinIO server for Abby. Safe to run again: every step checks first.
#
#   1. the bucket (S3_BUCKET), private: no anonymous access
#   2. two lifecycle rules: objects under images/ expire after STORAGE_CLEANUP_DAYS days;
#      usage events under events/ after ANALYTICS_RETENTION_DAYS + 7 days, a backstop for
#      the bot's daily prune (the quota ledger under ledger/ is never expired). With
#      STORAGE_ARCHIVE=on, images/ waits 2 days longer (the bot archives them first) and a
#      third rule expires archive/ after ARCHIVE_DAYS + 2 days
#   3. the least-privilege policy from abby-policy.json, for S3_BUCKET only
#   4. the application user (S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY) with that policy
#
# The bot uses the application user; the root credentials stay in this job.
# Runs in the minio/mc image, which has no sed or grep: only shell built-ins and mc.
#
# Environment (docker-compose.yml passes these from .env):
#   MINIO_URL              http://minio:9000
#   MINIO_ROOT_USER        root credentials (required)
#   MINIO_ROOT_PASSWORD
#   S3_BUCKET              abby-images
#   STORAGE_CLEANUP_DAYS   7
#   ANALYTICS_RETENTION_DAYS 90
#   STORAGE_ARCHIVE        off (on/true: keep old images in archive/)
#   ARCHIVE_DAYS           90
#   S3_ACCESS_KEY_ID       the application user's access key (required)
#   S3_SECRET_ACCESS_KEY   its secret, 8 characters or more (required)
#   ABBY_POLICY_NAME       abby-app
#   ABBY_POLICY_FILE       abby-policy.json beside this script
#   INIT_RETRIES           30 tries to reach MinIO, INIT_RETRY_DELAY seconds apart (2)
set -eu

case $0 in */*) HERE=${0%/*} ;; *) HERE=. ;; esac
# shellcheck source=/dev/null
. "$HERE/lib.sh"

MINIO_URL=${MINIO_URL:-http://minio:9000}
S3_BUCKET=${S3_BUCKET:-abby-images}
STORAGE_CLEANUP_DAYS=${STORAGE_CLEANUP_DAYS:-7}
ANALYTICS_RETENTION_DAYS=${ANALYTICS_RETENTION_DAYS:-90}
STORAGE_ARCHIVE=${STORAGE_ARCHIVE:-off}
ARCHIVE_DAYS=${ARCHIVE_DAYS:-90}
ABBY_POLICY_NAME=${ABBY_POLICY_NAME:-abby-app}
ABBY_POLICY_FILE=${ABBY_POLICY_FILE:-$HERE/abby-policy.json}
INIT_RETRIES=${INIT_RETRIES:-30}
INIT_RETRY_DELAY=${INIT_RETRY_DELAY:-2}
ALIAS=abby
RULE_ID=abby-images-expiry
EVENTS_RULE_ID=abby-events-expiry
ARCHIVE_RULE_ID=abby-archive-expiry
ARCHIVE_GRACE_DAYS=2 # the bot's daily maintenance archives and prunes first (ARCHIVE_GRACE_DAYS)
EVENTS_MARGIN_DAYS=7 # the bot's daily prune and compaction run first (EVENTS_EXPIRY_MARGIN_DAYS)
TEMPLATE_BUCKET=abby-images




# -- check the settings before touching the server ---------------------------------
[ -n "${MINIO_ROOT_USER:-}" ] || fail "MINIO_ROOT_USER is not set (see .env.example)."
[ -n "${MINIO_ROOT_PASSWORD:-}" ] || fail "MINIO_ROOT_PASSWORD is not set (see .env.example)."
[ -n "${S3_ACCESS_KEY_ID:-}" ] || fail "S3_ACCESS_KEY_ID (the application user) is not set."
[ -n "${S3_SECRET_ACCESS_KEY:-}" ] || fail "S3_SECRET_ACCESS_KEY (the application user's secret) is not set."
[ "$S3_ACCESS_KEY_ID" != "$MINIO_ROOT_USER" ] ||
    fail "S3_ACCESS_KEY_ID must not be MINIO_ROOT_USER: the bot gets its own, limited user."
[ "${#S3_ACCESS_KEY_ID}" -ge 3 ] || fail "S3_ACCESS_KEY_ID must be at least 3 characters."
[ "${#S3_SECRET_ACCESS_KEY}" -ge 8 ] || fail "S3_SECRET_ACCESS_KEY must be at least 8 characters."
case $S3_BUCKET in
    *[!a-z0-9.-]* | [.-]* | *[.-]) fail "S3_BUCKET '$S3_BUCKET' must be lowercase letters, digits, dots and hyphens." ;;
esac
[ "${#S3_BUCKET}" -ge 3 ] && [ "${#S3_BUCKET}" -le 63 ] || fail "S3_BUCKET must be 3-63 characters."
case $STORAGE_CLEANUP_DAYS in
    '' | *[!0-9]*) fail "STORAGE_CLEANUP_DAYS '$STORAGE_CLEANUP_DAYS' must be a whole number of days." ;;
esac
[ "$STORAGE_CLEANUP_DAYS" -ge 1 ] && [ "$STORAGE_CLEANUP_DAYS" -le 3650 ] ||
    fail "STORAGE_CLEANUP_DAYS must be from 1 to 3650."
case $ANALYTICS_RETENTION_DAYS in
    '' | *[!0-9]*) fail "ANALYTICS_RETENTION_DAYS '$ANALYTICS_RETENTION_DAYS' must be a whole number of days." ;;
esac
[ "$ANALYTICS_RETENTION_DAYS" -ge 1 ] && [ "$ANALYTICS_RETENTION_DAYS" -le 3650 ] ||
    fail "ANALYTICS_RETENTION_DAYS must be from 1 to 3650."
case $STORAGE_ARCHIVE in
    on | ON | On | true | TRUE | True | 1 | yes | YES) archive=1 ;;
    off | OFF | Off | false | FALSE | False | 0 | no | NO | '') archive= ;;
    *) fail "STORAGE_ARCHIVE '$STORAGE_ARCHIVE' must be on or off (or true/false)." ;;
esac
case $ARCHIVE_DAYS in
    '' | *[!0-9]*) fail "ARCHIVE_DAYS '$ARCHIVE_DAYS' must be a whole number of days." ;;
esac
[ "$ARCHIVE_DAYS" -ge 1 ] && [ "$ARCHIVE_DAYS" -le 3650 ] || fail "ARCHIVE_DAYS must be from 1 to 3650."
[ -r "$ABBY_POLICY_FILE" ] || fail "policy file $ABBY_POLICY_FILE not found."

TARGET=$ALIAS/$S3_BUCKET

# -- 0. connect ------------------------------------------------------------------------
echo "==> Connecting to MinIO at $MINIO_URL"
try=1
until mc alias set "$ALIAS" "$MINIO_URL" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null 2>&1; do
    [ "$try" -lt "$INIT_RETRIES" ] || fail "MinIO at $MINIO_URL did not answer after $INIT_RETRIES tries (check MINIO_ROOT_USER/MINIO_ROOT_PASSWORD)."
    try=$((try + 1))
    sleep "$INIT_RETRY_DELAY"
done

# -- 1. bucket, private ------------------------------------------------------------
echo "==> Bucket $S3_BUCKET"
mc mb --ignore-existing "$TARGET"
echo "==> Making $S3_BUCKET private (no anonymous access)"
mc anonymous set none "$TARGET"

# -- 2. lifecycle ------------------------------------------------------------------
# Two rules with fixed IDs. `mc ilm import` replaces the bucket's whole lifecycle
# configuration, so a re-run never adds a second copy of either; it only runs when a
# rule is missing or its number of days changed, and then writes both.
days=$STORAGE_CLEANUP_DAYS
events_days=$((ANALYTICS_RETENTION_DAYS + EVENTS_MARGIN_DAYS))
archive_days=$((ARCHIVE_DAYS + ARCHIVE_GRACE_DAYS))
[ -z "$archive" ] || days=$((STORAGE_CLEANUP_DAYS + ARCHIVE_GRACE_DAYS))
echo "==> Lifecycle: images/ expire after $days days, events/ after $events_days days"
[ -z "$archive" ] || echo "    archive/ after $archive_days days (STORAGE_ARCHIVE=on)"
rules=$(mc ilm rule ls --json "$TARGET" 2>/dev/null) || rules=""
if has_expiry_rule "$rules" "$RULE_ID" images/ "$days" &&
    has_expiry_rule "$rules" "$EVENTS_RULE_ID" events/ "$events_days" &&
    { [ -z "$archive" ] || has_expiry_rule "$rules" "$ARCHIVE_RULE_ID" archive/ "$archive_days"; }; then
    echo "    already in place (rules $RULE_ID, $EVENTS_RULE_ID${archive:+, $ARCHIVE_RULE_ID})"
else
    fmt='{"ID":"%s","Status":"Enabled","Filter":{"Prefix":"%s"},"Expiration":{"Days":%s}}'
    {
        printf '{"Rules":['
        # shellcheck disable=SC2059 # $fmt is the fixed format above
        printf "$fmt," "$RULE_ID" images/ "$days"
        # shellcheck disable=SC2059
        printf "$fmt" "$EVENTS_RULE_ID" events/ "$events_days"
        # shellcheck disable=SC2059
        [ -z "$archive" ] || printf ",$fmt" "$ARCHIVE_RULE_ID" archive/ "$archive_days"
        printf ']}\n'
    } | mc ilm import "$TARGET"
    echo "    set (rules $RULE_ID, $EVENTS_RULE_ID${archive:+, $ARCHIVE_RULE_ID})"
fi

# -- 3. policy ---------------------------------------------------------------------
echo "==> Policy $ABBY_POLICY_NAME (bucket $S3_BUCKET only)"
policy_file=${TMPDIR:-/tmp}/abby-policy.$$.json
trap 'rm -f "$policy_file" 2>/dev/null || :' EXIT
replace_all "$(read_file "$ABBY_POLICY_FILE")" \
    "arn:aws:s3:::$TEMPLATE_BUCKET" "arn:aws:s3:::$S3_BUCKET" >"$policy_file"
# `policy create` replaces an existing policy of that name: it always matches the file.
mc admin policy create "$ALIAS" "$ABBY_POLICY_NAME" "$policy_file" >/dev/null

# -- 4. application user -----------------------------------------------------------
echo "==> Application user $S3_ACCESS_KEY_ID"
if mc admin user info "$ALIAS" "$S3_ACCESS_KEY_ID" >/dev/null 2>&1; then
    echo "    exists; its secret is kept in step with S3_SECRET_ACCESS_KEY"
else
    echo "    creating"
fi
# `user add` on an existing user sets its secret: a changed S3_SECRET_ACCESS_KEY follows.
mc admin user add "$ALIAS" "$S3_ACCESS_KEY_ID" "$S3_SECRET_ACCESS_KEY" >/dev/null
# Look in policyName only ("a,b" when several): the access key may equal the policy name.
info=$(mc admin user info "$ALIAS" "$S3_ACCESS_KEY_ID" --json)
P=$ABBY_POLICY_NAME
case $info in
    *"\"policyName\": \"$P\""* | *"\"policyName\":\"$P\""* | \
        *"\"policyName\": \"$P,"* | *"\"policyName\":\"$P,"* | *",$P,"* | *",$P\""*)
        echo "    policy $P already attached"
        ;;
    *)
        mc admin policy attach "$ALIAS" "$ABBY_POLICY_NAME" --user "$S3_ACCESS_KEY_ID" >/dev/null
        echo "    policy $ABBY_POLICY_NAME attached"
        ;;
esac

echo "==> MinIO is ready for Abby: bucket $S3_BUCKET, user $S3_ACCESS_KEY_ID."
