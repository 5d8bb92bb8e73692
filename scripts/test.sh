#!/usr/bin/env bash
# The whole test suite: lint, types, unit and end-to-end tests with real VMs. Installs what is
# missing first (npm deps, Debian packages, the image), then prints "N passed, N failed".
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# One image for the whole run, with every agent CLI: the one the e2e tests use (test/e2e-image.ts).
export AGENTBOX_AGENTS=claude,codex,opencode
set -e
bash scripts/prepare.sh
node packages/cli/bin/agentbox.js setup
bash scripts/test-packages.sh   # test-only Debian packages: chromium for the dashboard's browser test
node packages/cli/bin/agentbox.js image build --agents "$AGENTBOX_AGENTS"
set +e

failed_checks=0
passed_checks=0
check() {
  local name="$1"; shift
  if "$@"; then passed_checks=$((passed_checks + 1)); echo "check $name: ok"
  else failed_checks=$((failed_checks + 1)); echo "check $name: FAILED"; fi
}
check typecheck npm run --silent typecheck
check lint npx eslint --max-warnings=0 .
check format npx prettier --check --log-level=warn .

report="$(mktemp)"
npx vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@"
vitest_status=$?

node -e '
const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const checksPassed = Number(process.argv[2]), checksFailed = Number(process.argv[3]);
const passed = r.numPassedTests + checksPassed;
// numFailedTestSuites counts a failed test again in its file and each describe around it: count
// instead the files that failed with no failed test (an import error, a failing hook).
const brokenFiles = r.testResults.filter(
  (f) => f.status === "failed" && !f.assertionResults.some((t) => t.status === "failed"),
).length;
let failed = r.numFailedTests + checksFailed + brokenFiles;
// vitest failed for a reason no test counts (an unhandled error, a teardown leak check): one failure
if (Number(process.argv[4]) !== 0 && r.numFailedTests + brokenFiles === 0) failed += 1;
const skipped = (r.numPendingTests || 0) + (r.numTodoTests || 0);
console.log(`${passed} passed, ${failed} failed` + (skipped ? `, ${skipped} skipped` : ""));
' "$report" "$passed_checks" "$failed_checks" "$vitest_status" || echo "0 passed, 1 failed"
rm -f "$report"

[ "$vitest_status" -eq 0 ] && [ "$failed_checks" -eq 0 ]
