"""``python -m emperor.vassal [--ini app.ini] [options]``: run one vassal in the foreground."""

import sys

from emperor.config import parse_pairs
from emperor.options import Scope
from emperor.vassal.main import run_vassal

raise SystemExit(run_vassal(parse_pairs(sys.argv[1:], "python -m emperor.vassal", Scope.APP)))
