"""python3 -m safepickle PATH...: the verdict of each file, exit 1 if any would be blocked."""
import sys

import safepickle


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python3 -m safepickle PATH...   (the CLI `safepickle scan` has every option)")
        return 0 if argv else 2
    rc = 0
    for p in argv:
        try:
            v = safepickle.scan(p)
        except (safepickle.SafePickleError, OSError) as e:
            print("%s: error: %s" % (p, e), file=sys.stderr)
            rc = 2
            continue
        print(v)
        if v.blocked and rc == 0:
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
