"""Keep transformers' loading chatter (progress bars, the multi-line LOAD REPORT table) off the terminal.

We do not lose information by this: ``load_model`` asks for the loading info and logs the missing and
unexpected keys itself, in one line, at a level that says whether they matter.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["quiet_transformers"]

_REPORT_LOGGER = "transformers.modeling_utils"  # log_state_dict_report logs through this module's logger
_REPORT_FUNCTION = "log_state_dict_report"


def _drop_load_report(record: logging.LogRecord) -> bool:
    return record.funcName != _REPORT_FUNCTION


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Within the block, transformers' load report table is dropped and its progress bars are off.

    A filter rather than a higher logger level: transformers 5 runs an extra tensor-parallel check (and
    warns "layers were not sharded") exactly when that logger's level is WARNING or above. Other
    warnings still get through; the caller's logging and progress settings are restored afterwards.
    """
    from transformers.utils import logging as hf_logging

    report_logger = logging.getLogger(_REPORT_LOGGER)
    bars_were_on = hf_logging.is_progress_bar_enabled()
    report_logger.addFilter(_drop_load_report)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        report_logger.removeFilter(_drop_load_report)
        if bars_were_on:
            hf_logging.enable_progress_bar()
