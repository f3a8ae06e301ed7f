"""What the daemon does with a stack whose run has ended: :func:`decide`, one pure function of the outcome.

Errors are sorted by what can fix them (see :mod:`~watcher.service.worker`): a retry cannot fix bad content, so it
is recorded as failed; time can fix the environment, so the stack waits and is tried again; a worker that died
(killed, crashed: the OOM killer) is run again at once, up to ``workers.retries`` times. The daemon carries the
decision out (:meth:`~watcher.service.daemon.Daemon._finish`); the table is tested on its own, without processes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from watcher.service.executor import Outcome, OutcomeKind


class Verdict(enum.Enum):
    RECORD_OK = "record ok"  # write its ok record (and dispose of its inputs, if configured)
    RECORD_FAILED = "record failed"  # write its failed record, with the decision's message
    RETRY = "retry"  # run it again now, as the next attempt
    WAIT = "wait"  # release it, to be tried again after a backoff
    RELEASE = "release"  # release it untouched: stopped by the daemon, stacked again at the next start


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    event: str | None = None  # the log event that tells it (RETRY, WAIT)
    message: str | None = None  # RECORD_FAILED: the record's error
    relook: bool = False  # WAIT: look at the inputs again first (one may have been replaced)


def decide(outcome: Outcome, attempt: int, retries: int, *, stopping: bool) -> Decision:
    """The decision for a stack whose ``attempt``-th run (1-based) ended with ``outcome``.

    ``retries``: runs allowed after the first for a worker that died. ``stopping``: the daemon is shutting down
    (a worker it stopped itself "died" through no fault of the stack).
    """
    kind = outcome.kind
    if kind is OutcomeKind.OK:
        return Decision(Verdict.RECORD_OK)
    if kind is OutcomeKind.DIED:
        if stopping:
            return Decision(Verdict.RELEASE)
        if attempt <= retries:
            return Decision(Verdict.RETRY, "stack.retry")
        return Decision(Verdict.RECORD_FAILED, message=f"{outcome.message} ({attempt} attempts)")
    if kind is OutcomeKind.UNWRITABLE:
        return Decision(Verdict.WAIT, "results.unwritable")
    if kind is OutcomeKind.UNAVAILABLE:
        return Decision(Verdict.WAIT, "inputs.unavailable", relook=True)
    return Decision(Verdict.RECORD_FAILED, message=outcome.message)  # FAILED, TIMEOUT: the content, or too long
