#!/usr/bin/env bash
# Builds the browser client's files into web/dist (what ringcastd --web serves): the page's
# own files from web/src, and xterm.js from npm (installed under web/.npm, kept between runs;
# reinstalled only when package.json or package-lock.json changes).
#
#   web/build.sh        prints the directory it built
#
# Needs node and npm (Debian: apt-get install npm); used by scripts/test.sh and
# scripts/demo.sh.
set -euo pipefail
cd "$(dirname "$0")"
command -v npm >/dev/null || {
    echo "web/build.sh needs npm (Debian: apt-get install npm)" >&2
    exit 1
}
inputs_key() { { cat package.json; cat package-lock.json 2>/dev/null || true; } | sha256sum | cut -c1-16; }
key=$(inputs_key)
if [ "$(cat .npm/key 2>/dev/null)" != "$key" ]; then
    rm -rf .npm
    mkdir -p .npm
    cp package.json .npm/
    [ -f package-lock.json ] && cp package-lock.json .npm/
    (cd .npm && npm install --no-audit --no-fund --ignore-scripts --loglevel=error >&2)
    # Keep the lock file the install made, so the next build installs the same versions.
    [ -f package-lock.json ] || cp .npm/package-lock.json .
    key=$(inputs_key)
    echo "$key" >.npm/key
fi
mkdir -p dist
cp src/index.html src/app.js src/audio.js src/delay.js src/feed.js src/net.js src/opus.js src/proto.js src/transport.js src/worklet.js src/ws.js src/style.css dist/
cp .npm/node_modules/@xterm/xterm/lib/xterm.js .npm/node_modules/@xterm/xterm/css/xterm.css dist/
echo "$PWD/dist"
