"""Imported by the worker pool's fork server alone (first in ``client.pool.PRELOAD``): the
fork server, and every worker it forks, ignores SIGTERM.

The node process decides when jobs stop: a first SIGTERM lets running jobs finish, a
second kills them (SIGKILL). A SIGTERM sent to the node's whole process group, as
systemd sends one on stop by default, must not end a job half-way and charge its task.
Workers still end with the node however it dies (``client.worker._die_with``).
"""

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
