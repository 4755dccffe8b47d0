"""Archive unpacking (:mod:`lib.archives`): each escape refused before anything is written, limits on members and
unpacked size, and a property test (hypothesis) over random member names, kinds and sizes."""

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib.archives import ArchiveError, checked_name, safe_unpack


def tar_bytes(members, mode="w:gz") -> bytes:
    """A TAR of ``members``: (name, kind, payload) with kind file/dir/symlink/hardlink/fifo; payload = bytes or
    the link target."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[kind]
            info.linkname = payload if isinstance(payload, str) else ""
            archive.addfile(info)
    return buffer.getvalue()


def zip_bytes(members) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, kind, payload in members:
            info = zipfile.ZipInfo(name)
            if kind == "symlink":
                info.external_attr = 0o120777 << 16
            archive.writestr(info, payload if isinstance(payload, bytes) else payload.encode())
    return buffer.getvalue()


def files_under(folder: Path) -> set:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture
def place(tmp_path):
    """(archive path writer, unpack folder, the folder around it whose contents must not change)."""
    outer = tmp_path / "outer"
    outer.mkdir()
    (outer / "keep.txt").write_text("mine")

    def write(data: bytes, name="upload.tar.gz") -> str:
        path = tmp_path / name
        path.write_bytes(data)
        return str(path)

    return write, outer / "session", outer


ESCAPES = [
    ("parent", tar_bytes([("../x", "file", b"evil")]), "leads out"),
    ("deep parent", tar_bytes([("a/../../x", "file", b"evil")]), "leads out"),
    ("absolute", tar_bytes([("/tmp/mri-label-escape-test", "file", b"evil")]), "absolute"),
    ("symlink then through it", tar_bytes([("lnk", "symlink", "/tmp"), ("lnk/z", "file", b"evil")]), "link"),
    ("relative symlink", tar_bytes([("lnk", "symlink", "../..")]), "link"),
    ("hard link", tar_bytes([("a", "file", b"x"), ("h", "hardlink", "/etc/passwd")]), "link"),
    ("fifo", tar_bytes([("f", "fifo", None)]), "special file"),
    ("backslash", tar_bytes([("..\\x", "file", b"evil")]), "backslash"),
    ("zip parent", zip_bytes([("../x", "file", b"evil")]), "leads out"),
    ("zip absolute", zip_bytes([("/x", "file", b"evil")]), "absolute"),
    ("zip symlink", zip_bytes([("lnk", "symlink", "/etc")]), "link"),
    ("file under a file", tar_bytes([("a", "file", b"x"), ("a/b", "file", b"y")]), "under a file"),
    ("same name twice", tar_bytes([("a", "file", b"x"), ("a", "file", b"y")]), "twice"),
    ("not an archive", b"hello, world" * 10, "not a TAR"),
    ("empty archive", tar_bytes([]), "no file"),
    ("folders only", tar_bytes([("d", "dir", None)]), "no file"),
]


@pytest.mark.parametrize("case,data,words", ESCAPES, ids=[c[0] for c in ESCAPES])
def test_an_escaping_or_odd_member_is_refused_and_nothing_is_written(place, case, data, words):
    write, dest, outer = place
    before = files_under(outer)
    with pytest.raises(ArchiveError, match=words):
        safe_unpack(write(data), str(dest))
    assert files_under(outer) == before and not dest.exists()
    assert not os.path.lexists("/tmp/mri-label-escape-test")


LIMITS = [
    (
        "too many members",
        tar_bytes([(f"f{i}", "file", b"x") for i in range(6)]),
        dict(max_members=5),
        "more than 5 members",
    ),
    ("too large (declared)", tar_bytes([("big", "file", bytes(5000))]), dict(max_bytes=4096), "more than"),
    (
        "too large in all",
        tar_bytes([("a", "file", bytes(3000)), ("b", "file", bytes(3000))]),
        dict(max_bytes=4096),
        "more than",
    ),
    ("zip bomb", zip_bytes([("bomb", "file", bytes(10**6))]), dict(max_bytes=10**5), "more than"),
]


@pytest.mark.parametrize("case,data,limits,words", LIMITS, ids=[c[0] for c in LIMITS])
def test_limits_on_members_and_unpacked_size(place, case, data, limits, words):
    write, dest, outer = place
    with pytest.raises(ArchiveError, match=words) as refused:
        safe_unpack(write(data), str(dest), **limits)
    assert refused.value.too_large and not dest.exists() and files_under(outer) == {"keep.txt"}


def test_a_zip_whose_declared_size_lies_is_stopped_by_the_bytes_written(place):
    write, dest, _ = place
    data = bytearray(zip_bytes([("a", "file", bytes(100_000))]))
    for header in (b"PK\x03\x04", b"PK\x01\x02"):  # declare 10 bytes in the local and central headers
        at = data.find(header)
        offset = at + (22 if header == b"PK\x03\x04" else 24)
        data[offset : offset + 4] = (10).to_bytes(4, "little")
    with pytest.raises(ArchiveError):
        safe_unpack(write(bytes(data), "lie.zip"), str(dest), max_bytes=1000)
    assert not dest.exists()


@pytest.mark.parametrize(
    "maker,name",
    [
        (tar_bytes, "s.tar.gz"),
        (zip_bytes, "s.zip"),
        (lambda m: tar_bytes(m, "w:bz2"), "s.tar.bz2"),
        (lambda m: tar_bytes(m, "w"), "s.tar"),
    ],
)
def test_a_plain_series_unpacks_whole(place, maker, name):
    write, dest, _ = place
    members = [("series", "dir", None), ("series/1.dcm", "file", b"one"), ("./series/2.dcm", "file", b"two")]
    if maker is zip_bytes:
        members = members[1:]
    assert safe_unpack(write(maker(members), name), str(dest)) == 2
    assert (dest / "series" / "1.dcm").read_bytes() == b"one" and (dest / "series" / "2.dcm").read_bytes() == b"two"


@pytest.mark.parametrize("argument,value", [("max_members", 0), ("max_bytes", 0)])
def test_limits_are_validated(place, argument, value):
    write, dest, _ = place
    with pytest.raises(ValueError, match=argument):
        safe_unpack(write(tar_bytes([("a", "file", b"x")])), str(dest), **{argument: value})


@pytest.mark.parametrize("name,parts", [("a/b", ("a", "b")), ("./a//b/", ("a", "b")), ("a/./b", ("a", "b"))])
def test_checked_name_keeps_plain_parts(name, parts):
    assert checked_name(name) == parts


# ------------------------------------------------------------------------------------------- property-based

PART = st.sampled_from(["a", "b", "..", ".", "", "lnk", "x.dcm", "/", "\\", "C:", "~"])
NAMES = st.lists(PART, min_size=1, max_size=4).map("/".join)
MEMBER = st.tuples(
    NAMES,
    st.sampled_from(["file", "file", "dir", "symlink", "hardlink"]),
    st.one_of(st.binary(max_size=64), st.sampled_from(["/tmp", "..", "a", "../../etc"])),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(members=st.lists(MEMBER, max_size=6), as_zip=st.booleans())
def test_any_archive_is_refused_or_lands_wholly_inside_its_folder(tmp_path, members, as_zip):
    members = [(n, k, p if k in ("file", "dir") or isinstance(p, str) else "a") for n, k, p in members]
    members = [(n, k, p if k != "file" or isinstance(p, bytes) else p.encode()) for n, k, p in members]
    if as_zip:
        members = [(n, k, p) for n, k, p in members if k in ("file", "symlink")]
    case = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
    outer = case / "outer"
    outer.mkdir(parents=True)
    archive = case / "upload"
    archive.write_bytes(zip_bytes(members) if as_zip else tar_bytes(members))
    dest = outer / "session"
    try:
        safe_unpack(str(archive), str(dest), max_members=5, max_bytes=200)
    except ArchiveError:
        assert not dest.exists()
    else:
        root = os.path.realpath(dest)
        for path in dest.rglob("*"):
            assert not path.is_symlink() and (path.is_file() or path.is_dir())
            assert os.path.commonpath([root, os.path.realpath(path)]) == root
    assert sorted(p.name for p in outer.iterdir()) == (["session"] if dest.exists() else [])
    assert sorted(p.name for p in case.iterdir()) == ["outer", "upload"]
