#!/usr/bin/env bash
# Real input for the plugin: pluggy's own test suite, from the sdist of the pluggy that is
# installed, run plain and under --isolate (also with -n 2 and --cov); prints the summaries.
#   bash examples/pluggy_suite.sh          (as root, after bash .ci/setup)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$here/.venv/bin/python}
version=$("$py" -c 'import pluggy; print(pluggy.__version__)')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" -m pip download -q --no-deps --no-binary :all: "pluggy==$version" -d "$work" >/dev/null
tar xzf "$work/pluggy-$version.tar.gz" -C "$work"
cd "$work/pluggy-$version"
printf '[run]\nbranch = false\n' > "$work/covrc"   # pluggy's own coverage config warns
summary() { "$py" -m pytest -p no:cacheprovider -q "$@" testing 2>&1 | tail -n 1; }
cov() { "$py" -m pytest -p no:cacheprovider -q --cov=pluggy --cov-config="$work/covrc" \
          --cov-report=term "$@" testing 2>&1 | grep -E '^TOTAL'; }
echo "pluggy $version test suite"
echo "plain:                $(summary)"
echo "--isolate:            $(summary --isolate)"
echo "--isolate -n 2:       $(summary --isolate -n 2)"
echo "coverage, plain:      $(cov)"
echo "coverage, --isolate:  $(cov --isolate)"
