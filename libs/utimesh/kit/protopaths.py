"""Include paths for protoc (and buf) where our protos import Google's API protos.

googleapis-common-protos installs `google/api/*.proto` and `google/rpc/*.proto` under their
import paths, but ships `google/longrunning/operations.proto` as `operations_proto.proto` (its
Python module registers the right name). `googleapis_includes()` gives protoc a temporary
folder that holds it under its import path, beside site-packages: nothing is vendored."""

from __future__ import annotations

import shutil
import sysconfig
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LONGRUNNING = "google/longrunning/operations.proto"


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


@contextmanager
def googleapis_includes() -> Iterator[list[Path]]:
    """Include folders for the googleapis protos: a temporary shim first, then site-packages."""
    site = site_packages()
    shipped = site / "google" / "longrunning" / "operations_proto.proto"
    with tempfile.TemporaryDirectory(prefix="utimesh-protos-") as tmp:
        shim = Path(tmp)
        target = shim / LONGRUNNING
        target.parent.mkdir(parents=True)
        if shipped.is_file():
            shutil.copyfile(shipped, target)
        yield [shim, site]
