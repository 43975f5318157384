"""Debian's archive by package name, for any suite, without the host's apt.

The lab needs ppc64el packages of bookworm, trixie and sid on a host that may
run any of them (or none).  This module reads a suite's own index, the way
apt does, and nothing else:

* ``dists/<suite>/InRelease``, checked with ``gpgv`` against the host's
  ``debian-archive-keyring`` (a suite signed by a key the host does not have
  is refused, with one line saying so);
* ``dists/<suite>/main/binary-ppc64el/Packages.xz``, checked against the
  SHA256 the InRelease lists;
* ``pool/...`` files, checked against the SHA256 of their Packages stanza.

Versions are chosen from the index, never pinned.  An index can name a file
the mirror no longer serves (a suite mid-sync, a kernel ABI just replaced):
:func:`served` asks with ``HEAD`` so callers pick a version that is there.

Everything is cached under ``$KLP_DEBIAN_CACHE`` (default ``/work/cache/debian``
when ``/work/cache`` exists, else ``.cache/debian`` of the checkout): indexes
under ``dists/`` (re-read after ``$KLP_DEBIAN_INDEX_TTL`` seconds, default 12 h),
packages under ``pool/`` as the archive lays them out, so each file is
downloaded once however many checkouts share the cache.  Downloads go to a
temporary name and are renamed when complete and verified; an ``fcntl`` lock
per file keeps two processes from fetching the same file at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import lzma
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = (
    "ArchiveError",
    "DebPackage",
    "Suite",
    "cache_dir",
    "mirror",
)

_REPO = Path(__file__).resolve().parent.parent.parent
_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
_ARCH = "ppc64el"


class ArchiveError(Exception):
    """The archive could not give what was asked; the text is a one-line reason."""


def mirror() -> str:
    """The Debian mirror (``$KLP_DEBIAN_MIRROR``, default deb.debian.org)."""
    return os.environ.get("KLP_DEBIAN_MIRROR", "http://deb.debian.org/debian").rstrip("/")


def cache_dir() -> Path:
    """Where indexes and packages are cached (shared between checkouts)."""
    env = os.environ.get("KLP_DEBIAN_CACHE")
    if env:
        return Path(env)
    if Path("/work/cache").is_dir():
        return Path("/work/cache/debian")
    return _REPO / ".cache" / "debian"


@dataclass(frozen=True)
class DebPackage:
    """One stanza of a ``Packages`` index."""

    name: str
    version: str
    filename: str  # pool/... relative to the mirror
    size: int
    sha256: str
    depends: str
    suite: str

    @property
    def url(self) -> str:
        return f"{mirror()}/{self.filename}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        yield


def _get(url: str, dest: Path, sha256: str | None = None, size: int | None = None) -> None:
    """Download *url* to *dest* (via a temporary file), checking its SHA256."""
    tmp = dest.with_name(dest.name + f".part{os.getpid()}")
    h = hashlib.sha256()
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            while True:
                buf = r.read(1 << 20)
                if not buf:
                    break
                h.update(buf)
                f.write(buf)
    except urllib.error.HTTPError as e:
        tmp.unlink(missing_ok=True)
        raise ArchiveError(f"{url}: HTTP {e.code}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        tmp.unlink(missing_ok=True)
        raise ArchiveError(f"{url}: {getattr(e, 'reason', e)}") from None
    if sha256 is not None and h.hexdigest() != sha256:
        tmp.unlink(missing_ok=True)
        raise ArchiveError(f"{url}: SHA256 mismatch (mirror mid-sync?)")
    if size is not None and tmp.stat().st_size != size:
        tmp.unlink(missing_ok=True)
        raise ArchiveError(f"{url}: size {tmp.stat().st_size}, index says {size}")
    tmp.replace(dest)
    mb = dest.stat().st_size / 1e6
    print(f"lab: fetched {url.rsplit('/', 1)[-1]} ({mb:.1f} MB, "
          f"{time.monotonic() - t0:.1f} s)", flush=True)


def served(url: str) -> bool:
    """Whether the mirror serves *url* right now (``HEAD``)."""
    req = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return bool(200 <= r.status < 300)
    except (urllib.error.URLError, OSError, TimeoutError):
        return False


def _version_key(v: str) -> tuple[object, ...]:
    """A sort key close enough to dpkg's for kernel and busybox versions."""
    epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
    parts: list[object] = [int(epoch or 0)]
    for tok in re.findall(r"\d+|[A-Za-z]+|~|[^\dA-Za-z~]", rest):
        if tok.isdigit():
            parts.append((2, int(tok)))
        elif tok == "~":
            parts.append((0, 0))
        else:
            parts.append((1, tok))
    return tuple(parts)


