"""What a finished run comes to (watcher.service.policy.decide): the whole table, without processes."""

from __future__ import annotations

import pytest

from watcher.service.executor import Outcome, OutcomeKind
from watcher.service.policy import Verdict, decide

K = OutcomeKind


@pytest.mark.parametrize(("kind", "attempt", "retries", "stopping", "verdict", "event"), [
    (K.OK, 1, 0, False, Verdict.RECORD_OK, None),
    (K.OK, 3, 2, True, Verdict.RECORD_OK, None),  # finished within the grace period: recorded
    (K.FAILED, 1, 5, False, Verdict.RECORD_FAILED, None),  # bad content: retries cannot help
    (K.TIMEOUT, 1, 5, False, Verdict.RECORD_FAILED, None),
    (K.DIED, 1, 1, False, Verdict.RETRY, "stack.retry"),  # the OOM killer: run it again at once
    (K.DIED, 2, 1, False, Verdict.RECORD_FAILED, None),  # ... up to workers.retries times
    (K.DIED, 1, 0, False, Verdict.RECORD_FAILED, None),
    (K.DIED, 1, 1, True, Verdict.RELEASE, None),  # stopped by the daemon: stacked again at the next start
    (K.DIED, 9, 1, True, Verdict.RELEASE, None),
    (K.UNAVAILABLE, 1, 0, False, Verdict.WAIT, "inputs.unavailable"),  # the environment: wait, try again
    (K.UNAVAILABLE, 1, 0, True, Verdict.WAIT, "inputs.unavailable"),
    (K.UNWRITABLE, 4, 0, False, Verdict.WAIT, "results.unwritable"),
])
def test_every_outcome_has_one_decision(kind, attempt, retries, stopping, verdict, event):
    decision = decide(Outcome(kind, "why"), attempt, retries, stopping=stopping)
    assert (decision.verdict, decision.event) == (verdict, event)


def test_failed_records_say_why_and_a_dead_worker_how_often():
    assert decide(Outcome(K.FAILED, "a.jpg: truncated"), 1, 1, stopping=False).message == "a.jpg: truncated"
    died = decide(Outcome(K.DIED, "worker killed by SIGKILL"), 2, 1, stopping=False)
    assert died.message == "worker killed by SIGKILL (2 attempts)"


def test_only_an_unreadable_input_is_looked_at_again():
    assert decide(Outcome(K.UNAVAILABLE, "x"), 1, 0, stopping=False).relook
    assert not decide(Outcome(K.UNWRITABLE, "x"), 1, 0, stopping=False).relook
