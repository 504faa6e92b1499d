"""``python client.py ...``: the client node's command line, as ``python -m client ...``
(same commands, options and exit statuses), for running it from the repository root."""

import sys
from pathlib import Path

if __name__ == "__main__":
    # The client package lives beside this file; make sure it is what "client" imports.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from client.cli import main

    main(prog_name="client.py")
