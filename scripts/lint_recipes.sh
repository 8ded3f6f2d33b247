#!/usr/bin/env bash
# Syntax-check every shell script and reject a backslash followed by spaces at line end
# (bash then ends the command there and silently drops the overrides on the next lines).
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
while IFS= read -r f; do
  bash -n "$f" || { echo "syntax error: $f"; status=1; }
  if grep -nE '\\[[:space:]]+$' "$f"; then echo "^ backslash followed by spaces in $f"; status=1; fi
done < <(find recipes scripts examples -name '*.sh' 2>/dev/null; echo .ci/run)
if command -v shellcheck >/dev/null; then
  find recipes scripts examples -name '*.sh' -print0 2>/dev/null | xargs -0 -r shellcheck -S error || status=1
fi
exit $status
