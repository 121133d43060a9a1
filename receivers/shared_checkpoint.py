"""Where the checkpoint of a job with receivers on a Dask cluster may live.

With the write-ahead log on, a job on a cluster keeps its checkpoint (and the
receivers' logs under it) where every process of the job can reach it: the
driver writes the logs, but the driver may be restarted on another host with
`get_or_create`, and workers read and write checkpoint data (state snapshots)
wherever they run. So:

- an `hdfs://` or `s3://` checkpoint is fine anywhere;
- a `file://` URL says the path is a shared mount (NFS...) every host sees at
  that path: it is taken at its word (nothing here can verify a mount);
- a plain local path is fine only when every worker runs on the driver's
  host: a `LocalCluster`, or workers whose addresses are all on the loopback
  interface (127.0.0.1, ::1, localhost), which no other machine can reach. A
  worker on another host could not see that disk, so the job refuses to start
  rather than lose the log's guarantee when a receiver or a driver moves there.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

from ingest.errors import ConfigError
from receivers.placement import worker_host


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_shared_checkpoint(stream: str, checkpoint_dir: str | None, workers: Iterable[str]) -> None:
    """Raise `ConfigError` when a local checkpoint cannot be reached by every worker."""
    if checkpoint_dir is None or "://" in checkpoint_dir:
        return
    remote = sorted(w for w in workers if not _loopback(worker_host(w)))
    if remote:
        raise ConfigError(
            f"stream {stream}: the write-ahead log is on and the checkpoint {checkpoint_dir} is a local path, but "
            f"Dask worker(s) {', '.join(remote[:3])}{' ...' if len(remote) > 3 else ''} run on other hosts that "
            "cannot reach it. Put the checkpoint on storage every host reaches (hdfs://... or s3://...), or on a "
            f"shared mount every host sees at the same path, written as file://{checkpoint_dir}, or run every "
            "worker on this host")
