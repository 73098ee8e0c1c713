"""The S3 state store and DLQ against moto: compare-and-swap, the lease lock, dead letters."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pyarrow as pa
import pytest
from tests.integration.s3.support import MotoServer, get, keys, put

from sluiceway.connectors.s3 import S3DeadLetterQueue, S3StateStore, read_s3_dead_letters
from sluiceway.core import (
    ENVELOPE_SCHEMA,
    RunLockedError,
    StateConflictError,
    StateStore,
)
from sluiceway.core.dlq import DeadLetterQueue
from sluiceway.core.state import PipelineState


def store(moto: MotoServer, bucket: str, ttl: float = 60.0) -> S3StateStore:
    return S3StateStore(f"s3://{bucket}/state", "orders", options=moto.options(), lock_ttl=ttl)


def test_commits_are_compare_and_swap(moto: MotoServer, bucket: str) -> None:
    a, b = store(moto, bucket), store(moto, bucket)
    assert isinstance(a, StateStore)
    state, version = a.read()
    assert version == 0 and state.positions == {}

    state.positions["p0"] = 10
    assert a.commit(state, 0) == 1
    with pytest.raises(StateConflictError):
        b.commit(PipelineState(pipeline="orders"), 0)  # created meanwhile

    seen, version = b.read()
    assert version == 1 and seen.positions == {"p0": 10}
    seen.positions["p0"] = 20
    assert b.commit(seen, 1) == 2
    with pytest.raises(StateConflictError, match="moved from version 1 to 2"):
        a.commit(state, 1)  # a's version 1 is gone
    assert a.read()[0].positions == {"p0": 20}
    assert json.loads(get(moto.client(), bucket, "state/orders.state.json"))["version"] == 2


def test_the_run_lock_is_exclusive_and_released(moto: MotoServer, bucket: str) -> None:
    first, second = store(moto, bucket), store(moto, bucket)
    with first.lock("run-1"):
        with pytest.raises(RunLockedError, match="run-1"), second.lock("run-2"):
            pass
        assert keys(moto.client(), bucket, "state/") == ["state/orders.lock.json"]
    assert keys(moto.client(), bucket, "state/") == []
    with second.lock("run-3"):
        pass


def test_the_lock_of_a_killed_process_on_this_host_is_taken_over_at_once(
    moto: MotoServer, bucket: str
) -> None:
    script = (
        "import os, signal, sys\n"
        "from sluiceway.connectors.s3 import S3Options, S3StateStore\n"
        f"s = S3StateStore('s3://{bucket}/state', 'orders', "
        f"options=S3Options(endpoint_url='{moto.url}', region='us-east-1'))\n"
        "with s.lock('doomed'):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    assert killed.returncode == -9
    assert keys(moto.client(), bucket, "state/") == ["state/orders.lock.json"]

    with store(moto, bucket).lock("next"):
        holder = json.loads(get(moto.client(), bucket, "state/orders.lock.json"))
        assert holder["run_id"] == "next"


def test_a_lock_not_renewed_for_its_ttl_expires(moto: MotoServer, bucket: str) -> None:
    foreign = {"run_id": "elsewhere", "pid": 1, "host": "another-host", "ttl": 1.0}
    put(moto.client(), bucket, "state/orders.lock.json", json.dumps(foreign).encode())
    with pytest.raises(RunLockedError, match="elsewhere"), store(moto, bucket).lock("mine"):
        pass
    time.sleep(2.1)
    with store(moto, bucket).lock("mine"):
        pass


def test_the_lease_is_renewed_while_the_run_lasts(moto: MotoServer, bucket: str) -> None:
    with store(moto, bucket, ttl=1.0).lock("long-run"):
        time.sleep(2.5)
        with pytest.raises(RunLockedError, match="long-run"), store(moto, bucket).lock("other"):
            pass


def test_reset_deletes_the_state(moto: MotoServer, bucket: str) -> None:
    s = store(moto, bucket)
    assert s.reset() is False
    s.commit(PipelineState(pipeline="orders", next_seq=4), 0)
    assert s.reset() is True
    assert s.read()[1] == 0


def test_dead_letters_are_one_object_per_batch_and_stage(moto: MotoServer, bucket: str) -> None:
    dlq = S3DeadLetterQueue(f"s3://{bucket}/dlq/orders", options=moto.options())
    assert isinstance(dlq, DeadLetterQueue)
    entry = dict.fromkeys(ENVELOPE_SCHEMA.names) | {
        "envelope_version": 1,
        "dlq_id": "x",
        "pipeline": "orders",
        "run_id": "r",
        "seq": 3,
        "position": "7",
        "stage": "validate.0.rules",
        "error_type": "E",
        "error_message": "bad",
        "attempt": 1,
        "ts": 0,
    }
    entries = pa.Table.from_pylist([entry], schema=ENVELOPE_SCHEMA)
    dlq.write(3, "validate.0.rules", entries)
    dlq.write(3, "validate.0.rules", entries)  # a replay overwrites

    expected = ["dlq/orders/000000000003.validate.0.rules.parquet"]
    assert keys(moto.client(), bucket, "dlq/") == expected
    back = read_s3_dead_letters(f"s3://{bucket}/dlq/orders", options=moto.options())
    assert back.num_rows == 1 and back.column("error_message").to_pylist() == ["bad"]
    assert dlq.read().num_rows == 1
