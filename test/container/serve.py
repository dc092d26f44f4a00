"""serve.py - stand-in for an inference server in the container recipe (test/container/Dockerfile).

Loads the model file named by $MODEL_PATH (or argv[1]) the way a server would, with
torch.load, and prints a one-line summary. No safepickle-specific code: the
protection comes from the preload in the image's environment."""
import os
import sys

import torch


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("MODEL_PATH", "/models/model.pt")
    try:
        model = torch.load(path, map_location="cpu")
    except OSError as e:
        print("serve: cannot load %s: %s" % (path, e), file=sys.stderr)
        return 3
    keys = sorted(model) if isinstance(model, dict) else [type(model).__name__]
    print("serve: loaded %s: %s" % (os.path.basename(path), ", ".join(map(str, keys))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
