"""The skip guard of tests/conftest.py: a skip for any reason but "needs a CUDA GPU" fails the run.

Each test runs a tiny suite in a temporary directory under a copy of the real tests/conftest.py
(in-process, with pytester), and reads the outcome and exit status of that run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()


def _run(pytester: pytest.Pytester, source: str) -> pytest.RunResult:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_inner=source)
    return pytester.runpytest_inprocess("-p", "no:cacheprovider")


def test_cuda_skips_pass(pytester):
    result = _run(pytester, """
        import pytest

        @pytest.mark.cuda
        def test_marked():
            pass

        def test_fixture(cuda_device):
            pass

        def test_plain():
            pass
    """)
    assert result.ret == pytest.ExitCode.OK
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0
    assert outcomes["passed"] + outcomes.get("skipped", 0) == 3


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("import pytest\ndef test_a():\n    pytest.skip('slow machine')\n", "slow machine"),
        ("import pytest\n@pytest.mark.skip(reason='later')\ndef test_a():\n    pass\n", "later"),
        ("import pytest\n@pytest.mark.skipif(True, reason='needs CUDA')\ndef test_a():\n    pass\n",
         "needs CUDA"),
        ("import pytest\ndef test_a():\n    pytest.importorskip('vdengine_no_such_module')\n",
         "vdengine_no_such_module"),
        ("import pytest\n@pytest.mark.xfail(reason='known bug')\ndef test_a():\n    assert 0\n",
         "known bug"),
        ("import pytest\n@pytest.mark.xfail(reason='flaky')\ndef test_a():\n    pass\n", "flaky"),
    ],
    ids=["skip", "skip-mark", "skipif-other-reason", "importorskip", "xfail", "xpass"],
)
def test_other_skips_fail(pytester, source, reason):
    result = _run(pytester, source)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    outcomes = result.parseoutcomes()  # a skip mark fails at setup: pytest counts an error
    assert outcomes.get("failed", 0) + outcomes.get("errors", 0) == 1
    assert outcomes.get("skipped", 0) == outcomes.get("xfailed", 0) == outcomes.get("xpassed", 0) == 0
    result.stdout.fnmatch_lines([f"*not allowed*{reason}*"])


def test_module_level_skip_fails(pytester):
    result = _run(pytester, """
        import pytest
        np = pytest.importorskip("vdengine_no_such_module")

        def test_a():
            pass
    """)
    assert result.ret != pytest.ExitCode.OK
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*skip not allowed*vdengine_no_such_module*"])
