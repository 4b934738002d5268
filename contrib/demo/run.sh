#!/usr/bin/env bash
# README's first command: set up (venv, package, nginx if missing) and run the main job in the
# foreground: an emperor governing the example vassals in vassals-examples/, behind nginx on a loopback
# port. Ctrl-C (or SIGTERM) stops nginx and the emperor, by their pids, and waits for them. Both run in
# their own sessions, so the terminal's SIGINT reaches only this script, which then sends each of them
# exactly one stop signal (nginx: SIGQUIT, the emperor: SIGTERM; a second signal would mean "hurry").
#
#   EMPEROR_DEMO_PORT   nginx port on 127.0.0.1 (default 8080)
#
# The app: `emperor --ini vassals-examples/emperor.ini` when that file exists; until the emperor
# lands, the single vassal `python -m emperor.vassal --ini vassals-examples/apps-available/hello.ini`.
# The nginx site: vassals-examples/nginx-site.conf (its sockets live in /tmp/emperor-demo/), with the
# listen port rewritten to 127.0.0.1:$EMPEROR_DEMO_PORT and @EXAMPLES@ replaced by the path of
# vassals-examples/; without that file, a minimal site for hello.ini is generated.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD
port="${EMPEROR_DEMO_PORT:-8080}"
examples="$root/vassals-examples"

bash contrib/demo/setup.sh
# The flask example vassal needs Flask, which emperor itself does not depend on.
if ! .venv/bin/python -c 'import flask' 2>/dev/null; then
  echo "==> pip install flask (for the flask example vassal)"
  .venv/bin/python -m pip install -q flask </dev/null
fi

nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
mkdir -p /tmp/emperor-demo
run=$(mktemp -d "${TMPDIR:-/tmp}/emperor-demo-nginx.XXXXXX")
mkdir -p "$run/tmp"

# --- the app ----------------------------------------------------------------------------------
if [ -f "$examples/emperor.ini" ]; then
  app=("$root/.venv/bin/emperor" --ini "$examples/emperor.ini")
elif [ -f "$examples/apps-available/hello.ini" ]; then
  app=("$root/.venv/bin/python" -m emperor.vassal --ini "$examples/apps-available/hello.ini")
else
  echo "neither $examples/emperor.ini nor $examples/apps-available/hello.ini exists" >&2
  exit 1
fi

# --- the nginx config -------------------------------------------------------------------------
# Relative includes (`include uwsgi_params;`) resolve against the config's directory: copy the file.
if [ -f /etc/nginx/uwsgi_params ]; then
  cp /etc/nginx/uwsgi_params "$run/uwsgi_params"
