"""The control plane may import trainyard.worker names; that must never pull in torch."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_package_and_parsing_options_does_not_import_torch() -> None:
    code = (
        "import sys, trainyard.worker, trainyard.worker.__main__ as m\n"
        "m.build_parser().parse_args(['train', '--steps', '3'])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
