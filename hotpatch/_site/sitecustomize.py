"""Put on PYTHONPATH by `thinlink dev` so that every Python process the app starts
(multiprocessing workers, subprocesses) loads the build and joins the session.
Does nothing without `HOTPATCH_ADDRESS` in the environment. A user's own
sitecustomize, further down sys.path, still runs."""

import os
import sys


def _chain() -> None:
    # Run the next sitecustomize on sys.path, the one ours shadows.
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        if os.path.abspath(entry or ".") == here:
            continue
        candidate = os.path.join(entry or ".", "sitecustomize.py")
        if os.path.isfile(candidate):
            with open(candidate, "rb") as f:
                code = compile(f.read(), candidate, "exec")
            exec(code, {"__name__": "sitecustomize", "__file__": candidate})
            return


if os.environ.get("HOTPATCH_ADDRESS"):
    from hotpatch import _child

    _child.start()
_chain()
