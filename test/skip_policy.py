"""pytest plugin: a skipped test fails the run unless its reason is an intended skip.

A missing dependency (``pytest.importorskip``, a tool not installed) must not turn
into a green run: CI installs everything the tests need, so such a skip means the
environment is broken. The only intended skips are listed in ``INTENDED_SKIPS``
(reason substring -> why it is fine). ``EMOTION_ROS_ALLOW_SKIPS=1`` turns the
check off for a developer's partial environment (never in CI).
"""

from __future__ import annotations

import os
from typing import Optional

import pytest

#: Reason substrings of skips that are intended, with why.
INTENDED_SKIPS = {
    'a GPU is present': 'the test checks the error for detector.device cuda on a machine '
                        'without a GPU; it cannot run where there is one',
    'needs a CUDA GPU': 'GPU-only tests (cuda device paths, bf16 speed): CI has no GPU',
}
ALLOW_ENV = 'EMOTION_ROS_ALLOW_SKIPS'


def unexpected_skip_reason(report) -> Optional[str]:
    """The skip reason when ``report`` is a skip that is not intended, else None."""
    if not report.skipped or hasattr(report, 'wasxfail'):
        return None
    if os.environ.get(ALLOW_ENV) == '1':
        return None
    longrepr = report.longrepr
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 \
        else str(longrepr)
    if any(key in reason for key in INTENDED_SKIPS):
        return None
    return reason


def _fail(report, reason: str) -> None:
    report.outcome = 'failed'
    report.longrepr = (f'unexpected skip: {reason}\n(a missing dependency fails the run: '
                       'install it, or, if the skip is intended, add its reason to '
                       f'INTENDED_SKIPS in test/skip_policy.py; {ALLOW_ENV}=1 allows skips '
                       'locally)')


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Turn unintended skips of tests (setup or call) into failures."""
    outcome = yield
    report = outcome.get_result()
    reason = unexpected_skip_reason(report)
    if reason is not None:
        _fail(report, reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """Turn module-level skips (importorskip at import) into collection errors."""
    outcome = yield
    report = outcome.get_result()
    reason = unexpected_skip_reason(report)
    if reason is not None:
        _fail(report, reason)
