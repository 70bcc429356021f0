#!/usr/bin/env bash
# The portal's browser test (portal/tests/browser.rs) runs axe-core, the accessibility
# engine, inside Chromium on every page. Installs axe-core 4.x from npm into target/axe (the
# test reads target/axe/node_modules/axe-core/axe.min.js) when missing; running it again
# changes nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."

bundle=target/axe/node_modules/axe-core/axe.min.js

# The installed version, when it is a 4.x.
installed() {
  [ -f "$bundle" ] && node -e '
const v = require(process.argv[1]).version;
process.exit(v.startsWith("4.") ? 0 : 1);
' "$PWD/target/axe/node_modules/axe-core/package.json" >/dev/null 2>&1
}

version() {
  node -p 'require(process.argv[1]).version' "$PWD/target/axe/node_modules/axe-core/package.json"
}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "axe.sh: Node.js and npm are needed to install axe-core (e.g. apt-get install nodejs npm)" >&2
  exit 1
fi

if installed; then
  echo "axe.sh: axe-core $(version) is already installed ($bundle)"
  exit 0
fi

echo "axe.sh: installing axe-core 4.x from npm into target/axe"
mkdir -p target/axe
npm install --prefix target/axe --no-audit --no-fund --loglevel=error axe-core@4
if ! installed; then
  echo "axe.sh: npm finished but $bundle is missing" >&2
  exit 1
fi
echo "axe.sh: axe-core $(version) is installed ($bundle)"
