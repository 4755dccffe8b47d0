"""The one command line that starts MONAI Label's server with an app (``mri-label serve``, the benchmarks' and the
integration tests' servers all run it)."""

import sys
from pathlib import Path
from typing import List, Mapping, Optional, Union


def start_server_command(
    app: Union[str, Path],
    studies: Union[str, Path],
    host: str,
    port: int,
    conf: Mapping[str, object],
    log_config: Optional[str] = None,
) -> List[str]:
    """``python -m monailabel.main start_server`` with the app folder ``app``, the datastore ``studies`` (a folder
    or a DICOMweb URL), ``--host``/``--port``, MONAI Label's ``--log_config`` where given and ``--conf KEY VALUE``
    for each of ``conf`` (in its order).

    Raises:
        ValueError: ``port`` is not in 1..65535.
    """
    if not 0 < int(port) < 65536:
        raise ValueError(f"port must be in 1..65535, got {port}")
    command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies)]
    command += ["--host", str(host), "--port", str(int(port))]
    if log_config:
        command += ["--log_config", str(log_config)]
    for key, value in conf.items():
        command += ["--conf", str(key), str(value)]
    return command
