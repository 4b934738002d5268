"""Start ``emperor.vassal`` under another interpreter (a ``home`` virtualenv's python).

Run as a script: ``VENV/bin/python /path/to/emperor/_boot.py --ini app.ini``. Python put this
file's directory (the emperor package itself) first on ``sys.path``; it is removed before
anything is imported, and the ``emperor`` package is then loaded from that directory by
file location, so no other directory of the emperor's installation (its site-packages and
dependencies) is ever on the vassal's ``sys.path``: the venv decides every other import.
Standard library only, and it must stay importable on every supported Python version.
"""

import importlib.util
import os
import runpy
import sys

here = os.path.dirname(os.path.abspath(__file__))
if sys.path and sys.path[0] and os.path.abspath(sys.path[0]) == here:
    sys.path[0] = os.getcwd()  # what ``-m`` would have put there
spec = importlib.util.spec_from_file_location("emperor", os.path.join(here, "__init__.py"),
                                              submodule_search_locations=[here])
assert spec is not None and spec.loader is not None
package = importlib.util.module_from_spec(spec)
package.__dict__["BOOTSTRAPPED"] = here
sys.modules["emperor"] = package
spec.loader.exec_module(package)
runpy.run_module("emperor.vassal", run_name="__main__", alter_sys=True)
