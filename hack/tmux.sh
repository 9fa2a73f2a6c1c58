#!/usr/bin/env bash
# Make sure tmux is installed: the `trainyard top` test drives it in a real terminal
# (tmux new-session + capture-pane). Installs Debian's package only when it is missing.
set -euo pipefail
if ! command -v tmux >/dev/null; then
    echo "tmux: installing the Debian tmux package" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends tmux >/dev/null
fi