fi
if [ -f "$examples/nginx-site.conf" ]; then
  # Every `listen [addr:]8080` moves to the chosen port; 127.0.0.1 and [::1] stay, any other address
  # (none, *, 0.0.0.0, a public one) becomes 127.0.0.1: the demo listens on loopback only.
  # @EXAMPLES@ stands for the vassals-examples directory (escaped for sed's replacement text).
  esc=${examples//\\/\\\\}; esc=${esc//&/\\&}; esc=${esc//|/\\|}
  sed -E -e "s/^([[:space:]]*listen[[:space:]]+)(127\.0\.0\.1|\[::1\]):8080\b/\1\2:${port}/" \
    -e "s/^([[:space:]]*listen[[:space:]]+)([^;[:space:]]*:)?8080\b/\1127.0.0.1:${port}/" \
    -e "s|@EXAMPLES@|${esc}|g" \
    "$examples/nginx-site.conf" >"$run/site.conf"
else
  sock=/tmp/emperor-demo/hello.sock
  ini="$examples/apps-available/hello.ini"
  if [ -f "$ini" ]; then
    found=$(sed -nE 's/^[[:space:]]*(uwsgi-)?socket[[:space:]]*=[[:space:]]*([^[:space:]]+).*/\2/p' "$ini" | head -n 1)
    sock="${found:-$sock}"
    sock="${sock//%n/hello}"  # %n: the ini's own name, as the vassal expands it
  fi
  case "$sock" in /*) pass="unix:$sock" ;; *) pass="$sock" ;; esac
  cat >"$run/site.conf" <<SITE
server {
    listen 127.0.0.1:${port};
    server_name localhost;
    location / {
        include uwsgi_params;
        uwsgi_pass ${pass};
    }
}
SITE
fi
user=""
[ "$(id -u)" = 0 ] && user="user root;"
cat >"$run/nginx.conf" <<CONF
${user}
daemon off;
master_process on;
worker_processes 1;
pid $run/nginx.pid;
error_log $run/error.log warn;
events { worker_connections 1024; }
http {
    access_log $run/access.log;
    client_max_body_size 8m;
    uwsgi_next_upstream off;
    client_body_temp_path $run/tmp/body;
    proxy_temp_path $run/tmp/proxy;
    uwsgi_temp_path $run/tmp/uwsgi;
    fastcgi_temp_path $run/tmp/fastcgi;
    scgi_temp_path $run/tmp/scgi;
    include $run/site.conf;
}
CONF
ngx=("$nginx_bin" -p "$run" -e "$run/error.log" -c "$run/nginx.conf")
"${ngx[@]}" -t -q

# --- run, stop cleanly ------------------------------------------------------------------------
app_pid=""
ngx_pid=""

# shellcheck disable=SC2317  # (both functions run from traps)
# Wait for one pid to exit, polling against a deadline; SIGKILL it if the deadline passes.
wait_gone() {
  local pid=$1 deadline=$((SECONDS + $2))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "pid $pid still running after $2 s: SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    status=1
  fi
  wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317
cleanup() {
  local status=$?
  trap - INT TERM EXIT
  echo
  echo "==> stopping"
  if [ -n "$ngx_pid" ]; then kill -QUIT "$ngx_pid" 2>/dev/null || true; fi
  if [ -n "$app_pid" ]; then kill -TERM "$app_pid" 2>/dev/null || true; fi
  if [ -n "$ngx_pid" ]; then wait_gone "$ngx_pid" 10; fi
  if [ -n "$app_pid" ]; then wait_gone "$app_pid" 35; fi
  echo "==> stopped (nginx logs kept in $run)"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 0' INT TERM  # a requested stop is a success; cleanup runs from the EXIT trap

echo "==> ${app[*]}"
setsid "${app[@]}" </dev/null &
app_pid=$!
echo "==> nginx on 127.0.0.1:${port} (config $run/nginx.conf)"
setsid "${ngx[@]}" </dev/null &
ngx_pid=$!

# Readiness: poll until nginx answers and the backend is behind it (not 502/504), up to 30 s.
# Gives up at once if nginx or the app has exited (the `wait -n` below then says which).
ready=0
"$root/.venv/bin/python" - "$port" "$ngx_pid" "$app_pid" <<'PY' || ready=$?
import sys, time, urllib.error, urllib.request

def alive(pid):  # an exited child stays a zombie until this script reaps it
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

url = f"http://127.0.0.1:{sys.argv[1]}/"
deadline, last = time.monotonic() + 30, "no answer"
while time.monotonic() < deadline:
    if not all(alive(pid) for pid in sys.argv[2:]):
        sys.exit(2)
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            last = r.status
    except urllib.error.HTTPError as e:
        last = e.code
    except OSError as e:
        last = e
    if isinstance(last, int) and last not in (502, 503, 504):
        sys.exit(0)
    time.sleep(0.1)
print(f"warning: {url} not ready after 30 s (last: {last})", file=sys.stderr)
sys.exit(1)
PY
if [ "$ready" != 2 ]; then
  echo
  echo "    emperor demo is up:  http://127.0.0.1:${port}/"
  if [ -f "$examples/nginx-site.conf" ]; then
    echo "    (locations: see vassals-examples/nginx-site.conf, e.g. /flask/, /http/ and /static/hello.txt)"
  fi
  echo "    Ctrl-C to stop."
  echo
fi

# Foreground until Ctrl-C or until either process exits on its own.
rc=0
wait -n "$app_pid" "$ngx_pid" || rc=$?
if kill -0 "$ngx_pid" 2>/dev/null; then who="the app (${app[0]##*/})"; else who="nginx (see $run/error.log)"; fi
echo "$who exited on its own (status $rc)" >&2
exit 1
