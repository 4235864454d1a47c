#!/bin/sh
# Install birdtrap as a service on Raspberry Pi OS (or any Debian): sudo ./install.sh
#
# This script only makes what Python cannot make for itself, the virtual environment; then
# `birdtrap install --system` does the rest (service user, folders, every default model fetched
# and verified, /etc/birdtrap/config.yaml, database, systemd unit, and `birdtrap doctor`).
# Running it again changes nothing. `birdtrap uninstall --system` removes the service and keeps
# the data.
#
# Environment (all optional):
#   BIRDTRAP_VENV          where the virtual environment goes [/opt/birdtrap/venv]
#   BIRDTRAP_EXTRAS        extras to install, e.g. "web,notify" [none]
#   BIRDTRAP_MODEL_MIRROR  a folder or URL holding the models, for an offline site
#   BIRDTRAP_INSTALL_SKIP  "user,systemctl": steps a container or CI cannot run
#   BIRDTRAP_SKIP_PIP=1    use the venv as it is (it already holds this birdtrap)
# Arguments are passed on to `birdtrap install --system` (e.g. --root DIR, --mirror DIR).
set -eu

repo=$(cd "$(dirname "$0")" && pwd)
venv=${BIRDTRAP_VENV:-/opt/birdtrap/venv}

if [ "${BIRDTRAP_SKIP_PIP:-0}" != 1 ]; then
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            apt-get install -y -qq python3-venv >/dev/null
        else
            echo "install.sh: python3 cannot make a virtual environment; install python3-venv (apt-get install python3-venv)" >&2
            exit 1
        fi
    fi
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    target="$repo"
    [ -z "${BIRDTRAP_EXTRAS:-}" ] || target="$repo[$BIRDTRAP_EXTRAS]"
    "$venv/bin/python" -m pip install -q "$target"
fi

exec "$venv/bin/birdtrap" install --system --unit "$repo/systemd/birdtrap.service" "$@"
