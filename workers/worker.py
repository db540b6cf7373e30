"""The RQ worker class: no fork per job, and a short renewable lease on the running job.

`rq.SimpleWorker` runs jobs in its own process, so models loaded by the codec (ONNX sessions)
stay loaded between jobs. Its catch: it registers a running job in RQ's StartedJobRegistry until
"now + job timeout + 60 s" and never renews that, so a worker killed mid-job (SIGKILL, OOM) would
leave its job looking alive for up to an hour. This subclass gives a running job a short lease
(`job_lease_s`) renewed by a background thread while the job runs; when the process dies the
lease lapses within seconds, RQ's StartedJobRegistry cleanup sees the job as abandoned and
retries it (see workers.housekeeping, which runs that cleanup often).

RQ's own periodic maintenance is replaced by the housekeeping thread (one lock for both would
otherwise be needed to keep two cleanups from retrying the same abandoned job twice).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from rq import Queue, SimpleWorker
from rq.executions import Execution
from rq.job import Job
from rq.utils import now
from rq.worker import WorkerStatus

log = logging.getLogger(__name__)


class FramersWorker(SimpleWorker):
    def __init__(self, *args: Any, lease_s: int = 60, **kwargs: Any) -> None:
        kwargs.setdefault("job_monitoring_interval", max(1, lease_s // 3))
        super().__init__(*args, **kwargs)
        self.lease_s = int(lease_s)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        # The lease of a running job; the job's own timeout is enforced separately (SIGALRM).
        return self.lease_s

    def execute_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        stop = threading.Event()
        renewer = threading.Thread(
            target=self._renew_lease, args=(job, execution, stop), name=f"lease-{job.id}", daemon=True
        )
        renewer.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            stop.set()
            renewer.join(timeout=5)
        self.set_state(WorkerStatus.IDLE)

    def _renew_lease(self, job: Job, execution: Execution, stop: threading.Event) -> None:
        interval = max(0.5, self.lease_s / 3)
        while not stop.wait(interval):
            try:
                self.maintain_heartbeats(job, execution)
            except Exception:  # a Redis blip: the next renewal (before the lease lapses) may work
                log.warning("could not renew the lease of job %s", job.id, exc_info=True)

    def run_maintenance_tasks(self) -> None:
        # Done by workers.housekeeping.Housekeeper in a thread, on a much shorter period.
        self.last_cleaned_at = now()  # type: ignore[assignment]
