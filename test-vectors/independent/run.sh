#!/usr/bin/env bash
# Independent verifier for the hush test vectors (see ../README.md).
# Usage: bash test-vectors/independent/run.sh [VECTORS_DIR]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
vectors="${1:-$here/../vectors}"
if [ ! -x "$here/.venv/bin/python" ]; then
    python3 -m venv "$here/.venv"
fi
"$here/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
exec "$here/.venv/bin/python" "$here/verify.py" "$vectors"
