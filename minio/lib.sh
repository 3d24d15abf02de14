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

# has_expiry_rule JSON ID PREFIX DAYS: whether the lifecycle rules in JSON (what
# `mc ilm rule ls --json` prints) hold an enabled rule ID that expires PREFIX after DAYS
# days. Each rule object is checked on its own, so another rule's days never count.
has_expiry_rule() {
    case $1 in *'"Rules"'*) ;; *) return 1 ;; esac
    rest=${1#*'"Rules"'}
    depth=0 rule= quoted= escaped=
    while [ -n "$rest" ]; do
        c=${rest%"${rest#?}"}
        rest=${rest#?}
        if [ -n "$quoted" ]; then
            if [ -n "$escaped" ]; then
                escaped=
            elif [ "$c" = '\' ]; then
                escaped=1
            elif [ "$c" = '"' ]; then
                quoted=
            fi
        else
            case $c in
                '"') quoted=1 ;;
                '{') depth=$((depth + 1)) ;;
                '}')
                    depth=$((depth - 1))
                    if [ "$depth" -eq 0 ]; then
                        _rule_matches "$rule" "$2" "$3" "$4" && return 0
                        rule=
                    fi
                    ;;
                ']') [ "$depth" -gt 0 ] || return 1 ;;
            esac
        fi
        [ "$depth" -eq 0 ] || rule=$rule$c
    done
    return 1
}

# _rule_matches RULE ID PREFIX DAYS: one rule object (flat text) against what we want.
_rule_matches() {
    case $1 in *"\"ID\": \"$2\""* | *"\"ID\":\"$2\""*) ;; *) return 1 ;; esac
    case $1 in *'"Status": "Enabled"'* | *'"Status":"Enabled"'*) ;; *) return 1 ;; esac
    case $1 in *"\"Prefix\": \"$3\""* | *"\"Prefix\":\"$3\""*) ;; *) return 1 ;; esac
    case $1 in *"\"Days\": $4"[!0-9]* | *"\"Days\":$4"[!0-9]*) return 0 ;; esac
    return 1
}
