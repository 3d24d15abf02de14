#!/bin/sh
# Prepare a SeaweedFS server for Abby with `weed shell`. Safe to run again.
#
#   1. the bucket (S3_BUCKET), private: no anonymous access
#   2. the least-privilege policy from ../abby-policy.json, for S3_BUCKET only
#   3. the application user with that policy and the key S3_ACCESS_KEY_ID /
#      S3_SECRET_ACCESS_KEY
#
# The lifecycle rule (images/ expire after STORAGE_CLEANUP_DAYS days) is an S3 API call
# that `weed shell` cannot make: `abby storage init` writes it with the application
# user's own credentials (the policy allows exactly that), and docker-compose.yml runs
# it right after this job. This script leaves an existing lifecycle rule alone.
#
# `weed shell` talks to the master and filer over gRPC; it needs no S3 credentials.
# Runs in the chrislusf/seaweedfs image (busybox) or anywhere `weed` is on PATH.
#
# Environment:
#   WEED_MASTER            seaweedfs:9333 (host:port of the master; the filer is found from it)
#   S3_BUCKET              abby-images
#   S3_ACCESS_KEY_ID       the application user's access key (required)
#   S3_SECRET_ACCESS_KEY   its secret, 8 characters or more (required)
#   ABBY_S3_USER           abby (the identity name in SeaweedFS)
#   ABBY_POLICY_NAME       abby-app
#   ABBY_POLICY_FILE       ../abby-policy.json from this script
#   WEED                   weed (the binary)
#   INIT_RETRIES           30 tries to reach SeaweedFS, INIT_RETRY_DELAY seconds apart (2)
#   WEED_TIMEOUT           60 seconds at most per `weed shell` command
set -eu

