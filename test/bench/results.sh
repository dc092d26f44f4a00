# results.sh - sourced by the bench scripts: bench_results NAME reads markdown on stdin
# and makes it the section NAME of test/bench/results.md (between
# <!-- bench:NAME --> and <!-- /bench:NAME -->), leaving every other section as it
# is. One results file for every figure; the READMEs link to it instead of
# restating numbers.
bench_results() {
  local name="$1" file body
  file="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/results.md"
  body="$(cat)"
  BENCH_BODY="$body" /usr/bin/python3 - "$name" "$file" <<'PY'
import os, re, sys, datetime
name, path = sys.argv[1], sys.argv[2]
body = os.environ["BENCH_BODY"].strip("\n")
stamp = "_measured %s on %s (%d cores)_" % (datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"),
                                           os.uname().nodename, os.cpu_count() or 0)
sec = "<!-- bench:%s -->\n%s\n\n%s\n<!-- /bench:%s -->" % (name, body, stamp, name)
old = open(path).read() if os.path.exists(path) else (
    "# Measured figures\n\nWritten by the scripts in test/bench/ (`make bench`); each script owns one "
    "section and rewrites only that one. Ratios are side by side in one run.\n")
pat = re.compile(r"<!-- bench:%s -->.*?<!-- /bench:%s -->" % (re.escape(name), re.escape(name)), re.S)
new = pat.sub(lambda m: sec, old) if pat.search(old) else old.rstrip("\n") + "\n\n" + sec + "\n"
tmp = path + ".tmp"
open(tmp, "w").write(new)
os.replace(tmp, path)
PY
}
