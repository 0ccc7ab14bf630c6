import numpy as np
import pytest

from pix2pred.checkpoint import (
    atomic_open,
    load_arrays,
    read_json,
    save_arrays,
    write_bytes,
    write_json,
)


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "weights.bin"
    write_bytes(path, b"good")
    with pytest.raises(RuntimeError), atomic_open(path) as f:
        f.write(b"half")
        raise RuntimeError("crash mid-write")
    assert path.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]


def test_arrays_round_trip_exactly(tmp_path):
    arrays = {
        "W1": np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32),
        "b1": np.arange(4, dtype=np.int64),
    }
    save_arrays(tmp_path / "w.npz", arrays)
    loaded = load_arrays(tmp_path / "w.npz")
    assert set(loaded) == {"W1", "b1"}
    for k in arrays:
        assert loaded[k].dtype == arrays[k].dtype
        np.testing.assert_array_equal(loaded[k], arrays[k])


def test_object_arrays_are_refused_on_save_and_load(tmp_path):
    with pytest.raises(TypeError, match=r"'bad'.*pickle"):
        save_arrays(tmp_path / "w.npz", {"bad": np.array([{"a": 1}], dtype=object)})
    np.savez(tmp_path / "pickled.npz", bad=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"pickled\.npz"):
        load_arrays(tmp_path / "pickled.npz")


def test_json_errors_name_the_file(tmp_path):
    write_json(tmp_path / "m.json", {"acc": np.float32(0.5), "cm": np.eye(2, dtype=np.int64)})
    assert read_json(tmp_path / "m.json") == {"acc": 0.5, "cm": [[1, 0], [0, 1]]}
    (tmp_path / "broken.json").write_text("{nope")
    with pytest.raises(ValueError, match=r"broken\.json"):
        read_json(tmp_path / "broken.json")
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        read_json(tmp_path / "missing.json")


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


def test_the_umask_is_read_without_changing_it(tmp_path, monkeypatch):
    import os
    from pathlib import Path

    status = Path("/proc/self/status")
    if not (status.is_file() and "Umask:" in status.read_text()):
        pytest.skip("this system does not show the umask in /proc")
    old = os.umask(0o027)
    real_umask = os.umask

    def no_flip(mask):
        raise AssertionError("os.umask changed the process umask (a race with other threads)")

    monkeypatch.setattr(os, "umask", no_flip)
    try:
        write_json(tmp_path / "b.json", {"x": 1})
    finally:
        monkeypatch.undo()
        real_umask(old)
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o640
