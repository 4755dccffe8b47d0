"""Safe unpacking of uploaded archives (``PUT /session/?uncompress=true``).

MONAI Label unpacks a session upload with :func:`shutil.unpack_archive`, which writes members named ``../x`` or
``/abs/x``, follows a symbolic link member out of the folder, and sets no limit on what it unpacks. Here every
member is checked before anything is written: a plain relative name (no absolute path, no drive, no ``..``
part, no backslash), a regular file or a folder (no symbolic or hard links, devices or FIFOs), at most
``max_members`` members and ``max_bytes`` unpacked bytes in all. Files are then written by this module (never by
the archive library's own extraction), each opened with ``O_EXCL | O_NOFOLLOW``, counting the bytes really
written (a ZIP's declared sizes can lie). Any refusal removes what was written.
"""

import os
import shutil
import stat
import tarfile
import zipfile
from typing import Iterator, List, NamedTuple, Set

#: Most members an archive may hold (a DICOM series is a few hundred to a few thousand files).
DEFAULT_MAX_MEMBERS = 10000
_CHUNK = 1 << 20


class ArchiveError(ValueError):
    """An archive this server does not unpack; ``too_large`` marks a size or count limit (HTTP 413, else 422)."""

    def __init__(self, message: str, too_large: bool = False):
        super().__init__(message)
        self.too_large = too_large


class Member(NamedTuple):
    """One archive entry: its checked relative name parts, whether it is a folder, its declared size."""

    parts: tuple
    is_dir: bool
    size: int
    source: object


def checked_name(name: str) -> tuple:
    """The parts of a member name that stays inside the unpack folder.

    Raises:
        ArchiveError: for an empty name, an absolute path, a drive letter, a backslash, a NUL or a ``..`` part.
    """
    if not isinstance(name, str) or not name.strip("/") or "\0" in name or "\\" in name:
        raise ArchiveError(f"archive member name {name!r} is empty or holds a backslash or NUL")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"archive member {name[:100]!r} is an absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise ArchiveError(f"archive member {name[:100]!r} leads out of the folder (..)")
    if not parts:
        raise ArchiveError(f"archive member name {name!r} names no file")
    return parts


def _tar_members(archive: tarfile.TarFile) -> Iterator[Member]:
    for info in archive:
        parts = checked_name(info.name)
        if not (info.isfile() or info.isdir()):
            kind = "link" if info.issym() or info.islnk() else "special file"
            raise ArchiveError(f"archive member {info.name[:100]!r} is a {kind}; only files and folders are unpacked")
        yield Member(parts, info.isdir(), int(info.size), info)


def _zip_members(archive: zipfile.ZipFile) -> Iterator[Member]:
    for info in archive.infolist():
        parts = checked_name(info.filename)
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0: no Unix type recorded (a plain file or folder)
        if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
            raise ArchiveError(
                f"archive member {info.filename[:100]!r} is a link or special file; only files and folders are unpacked"
            )
        yield Member(parts, info.is_dir(), int(info.file_size), info)


def check_members(members: Iterator[Member], max_members: int, max_bytes: int) -> List[Member]:
    """All members, checked: count, declared total size, and no file also used as a folder.

    Raises:
        ArchiveError: the first problem found.
    """
    found: List[Member] = []
    files: Set[tuple] = set()
    folders: Set[tuple] = set()
    total = 0
    for member in members:
        found.append(member)
        if len(found) > max_members:
            raise ArchiveError(f"the archive holds more than {max_members} members", too_large=True)
        total += member.size
        if total > max_bytes:
            raise ArchiveError(f"the archive unpacks to more than {max_bytes / 2**20:.0f} MB", too_large=True)
        parents = {member.parts[:i] for i in range(1, len(member.parts))}
        if member.parts in files or (member.is_dir and member.parts in files) or parents & files:
            raise ArchiveError(f"archive member {'/'.join(member.parts)[:100]!r} is given twice or under a file")
        (folders if member.is_dir else files).add(member.parts)
        folders |= parents
        if not member.is_dir and member.parts in folders:
            raise ArchiveError(f"archive member {'/'.join(member.parts)[:100]!r} is a file and a folder")
    if not any(not m.is_dir for m in found):
        raise ArchiveError("the archive holds no file")
    return found


def _open(path: str):
    """The archive at ``path``, opened as TAR (any compression) or ZIP; ArchiveError if it is neither."""
    if zipfile.is_zipfile(path):
        return zipfile.ZipFile(path)
    try:
        return tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError, EOFError):
        raise ArchiveError("the upload is not a TAR (.tar, .tar.gz, .tar.bz2, .tar.xz) or ZIP archive") from None


def _write(stream, target: str, budget: int) -> int:
    """Copy ``stream`` to a new file ``target`` (never through a link); bytes written, at most ``budget``."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    written = 0
    with os.fdopen(fd, "wb") as out:
        while True:
            chunk = stream.read(_CHUNK)
            if not chunk:
                return written
            written += len(chunk)
            if written > budget:
                raise ArchiveError(
                    f"the archive unpacks to more than its limit ({written} bytes so far)", too_large=True
                )
            out.write(chunk)


def safe_unpack(path: str, dest: str, max_members: int = DEFAULT_MAX_MEMBERS, max_bytes: int = 2 << 30) -> int:
    """Unpack the TAR or ZIP archive at ``path`` into the new folder ``dest`` after checking every member.

    Args:
        path: the archive file.
        dest: a folder that does not exist yet; created here, removed again on any refusal.
        max_members: most members (files and folders) accepted.
        max_bytes: most bytes unpacked in all (declared sizes and bytes really written).

    Returns:
        The number of files written.

    Raises:
        ValueError: ``max_members`` or ``max_bytes`` below 1, or ``dest`` already exists.
        ArchiveError: the archive is not TAR/ZIP, or a member or the total breaks a rule (nothing is left in ``dest``).
    """
    if max_members < 1:
        raise ValueError(f"max_members must be >= 1, got {max_members}")
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
    if os.path.lexists(dest):
        raise ValueError(f"dest {dest!r} exists already; safe_unpack writes into a new folder")
    archive = _open(path)
    os.makedirs(dest)
    root = os.path.realpath(dest)
    try:
        with archive:
            is_zip = isinstance(archive, zipfile.ZipFile)
            try:
                members = check_members(
                    _zip_members(archive) if is_zip else _tar_members(archive), max_members, max_bytes
                )
            except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as error:
                raise ArchiveError(f"the archive is damaged ({type(error).__name__})") from None
            budget, files = max_bytes, 0
            for member in members:
                target = os.path.join(root, *member.parts)
                if os.path.commonpath([root, os.path.realpath(os.path.dirname(target))]) != root:
                    raise ArchiveError(f"archive member {'/'.join(member.parts)[:100]!r} leads out of the folder")
                if member.is_dir:
                    os.makedirs(target, exist_ok=True)
                    continue
                os.makedirs(os.path.dirname(target), exist_ok=True)
                try:
                    stream = archive.open(member.source) if is_zip else archive.extractfile(member.source)
                    with stream:
                        budget -= _write(stream, target, budget)
                except (tarfile.TarError, zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError) as error:
                    raise ArchiveError(
                        f"archive member {'/'.join(member.parts)[:100]!r} cannot be read ({type(error).__name__})"
                    ) from None
                files += 1
            return files
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
