# shellcheck shell=bash
# Sourced by the scripts that run as root (tools/demo.sh, tools/run-tests.sh,
# tools/setup-venv.sh, tools/novastack/*.sh): may this process trust a
# directory (read, write, mount or execute what is in it)?
#
#   trusted_dir [-c] PROG DIR [HINT]
#       DIR must be a directory, not a symlink, owned by the current user and
#       writable by nobody else. Every directory from / down to it must be
#       owned by root or the current user and not writable by group or
#       others, unless it is sticky (/tmp, /var/tmp): then the next entry must
#       be the current user's own and not a symlink. A symlink on the way is
#       followed only if it would pass as an entry there; its target is
#       checked the same way. With -c, missing directories are created
#       (mode 755) once their parent passed.
#   trusted_exec PROG FILE [HINT]
#       FILE (an interpreter, say) may be run: the same walk, then symlinks
#       at the end followed under the same rules, to a regular file owned by
#       root or the current user and writable by nobody else.
#
# Both print one line "PROG: ... refused: REASON[: HINT]" on stderr and
# return 1 when the answer is no. They work under set -e or without it.

# The walk behind both. Sets _trusted_reason on failure.
# Usage: _trusted_walk create(0|1) final(dir|exec) PATH
_trusted_walk() {
    local create=$1 final=$2 path=$3
    local me uid mode type cur next name rest link parent_mode last hops=0
    me=$(id -u)
    _trusted_reason=
    if [ -z "$path" ]; then
        _trusted_reason="an empty path is not a directory"
        return 1
    fi
    case $path in
        /*) ;;
        *) path=$PWD/$path ;;
    esac
    cur=/
    read -r uid mode type < <(stat -c '%u %a %F' 2>/dev/null -- /) || {
        _trusted_reason="cannot stat /"; return 1; }
    if [ "$uid" != 0 ] && [ "$uid" != "$me" ]; then
        _trusted_reason="/ belongs to uid $uid"; return 1
    fi
    if (( 8#$mode & 8#022 )) && ! (( 8#$mode & 8#1000 )); then
        _trusted_reason="/ is writable by group or others (mode $mode)"; return 1
    fi
    parent_mode=$mode
    rest=$path
    while :; do
        # Next component: strip leading slashes, take up to the next one.
        rest=${rest#"${rest%%[!/]*}"}
        [ -n "$rest" ] || break
        name=${rest%%/*}
        rest=${rest#"$name"}
        case $name in
            .) continue ;;
            ..)
                # cur holds no symlink: its lexical parent is its parent.
                cur=$(dirname -- "$cur")
                read -r uid parent_mode type < <(stat -c '%u %a %F' 2>/dev/null -- "$cur") || {
                    _trusted_reason="cannot stat $cur"; return 1; }
                continue ;;
        esac
        next=${cur%/}/$name
        last=0
        [ -n "${rest//\//}" ] || last=1
        if [ ! -e "$next" ] && [ ! -L "$next" ]; then
            if [ "$create" = 1 ] && [ "$final" = dir ]; then
                # Somebody faster makes mkdir fail: the checks below judge theirs.
                mkdir -m 755 -- "$next" 2>/dev/null || true
            else
                _trusted_reason="$next does not exist"; return 1
            fi
        fi
        read -r uid mode type < <(stat -c '%u %a %F' 2>/dev/null -- "$next") || {
            _trusted_reason="cannot stat $next"; return 1; }
        if [ "$type" = "symbolic link" ]; then
            if [ "$last" = 1 ] && [ "$final" = dir ]; then
                _trusted_reason="$next is a symlink, not a directory"; return 1
            fi
            if (( 8#$parent_mode & 8#022 )); then
                _trusted_reason="$next is a symlink in $cur, which others can write to"
                return 1
            fi
            if [ "$uid" != 0 ] && [ "$uid" != "$me" ]; then
                _trusted_reason="$next is a symlink of uid $uid"; return 1
            fi
            hops=$((hops + 1))
            if [ "$hops" -gt 40 ]; then
                _trusted_reason="too many symlinks on the way to $path"; return 1
            fi
            link=$(readlink -- "$next") || {
                _trusted_reason="cannot read the symlink $next"; return 1; }
            case $link in
                /*) cur=/
                    read -r uid parent_mode type < <(stat -c '%u %a %F' 2>/dev/null -- /) ;;
            esac
            rest=$link/$rest
            continue
        fi
        if [ "$last" = 1 ] && [ "$final" = dir ] && [ "$uid" != "$me" ]; then
            _trusted_reason="$next belongs to uid $uid, not to uid $me"; return 1
        fi
        if [ "$last" = 1 ] && [ "$final" = exec ] && [ "$uid" != 0 ] && [ "$uid" != "$me" ]; then
            _trusted_reason="$next belongs to uid $uid, not to root or uid $me"; return 1
        fi
        if [ "$uid" != 0 ] && [ "$uid" != "$me" ]; then
            _trusted_reason="$next belongs to uid $uid (only root or uid $me may own a directory on the way to it)"
            return 1
        fi
        if (( 8#$parent_mode & 8#022 )) && [ "$uid" != "$me" ]; then
            _trusted_reason="$next belongs to uid $uid, not to uid $me, in $cur, which others can write to"
            return 1
        fi
        if [ "$last" = 1 ] && [ "$final" = exec ]; then
            if [ "$type" != "regular file" ] && [ "$type" != "regular empty file" ]; then
                _trusted_reason="$next is not a regular file"; return 1
            fi
            if (( 8#$mode & 8#022 )); then
                _trusted_reason="$next is writable by group or others (mode $mode)"; return 1
            fi
            return 0
        fi
        if [ "$type" != directory ]; then
            _trusted_reason="$next is not a directory"; return 1
        fi
        if (( 8#$mode & 8#022 )) && ! (( 8#$mode & 8#1000 )); then
            _trusted_reason="$next is writable by group or others (mode $mode) without the sticky bit"
            return 1
        fi
        cur=$next
        parent_mode=$mode
    done
    if [ "$final" = exec ]; then
        _trusted_reason="$path is a directory, not a file"; return 1
    fi
    read -r uid mode type < <(stat -c '%u %a %F' 2>/dev/null -- "$cur") || {
        _trusted_reason="cannot stat $cur"; return 1; }
    if [ "$uid" != "$me" ]; then
        _trusted_reason="$cur belongs to uid $uid, not to uid $me"; return 1
    fi
    if (( 8#$mode & 8#022 )); then
        _trusted_reason="$cur is writable by group or others (mode $mode)"; return 1
    fi
    return 0
}

_trusted_refuse() {
    local prog=$1 what=$2 hint=$3
    echo "$prog: $what refused: $_trusted_reason${hint:+: $hint}" >&2
    return 1
}

trusted_dir() {
    local create=0
    if [ "${1:-}" = -c ]; then
        create=1
        shift
    fi
    local prog=$1 dir=$2 hint=${3:-}
    _trusted_walk "$create" dir "$dir" || _trusted_refuse "$prog" "directory $dir" "$hint"
}

trusted_exec() {
    local prog=$1 file=$2 hint=${3:-}
    _trusted_walk 0 exec "$file" || _trusted_refuse "$prog" "$file" "$hint"
}
