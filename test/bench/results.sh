# results.sh - sourced by the bench scripts: bench_results NAME reads markdown on stdin
# and makes it the section NAME of test/bench/results.md, stamped with the date and
# machine, through results.py (the one writer of that file).
bench_results() {
  /usr/bin/python3 "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/results.py" "$1" --stamp
}
