#!/usr/bin/env bash
# Set up a fresh Debian machine for emperor: nginx and python3-venv via apt (only when missing),
# a virtualenv at <repo>/.venv, and the package installed editable.
# Shared by contrib/demo/run.sh (`setup.sh`) and .ci/run (`setup.sh test`) so the two cannot drift.
# Usage: bash contrib/demo/setup.sh [EXTRAS]     e.g. EXTRAS=test -> pip install -e '.[test]'
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
extras="${1:-}"

need_apt=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
# The test run also needs the tools the tests call (shellcheck lints the shipped shell scripts;
# openssl makes the self-signed certificates of the https-socket and etcd TLS tests; etcd-server gives
# /usr/bin/etcd for the fleet tests' private members; ip makes their network namespaces).
if [ "$extras" = test ]; then
  command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
  command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
  command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || need_apt+=(etcd-server)
  command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need_apt+=(iproute2)
fi
if ! command -v python3 >/dev/null 2>&1; then
  need_apt+=(python3 python3-venv)
elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  need_apt+=(python3-venv)
fi
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "==> apt-get install ${need_apt[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "missing system packages: ${need_apt[*]} (run as root, or install them first)" >&2
    exit 1
  fi
  apt-get update -qq </dev/null
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" </dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> python3 -m venv .venv"
  python3 -m venv .venv
fi
spec="."
[ -n "$extras" ] && spec=".[$extras]"
echo "==> pip install -e '$spec'"
.venv/bin/python -m pip install -q -e "$spec" </dev/null
# An editable install compiles nothing: with PYTHONDONTWRITEBYTECODE set, every vassal start would
# compile the package again (~40 ms of its cold start, docs/benchmarks.md). Stale files are ignored.
echo "==> python -m compileall emperor"
.venv/bin/python -m compileall -q emperor >/dev/null
