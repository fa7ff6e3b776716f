#!/usr/bin/env bash
# Create the virtualenv and install fedkafka with its dev extra; Java/Maven/Kafka come later, on first use.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}

need_apt() {  # install Debian packages when we can, else say exactly what is missing
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
  else
    echo "missing: $* (install them with: sudo apt-get install $*)" >&2; exit 1
  fi
}

command -v "$python" >/dev/null || need_apt python3 python3-venv
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "fedkafka needs Python 3.11+; $("$python" --version) found (set PYTHON=...)" >&2; exit 1; }
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv" 2>/dev/null || { need_apt python3-venv; "$python" -m venv "$venv"; }
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -c constraints.txt -e '.[dev]'  # constraints.txt: the lock
