#!/usr/bin/env bash
# Installs what the benchmark rig needs (idempotent).
#   apt:  nginx wrk curl etcd-server (+ a compiler for pip's uWSGI build)
#         apache2 + libapache2-mod-proxy-uwsgi only with WITH_APACHE=1 (protocol_probe.py)
#   venv: $BENCH_VENV (default: <tmp>/emperor-bench-venv, outside the repo) with uWSGI,
#         gunicorn (+ gunicorn-h1c), Flask, psutil, uwsgi-tools (uwsgi_curl), uwsgitop,
#         Granian, uvicorn + httptools + uvloop, Starlette + FastAPI, and this project
#         itself (`pip install -e <repo>`, so `$BENCH_VENV/bin/python -m emperor.vassal` runs
#         the working tree). BENCH_NO_PROJECT=1 skips the project install.
#         BENCH_WITH_PYSPY=1 also installs py-spy (profiling a worker, optional).
# Versions pinned to the ones the anchor baselines were measured with; override
# with BENCH_PIP_PKGS="uwsgi gunicorn flask ..." to take the newest.
set -euo pipefail
VENV="${BENCH_VENV:-${TMPDIR:-/tmp}/emperor-bench-venv}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Anchors of issue #12 (HTTP) and #14 (ASGI): Granian (its WSGI and ASGI interfaces), uvicorn with
# httptools + uvloop, gunicorn's C parser (gunicorn-h1c, used by its `--http-parser auto`) and its
# gthread and `-k asgi` workers (both in gunicorn 27), FastAPI/Starlette for the FastAPI JSON app.
# uvloop is also what emperor's ASGI workers pick with `asgi-loop = auto`.
PKGS="${BENCH_PIP_PKGS:-uwsgi==2.0.31 gunicorn==27.0.1 flask==3.1.3 psutil==7.2.2 uwsgi-tools==1.1.1 uwsgitop==0.12
  granian==2.8.9 uvicorn==0.54.0 httptools==0.9.0 uvloop==0.23.0 gunicorn-h1c==0.6.9
  starlette==1.10.0 fastapi==0.165.0}"

need_apt=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || need_apt+=(etcd-server)  # failover.py
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
python3 -c 'import sysconfig,os,sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"],"Python.h")) else 1)' \
  || need_apt+=(python3-dev)
python3 -c 'import ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ "${WITH_APACHE:-0}" = 1 ] && [ ! -e /usr/lib/apache2/modules/mod_proxy_uwsgi.so ]; then
  need_apt+=(apache2 libapache2-mod-proxy-uwsgi)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "need root to apt-get install: ${need_apt[*]}" >&2; exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip wheel
# shellcheck disable=SC2086
"$VENV/bin/pip" install -q $PKGS
if [ "${BENCH_WITH_PYSPY:-0}" = 1 ]; then
  "$VENV/bin/pip" install -q py-spy
fi
if [ "${BENCH_NO_PROJECT:-0}" != 1 ]; then
  # The project under test, editable: the bench always runs the current working tree.
  # A broken tree must not stop the anchors (uWSGI/gunicorn) from being measured.
  if "$VENV/bin/pip" install -q -e "${REPO}[fleet]"; then  # fleet: etcd3gw, for failover.py
    echo "project installed (editable): $REPO"
  else
    echo "WARNING: 'pip install -e $REPO' failed; the emperor+nginx config will not run" >&2
  fi
fi
echo "venv ready: $VENV"
"$VENV/bin/uwsgi" --version | sed 's/^/uwsgi /'
"$VENV/bin/gunicorn" --version
"$VENV/bin/granian" --version
"$VENV/bin/uvicorn" --version
nginx -v 2>&1 || /usr/sbin/nginx -v
wrk --version 2>&1 | head -1 || true
"$VENV/bin/python" -c 'import emperor, sys; print("emperor", getattr(emperor, "__version__", "?"), "from", emperor.__file__)' \
  2>/dev/null || echo "emperor: not importable from $VENV"
