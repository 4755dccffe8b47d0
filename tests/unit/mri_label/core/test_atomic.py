"""Crash-safe writes (mri_label.core.atomic, the one writer of the app's and the CLI's files): a failed or killed
write leaves the old file whole; leftovers are cleaned."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mri_label.core.atomic import (
    PARTIAL_SUFFIX,
    atomic_copy,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    remove_partial_files,
)


class _Interrupted(RuntimeError):
    pass


def _half_then_fail(f):
    f.write(b"half of the new")
    raise _Interrupted


def test_a_failed_write_leaves_the_old_file_and_no_partial_file(tmp_path):
    path = tmp_path / "label.nii"
    path.write_bytes(b"old label")
    with pytest.raises(_Interrupted):
        atomic_write(str(path), _half_then_fail)
    assert path.read_bytes() == b"old label"
    assert os.listdir(tmp_path) == ["label.nii"]


def test_copy_and_json_replace_the_whole_file(tmp_path):
    source, dest = tmp_path / "source.bin", tmp_path / "dest.bin"
    source.write_bytes(os.urandom(3 << 20))
    dest.write_bytes(b"old")
    atomic_copy(str(source), str(dest))
    assert dest.read_bytes() == source.read_bytes()
    atomic_write_json(str(tmp_path / "index.json"), {"a": [1, 2]}, indent=2)
    assert (tmp_path / "index.json").read_text(encoding="utf-8") == '{\n  "a": [\n    1,\n    2\n  ]\n}'
    atomic_write_text(tmp_path / "note.txt", "Größe\n")  # a path object, UTF-8
    assert (tmp_path / "note.txt").read_bytes() == "Größe\n".encode("utf-8")
    assert not [p for p in os.listdir(tmp_path) if p.endswith(PARTIAL_SUFFIX)]


def test_leftover_partial_files_are_removed_and_nothing_else(tmp_path):
    (tmp_path / f".label.nii.abc{PARTIAL_SUFFIX}").write_bytes(b"x")
    (tmp_path / "label.nii").write_bytes(b"keep")
    (tmp_path / "notes.partial").write_bytes(b"keep: not one of ours (no leading dot)")
    assert remove_partial_files(str(tmp_path)) == 1
    assert sorted(os.listdir(tmp_path)) == ["label.nii", "notes.partial"]
    assert remove_partial_files(str(tmp_path / "missing")) == 0


WRITER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, sys.argv[1])
    from mri_label.core.atomic import atomic_write
    path, size = sys.argv[2], int(sys.argv[3])
    n = 0
    while True:
        n += 1
        block = bytes([n % 251]) * size
        atomic_write(path, lambda f: [f.write(block[i:i + 65536]) for i in range(0, size, 65536)])
        print(n, flush=True)
""")


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.5])
def test_a_process_killed_while_writing_leaves_a_whole_file(tmp_path, delay):
    from tests.helpers.app import ROOT

    path, size = tmp_path / "big.bin", 8 << 20
    script = tmp_path / "writer.py"
    script.write_text(WRITER, encoding="utf-8")
    process = subprocess.Popen([sys.executable, str(script), str(ROOT), str(path), str(size)], stdout=subprocess.PIPE)
    assert process.stdout.readline()  # one whole write done
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()
    content = path.read_bytes()
    assert len(content) == size and content == content[:1] * size  # one write's bytes, all of them
    leftovers = [p for p in os.listdir(tmp_path) if p.endswith(PARTIAL_SUFFIX)]
    assert len(leftovers) <= 1  # the write in flight, if any: removed at the next start
    assert remove_partial_files(str(tmp_path)) == len(leftovers)
