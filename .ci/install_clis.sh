#!/usr/bin/env bash
# Install the real Claude Code and Codex CLIs from the npm registry into .ci/tools/ (git-ignored).
#
# The CLI backend tests (pytest marker `cli`) drive these programs against a loopback fake LLM
# server. The versions are pinned to the ones the backends were tested with; bump them together
# with a test run. Idempotent: when the pinned versions are already installed it only prints them.
set -euo pipefail

CLAUDE_VERSION="2.1.331"
CODEX_VERSION="0.169.0"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$repo_root/.ci/tools"
bin="$tools/node_modules/.bin"
mkdir -p "$tools"

installed_version() {  # $1 = package name; prints the installed version or nothing
    local manifest="$tools/node_modules/$1/package.json"
    [[ -f "$manifest" ]] || return 0
    node -e 'process.stdout.write(require(process.argv[1]).version)' "$manifest"
}

if [[ "$(installed_version @anthropic-ai/claude-code)" != "$CLAUDE_VERSION" \
      || "$(installed_version @openai/codex)" != "$CODEX_VERSION" \
      || ! -x "$bin/claude" || ! -x "$bin/codex" ]]; then
    [[ -f "$tools/package.json" ]] || echo '{"name": "genagent-ci-tools", "private": true}' > "$tools/package.json"
    # Keep the CLIs' own update/telemetry machinery quiet during the install as well.
    DISABLE_AUTOUPDATER=1 npm install --prefix "$tools" --no-audit --no-fund --loglevel=error \
        "@anthropic-ai/claude-code@$CLAUDE_VERSION" "@openai/codex@$CODEX_VERSION"
fi

echo "claude: $("$bin/claude" --version)"
echo "codex: $("$bin/codex" --version)"
