"""The settings every sink connector has: what it consumes, how many consumers, batching and retries.

:class:`SinkRuntimeConfig` is the base model of sink configs (``SinkConnector`` reads these five fields);
a sink whose target wants other defaults redeclares that field with the same name and YAML key.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from bizbus.failures import RetryPolicy


class SinkRuntimeConfig(BaseModel):
    """``topics``, ``tasks_max``, ``batch_size``, ``batch_timeout_seconds`` and ``retry`` of a sink."""

    # hide_input_in_errors: a refused DSN or secret name must not echo what was typed into a log or terminal
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    topics: tuple[str, ...] = Field(min_length=1, description="catalogue topics to consume",
                                    examples=[["bizbus.pm.timesheet.v1"]])  # fmt: skip
    tasks_max: int = Field(default=1, ge=1, le=64, description="consumer-group members in this process")
    batch_size: int = Field(default=100, ge=1, le=10_000, description="records per batch at most")
    batch_timeout_seconds: float = Field(
        default=0.2, gt=0, le=60, description="wait at most this long to fill a batch"
    )
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="backoff for retryable errors and 429s")
