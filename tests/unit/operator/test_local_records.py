"""The local backend's files: records round-trip, status files parse, paths are safe."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainyard.operator.local import supervise
from trainyard.operator.local.records import (
    AttemptPaths,
    RecordError,
    StopRequest,
    WorkerRecord,
    gang_ports,
    prune,
    read_started,
    read_status,
    remove_worker_files,
    scan,
    write_atomic,
)


def _record(**changes: object) -> WorkerRecord:
    fields = dict(
        job_id="j1",
        attempt=2,
        index=1,
        node="box",
        launch_id="abc",
        pid=123,
        pgid=123,
        start_time=456,
        boot_id="boot",
        argv=("python", "-c", "print('a b')"),
        log_path="/h/logs/j1/worker-1.log",
        gpus=(2, 3),
        metrics_port=28001,
        launched_at=1.5,
    )
    fields.update(changes)
    return WorkerRecord(**fields)  # type: ignore[arg-type]


def test_a_record_round_trips_with_and_without_a_stop() -> None:
    record = _record()
    assert WorkerRecord.from_json(record.to_json()) == record
    stopped = record.with_stop(StopRequest("cancelled", 10.0, 40.0))
    assert WorkerRecord.from_json(stopped.to_json()) == stopped


@pytest.mark.parametrize("text", ["", "{", '{"version": 2}', '{"version": 1, "job_id": "x"}'])
def test_an_unreadable_record_is_a_record_error(text: str) -> None:
    with pytest.raises(RecordError):
        WorkerRecord.from_json(text)


@pytest.mark.parametrize("job_id", ["../etc", "a/b", "", ".", "..", "-rf", "x" * 200])
def test_job_ids_that_are_not_one_safe_directory_name_are_refused(job_id: str) -> None:
    with pytest.raises(ValueError):
        AttemptPaths.of(Path("/h"), job_id, 1)


def test_status_files_written_by_the_supervisor_parse_back(tmp_path: Path) -> None:
    path = tmp_path / "worker-0.status"
    supervise.write_status(
        str(path), exit_code=127, signum=None, message="executable not found: a\nb"
    )
    status = read_status(path)
    assert status is not None
    assert (status.exit_code, status.signal) == (127, None)
    assert status.message == "executable not found: a\nb"
    assert read_status(tmp_path / "absent") is None
    started = tmp_path / "worker-0.started"
    supervise.write_atomic(str(started), "pid=77\npgid=77\n")
    assert read_started(started) == 77


def test_scan_finds_records_and_removing_the_last_worker_drops_the_attempt(tmp_path: Path) -> None:
    paths = AttemptPaths.of(tmp_path, "j1", 2)
    paths.directory.mkdir(parents=True)
    write_atomic(paths.gang, '{"port": 28123}')
    for index in (0, 1):
        write_atomic(paths.record(index), _record(index=index).to_json())
    (paths.directory / "worker-0.json.tmp").write_text("half a write")
    assert sorted(found[:3] for found in scan(tmp_path)) == [("j1", 2, 0), ("j1", 2, 1)]
    assert not (paths.directory / "worker-0.json.tmp").exists()  # cleaned by the scan
    assert gang_ports(tmp_path) == {("j1", 2): 28123}

    assert remove_worker_files(paths, 0) is False
    assert paths.gang.exists()  # worker 1 still belongs to the attempt
    assert remove_worker_files(paths, 1) is True
    assert list(paths.directory.iterdir()) == []
    prune(paths.directory)
    assert not paths.directory.exists() and not paths.directory.parent.exists()
