"""Errors of Kafka sources beyond the project's common ones."""

from __future__ import annotations

from ingest.errors import SourceError


class DataLossError(SourceError):
    """Offsets the stream must read are no longer in Kafka."""


def rerun_data_loss(r: object, reached: int, cause: str) -> DataLossError:
    """The range of a planned batch can no longer be read.

    Such a batch is often a re-run one: its ranges come from the intent log,
    and a sink may already hold part of what it wrote, so it must read
    exactly those records or fail. `on_data_loss` decides only when a batch
    is planned; it cannot shrink a range that was already planned."""
    return DataLossError(
        f"reading {r}: offsets from {reached} are no longer in Kafka (removed by retention?): {cause}. The batch "
        "must read exactly the ranges it planned (a re-run batch reads what its first attempt planned), so "
        "on_data_loss does not apply to it; to go on without those records, restart without the checkpoint "
        "(or with a new one) and on_data_loss='earliest' or 'latest'")
