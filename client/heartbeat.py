"""Keeps a lease alive while a long batch runs: extends it every third of its length."""

from __future__ import annotations

import logging
import threading

from common.protocol import ENDED_LEASE_STATES

from .coordinator import Coordinator, CoordinatorError

log = logging.getLogger("fetchfleet")


class Heartbeat(threading.Thread):
    def __init__(self, coordinator: Coordinator, lease_id: str, lease_seconds: float):
        super().__init__(name=f"heartbeat-{lease_id[:8]}", daemon=True)
        self.coordinator = coordinator
        self.lease_id = lease_id
        self.interval = max(0.5, lease_seconds / 3)
        self._stopped = threading.Event()
        #: Set when the coordinator says the lease is gone (reclaimed): results will be refused.
        self.lost = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.coordinator.extend(self.lease_id)
            except CoordinatorError as error:
                if error.status == 409 and error.body.get("state") in ENDED_LEASE_STATES:
                    return  # every result arrived (or was handed back) just before this beat
                if error.status in (404, 409):
                    log.warning(
                        "lease %s… was lost (%s); its results will be refused", self.lease_id[:8], error.message
                    )
                    self.lost.set()
                    return
                log.warning("heartbeat failed, will retry: %s", error.message)

    def stop(self) -> None:
        self._stopped.set()
        if self.is_alive():
            self.join(5)