class Suite:
    """One suite's ppc64el ``main`` index (``bookworm``, ``trixie``, ``sid``...)."""

    def __init__(self, name: str, cache: Path | None = None) -> None:
        self.name = name
        self.cache = cache or cache_dir()
        self._packages: dict[str, list[DebPackage]] | None = None

    # ---- the index

    def _index_dir(self) -> Path:
        return self.cache / "dists" / self.name

    def _refresh(self) -> Path:
        d = self._index_dir()
        pk = d / "Packages.xz"
        ttl = float(os.environ.get("KLP_DEBIAN_INDEX_TTL", 12 * 3600))
        with _locked(pk):
            if pk.exists() and time.time() - pk.stat().st_mtime < ttl:
                return pk
            base = f"{mirror()}/dists/{self.name}"
            inrel = d / "InRelease"
            _get(f"{base}/InRelease", inrel)
            p = subprocess.run(
                ["gpgv", "--keyring", _KEYRING, str(inrel)], capture_output=True, text=True
            )
            if p.returncode != 0:
                raise ArchiveError(
                    f"{self.name}: InRelease signature not good with {_KEYRING} "
                    "(install a newer debian-archive-keyring)"
                )
            rel = f"main/binary-{_ARCH}/Packages.xz"
            m = re.search(rf"^ ([0-9a-f]{{64}})\s+(\d+)\s+{re.escape(rel)}$",
                          inrel.read_text(errors="replace"), re.M)
            if not m:
                raise ArchiveError(f"{self.name}: InRelease lists no {rel}")
            _get(f"{base}/{rel}", pk, m.group(1), int(m.group(2)))
        return pk

    @property
    def packages(self) -> dict[str, list[DebPackage]]:
        """Every package of the index: name -> its stanzas, newest version first."""
        if self._packages is None:
            text = lzma.decompress(self._refresh().read_bytes()).decode("utf-8", "replace")
            out: dict[str, list[DebPackage]] = {}
            for stanza in text.split("\n\n"):
                f: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line[:1] not in (" ", "\t") and ":" in line:
                        k, _, v = line.partition(":")
                        f[k] = v.strip()
                if "Package" not in f or "Filename" not in f:
                    continue
                out.setdefault(f["Package"], []).append(DebPackage(
                    f["Package"], f.get("Version", ""), f["Filename"], int(f.get("Size", 0)),
                    f.get("SHA256", ""), f.get("Depends", ""), self.name,
                ))
            for v in out.values():
                v.sort(key=lambda p: _version_key(p.version), reverse=True)
            self._packages = out
        return self._packages

    def names(self, pattern: str) -> list[str]:
        """Package names matching the regular expression *pattern* (whole name)."""
        rx = re.compile(pattern)
        return sorted(n for n in self.packages if rx.fullmatch(n))

    def candidates(self, name: str) -> list[DebPackage]:
        """The stanzas of *name*, newest first (empty if the index has none)."""
        return list(self.packages.get(name, ()))

    # ---- packages

    def fetch(self, name: str) -> Path:
        """The newest version of *name* that the mirror serves, downloaded once
        into the cache's ``pool/``; its SHA256 is checked against the index."""
        cands = self.candidates(name)
        if not cands:
            raise ArchiveError(f"{self.name} has no {_ARCH} package {name}")
        errors: list[str] = []
        for pkg in cands:
            dest = self.cache / pkg.filename
            if dest.exists():
                return dest
            with _locked(dest):
                if dest.exists():
                    return dest
                try:
                    _get(pkg.url, dest, pkg.sha256 or None, pkg.size or None)
                    return dest
                except ArchiveError as e:
                    errors.append(str(e))  # 404: an index ahead of or behind its pool
        raise ArchiveError(f"{self.name}: no served version of {name}: {'; '.join(errors)}")

    def serves(self, name: str) -> bool:
        """Whether some version of *name* in the index is served (or cached)."""
        return any(
            (self.cache / p.filename).exists() or served(p.url) for p in self.candidates(name)
        )
