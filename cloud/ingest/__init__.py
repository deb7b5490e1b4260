"""The MQTT ingest worker (`microplate-cloud ingest`): validate, write, dead-letter, ack."""

from cloud.ingest.cli import add_parser, run_ingest
from cloud.ingest.options import IngestOptions, IngestStats
from cloud.ingest.worker import IngestWorker

__all__ = ["IngestOptions", "IngestStats", "IngestWorker", "add_parser", "run_ingest"]
