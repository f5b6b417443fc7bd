# shellcheck shell=bash
# Throwaway PostgreSQL cluster for the test suite (docs/architecture.md#storage, "Tests on
# PostgreSQL").
#
#   source .ci/pg.sh
#   pg_start                      # exports MEDINS_TEST_POSTGRES_URL
#   cargo test --workspace        # one database per test, created from that URL
#   pg_stop                       # stops the server and deletes its folder
#
# The cluster speaks TLS only, as managed PostgreSQL servers do: pg_start makes a throwaway CA
# and a server certificate for 127.0.0.1 and localhost (openssl CLI; the CA's key is deleted
# once it has signed, nothing is kept after pg_stop), pg_hba.conf has `hostssl` lines only, so
# a plaintext connection is refused by the server, and MEDINS_TEST_POSTGRES_URL asks libpq for
# `sslmode=verify-full` against that CA (README "PostgreSQL over TLS").
#
# Works as a normal user and as root (initdb/postgres refuse root: they then run as `postgres`).
# Needs the PostgreSQL server binaries (Debian: `apt-get install postgresql`), openssl and
# python3.
# Meant to be sourced: functions return non-zero on failure, they never `exit`.

# Folder holding initdb and pg_ctl: PATH, then `pg_config --bindir`, then the newest
# /usr/lib/postgresql/*/bin.
pg_bindir() {
    local dir cand
    if cand=$(command -v initdb 2>/dev/null); then
        dir=$(dirname "$(readlink -f "$cand")")
        if [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return 0
        fi
    fi
    if command -v pg_config >/dev/null 2>&1; then
        dir=$(pg_config --bindir 2>/dev/null || true)
        if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return 0
        fi
    fi
    dir=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
        echo "$dir"
        return 0
    fi
    return 1
}

# A TCP port that is free on 127.0.0.1 right now.
_pg_free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# Runs a command as `postgres` when we are root, else as ourselves. Runs from the cluster
# folder so that `postgres` never sits in an unreadable working directory (/root).
_pg_as() {
    if [ "$(id -u)" -eq 0 ]; then
        if command -v runuser >/dev/null 2>&1; then
            (cd "$PG_TEST_DIR" && runuser -u postgres -- "$@")
        else
            (cd "$PG_TEST_DIR" && su postgres -s /bin/sh -c "$(printf '%q ' "$@")")
        fi
    else
        (cd "$PG_TEST_DIR" && "$@")
    fi
}

# Writes $PG_TEST_DIR/tls/{ca.pem,server.pem,server.key}: a CA made for this cluster alone and
# a server certificate it signed, for DNS:localhost and IP:127.0.0.1 (verify-full checks the
# name the client connected to against these). ECDSA P-256; valid 30 days, which outlives any
# test run. The CA's key is deleted at once: nothing else will ever be signed by it.
_pg_tls_files() {
    local dir=$PG_TEST_DIR/tls serial ext
    if ! command -v openssl >/dev/null 2>&1; then
        echo "pg_start: openssl not found (Debian: apt-get install openssl)" >&2
        return 1
    fi
    mkdir -p "$dir" || return 1
    ext=$dir/server.ext
    printf '%s\n' 'basicConstraints = critical, CA:FALSE' 'keyUsage = critical, digitalSignature' \
        'extendedKeyUsage = serverAuth' 'subjectAltName = DNS:localhost, IP:127.0.0.1' >"$ext" || return 1
    serial=0x$(openssl rand -hex 16) || return 1
    (
        umask 077
        openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
            -subj "/CN=medins throwaway PostgreSQL CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" \
            -addext 'basicConstraints = critical, CA:TRUE, pathlen:0' \
            -addext 'keyUsage = critical, keyCertSign, cRLSign' &&
            openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
                -keyout "$dir/server.key" -out "$dir/server.csr" &&
            openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -set_serial "$serial" \
                -days 30 -extfile "$ext" -out "$dir/server.pem"
    ) >"$PG_TEST_DIR/openssl.log" 2>&1
    local rc=$?
    rm -f "$dir/ca.key" "$dir/server.csr" "$ext"
    if [ "$rc" -ne 0 ]; then
        cat "$PG_TEST_DIR/openssl.log" >&2
        echo "pg_start: making the TLS certificates failed" >&2
        return 1
    fi
    # The CA certificate is public: readable by the tests whoever runs them.
    chmod 755 "$dir" && chmod 644 "$dir/ca.pem" "$dir/server.pem"
}

# TLS on, TLS 1.2 at least (what the managed servers accept), and client authentication only
# over TLS: a plaintext connection, TCP or Unix socket, matches no pg_hba.conf line.
_pg_tls_config() {
    local data=$PG_TEST_DIR/data tls=$PG_TEST_DIR/tls
    cat >>"$data/postgresql.conf" <<CONF || return 1

# .ci/pg.sh: TLS only
ssl = on
ssl_cert_file = '$tls/server.pem'
ssl_key_file = '$tls/server.key'
ssl_min_protocol_version = 'TLSv1.2'
CONF
    cat >"$data/pg_hba.conf" <<'HBA' || return 1
# .ci/pg.sh: TLS only. A connection without TLS matches no line and is refused ("no
# pg_hba.conf entry ... no encryption"). trust: a throwaway cluster on loopback.
# TYPE   DATABASE  USER  ADDRESS        METHOD
hostssl  all       all   127.0.0.1/32   trust
hostssl  all       all   ::1/128        trust
HBA
}

pg_start() {
    if [ -n "${PG_TEST_DIR:-}" ] && [ -d "${PG_TEST_DIR}/data" ]; then
        echo "pg_start: a cluster is already running in $PG_TEST_DIR (pg_stop first)" >&2
        return 1
    fi
    local bindir
    if ! bindir=$(pg_bindir); then
        echo "pg_start: initdb not found (PATH, pg_config --bindir, /usr/lib/postgresql/*/bin);" \
            "install the PostgreSQL server (Debian: apt-get install postgresql)" >&2
        return 1
    fi
    if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
        echo "pg_start: running as root but there is no 'postgres' user to run the server" >&2
        return 1
    fi

    # Short path under /tmp: the Unix socket path must stay under 108 bytes.
    PG_TEST_DIR=$(mktemp -d /tmp/medins-pg.XXXXXX) || return 1
    export PG_TEST_DIR PG_TEST_BINDIR="$bindir"
    mkdir -p "$PG_TEST_DIR/sock" || return 1
    _pg_tls_files || { pg_stop; return 1; }
    if [ "$(id -u)" -eq 0 ]; then
        chown -R postgres: "$PG_TEST_DIR" || return 1
    fi

    # C locale: works whatever LANG says and whichever locales are generated.
    if ! _pg_as "$bindir/initdb" -D "$PG_TEST_DIR/data" -A trust -U postgres -E UTF8 \
        --locale=C --no-sync >"$PG_TEST_DIR/initdb.log" 2>&1; then
        cat "$PG_TEST_DIR/initdb.log" >&2
        echo "pg_start: initdb failed" >&2
        pg_stop
        return 1
    fi
    _pg_tls_config || { pg_stop; return 1; }

    # The port is free when picked but may be taken before the server binds it: retry.
    local attempt port
    for attempt in 1 2 3; do
        port=$(_pg_free_port) || { pg_stop; return 1; }
        if _pg_as "$bindir/pg_ctl" -D "$PG_TEST_DIR/data" -l "$PG_TEST_DIR/server.log" -w -t 60 \
            -o "-p $port -k $PG_TEST_DIR/sock -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
            start >/dev/null; then
            export PG_TEST_PORT="$port"
            export MEDINS_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres?sslmode=verify-full&sslrootcert=$PG_TEST_DIR/tls/ca.pem"
            echo "pg_start: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}')" \
                "in $PG_TEST_DIR, MEDINS_TEST_POSTGRES_URL=$MEDINS_TEST_POSTGRES_URL"
            return 0
        fi
        echo "pg_start: start on port $port failed (attempt $attempt):" >&2
        tail -n 20 "$PG_TEST_DIR/server.log" >&2 || true
    done
    pg_stop
    return 1
}

# Stops the cluster started by pg_start and deletes its folder. Safe to call twice or after a
# failed pg_start.
pg_stop() {
    if [ -z "${PG_TEST_DIR:-}" ]; then
        return 0
    fi
    if [ -f "$PG_TEST_DIR/data/postmaster.pid" ]; then
        _pg_as "${PG_TEST_BINDIR:-$(pg_bindir)}/pg_ctl" -D "$PG_TEST_DIR/data" -m fast -w -t 60 \
            stop >/dev/null || echo "pg_stop: pg_ctl stop failed" >&2
    fi
    case "$PG_TEST_DIR" in
        /tmp/medins-pg.*) rm -rf "$PG_TEST_DIR" ;;
    esac
    unset PG_TEST_DIR PG_TEST_BINDIR PG_TEST_PORT MEDINS_TEST_POSTGRES_URL
    return 0
}
