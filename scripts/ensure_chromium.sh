#!/usr/bin/env bash
# Install Debian's `chromium` (and one font family) so that the inspector's browser test
# (tests/test_inspector.py) renders its exported page in a real headless browser.
#
# Idempotent and quiet: says nothing when a chromium binary is already on PATH. It never fails the
# build: where it cannot install (not root, not Debian, no apt-get, apt-get failing) it prints why and
# exits 0, and the browser test then reports itself as skipped, with the reason.
set -u

have_chromium() {
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1
}

say() { echo "ensure_chromium: $*"; }

have_chromium && exit 0

if [ "$(id -u)" != "0" ]; then
  say "not root, so not installing chromium (the browser test will be skipped)"
  exit 0
fi
if [ ! -r /etc/debian_version ]; then
  say "not a Debian system, so not installing chromium (the browser test will be skipped)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  say "apt-get is not available, so not installing chromium (the browser test will be skipped)"
  exit 0
fi

log="$(mktemp -t ensure_chromium.XXXXXX)"
export DEBIAN_FRONTEND=noninteractive
# No recommends: they pull in udev, upower, mesa and a printer daemon; headless rendering needs a font.
install() { apt-get install -y -q --no-install-recommends chromium fonts-liberation >>"$log" 2>&1; }

if install || { apt-get update -q >>"$log" 2>&1 && install; }; then
  if have_chromium; then
    say "installed Debian's chromium ($(chromium --version 2>/dev/null || echo 'version unknown'))"
    rm -f "$log"
    exit 0
  fi
  say "apt-get succeeded but no chromium binary is on PATH (the browser test will be skipped)"
else
  say "apt-get could not install chromium (the browser test will be skipped); last lines of $log:"
  tail -n 5 "$log" | sed 's/^/  /'
fi
exit 0
