"""`python -m gbcli`: the same as the `gbcli` console script."""

import sys
from pathlib import Path

if getattr(sys.modules.get("gbcli"), "__file__", None) is None:
    # Run from the folder that holds a clone named gbcli/, Python takes the clone's root (which has no __init__.py)
    # for a namespace package called gbcli and finds this file through the installed copy: the names of the real
    # package (gbcli.__version__) are then missing. Put the real package first and import it afresh.
    for name in [name for name in sys.modules if name == "gbcli" or name.startswith("gbcli.")]:
        del sys.modules[name]
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gbcli.entry import main  # after the path is right

main()
