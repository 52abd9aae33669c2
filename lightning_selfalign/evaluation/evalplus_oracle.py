"""EvalPlus's verdict on one test suite, as evalplus 0.3.1 gives it (``evalplus/eval/__init__.py``: ``unsafe_execute``
with ``reliability_guard``; ``evalplus/eval/_special_oracle.py``), run by our sandbox after the sample's code.

This whole file is pasted into the body of each EvalPlus task's ``check(candidate)``
(:func:`lightning_selfalign.evaluation.evalplus_data.suite_test`), so its names stay local to ``check`` and the
sandbox counts its asserts. Standard library only; numpy, which ``np.allclose`` needs, is imported before the guard
when a comparison may reach it. Not reproduced: EvalPlus also guards the sample's module code (here the sandbox runs
it first, unguarded but isolated), and sets its own memory and stack limits (here ``--memory``); and 0.3.1's
``find_zero`` oracle never records a passed input, so every HumanEval/32 sample fails there: scored here as upstream
fixed it after the release (evalplus 6eb1e19).
"""

import contextlib
import io
import math
import signal
import sys

# _special_oracle.py: MBPP tasks whose outputs are compared as sets, or only as "not None" (their ground truth holds
# booleans), by entry point.
MBPP_OUTPUT_SET_EQ_TASKS = ("similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly",
                            "larg_nnum", "intersection_array", "find_dissimilar", "Diff")  # fmt: skip
MBPP_OUTPUT_NOT_NONE_TASKS = ("check_str", "text_match_three", "text_starta_endb")


def run_suite(candidate, dataset, entry_point, atol, needs_numpy, payload):
    """Call ``candidate`` on each input of the suite and assert its output matches; stops at the first mismatch."""
    import base64
    import pickle
    import zlib

    inputs, expected, time_limits = pickle.loads(zlib.decompress(base64.b64decode(payload)))
    if needs_numpy:
        import numpy  # noqa: F401  (imported before the guard blocks what its import needs)
    guard()
    for index, (inp, exp, seconds) in enumerate(zip(inputs, expected, time_limits)):
        with time_limit(seconds, index), swallow_io():
            out = candidate(*inp)
        exact_match = out == exp
        if dataset == "mbpp":
            exact_match = mbpp_special_match(entry_point, exact_match, out, exp, inp, atol)
        if dataset == "humaneval" and entry_point == "find_zero":
            assert abs(poly(*inp, out)) <= atol, f"input {index}: |poly(xs, {out!r})| > {atol}"
            continue
        if atol == 0 and is_floats(exp):
            atol = 1e-6  # EvalPlus enforces a tolerance on floats, and it stays for the suite's later inputs
        if not exact_match and atol != 0:
            assert type(out) == type(exp), f"input {index}: {type(out).__name__}, expected {type(exp).__name__}"  # noqa: E721
            if isinstance(exp, (list, tuple)):
                assert len(out) == len(exp), f"input {index}: length {len(out)}, expected {len(exp)}"
            assert sys.modules["numpy"].allclose(out, exp, rtol=1e-07, atol=atol), f"input {index}: not close"
        else:
            assert exact_match, f"input {index}: wrong output"
    assert len(expected) == len(inputs), "every input has an expected output"


def mbpp_special_match(entry_point, exact_match, out, exp, inp, atol):
    """MBPP+'s special oracles, by entry point (``unsafe_execute``, dataset ``mbpp``)."""
    if entry_point == "are_equivalent":  # Mbpp/164
        return exact_match or True
    if entry_point == "sum_div":  # Mbpp/295
        return exact_match or out == 0
    if entry_point == "surface_Area":  # Mbpp/581
        return exact_match or abs(out - surface_area(*inp)) <= atol
    if entry_point == "digit_distance_nums":  # Mbpp/558
        return exact_match or out == digit_distance_nums(*inp)
    if entry_point in MBPP_OUTPUT_SET_EQ_TASKS:
        return set(out) == set(exp)
    if entry_point in MBPP_OUTPUT_NOT_NONE_TASKS:
        return out == exp if isinstance(out, bool) else exp == (out is not None)
    return exact_match


def is_floats(x):
    """A float, or a non-empty list or tuple of floats, or a float numpy array (``is_floats``)."""
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(i, float) for i in x)
    numpy = sys.modules.get("numpy")  # an array exists only once numpy is loaded
    if numpy is not None and isinstance(x, numpy.ndarray):
        return x.dtype == numpy.float64 or x.dtype == numpy.float32
    return False


def poly(xs, x):
    """HumanEval/32's polynomial, for its special oracle (``_poly``)."""
    return sum([coeff * math.pow(x, i) for i, coeff in enumerate(xs)])


def surface_area(base_edge, height):
    """Mbpp/581's oracle (``_surface_Area``)."""
    slant_height = math.sqrt((base_edge / 2) ** 2 + height**2)
    return round(base_edge**2 + 4 * (base_edge * slant_height) / 2)


def digit_distance_nums(num1, num2):
    """Mbpp/558's oracle (``_digit_distance_nums``)."""
    str_num1, str_num2 = str(num1), str(num2)
    width = max(len(str_num1), len(str_num2))
    return sum(abs(int(a) - int(b)) for a, b in zip(str_num1.zfill(width), str_num2.zfill(width)))


class SuiteTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds, index):
    """``time_limit``: SIGALRM after ``seconds`` raises inside the candidate."""

    def handler(signum, frame):
        raise SuiteTimeout(f"input {index} ran past its {seconds:.2f} s")

    signal.setitimer(signal.ITIMER_REAL, seconds)
    signal.signal(signal.SIGALRM, handler)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


class WriteOnlyStringIO(io.StringIO):
    def read(self, *args, **kwargs):
        raise OSError

    def readline(self, *args, **kwargs):
        raise OSError

    def readlines(self, *args, **kwargs):
        raise OSError

    def readable(self, *args, **kwargs):
        return False


@contextlib.contextmanager
def swallow_io():
    """``swallow_io``: output goes nowhere, and reading stdin raises."""
    stream, stdin = WriteOnlyStringIO(), sys.stdin
    sys.stdin = stream
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            yield
    finally:
        sys.stdin = stdin


def guard():
    """``reliability_guard`` without its rlimits (the sandbox sets those): the functions it disables fail here too."""
    import builtins
    import os
    import shutil
    import subprocess

    builtins.exit = builtins.quit = builtins.help = builtins.open = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork", "forkpty",
                 "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown", "chmod", "chown",
                 "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir"):  # fmt: skip
        setattr(os, name, None)
    shutil.rmtree = shutil.move = shutil.chown = None
    subprocess.Popen = None
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None