case $0 in */*) HERE=${0%/*} ;; *) HERE=. ;; esac
# shellcheck source=/dev/null
. "$HERE/../lib.sh"

WEED=${WEED:-weed}
WEED_MASTER=${WEED_MASTER:-seaweedfs:9333}
S3_BUCKET=${S3_BUCKET:-abby-images}
ABBY_S3_USER=${ABBY_S3_USER:-abby}
ABBY_POLICY_NAME=${ABBY_POLICY_NAME:-abby-app}
ABBY_POLICY_FILE=${ABBY_POLICY_FILE:-$HERE/../abby-policy.json}
INIT_RETRIES=${INIT_RETRIES:-30}
INIT_RETRY_DELAY=${INIT_RETRY_DELAY:-2}
WEED_TIMEOUT=${WEED_TIMEOUT:-60}
TEMPLATE_BUCKET=abby-images


# One shell command per connection: `weed shell` exits 1 when its command fails. It
# waits forever for an unreachable master, hence the time limit.
weed_shell() {
    if command -v timeout >/dev/null 2>&1; then
        printf '%s\n' "$*" | timeout "$WEED_TIMEOUT" "$WEED" shell -master="$WEED_MASTER"
    else
        printf '%s\n' "$*" | "$WEED" shell -master="$WEED_MASTER"
    fi
}



[ -n "${S3_ACCESS_KEY_ID:-}" ] || fail "S3_ACCESS_KEY_ID (the application user) is not set."
[ -n "${S3_SECRET_ACCESS_KEY:-}" ] || fail "S3_SECRET_ACCESS_KEY (the application user's secret) is not set."
[ "${#S3_SECRET_ACCESS_KEY}" -ge 8 ] || fail "S3_SECRET_ACCESS_KEY must be at least 8 characters."
case $S3_BUCKET in
    *[!a-z0-9.-]* | [.-]* | *[.-]) fail "S3_BUCKET '$S3_BUCKET' must be lowercase letters, digits, dots and hyphens." ;;
esac
[ "${#S3_BUCKET}" -ge 3 ] && [ "${#S3_BUCKET}" -le 63 ] || fail "S3_BUCKET must be 3-63 characters."
case $ABBY_S3_USER in
    '' | *[!A-Za-z0-9_.-]*) fail "ABBY_S3_USER '$ABBY_S3_USER' must be letters, digits, '.', '_' or '-'." ;;
esac
[ -r "$ABBY_POLICY_FILE" ] || fail "policy file $ABBY_POLICY_FILE not found."

# -- 0. connect --------------------------------------------------------------------
echo "==> Connecting to SeaweedFS (master $WEED_MASTER)"
try=1
until buckets=$(weed_shell s3.bucket.list 2>/dev/null); do
    [ "$try" -lt "$INIT_RETRIES" ] || fail "SeaweedFS master $WEED_MASTER did not answer after $INIT_RETRIES tries."
    try=$((try + 1))
    sleep "$INIT_RETRY_DELAY"
done

# -- 1. bucket, private ------------------------------------------------------------
echo "==> Bucket $S3_BUCKET"
found=no
while read -r name _; do
    [ "$name" = "$S3_BUCKET" ] && found=yes
done <<EOF
$buckets
EOF
if [ "$found" = yes ]; then
    echo "    exists"
else
    weed_shell s3.bucket.create -name "$S3_BUCKET" >/dev/null
    echo "    created"
fi

echo "==> Making $S3_BUCKET private (no anonymous access)"
case $(weed_shell s3.anonymous.get -bucket "$S3_BUCKET") in
    *"Access: none"*) echo "    already private" ;;
    *)
        weed_shell s3.anonymous.set -bucket "$S3_BUCKET" -access none >/dev/null
        echo "    anonymous access removed"
        ;;
esac

# -- 2. policy ---------------------------------------------------------------------
echo "==> Policy $ABBY_POLICY_NAME (bucket $S3_BUCKET only)"
policy_file=${TMPDIR:-/tmp}/abby-policy.$$.json
trap 'rm -f "$policy_file" 2>/dev/null || :' EXIT
replace_all "$(read_file "$ABBY_POLICY_FILE")" \
    "arn:aws:s3:::$TEMPLATE_BUCKET" "arn:aws:s3:::$S3_BUCKET" >"$policy_file"
# `s3.policy -put` creates or replaces: the stored policy always matches the file.
weed_shell s3.policy -put -name "$ABBY_POLICY_NAME" -file "$policy_file" >/dev/null

# -- 3. application user -----------------------------------------------------------
echo "==> Application user $ABBY_S3_USER (access key $S3_ACCESS_KEY_ID)"
if user=$(weed_shell s3.user.show -name "$ABBY_S3_USER" 2>/dev/null); then
    case $user in
        *"\"access_key\":\"$S3_ACCESS_KEY_ID\""*) echo "    exists with this access key" ;;
        *)
            weed_shell s3.accesskey.create -user "$ABBY_S3_USER" \
                -access_key "$S3_ACCESS_KEY_ID" -secret_key "$S3_SECRET_ACCESS_KEY" >/dev/null
            echo "    access key added; remove the old one with: s3.accesskey.delete -user $ABBY_S3_USER -access_key OLD"
            user=$(weed_shell s3.user.show -name "$ABBY_S3_USER")
            ;;
    esac
else
    weed_shell s3.user.create -name "$ABBY_S3_USER" \
        -access_key "$S3_ACCESS_KEY_ID" -secret_key "$S3_SECRET_ACCESS_KEY" >/dev/null
    echo "    created"
    user=$(weed_shell s3.user.show -name "$ABBY_S3_USER")
fi
case $user in
    *"\"$ABBY_POLICY_NAME\""*) echo "    policy $ABBY_POLICY_NAME already attached" ;;
    *)
        weed_shell s3.policy.attach -policy "$ABBY_POLICY_NAME" -user "$ABBY_S3_USER" >/dev/null
        echo "    policy $ABBY_POLICY_NAME attached"
        ;;
esac

echo "==> SeaweedFS is ready for Abby: bucket $S3_BUCKET, user $ABBY_S3_USER."
echo "    Next: 'abby storage init' sets the images/ lifecycle rule with the application's credentials."
