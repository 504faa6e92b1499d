"""Real servers for the tests: the helpers live in ``demo.processes`` (the demo and the
benchmarks start the same processes)."""

from demo.processes import (  # noqa: F401
    REPO_ROOT,
    VENV_BIN,
    ServerProcess,
    coordinator_env,
    demo_sites,
    free_port,
    start_coordinator,
    start_demo_site,
    start_server,
)
