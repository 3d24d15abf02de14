# Shell helpers shared by init.sh and seaweedfs/init.sh. POSIX sh built-ins only:
# the minio/mc image has no sed, grep or cat.

fail() {
    echo "ERROR: $*" >&2
    exit 1
}

# replace_all TEXT OLD NEW: every OLD in TEXT becomes NEW.
replace_all() {
    rest=$1
    out=
    while :; do
        case $rest in
            *"$2"*)
                out=$out${rest%%"$2"*}$3
                rest=${rest#*"$2"}
                ;;
            *) break ;;
        esac
    done
    printf '%s' "$out$rest"
}

# read_file PATH: print a file (cat without cat).
read_file() {
    while IFS= read -r line || [ -n "$line" ]; do
        printf '%s\n' "$line"
    done <"$1"
}
