"""dacommon, the infrastructure tent and ProDA share: one-line errors, files written whole,
writability checks, stop signals; each package's wording on top of it."""
import builtins
import errno
import os
import signal

import numpy as np
import pytest
import torch
from full_disk import FailingFile

from dacommon import files
from dacommon.errors import one_line
from proda import signals
from proda.files import unwritable
from tent.preflight import unwritable_reason


@pytest.fixture()
def filling_disk(monkeypatch):
    """Files opened for writing under the folders appended take 1 kB, then fail with ENOSPC."""
    real_open, folders = builtins.open, []

    def open_(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if set(mode) & set("wax") and any(os.path.abspath(file).startswith(d) for d in folders):
            return FailingFile(f, errno.ENOSPC, 1000)
        return f

    monkeypatch.setattr(builtins, "open", open_)
    return folders


def test_one_line_words_os_errors_both_ways_and_unwraps_a_worker_error():
    err = FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/y")
    assert one_line(err) == "/x/y: No such file or directory"
    assert one_line(err, errno_text=True) == "[Errno 2] No such file or directory: '/x/y'"
    worker = ValueError("Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                        "last):\n  File \"x.py\", line 1\nValueError: label file a.png is truncated\n")
    assert one_line(worker) == "label file a.png is truncated"
    assert one_line(RuntimeError("two\n   lines")) == "two lines" and one_line(KeyError()) == "KeyError"


def test_a_full_disk_inside_torch_save_is_the_os_error_naming_the_file(tmp_path, filling_disk):
    """torch.save's zip writer turns ENOSPC into a RuntimeError; atomic_write reports the OSError."""
    path = str(tmp_path / "ckpt.pkl")
    filling_disk.append(str(tmp_path))
    with pytest.raises(OSError) as info:
        files.atomic_write(path, lambda f: torch.save({"w": torch.zeros(10_000)}, f))
    assert info.value.errno == errno.ENOSPC and f"no space left on the device to write {path}" in str(info.value)
    assert "it needs more than " in str(info.value) and os.listdir(tmp_path) == []


def test_shared_writes_keep_other_writers_temp_files_and_the_os_wording(tmp_path, filling_disk):
    target = tmp_path / "cache.npy"
    other = tmp_path / ".tmp_cache.npy.abc123"  # another process writing the same file right now
    other.write_bytes(b"half")
    files.atomic_write(target, lambda f: np.save(f, np.arange(3)), shared=True)
    assert other.exists() and np.load(target).tolist() == [0, 1, 2]
    files.atomic_write(tmp_path / "x.bin", lambda f: f.write(b"whole"))
    filling_disk.append(str(tmp_path))
    with pytest.raises(OSError) as info:
        files.atomic_write(target, lambda f: f.write(b"0" * 5000), shared=True)
    assert info.value.errno == errno.ENOSPC and str(info.value) == "[Errno 28] No space left on device"
    assert sorted(os.listdir(tmp_path)) == [".tmp_cache.npy.abc123", "cache.npy", "x.bin"]


def test_each_package_words_what_blocks_a_write(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("")
    assert unwritable_reason(tmp_path / "f" / "out") == f"{tmp_path / 'f'} is a file, not a folder"
    assert unwritable(str(tmp_path / "f" / "out")) == f"cannot be created: {tmp_path / 'f'} is a file"
    assert unwritable(str(tmp_path / "f")) is None  # a file to replace, in a writable folder
    assert unwritable_reason(tmp_path / "new" / "deeper") is None and unwritable(str(tmp_path)) is None
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(tmp_path) and mode & os.W_OK
                        else real_access(p, mode, **kw))
    assert unwritable(str(tmp_path)) == "is not writable"
    assert unwritable(str(tmp_path / "new")) == f"cannot be written: {tmp_path} is not writable"
    assert unwritable_reason(tmp_path / "new") == f"cannot create files in {tmp_path} (Permission denied)"


def test_stop_signals_remember_sigterm_and_restore_the_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(signals.Terminated) as info:
        with signals.stop_signals():
            signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before and signals.interrupt_status(info.value) == 143
    assert signals.interrupted_message("at iteration 3") == \
        "terminated (SIGTERM) at iteration 3; rerun the same command to resume"
    with signals.stop_signals():  # a new run forgets the last one's signal
        assert signals.stop_signal() is None
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        assert signals.stop_signal() == signal.SIGINT
        assert signals.interrupt_status(KeyboardInterrupt()) == 130


def test_synthetic_pngs_are_the_bytes_pil_writes(tmp_path):
    from PIL import Image
    from proda.demo.synthetic import LABEL_ID_COLORS, _save_png
    label = (np.arange(64, dtype=np.uint8).reshape(8, 8) % 30)
    _save_png(label, str(tmp_path / "a.png"), mode="P", palette=LABEL_ID_COLORS)
    img = Image.fromarray(label, mode="P")
    img.putpalette(LABEL_ID_COLORS.reshape(-1).tolist())
    img.save(tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["a.png", "b.png"]
