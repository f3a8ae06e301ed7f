"""Commands run the way the service user would run them, whoever starts them."""

from __future__ import annotations

import os


def unprivileged(command: list[str]) -> list[str]:
    """``command`` run so that file permissions apply to it: as root, without the capabilities that bypass
    them (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), as the service user would run; otherwise unchanged."""
    if os.geteuid() != 0:
        return command
    return ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search", *command]
