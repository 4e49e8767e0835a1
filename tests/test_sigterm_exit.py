"""SIGTERM ends a command with 143 through its clean-up, even where the handler's exception is dropped."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROLOGUE = """
import os, signal, sys, time
from homepage.cli.sigterm import install_sigterm_exit

restore = install_sigterm_exit()
"""


def run(body: str, after_restore: str = "pass") -> subprocess.CompletedProcess[str]:
    """Run ``body`` after installing the handler, then ``restore()`` as ``homepage.cli.main`` does, then ``after_restore``."""
    script = PROLOGUE + "try:\n" + textwrap.indent(textwrap.dedent(body), "    ") + f"\nfinally:\n    restore()\n    {after_restore}\n"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


def test_a_dropped_terminated_is_raised_again_until_the_command_ends() -> None:
    """What a bare ``except`` (or C code clearing the error) drops: the signal comes again and ends the command."""
    res = run(
        """
        try:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            except BaseException:
                pass  # dropped, as PyDict_GetItem drops what a key's __eq__ raises
            time.sleep(10)
            print("ran on to the end")
        finally:
            print("cleaned up")
        """
    )
    assert res.returncode == 143, (res.returncode, res.stdout, res.stderr[-2000:])
    assert "cleaned up" in res.stdout and "ran on to the end" not in res.stdout, res


@pytest.mark.parametrize("inner_error", [False, True], ids=["plain", "errors-handled-inside"])
def test_clean_up_longer_than_the_resend_period_is_not_interrupted(inner_error: bool) -> None:
    """Resent signals meet the first one's clean-up (also where it handles errors of its own, as rmtree does) and let it finish."""
    res = run(
        f"""
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:
            for _ in range(30):  # 3 s: three resends
                try:
                    if {inner_error}:
                        raise OSError("busy")
                except OSError:
                    pass
                time.sleep(0.1)
            print("cleaned up")
        """
    )
    assert res.returncode == 143, (res.returncode, res.stdout, res.stderr[-2000:])
    assert "cleaned up" in res.stdout and "Traceback" not in res.stderr, res


def test_no_resend_outlives_the_command() -> None:
    """``restore()`` stops the resending before it gives SIGTERM back its default action: the exit is 143, not a kill."""
    res = run(
        """
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        """,
        after_restore="time.sleep(2.5)  # a resend now would meet the default action",
    )
    assert res.returncode == 143, (res.returncode, res.stdout, res.stderr[-2000:])
